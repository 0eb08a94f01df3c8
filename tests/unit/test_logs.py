"""portero.logs: the one redactor, the redacting filter, throttled refusal lines."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from portero.config import Config, ConfigError, parse_config
from portero.logs import JsonFormatter, RedactFilter, Redactor, Throttled, secret_values, setup_logging

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


def test_secret_values_cover_a_remote_servers_credentials() -> None:
    # Written literally (or from a variable whose name does not look secret), they are still secrets.
    toml = TOML + (
        '[[mcp]]\nname = "remote"\nurl = "https://mcp.example.com/mcp"\nauth = "bearer"\n'
        'token = "literal-remote-token-1"\nheaders = { "X-Api-Key" = "literal-api-key-22" }\n'
        '[[mcp]]\nname = "linear"\nurl = "https://mcp.example.com/2"\nauth = "oauth"\n'
        'client_id = "portero"\nclient_secret = "literal-client-secret-3"\n'
    )
    values = secret_values(parse_config(toml, path="/tmp/p.toml", env={}), {})
    assert {"literal-remote-token-1", "literal-api-key-22", "literal-client-secret-3"} <= set(values)


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


# ------------------------------------------------------------------------------ setup_logging formats


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in root.handlers:
        h.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def _serve_config(extra: str = "") -> Config:
    return parse_config(TOML.replace("[telegram]", extra + "\n[telegram]", 1), path="/tmp/p.toml", env={})


@pytest.mark.usefixtures("restore_root_logger")
def test_text_lines_have_a_timestamp_outside_systemd() -> None:
    out = io.StringIO()
    setup_logging(_serve_config(), {}, stream=out)
    logging.getLogger("portero.t").info("hello %s", "there")
    line = out.getvalue().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO portero\.t: hello there", line), line


@pytest.mark.usefixtures("restore_root_logger")
def test_under_systemd_the_journal_adds_the_timestamp(tmp_path: Path) -> None:
    out = io.StringIO()
    log_file = tmp_path / "portero.log"
    config = _serve_config(f'log_file = "{log_file}"')
    setup_logging(config, {"JOURNAL_STREAM": "8:12345"}, stream=out)
    logging.getLogger("portero.t").warning("careful")
    assert out.getvalue() == "WARNING portero.t: careful\n"
    # The file has no journal to stamp it: it keeps its timestamps.
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING portero\.t: careful", log_file.read_text())


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_are_one_object_each_and_redacted() -> None:
    out = io.StringIO()
    setup_logging(_serve_config('log_format = "json"'), {"JOURNAL_STREAM": "8:1"}, stream=out)
    log = logging.getLogger("portero.t")
    log.info("token %s in a line", "bearer-secret-0123456789")
    try:
        raise RuntimeError("boom with ghp_realtoken123")
    except RuntimeError:
        log.exception("it failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "portero.t"
    assert first["message"] == "token *** in a line"
    assert datetime.datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert second["level"] == "ERROR" and second["message"] == "it failed"
    assert "RuntimeError: boom with ***" in second["exc"] and "ghp_realtoken123" not in lines[1]


def test_json_formatter_alone() -> None:
    record = logging.LogRecord("x.y", logging.WARNING, __file__, 1, 'a %d "quoted"\nline', (1,), None)
    obj = json.loads(JsonFormatter().format(record))
    assert obj["message"] == 'a 1 "quoted"\nline' and obj["level"] == "WARNING" and obj["logger"] == "x.y"
    assert "exc" not in obj


@pytest.mark.parametrize("value", ["yaml", "", "JSONL"])
def test_log_format_is_validated(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _serve_config(f'log_format = "{value}"')
    assert "server.log_format: expected one of text, json" in str(info.value)


def test_log_format_defaults_to_text_and_ignores_case() -> None:
    assert _serve_config().server.log_format == "text"
    assert _serve_config('log_format = "JSON"').server.log_format == "json"
