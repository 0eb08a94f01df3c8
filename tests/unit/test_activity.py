"""The activity feed: classification, aggregation and rendering (pure), the config keys, and the feed
loop on Trio's virtual clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from portero.config import ConfigError, parse_config
from portero.telegram.activity import OTHER_TOOLS, ActivityFeed, classify, line_text, summary_text
from portero.telegram.bot import feed_loop

TOKEN = "x" * 32
MINIMAL = f'[server]\nbearer_token = "{TOKEN}"\n[[mcp]]\nname = "one"\ncommand = "python"\n'


def ok(feed: ActivityFeed, tool: str, n: int = 1) -> None:
    for _ in range(n):
        feed.record(tool, "allow", "rule", "ok")


# ------------------------------------------------------------------------------------ classify


@pytest.mark.parametrize(
    ("decision", "source", "outcome", "expected"),
    [
        ("allow", "default", "ok", ("call", False)),
        ("allow", "rule", "error", ("call", False)),
        ("deny", "rule", "refused", ("denied", False)),
        ("deny", "invalid", "refused", ("denied", False)),
        ("approved", "admin", "ok", ("call", True)),
        ("rejected", "admin", "refused", ("denied", True)),
        ("expired", "timeout", "refused", ("refused", True)),
        ("rejected", "unreachable", "refused", ("refused", False)),
        ("rejected", "no-approver", "refused", ("refused", False)),
        ("allow", "default", "refused", ("refused", False)),  # no audit: refused before it ran
    ],
)
def test_classify(decision: str, source: str, outcome: str, expected: tuple[str, bool]) -> None:
    assert classify(decision, source, outcome) == expected


# ------------------------------------------------------------------------------------- render


def test_summary_text_orders_by_count_and_marks_denied_and_refused() -> None:
    counts = {
        "call": {"filesystem/read_text_file": 3, "github/list_issues": 9},
        "denied": {"github/delete_repo": 1},
        "refused": {"x/slow": 2},
    }
    assert summary_text(counts) == (
        "12 calls: github/list_issues ×9, filesystem/read_text_file ×3; "
        "denied: github/delete_repo ×1; refused: x/slow ×2"
    )
    assert summary_text({"call": {"a/b": 1}}, asked=1) == "1 call: a/b ×1 (1 asked for approval)"
    assert summary_text({"refused": {"a/b": 1}}) == "refused: a/b ×1"
    assert summary_text({}) == ""


def test_summary_text_names_at_most_fifteen_tools() -> None:
    counts = {"call": {f"s/t{i:02}": 1 for i in range(20)}}
    text = summary_text(counts)
    assert text.startswith("20 calls: s/t00 ×1,")
    assert "s/t14 ×1" in text and "s/t15" not in text
    assert text.endswith("… 5 more ×5")


def test_line_text() -> None:
    assert line_text("a/b", "call") == "a/b"
    assert line_text("a/b", "denied") == "a/b: denied"
    assert line_text("a/b", "refused") == "a/b: refused"


# --------------------------------------------------------------------------------------- feed


def test_off_keeps_nothing() -> None:
    feed = ActivityFeed("off")
    assert feed.record("a/b", "allow", "rule", "ok") is False
    assert len(feed) == 0 and feed.take() == []


def test_batched_one_summary_then_nothing() -> None:
    feed = ActivityFeed("batched")
    ok(feed, "github/list_issues", 9)
    ok(feed, "filesystem/read_text_file", 3)
    assert feed.record("github/delete_repo", "expired", "timeout", "refused") is True
    assert len(feed) == 13
    assert feed.take() == [
        "12 calls: github/list_issues ×9, filesystem/read_text_file ×3; refused: github/delete_repo ×1 "
        "(1 asked for approval)"
    ]
    assert feed.take() == [] and len(feed) == 0


def test_batched_bounds_distinct_tools() -> None:
    feed = ActivityFeed("batched", max_tools=3)
    for i in range(10):
        ok(feed, f"s/t{i}")
    (text,) = feed.take()
    assert text.startswith("10 calls: ")
    assert f"{OTHER_TOOLS} ×7" in text


def test_all_lines_and_approval_calls_not_duplicated() -> None:
    feed = ActivityFeed("all")
    ok(feed, "a/one")
    feed.record("a/two", "deny", "rule", "refused")
    feed.record("a/asked", "approved", "admin", "ok")  # its approval message already tells it
    assert feed.take() == ["a/one", "a/two: denied"]
    assert feed.take() == [] and len(feed) == 0


def test_all_folds_into_a_summary_past_max_lines() -> None:
    feed = ActivityFeed("all", max_lines=3)
    ok(feed, "a/one", 5)
    feed.record("a/asked", "rejected", "admin", "refused")
    assert len(feed) == 6
    assert feed.take() == ["5 calls: a/one ×5; denied: a/asked ×1 (1 asked for approval)"]
    ok(feed, "a/one", 2)
    assert feed.take() == ["a/one", "a/one"]  # lines again once the backlog is told


# ------------------------------------------------------------------------------- config keys


def test_activity_config_keys() -> None:
    text = (
        MINIMAL
        + '[telegram]\nbot_token = "t"\nadmin_chat_id = 1\nactivity = "batched"\nactivity_interval = "5s"\n'
    )
    config = parse_config(text, path="portero.toml", env={})
    assert config.telegram is not None
    assert (config.telegram.activity, config.telegram.activity_interval) == ("batched", 5.0)
    default = parse_config(MINIMAL + '[telegram]\nbot_token = "t"\nadmin_chat_id = 1\n', path="p", env={})
    assert default.telegram is not None
    assert (default.telegram.activity, default.telegram.activity_interval) == ("off", 60.0)
    bad = (
        MINIMAL
        + '[telegram]\nbot_token = "t"\nadmin_chat_id = 1\nactivity = "batch"\nactivity_interval = 0\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(bad, path="portero.toml", env={})
    assert sorted(info.value.problems) == [
        'portero.toml: telegram.activity: expected one of off, batched, all, got "batch" '
        '(did you mean "batched"?)',
        "portero.toml: telegram.activity_interval: a duration must be positive and finite, got 0 (int)",
    ]


# -------------------------------------------------------------------------- the feed loop


async def test_batched_loop_sends_one_summary_per_interval(autojump_clock: trio.testing.MockClock) -> None:
    feed = ActivityFeed("batched")
    sent: list[tuple[float, str]] = []

    async def send(text: str) -> None:
        sent.append((trio.current_time(), text))
        await trio.sleep(1)  # the outbound queue's pace

    async def never() -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: feed_loop(feed, send, interval=lambda: 60.0, woken=never))
        await trio.sleep(1)
        ok(feed, "github/list_issues", 50)
        await trio.sleep(130)  # two intervals; the second had no activity
        ok(feed, "a/b")
        await trio.sleep(70)
        nursery.cancel_scope.cancel()
    # An interval counts from the end of the last send: 60, then 61 + 60 (nothing), then 121 + 60.
    assert sent == [(60.0, "50 calls: github/list_issues ×50"), (181.0, "1 call: a/b ×1")]


async def test_all_loop_sends_lines_then_folds_a_backlog(autojump_clock: trio.testing.MockClock) -> None:
    feed = ActivityFeed("all", max_lines=3)
    wake = trio.Event()
    sent: list[str] = []

    async def woken() -> None:
        nonlocal wake
        await wake.wait()
        wake = trio.Event()

    async def send(text: str) -> None:
        sent.append(text)
        await trio.sleep(1)

    def record(tool: str) -> None:
        if feed.record(tool, "allow", "rule", "ok"):
            wake.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: feed_loop(feed, send, interval=lambda: 60.0, woken=woken))
        await trio.sleep(1)
        record("a/first")
        await trio.sleep(0.5)  # "a/first" is being sent: 10 more arrive meanwhile
        for _ in range(10):
            record("a/burst")
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert sent == ["a/first", "10 calls: a/burst ×10"]
