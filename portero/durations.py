"""Durations, one way: ``"45s"``, ``"30m"``, ``"2h30m"``, ``"1d"``, ``"90"`` (seconds) and back.

Used by the config (``call_timeout = "2m"``), the Telegram commands (``/grant github/* 1h``), the
CLI (``audit --since 1h``) and every message that shows a time span. Pure: no clock, no I/O.

Units come in the order d, h, m, s, each at most once; whitespace between parts is allowed
(``"1h 30m"``, ``"1 h"``), case does not matter. A duration is always positive: zero, negative, a
fraction with a unit (``"1.5h"``), a boolean or NaN is refused with a :class:`ValueError` whose
message can be shown to a person as it is.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_EXAMPLES = '"45s", "30m" or "2h30m"'


def _describe(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    return f"{value!r} ({type(value).__name__})"


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: a positive number, or a string such as ``"1h30m"`` or ``"90"``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration like {_EXAMPLES}, got {_describe(value)}")
    if isinstance(value, str):
        text = re.sub(r"\s+", "", value).lower()
        if text.isdigit():
            seconds = float(text)
        else:
            match = _DURATION_RE.fullmatch(text)
            if not text or match is None:
                raise ValueError(f"expected a duration like {_EXAMPLES}, got {_describe(value)}")
            days, hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
            seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    else:
        seconds = float(value)
    if not seconds > 0 or math.isinf(seconds):  # also refuses NaN
        raise ValueError(f"a duration must be positive and finite, got {_describe(value)}")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` → ``"1h30m"``, ``90061`` → ``"1d1h1m1s"``, ``0`` or less → ``"0s"``.

    Whole seconds (rounded), every unit shown: the exact inverse of :func:`parse_duration`.
    """
    if not math.isfinite(seconds):
        return "0s"
    total = int(round(seconds))
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
