"""The raw Telegram Bot API over httpx: one call is one POST to ``{api_base}/bot{token}/{method}``.

Every failure is classified into one error tree (all :class:`TelegramError`; their messages never contain
the bot token)::

    TelegramError
    ├── TelegramUnavailable     the bot is not running (not started yet, or stopped)
    ├── TelegramFatal           the bot stops (logged), the gateway keeps serving: api_base is not a URL
    │   └── TelegramUnauthorized    401/404: the token is wrong
    ├── TelegramConflict        409: a webhook is set or another instance polls; back off, report in /status
    ├── TelegramRetryAfter      429: wait ``retry_after`` seconds
    ├── TelegramTransient       5xx, network errors, garbage answers: exponential back-off with jitter
    └── TelegramBadRequest      other 4xx: our request is wrong; not retried

The token is in every URL, and httpx puts URLs in exception messages and in its INFO log lines; so every
exception is re-raised without its cause and with the token removed, and while a :meth:`BotAPI.session`
is open a filter on the ``portero.telegram``, ``httpx`` and ``httpcore`` loggers redacts it from their
records.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from .. import metrics
from ..logs import RedactFilter, Redactor

# The error tree, which the package re-exports; BotAPI is for the bot.
__all__ = [
    "TelegramBadRequest",
    "TelegramConflict",
    "TelegramError",
    "TelegramFatal",
    "TelegramRetryAfter",
    "TelegramTransient",
    "TelegramUnauthorized",
    "TelegramUnavailable",
]

log = logging.getLogger("portero.telegram")

_REDACTED = "<bot-token>"

# An upload: {form field: (file name, content, media type)}.
Files = dict[str, tuple[str, bytes, str]]
DEFAULT_API_BASE = "https://api.telegram.org"


class TelegramError(Exception):
    """Base of the Telegram errors; ``str()`` never contains the bot token."""


class TelegramUnavailable(TelegramError):
    pass


class TelegramFatal(TelegramError):
    pass


class TelegramUnauthorized(TelegramFatal):
    pass


class TelegramConflict(TelegramError):
    pass


class TelegramRetryAfter(TelegramError):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TelegramTransient(TelegramError):
    pass


class TelegramBadRequest(TelegramError):
    pass


class _Backoff:
    """Exponential back-off with jitter: base, 2·base, 4·base … capped, each scaled by U(0.5, 1)."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


class BotAPI:
    """A Bot API client for one token. ``http`` is an ``httpx.AsyncClient`` to use; without one,
    :meth:`session` makes its own and closes it at the end (a client passed in is never closed)."""

    def __init__(self, token: str, api_base: str, http: httpx.AsyncClient | None = None) -> None:
        self._token = token
        self.api_base = api_base
        self.redact = Redactor([token], min_length=1, placeholder=_REDACTED)
        self._http = http

    def __repr__(self) -> str:
        return f"<BotAPI {self.api_base}>"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """While open: the token is redacted from the Telegram and httpx log records, and there is an HTTP
        client to call with (closed, if it is our own, when the session ends)."""
        redact = RedactFilter(self.redact)
        loggers = [log, logging.getLogger("httpx"), logging.getLogger("httpcore")]
        for lg in loggers:
            lg.addFilter(redact)
        own_client = self._http is None
        if self._http is None:
            self._http = httpx.AsyncClient()
        try:
            yield
        finally:
            if own_client:
                with trio.CancelScope(shield=True):
                    await self._http.aclose()
                self._http = None
            for lg in loggers:
                lg.removeFilter(redact)

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        files: Files | None = None,
        http_timeout: float = 30.0,
    ) -> Any:
        """One Bot API call; returns ``result`` or raises a :class:`TelegramError` (token-free).

        ``files`` (``{field: (file name, content, media type)}``, e.g. ``sendDocument``'s ``document``) makes
        it a ``multipart/form-data`` upload; the parameters then go as form fields (non-strings as JSON).
        """
        assert self._http is not None
        url = f"{self.api_base}/bot{self._token}/{method}"
        try:
            if files:
                fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (params or {}).items()}
                resp = await self._http.post(url, data=fields, files=files, timeout=http_timeout)
            else:
                resp = await self._http.post(url, json=params or {}, timeout=http_timeout)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            raise _counted(
                TelegramFatal(f"the [telegram] api_base {self.api_base!r} does not make a usable http(s) URL")
            ) from None
        except httpx.HTTPError as e:
            raise _counted(TelegramTransient(self.redact(f"{method}: {type(e).__name__}: {e}"))) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _counted(TelegramTransient(f"{method}: HTTP {resp.status_code} with a non-JSON answer"))
        if body.get("ok") is True and resp.status_code == 200:
            return body.get("result")
        raise _counted(_classify(method, resp.status_code, body, self.redact))


def _counted(exc: TelegramError) -> TelegramError:
    """``exc``, counted in portero_telegram_api_errors_total by its kind (``retry_after``, ``transient``)."""
    name = type(exc).__name__.removeprefix("Telegram")
    metrics.telegram_api_error("".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_"))
    return exc


def _classify(method: str, status_code: int, body: dict[str, Any], redact: Redactor) -> TelegramError:
    """The error for a Bot API answer that is not ``ok``."""
    code = int(body.get("error_code") or status_code)
    desc = redact(str(body.get("description") or f"HTTP {status_code}"))
    message = f"{method}: {code} {desc}"
    if code in (401, 404):
        return TelegramUnauthorized(f"the Bot API rejected the bot token ({message})")
    if code == 409:
        return TelegramConflict(message)
    if code == 429:
        params_ = body.get("parameters") or {}
        retry_after = params_.get("retry_after") if isinstance(params_, dict) else None
        return_after = float(retry_after) if isinstance(retry_after, int | float) else 1.0
        return TelegramRetryAfter(message, max(0.0, return_after))
    if code >= 500 or code < 400:
        return TelegramTransient(message)
    return TelegramBadRequest(message)
