"""portero.durations: the one parser and formatter of durations (config, Telegram, CLI, messages)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portero.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("2h30m", 9000),
        ("1h5m10s", 3910),
        ("1d", 86400),
        ("90", 90),
        (" 2M ", 120),
        ("1H", 3600),
        (" 1h 30m ", 5400),
        ("1 h", 3600),  # the config and /grant agree on spaces now
        (120, 120),
        (1.5, 1.5),
    ],
)
def test_parse(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "1x", "30x", "m30", "1h30", "5m1h", "-5s", "-5m", "1.5h", "h", "0", "0s", "0m", 0, -3, True,
     math.nan, math.inf, None, [1]],
)  # fmt: skip
def test_parse_refuses(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-3, "0s"), (45, "45s"), (120, "2m"), (1800, "30m"), (5400, "1h30m"), (5401, "1h30m1s"),
     (9000.4, "2h30m"), (90061, "1d1h1m1s"), (math.nan, "0s")],
)  # fmt: skip
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=1, max_value=10**9))
def test_format_then_parse_is_identity(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
