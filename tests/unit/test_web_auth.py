"""The status page's logins: the password file, sessions, and guessing slowed down."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.web.auth import (
    FREE_FAILURES,
    MAX_WAIT,
    LoginThrottle,
    PasswordFileError,
    Passwords,
    Sessions,
    csrf_matches,
    parse_password_file,
    read_password_file,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_password_file_lists_one_login_per_line_and_skips_comments() -> None:
    text = "# 工程部\nadmin:pump-room-1\n\nengineer:两台泵:with colons\n"
    assert parse_password_file(text) == {"admin": "pump-room-1", "engineer": "两台泵:with colons"}


def test_a_file_of_one_bare_password_is_the_password_of_admin() -> None:
    assert parse_password_file("  s3cret  \n") == {"admin": "s3cret"}


@pytest.mark.parametrize(("text", "expected"), [
    ("", "holds no password"),
    ("# only a comment\n", "holds no password"),
    ("admin:a\nnobody\n", "line 2: expected login:password"),
    ("admin:\n", "line 1: expected login:password"),
    ("王工:abc\nadmin:x\n", "line 1: login '王工' must be letters, digits"),
    ("admin:a\nadmin:b\n", "line 2: login 'admin' is written twice"),
])
def test_a_password_file_mistake_names_its_line_and_what_would_be_right(text: str, expected: str) -> None:
    with pytest.raises(PasswordFileError, match=expected):
        parse_password_file(text, "/etc/gateway/web.password")


def test_a_missing_password_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PasswordFileError, match=f"password file {tmp_path}/none does not exist"):
        read_password_file(tmp_path / "none")


def test_a_password_is_checked_against_its_own_login_only(tmp_path: Path) -> None:
    path = tmp_path / "web.password"
    path.write_text("admin:alpha\nengineer:bravo\n", encoding="utf-8")
    passwords = Passwords(path)
    assert passwords.verify("admin", "alpha")
    assert passwords.verify("engineer", "bravo")
    assert not passwords.verify("admin", "bravo")
    assert not passwords.verify("admin", "alph")
    assert not passwords.verify("nobody", "alpha")
    assert not passwords.verify("admin", "")


def test_a_changed_password_file_applies_at_the_next_login_without_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "web.password"
    path.write_text("admin:old\n", encoding="utf-8")
    passwords = Passwords(path)
    assert passwords.verify("admin", "old")
    path.write_text("admin:new\n", encoding="utf-8")
    assert not passwords.verify("admin", "old")
    assert passwords.verify("admin", "new")


def test_an_unreadable_password_file_refuses_every_login_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "web.password"
    passwords = Passwords(path)
    assert not passwords.verify("admin", "anything")
    assert passwords.problem == f"password file {path} does not exist"
    path.write_text("admin:anything\n", encoding="utf-8")
    assert passwords.verify("admin", "anything")
    assert passwords.problem is None


def test_without_a_password_file_the_page_is_read_only() -> None:
    passwords = Passwords(None)
    assert not passwords.configured
    assert not passwords.verify("admin", "")


def test_a_session_lasts_its_timeout_then_asks_for_a_login_again() -> None:
    clock = Clock()
    sessions = Sessions(ttl=8 * 3600, clock=clock)
    session = sessions.open("admin")
    assert sessions.get(session.token) is session
    assert session.token != session.csrf and len(session.token) >= 40
    clock.now += 8 * 3600 - 1
    assert sessions.get(session.token) is session
    clock.now += 1
    assert sessions.get(session.token) is None
    assert len(sessions) == 0


def test_a_closed_or_unknown_session_is_no_session() -> None:
    sessions = Sessions(ttl=60)
    session = sessions.open("admin")
    sessions.close(session.token)
    assert sessions.get(session.token) is None
    assert sessions.get("made-up") is None
    assert sessions.get(None) is None


def test_too_many_sessions_close_the_oldest() -> None:
    sessions = Sessions(ttl=60, limit=2)
    first, second, third = (sessions.open("admin") for _ in range(3))
    assert sessions.get(first.token) is None
    assert sessions.get(second.token) is second and sessions.get(third.token) is third


def test_a_state_change_needs_the_sessions_own_csrf_token() -> None:
    session = Sessions(ttl=60).open("admin")
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, None)
    assert not csrf_matches(session, session.token)


def test_failed_logins_from_one_address_wait_twice_as_long_each_time_up_to_a_minute() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    waits = [throttle.failed("10.0.0.9") for _ in range(FREE_FAILURES + 8)]
    # the first FREE_FAILURES attempts come at once; the one after them waits 1 s
    assert waits[:FREE_FAILURES - 1] == [0.0] * (FREE_FAILURES - 1)
    assert waits[FREE_FAILURES - 1:] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, MAX_WAIT, MAX_WAIT, MAX_WAIT]
    assert throttle.wait("10.0.0.9") == MAX_WAIT
    clock.now += 20
    assert throttle.wait("10.0.0.9") == MAX_WAIT - 20
    assert throttle.wait("10.0.0.10") == 0.0  # another address is not held up
    assert throttle.failures == FREE_FAILURES + 8


def test_a_good_login_clears_its_addresss_failures() -> None:
    throttle = LoginThrottle(Clock())
    for _ in range(FREE_FAILURES + 1):
        throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") > 0
    throttle.succeeded("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 0.0
    assert throttle.failed("10.0.0.9") == 0.0


def test_failures_are_forgotten_after_a_quiet_quarter_hour() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(FREE_FAILURES + 2):
        throttle.failed("10.0.0.9")
    clock.now += 901
    assert throttle.wait("10.0.0.9") == 0.0
    assert throttle.failed("10.0.0.9") == 0.0
