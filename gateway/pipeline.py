"""The pipeline: batches from drivers go through the rules stage into the outbox."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from gateway.batch import Batch, Event
from gateway.outbox import Outbox
from rules.stage import PassThrough, RulesStage

log = structlog.get_logger(__name__)

LOG_EVERY = 60.0  # seconds between two log lines about a failing stage


class Pipeline:
    """The one place a batch enters the gateway; keeps the latest batches for views.

    `latest` is keyed by device and point set: a poll group's batch and a COV batch of one
    point each keep their own latest, so a view can merge them into the device's state.
    Derived points come back from the rules stage as batches of their own and are kept
    and stored like read ones; they are not fed to the rules again (the engine has
    already evaluated what reads them).

    A stage that raises (a bug in a rule or in the energy stage, a disk it cannot write)
    costs that batch's evaluation, never the caller: a driver's poll loop goes on, the
    batch itself is stored. Failures are counted in `stage_errors` and logged at most
    once a minute.
    """

    def __init__(self, outbox: Outbox, rules: RulesStage | None = None) -> None:
        self.outbox = outbox
        self.rules: RulesStage = rules if rules is not None else PassThrough()
        self.latest: dict[tuple[str, tuple[str, ...]], Batch] = {}
        self.batches = 0
        self.stage_errors = 0
        self._logged_at: float | None = None  # monotonic time of the last failure logged
        # called with each event after it is stored: the daemon follows maintenance mode
        self.listeners: list[Callable[[Event], None]] = []
        # called with each batch as it is stored, read or derived (`gateway tail`); empty
        # unless someone tails, so a batch costs one check. A listener must not raise.
        self.batch_listeners: list[Callable[[Batch], None]] = []

    def emit_batch(self, batch: Batch) -> None:
        self._store(batch)
        try:
            items = self.rules.process(batch)
        except Exception as exc:
            self._stage_failed("process", exc, device=batch.device)
            return
        self.emit_all(items)

    def emit_event(self, event: Event) -> None:
        self.outbox.append_event(event)
        for listener in self.listeners:
            listener(event)

    def emit_all(self, items: list[Batch | Event]) -> None:
        """What the rules produced (on a batch, a timer or a command): derived points and events."""
        for item in items:
            if isinstance(item, Batch):
                self._store(item)
            else:
                self.emit_event(item)

    def emit_measured(self, items: list[Batch | Event]) -> None:
        """What a measuring stage produced outside a poll (a manual meter reading, a meter
        swap): its batches are evaluated by the rules like any reading. A stage that
        raises costs the evaluation, never the items: they are stored all the same."""
        try:
            evaluated = self.rules.evaluate(items)
        except Exception as exc:
            self._stage_failed("evaluate", exc)
            evaluated = items
        self.emit_all(evaluated)

    def _stage_failed(self, what: str, exc: Exception, **context: object) -> None:
        self.stage_errors += 1
        now = time.monotonic()
        if self._logged_at is not None and 0 <= now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        log.error("edge stage failed; this batch is stored but not evaluated", call=what,
                  error=f"{type(exc).__name__}: {exc}", failures=self.stage_errors,
                  exc_info=exc, **context)

    def _store(self, batch: Batch) -> None:
        self.batches += 1
        self.latest[(batch.device, batch.points)] = batch
        self.outbox.append_batch(batch)
        for listener in self.batch_listeners:  # nobody, unless someone tails
            listener(batch)

    def current(self) -> dict[str, dict[str, tuple[object, str, float]]]:
        """Each device's points with their newest (value, quality, ts), across its batches."""
        state: dict[str, dict[str, tuple[object, str, float]]] = {}
        for (device, _points), batch in sorted(self.latest.items(), key=lambda kv: kv[1].ts):
            points = state.setdefault(device, {})
            for point, value, quality in batch.items():
                points[point] = (value, quality, batch.ts)
        return state
