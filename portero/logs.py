"""Logging set-up, and the one secret redactor.

:class:`Redactor` replaces every configured secret in a text with ``***``. It is used three ways:
as a :class:`RedactFilter` on every log handler (the last line of defence: a secret that reaches a
log record never reaches the log), by ``portero check`` on what it prints, and by the Telegram bot on
the ``httpx`` loggers (the bot token is in every Bot API URL).

Which values count as secrets (:func:`secret_values`): the bearer token, the bot token, the
Telegram pairing code, every ``[[mcp]].env`` value, a remote server's ``token``, ``client_secret``
and ``headers`` values, and
environment variables whose names look secret (they may have been interpolated anywhere). Values
shorter than :data:`MIN_SECRET_LENGTH` are left alone: they are not credentials, and blanking ``"1"``
everywhere would make logs unreadable.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .config import Config

__all__ = [
    "PLACEHOLDER",
    "JsonFormatter",
    "RedactFilter",
    "Redactor",
    "Throttled",
    "secret_values",
    "setup_logging",
]

PLACEHOLDER = "***"
MIN_SECRET_LENGTH = 4
_SECRET_NAME_RE = re.compile(r"TOKEN|SECRET|PASSW|PASS$|KEY|CREDENTIAL|AUTH|COOKIE|SESSION", re.IGNORECASE)


class Redactor:
    """Replaces each of a fixed set of secret strings with ``***``; the longest first, so a secret
    that contains another is removed whole."""

    def __init__(
        self, secrets: Iterable[str], min_length: int = MIN_SECRET_LENGTH, placeholder: str = PLACEHOLDER
    ) -> None:
        self.placeholder = placeholder
        self.secrets: tuple[str, ...] = tuple(
            sorted({s for s in secrets if s and len(s) >= min_length}, key=len, reverse=True)
        )

        # Applied after the secrets: the gateway sets it to the anonymizer's real → fake, so no
        # log line shows a real value either.
        self.also: Callable[[str], str] | None = None

    def __bool__(self) -> bool:
        return bool(self.secrets) or self.also is not None

    def __call__(self, text: str) -> str:
        text = self.secrets_only(text)
        return text if self.also is None else self.also(text)

    def secrets_only(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, self.placeholder)
        return text


class RedactFilter(logging.Filter):
    """Redacts a record's message and its formatted traceback in place (never drops a record)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        msg = record.getMessage()
        clean = self.redactor(msg)
        if clean != msg:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters print a precomputed exc_text as it is.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True


class Throttled:
    """Logs one kind of event at most once per ``period`` seconds, saying how many were held back:
    refused requests must be visible without letting a flood of them fill the disk."""

    def __init__(
        self, logger: logging.Logger, period: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.period = period
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: object) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        self._last[key] = now
        if held:
            msg += f" (and {held} more like it in the last {now - last:.0f}s)" if last is not None else ""
        self.logger.log(level, msg, *args)


def secret_values(config: Config, env: Mapping[str, str]) -> list[str]:
    """Every value that must never be shown: see the module docstring."""
    values = [config.server.bearer_token, config.server.metrics_token]
    if config.telegram is not None:
        values += [config.telegram.bot_token, config.telegram.pairing_code]
    values += [value for name, value in env.items() if _SECRET_NAME_RE.search(name)]
    for m in config.mcp:
        values += list(m.env.values())
        # A remote server's credentials: its token, OAuth client secret and configured headers.
        values += [m.token, m.client_secret, *m.headers.values()]
    return [v for v in values if v and len(v) >= MIN_SECRET_LENGTH]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and
    ``exc`` (the formatted traceback) when there is one. The handler's :class:`RedactFilter` has
    already cleaned the message and ``exc_text`` by the time this runs."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, str] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Under systemd the journal stamps every line itself: a second timestamp only takes room.
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _formatter(log_format: str, *, journal: bool) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(JOURNAL_FORMAT if journal else TEXT_FORMAT)


def setup_logging(
    config: Config, env: Mapping[str, str] | None = None, *, stream: TextIO | None = None
) -> Redactor:
    """Root logger to stderr (or ``stream``) and ``server.log_file``, every handler redacting;
    returns the redactor.

    ``server.log_format`` picks text or JSON lines. With ``JOURNAL_STREAM`` in ``env`` (systemd
    connected stderr to the journal) the text lines on stderr carry no timestamp of their own; the
    log file keeps its timestamps.
    """
    env = env or {}
    level = getattr(logging, str(config.server.log_level).upper(), logging.INFO)
    log_format = config.server.log_format.lower()
    root = logging.getLogger()
    root.handlers.clear()
    redactor = Redactor(secret_values(config, env))
    console = logging.StreamHandler(sys.stderr if stream is None else stream)
    console.setFormatter(_formatter(log_format, journal=bool(env.get("JOURNAL_STREAM"))))
    handlers: list[logging.Handler] = [console]
    if config.server.log_file:
        # Owner-only: the log names tools, sessions and errors.
        fd = os.open(config.server.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        file_handler = logging.FileHandler(config.server.log_file)
        file_handler.setFormatter(_formatter(log_format, journal=False))
        handlers.append(file_handler)
    for h in handlers:
        h.addFilter(RedactFilter(redactor))
        root.addHandler(h)
    root.setLevel(level)
    # Quiet chatty libraries; never let httpx log request URLs (the bot token is in them).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    return redactor
