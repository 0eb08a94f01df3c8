"""The console's login, pure: password hashing, sessions, single-use form tokens, the login limiter."""

from __future__ import annotations

import pytest

from portero.front.console.auth import (
    LOGIN_FORM_TTL,
    MAX_FORM_TOKENS,
    MAX_LOGIN_FORMS,
    LoginForms,
    LoginLimiter,
    Sessions,
    hash_password,
    password_problem,
    verify_password,
)
from portero.front.console.views import parse_moment


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("", stored)
    # Two hashes of one password differ (salted), both verify.
    other = hash_password("correct horse battery")
    assert other != stored and verify_password("correct horse battery", other)
    # The same salt gives the same hash (deterministic given the salt).
    assert hash_password("x" * 12, b"0" * 16) == hash_password("x" * 12, b"0" * 16)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "md5$1$2$3$YWJj$YWJj",
        "scrypt$notanumber$8$1$YWJj$YWJj",
        "scrypt$16384$8$1$***$YWJj",
        "scrypt$1073741824$8$1$YWJj$YWJj",  # asks for far too much work: refused, not computed
        "scrypt$16384$8$1$YWJj",
    ],
)
def test_malformed_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything at all", stored)


def test_password_rules() -> None:
    assert password_problem("short", []) is not None
    assert password_problem("long enough password", []) is None
    token = "test-token-0123456789abcdef"
    assert "bearer token" in str(password_problem(token, [token, ""]))
    assert password_problem("long enough password", [""]) is None


def test_sessions_expire_idle_max_and_on_password_change() -> None:
    sessions = Sessions(idle=100.0, max_age=1000.0)
    s = sessions.new(0.0, "hash-1", "127.0.0.1")
    assert sessions.get(s.token, 50.0, "hash-1") is s
    assert sessions.get(s.token, 149.0, "hash-1") is s  # touched at 50
    assert sessions.get(s.token, 250.0, "hash-1") is None  # idle for 101 s
    assert len(sessions) == 0
    # max_age holds however busy the session is.
    s = sessions.new(0.0, "hash-1")
    for t in range(90, 1000, 90):
        assert sessions.get(s.token, float(t), "hash-1") is s
    assert sessions.get(s.token, 1001.0, "hash-1") is None
    # A new password (or none) ends it.
    s = sessions.new(0.0, "hash-1")
    assert sessions.get(s.token, 1.0, "hash-2") is None
    s = sessions.new(0.0, "hash-1")
    assert sessions.get(s.token, 1.0, None) is None
    # Unknown and missing tokens; logout.
    s = sessions.new(0.0, "hash-1")
    assert sessions.get("nope", 1.0, "hash-1") is None and sessions.get(None, 1.0, "hash-1") is None
    assert sessions.end(s.token) and not sessions.end(s.token)
    assert sessions.get(s.token, 1.0, "hash-1") is None


def test_form_tokens_single_use_and_bounded() -> None:
    s = Sessions(idle=100.0, max_age=1000.0).new(0.0, "h")
    token = s.issue_form_token()
    assert s.has_form_token(token)
    assert s.use_form_token(token)
    assert not s.use_form_token(token)  # a replayed form
    assert not s.use_form_token(None) and not s.use_form_token("") and not s.use_form_token("forged")
    first = s.issue_form_token()
    for _ in range(MAX_FORM_TOKENS):
        s.issue_form_token()
    assert not s.use_form_token(first)  # the oldest went first
    # Another session's token is no good here.
    other = Sessions(idle=100.0, max_age=1000.0).new(0.0, "h")
    assert not s.use_form_token(other.issue_form_token())


def test_login_forms_expire_and_are_bounded() -> None:
    forms = LoginForms()
    token = forms.issue(0.0)
    assert forms.use(token, LOGIN_FORM_TTL) and not forms.use(token, 1.0)
    late = forms.issue(0.0)
    assert not forms.use(late, LOGIN_FORM_TTL + 1)
    first = forms.issue(0.0)
    for _ in range(MAX_LOGIN_FORMS):
        forms.issue(0.0)
    assert not forms.use(first, 1.0)
    assert not forms.use(None, 1.0)


def test_limiter_per_peer_total_and_window() -> None:
    limiter = LoginLimiter(window=600.0, per_peer=5, total=20)
    for i in range(5):
        assert limiter.allowed("a", float(i))
        limiter.failed("a", float(i))
    assert not limiter.allowed("a", 10.0)
    assert limiter.allowed("b", 10.0)  # per peer
    assert limiter.allowed("a", 605.0)  # the first failure has left the window
    # Many peers together hit the total.
    limiter = LoginLimiter(window=600.0, per_peer=5, total=20)
    for i in range(20):
        limiter.failed(f"peer{i}", 1.0)
    assert not limiter.allowed("fresh", 2.0)
    assert limiter.allowed("fresh", 602.0)
    # A right password clears that peer's failures only.
    limiter = LoginLimiter(window=600.0, per_peer=2, total=20)
    limiter.failed("a", 0.0)
    limiter.failed("a", 0.0)
    limiter.failed("b", 0.0)
    limiter.failed("b", 0.0)
    limiter.succeeded("a")
    assert limiter.allowed("a", 1.0) and not limiter.allowed("b", 1.0)


def test_parse_moment() -> None:
    now = 1_800_000_000.0
    assert parse_moment("1h", now) == now - 3600
    assert parse_moment("2026-11-30", now) == 1_795_996_800.0
    assert parse_moment("2026-11-30T12:00", now) == 1_795_996_800.0 + 12 * 3600
    assert parse_moment("2026-11-30 12:00:00Z", now) == 1_795_996_800.0 + 12 * 3600
    with pytest.raises(ValueError, match="expected a duration like 1h or a date"):
        parse_moment("yesterday", now)
