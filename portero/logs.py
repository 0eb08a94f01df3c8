"""Logging set-up, and the one secret redactor.

:class:`Redactor` replaces every configured secret in a text with ``***``. It is used three ways:
as a :class:`RedactFilter` on every log handler (the last line of defence: a secret that reaches a
log record never reaches the log), by ``portero check`` on what it prints, and by the Telegram bot on
the ``httpx`` loggers (the bot token is in every Bot API URL).

Which values count as secrets (:func:`secret_values`): the bearer token, the bot token, every
``[[mcp]].env`` value, and environment variables whose names look secret (they may have been
interpolated anywhere). Values shorter than :data:`MIN_SECRET_LENGTH` are left alone: they are not
credentials, and blanking ``"1"`` everywhere would make logs unreadable.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config

__all__ = ["PLACEHOLDER", "RedactFilter", "Redactor", "Throttled", "secret_values", "setup_logging"]

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
        values.append(config.telegram.bot_token)
    values += [value for name, value in env.items() if _SECRET_NAME_RE.search(name)]
    for m in config.mcp:
        values += list(m.env.values())
    return [v for v in values if v and len(v) >= MIN_SECRET_LENGTH]


def setup_logging(config: Config, env: Mapping[str, str] | None = None) -> Redactor:
    """Root logger to stderr (and ``server.log_file``), every handler redacting; returns the redactor."""
    level = getattr(logging, str(config.server.log_level).upper(), logging.INFO)
    root = logging.getLogger()
    root.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor = Redactor(secret_values(config, env or {}))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if config.server.log_file:
        # Owner-only: the log names tools, sessions and errors.
        fd = os.open(config.server.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        handlers.append(logging.FileHandler(config.server.log_file))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(RedactFilter(redactor))
        root.addHandler(h)
    root.setLevel(level)
    # Quiet chatty libraries; never let httpx log request URLs (the bot token is in them).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("hypercorn.access").setLevel(logging.WARNING)
    return redactor
