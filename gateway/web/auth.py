"""Who may change anything through the status page: logins from the password file,
sessions after a login, and guessing slowed down.

The password file (`web.password_file`) is read again at every login attempt, so a site
engineer changes or adds a password without restarting the gateway. Passwords are
compared in constant time (hashed first, so their lengths do not show either); an
unknown login costs the same comparison as a known one.

A login opens a session: a random token in an HttpOnly, SameSite=Strict cookie, and a
second random token (CSRF) the page sends back in a header with every state change, so
another site open in the same browser cannot act through the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LOGIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")  # as `web:<login>` in allow lists
DEFAULT_LOGIN = "admin"  # the login of a password file that is one bare password
FREE_FAILURES = 3  # attempts from one address before each next one must wait
MAX_WAIT = 60.0  # seconds: the longest wait between two attempts from one address
FAILURE_PAUSE = 0.5  # seconds every failed login takes before it is answered
FORGET_AFTER = 900.0  # seconds after which an address's failures are forgotten
MAX_PEERS = 1024  # addresses remembered at once; the quietest are forgotten first
MAX_SESSIONS = 64  # sessions open at once; the oldest is closed for a new one


class PasswordFileError(ValueError):
    """The password file cannot be read or says something that is not a login; the
    message names the file (and line) and what would be right."""


def parse_password_file(text: str, path: Path | str = "password_file") -> dict[str, str]:
    """login -> password from the file's text.

    One `login:password` line per login; blank lines and lines starting with # are
    skipped. A file of one line without a colon is the password of `admin`.
    """
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    if not lines:
        raise PasswordFileError(f"{path} holds no password; write login:password lines")
    if len(lines) == 1 and ":" not in lines[0][1]:
        return {DEFAULT_LOGIN: lines[0][1]}
    logins: dict[str, str] = {}
    for number, line in lines:
        login, sep, password = line.partition(":")
        if not sep or not password:
            raise PasswordFileError(f"{path} line {number}: expected login:password")
        if not LOGIN.match(login):
            raise PasswordFileError(
                f"{path} line {number}: login {login!r} must be letters, digits, _ . - "
                "(at most 64), as web:<login> names it in upstream.commands.allow")
        if login in logins:
            raise PasswordFileError(f"{path} line {number}: login {login!r} is written twice")
        logins[login] = password
    return logins


def read_password_file(path: Path) -> dict[str, str]:
    """The file's logins; PasswordFileError saying why it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswordFileError(f"password file {path} does not exist") from None
    except IsADirectoryError:
        raise PasswordFileError(f"password file {path} is a directory, not a file") from None
    except PermissionError:
        raise PasswordFileError(f"password file {path} cannot be read by this user; give the "
                                "gateway's user read access") from None
    except UnicodeDecodeError:
        raise PasswordFileError(f"password file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise PasswordFileError(f"password file {path} cannot be read: {exc.strerror}") from None
    return parse_password_file(text, path)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


_NOBODY = _digest(secrets.token_hex(16))  # what an unknown login's password is compared with


class Passwords:
    """The logins of the password file; None: the page is read-only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.problem: str | None = None  # why the last read failed; None when it worked

    @property
    def configured(self) -> bool:
        return self.path is not None

    def check_file(self) -> None:
        """Read the file once at start, so a mistake is logged before anyone tries to log in."""
        if self.path is None:
            return
        self._logins()
        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            return
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the status page's password file can be read by other users; "
                        "chmod 600 it", path=str(self.path), mode=oct(stat.S_IMODE(mode)))

    def verify(self, login: str, password: str) -> bool:
        """Whether `password` is `login`'s; False (logged once per change of the problem)
        when the file cannot be read."""
        logins = self._logins()
        stored = logins.get(login)
        expected = _digest(stored) if stored is not None else _NOBODY
        matches = hmac.compare_digest(expected, _digest(password))
        return matches and stored is not None

    def _logins(self) -> dict[str, str]:
        if self.path is None:
            return {}
        try:
            logins = read_password_file(self.path)
        except PasswordFileError as exc:
            if str(exc) != self.problem:
                log.error("status page logins are refused until the password file is fixed",
                          error=str(exc))
            self.problem = str(exc)
            return {}
        self.problem = None
        return logins


@dataclass(slots=True)
class Session:
    """One browser's login: `token` is its cookie, `csrf` what it sends with each change."""

    token: str
    login: str
    csrf: str
    expires: float


class Sessions:
    """Open sessions in memory: a restart of the gateway asks everyone to log in again."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic,
                 limit: int = MAX_SESSIONS) -> None:
        self.ttl = ttl
        self.clock = clock
        self.limit = limit
        self._open: OrderedDict[str, Session] = OrderedDict()

    def open(self, login: str) -> Session:
        session = Session(secrets.token_urlsafe(32), login, secrets.token_urlsafe(32),
                          self.clock() + self.ttl)
        self._open[session.token] = session
        while len(self._open) > self.limit:
            self._open.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of this cookie; None for none, an unknown or an expired one."""
        if not token:
            return None
        session = self._open.get(token)
        if session is None:
            return None
        if self.clock() >= session.expires:
            del self._open[token]
            return None
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._open.pop(token, None)

    def __len__(self) -> int:
        return len(self._open)


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())


@dataclass(slots=True)
class _Peer:
    failures: int = 0
    last: float = 0.0  # when the last failure was
    until: float = 0.0  # no attempt is looked at before this


class LoginThrottle:
    """Failed logins counted per address: FREE_FAILURES attempts come at once, then each
    next one from that address must wait twice as long as the one before (1 s, 2 s,
    4 s ... up to MAX_WAIT).
    An attempt made too early is refused without looking at the password."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures = 0  # every failed login since start
        self.refused = 0  # attempts refused for coming too early
        self._peers: OrderedDict[str, _Peer] = OrderedDict()

    def wait(self, peer: str) -> float:
        """Seconds before `peer` may try again; 0 when it may now."""
        entry = self._peers.get(peer)
        if entry is None:
            return 0.0
        now = self.clock()
        if now - entry.last > FORGET_AFTER:
            del self._peers[peer]
            return 0.0
        return max(0.0, entry.until - now)

    def failed(self, peer: str) -> float:
        """Count a failed login; the seconds `peer` must now wait before the next."""
        now = self.clock()
        entry = self._peers.pop(peer, None) or _Peer()
        if now - entry.last > FORGET_AFTER:
            entry = _Peer()
        entry.failures += 1
        entry.last = now
        over = entry.failures - FREE_FAILURES
        delay = 0.0 if over < 0 else min(MAX_WAIT, 2.0 ** over)
        entry.until = now + delay
        self._peers[peer] = entry  # most recent last: the quietest are forgotten first
        while len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)
        self.failures += 1
        return delay

    def succeeded(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def failures_of(self, peer: str) -> int:
        entry = self._peers.get(peer)
        return 0 if entry is None else entry.failures
