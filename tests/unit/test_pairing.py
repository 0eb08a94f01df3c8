"""Pairing: the code comparison, the rate limiter of wrong codes, and the config keys."""

from __future__ import annotations

import pytest

from portero.config import ConfigError, parse_config
from portero.logs import secret_values
from portero.telegram.pairing import (
    GLOBAL_FAILURES,
    PER_CHAT_FAILURES,
    WINDOW,
    PairingLimiter,
    code_matches,
    whoami_text,
)

TOKEN = "x" * 32
MINIMAL = f'[server]\nbearer_token = "{TOKEN}"\n[[mcp]]\nname = "one"\ncommand = "python"\n'


def test_code_matches() -> None:
    assert code_matches("correct-horse", "correct-horse")
    assert not code_matches("correct-hors", "correct-horse")
    assert not code_matches("", "")  # no code configured: nothing pairs
    assert not code_matches("ünïcode-x", "correct-horse")


def test_constants_are_the_documented_ones() -> None:
    assert (PER_CHAT_FAILURES, GLOBAL_FAILURES, WINDOW) == (5, 20, 600.0)


def test_per_chat_limit_and_window() -> None:
    limiter = PairingLimiter(per_chat=5, overall=100, window=600)
    for i in range(5):
        assert limiter.allowed(1, float(i))
        limiter.failed(1, float(i))
    assert not limiter.allowed(1, 10.0)
    assert limiter.allowed(2, 10.0)  # another chat is not held back
    assert not limiter.allowed(1, 599.0)
    assert limiter.allowed(1, 600.5)  # the first failure left the window


def test_global_limit() -> None:
    limiter = PairingLimiter(per_chat=5, overall=6, window=600)
    for chat in range(3):
        limiter.failed(chat, 1.0)
        limiter.failed(chat, 2.0)
    assert not limiter.allowed(99, 3.0)  # a fresh chat is held back too
    assert limiter.allowed(99, 602.0)


def test_memory_is_bounded() -> None:
    limiter = PairingLimiter(per_chat=2, overall=3, window=600, max_chats=4)
    for chat in range(100):
        for _ in range(5):
            limiter.failed(chat, 1.0)
    assert len(limiter._chats) == 4
    assert all(len(t) <= 2 for t in limiter._chats.values())
    assert len(limiter._all) <= 3


def test_whoami_text_is_the_chat_id_only() -> None:
    assert whoami_text(-100123) == "Your chat id: -100123"


# ------------------------------------------------------------------------------- config keys


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="portero.toml", env={})
    return info.value.problems


def test_pairing_code_instead_of_admin_chat_id() -> None:
    config = parse_config(
        MINIMAL + '[telegram]\nbot_token = "t"\npairing_code = "s3cret-code"\n', path="p", env={}
    )
    assert config.telegram is not None
    assert config.telegram.admin_chat_id is None
    assert config.telegram.pairing_code == "s3cret-code"
    assert "s3cret-code" not in repr(config.telegram)
    assert "s3cret-code" in secret_values(config, {})  # redacted in logs


def test_one_of_admin_chat_id_and_pairing_code() -> None:
    assert problems_of(MINIMAL + '[telegram]\nbot_token = "t"\n') == [
        "portero.toml: telegram.admin_chat_id: missing required key "
        "(or set pairing_code, and send /pair <code> to the bot)"
    ]


def test_pairing_code_is_a_secret_of_eight_characters_or_more() -> None:
    assert problems_of(MINIMAL + '[telegram]\nbot_token = "t"\npairing_code = "1234567"\n') == [
        "portero.toml: telegram.pairing_code: must be at least 8 characters (a secret)"
    ]
