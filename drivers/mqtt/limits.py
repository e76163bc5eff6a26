"""Guards against a misbehaving device: a token bucket for floods, a gate for repeated log lines.

Both take the clock as an argument (monotonic seconds) so the driver stamps a message once,
when it arrives, and tests need no sleeping.
"""

from __future__ import annotations


class TokenBucket:
    """Admits `rate` messages a second on average, with bursts of up to `burst`.

    A device that publishes faster loses the excess; its neighbours on the broker are not
    slowed, because every device has its own bucket.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)  # one second's worth
        self.tokens = self.burst
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        """Whether a message arriving at `now` is admitted (it spends one token)."""
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class LogGate:
    """Lets a recurring problem be logged once per `period`, counting what it held back.

    A device that sends a bad payload every second would otherwise write 86,400 log lines
    a day; one a minute with a count says the same.
    """

    __slots__ = ("period", "_last", "_held")

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self._last: float | None = None
        self._held = 0

    def open(self, now: float) -> int | None:
        """None when this occurrence is held back; otherwise how many were held back since
        the last one logged (the caller logs now)."""
        if self._last is not None and now - self._last < self.period:
            self._held += 1
            return None
        held, self._held, self._last = self._held, 0, now
        return held
