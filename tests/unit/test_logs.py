"""portero.logs: the one redactor, the redacting filter, throttled refusal lines."""

from __future__ import annotations

import logging

import pytest

from portero.config import parse_config
from portero.logs import RedactFilter, Redactor, Throttled, secret_values

TOML = """
[server]
bearer_token = "bearer-secret-0123456789"
[telegram]
bot_token = "123456:bot-secret-token"
admin_chat_id = 1
[[mcp]]
name = "gh"
command = "true"
env = { GITHUB_TOKEN = "ghp_realtoken123", LEVEL = "1" }
"""


def test_secret_values_cover_config_and_secret_looking_environment() -> None:
    config = parse_config(TOML, path="/tmp/p.toml", env={})
    values = secret_values(config, {"MY_API_KEY": "key-from-env", "HOME": "/root"})
    assert {"bearer-secret-0123456789", "123456:bot-secret-token", "ghp_realtoken123", "key-from-env"} <= set(
        values
    )
    assert "/root" not in values and "1" not in values  # not secrets; too short to matter


def test_redactor_removes_the_longest_secret_first() -> None:
    r = Redactor(["abcd", "abcdefgh"])
    assert r("x abcdefgh y abcd") == "x *** y ***"
    assert Redactor(["abc"])("abc") == "abc"  # below the minimum length: not a credential


def test_the_filter_redacts_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("portero.test-logs")
    f = RedactFilter(Redactor(["s3cr3t-value"]))
    logger.addFilter(f)
    try:
        with caplog.at_level(logging.INFO, logger="portero.test-logs"):
            logger.info("token=%s", "s3cr3t-value")
            try:
                raise ValueError("bad s3cr3t-value")
            except ValueError:
                logger.exception("failed")
    finally:
        logger.removeFilter(f)
    text = caplog.text
    assert "s3cr3t-value" not in text
    assert "token=***" in text and "bad ***" in text


def test_throttled_logs_once_per_period_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    t = Throttled(logging.getLogger("portero.test-throttle"), period=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="portero.test-throttle"):
        for _ in range(1000):
            t(logging.WARNING, "token", "refused")
        t(logging.WARNING, "host", "refused host")  # another kind is not held back
        now[0] = 11.0
        t(logging.WARNING, "token", "refused")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["refused", "refused host", "refused (and 999 more like it in the last 11s)"]
