"""Pure tests of Telegram rendering and command parsing (no trio, no HTTP)."""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace

import pytest

from portero.telegram import render as r

NOW = 1_700_000_000.0


def approval(**kw: object) -> SimpleNamespace:
    base: dict[str, object] = dict(
        id="Zx9_kQ-3vA1b2C3d4E5f6g",
        tool="github/create_issue",
        server="github",
        rule="rule:github/*",
        arguments_real={"title": "Bug", "body": "it broke"},
        arguments_fake={"title": "Bug", "body": "it broke"},
        session="s1",
        created_at=NOW,
        expires_at=NOW + 120,
        state="pending",
        source="",
    )
    base.update(kw)
    return SimpleNamespace(**base)


_TAG = re.compile(r"</?(b|code|pre)>")


def visible(text: str) -> str:
    """What Telegram shows: our three tags stripped, then entities decoded; fails on any other markup."""
    stripped = _TAG.sub("", text)
    assert "<" not in stripped and ">" not in stripped, stripped
    for m in re.finditer(r"&", stripped):
        assert re.match(r"&(lt|gt|amp|quot|#x27);", stripped[m.start() :]), stripped[
            m.start() : m.start() + 10
        ]
    return html.unescape(stripped)


# ------------------------------------------------------------------------------------ escaping


def test_approval_text_has_tool_server_rule_args_and_time_left() -> None:
    text = r.approval_text(approval(), now=NOW + 30)
    shown = visible(text)
    assert "github/create_issue" in shown
    assert "Server: github" in shown
    assert "rule:github/*" in shown
    assert json.dumps({"title": "Bug", "body": "it broke"}, indent=2) in shown
    assert "1m30s left" in shown


def test_hostile_values_are_escaped() -> None:
    nasty = "<b>x</b> & <script>alert(1)</script> &amp; 🦀 \"quoted\" 'single'"
    a = approval(tool=f"srv/{nasty}", rule=nasty, arguments_real={nasty: nasty})
    for text in (r.approval_text(a, now=NOW), r.settled_text(a, state="rejected", source="admin")):
        shown = visible(text)
        assert f"srv/{nasty}" in shown
        assert nasty in shown
    assert "<script>" not in r.approval_text(a, now=NOW)


def test_non_json_arguments_do_not_crash() -> None:
    a = approval(arguments_real={"when": object(), "set": {1, 2}})
    assert "Arguments" in visible(r.approval_text(a, now=NOW))


# ---------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("filler", ["x", "🦀", "<&>", "é"])
def test_huge_arguments_are_truncated_under_the_limit(filler: str) -> None:
    a = approval(arguments_real={"blob": filler * 20000}, tool="t/" + filler * 1000, rule=filler * 1000)
    settled = r.settled_text(a, state="expired", source="timeout", note="n" * 999)
    for text in (r.approval_text(a, now=NOW), settled):
        shown = visible(text)
        assert r.utf16_len(shown) <= r.TEXT_BUDGET < r.TEXT_LIMIT
        assert "… (truncated)" in shown


def test_truncation_never_splits_a_surrogate_pair() -> None:
    a = approval(arguments_real={"e": "🦀" * 5000})
    shown = visible(r.approval_text(a, now=NOW))
    shown.encode("utf-8")  # a lone surrogate would raise here
    assert "\ufffd" not in shown


def test_small_arguments_are_not_truncated() -> None:
    assert "truncated" not in r.approval_text(approval(), now=NOW)


def test_utf16_len_counts_like_telegram() -> None:
    assert r.utf16_len("abc") == 3
    assert r.utf16_len("🦀") == 2
    assert r.utf16_len("é") == 1


def test_logs_and_status_stay_under_the_limit() -> None:
    records = [
        {
            "ts": "2025-01-02T03:04:05Z",
            "tool": "x/" + "y" * 300,
            "decision": "allow",
            "source": "default",
            "outcome": "ok",
            "duration_ms": 12.5,
        }
    ] * 50
    shown = visible(r.logs_text(records))
    assert r.utf16_len(shown) <= r.TEXT_BUDGET
    assert "more" in shown
    children = [{"name": f"c{i}<&>", "state": "ready", "tools": 3, "restarts": 0} for i in range(500)]
    st = r.status_text(
        {"children": children, "uptime_s": 3700}, pending=[], grants=[], telegram_state="polling", now=NOW
    )
    shown = visible(st)
    assert r.utf16_len(shown) <= r.TEXT_BUDGET
    assert "c0<&>" in shown and "Uptime: 1h1m" in shown


def test_logs_render_iso_and_epoch_timestamps() -> None:
    shown = visible(
        r.logs_text(
            [
                {
                    "ts": "2025-01-02T03:04:05+00:00",
                    "tool": "a/b",
                    "decision": "approved",
                    "source": "admin",
                    "outcome": "ok",
                    "duration_ms": 7,
                },
                {"ts": 0, "tool": "a/c", "decision": "deny", "source": "rule:a/*", "outcome": "refused"},
            ]
        )
    )
    assert "01-02 03:04:05 a/b approved (admin) ok 7ms" in shown
    assert "01-01 00:00:00 a/c deny (rule:a/*) refused" in shown
    assert r.logs_text([]) == "No audit records yet."


def test_status_lists_children_pending_and_grants() -> None:
    pend = [approval()]
    grants = [SimpleNamespace(pattern="github/*", expires_at=NOW + 1800, created_at=NOW, id="g1")]
    st = visible(
        r.status_text(
            {
                "children": [{"name": "github", "state": "ready", "tools": 12, "restarts": 2}],
                "uptime_s": 59,
                "pending": 1,
            },
            pending=pend,
            grants=grants,
            telegram_state="polling",
            now=NOW,
        )
    )
    assert "github ready, 12 tools, 2 restarts" in st
    assert "github/create_issue (rule:github/*), 2m left" in st
    assert "github/*, 30m left" in st
    assert "Telegram: polling" in st and "Uptime: 59s" in st


# ------------------------------------------------------------------------------------- buttons


def test_keyboard_callback_data_fits_64_bytes() -> None:
    kb = r.approval_keyboard("Zx9_kQ-3vA1b2C3d4E5f6g")
    buttons = [b for row in kb["inline_keyboard"] for b in row]
    assert [b["callback_data"][:2] for b in buttons] == ["a:", "d:", "g:"]
    assert [b["text"] for b in buttons] == ["✅ Approve", "❌ Deny", "✅ Approve 30m"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in buttons)


def test_callback_data_too_long_is_refused() -> None:
    r.callback_data("a", "x" * 62)
    with pytest.raises(ValueError, match="64"):
        r.callback_data("a", "x" * 63)
    with pytest.raises(ValueError):
        r.callback_data("z", "id")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a:abc", ("approve", "abc")),
        ("d:abc", ("deny", "abc")),
        ("g:abc", ("grant", "abc")),
        ("x:abc", None),
        ("a:", None),
        ("abc", None),
        ("", None),
        (None, None),
        ("a:" + "x" * 70, None),
    ],
)
def test_parse_callback(data: str | None, expected: object) -> None:
    assert r.parse_callback(data) == expected


def test_callback_answers() -> None:
    assert r.callback_answer("already", "approve") == "Already decided"
    assert r.callback_answer("unknown", "deny") == "Unknown or expired request"
    assert r.callback_answer("ok", "grant") == "Approved; allowed for 30m"


@pytest.mark.parametrize(
    ("state", "source", "label"),
    [
        ("approved", "admin", "Approved"),
        ("rejected", "admin", "Denied"),
        ("expired", "timeout", "Timed out"),
        ("rejected", "shutdown", "shut down"),
        ("expired", "cancelled", "Withdrawn"),
        ("expired", "", "Timed out"),
        ("rejected", "<weird&>", "&lt;weird&amp;&gt;"),
    ],
)
def test_outcome_labels(state: str, source: str, label: str) -> None:
    assert label in r.outcome_label(state, source)


# ------------------------------------------------------------------------- durations, patterns


@pytest.mark.parametrize(
    "pattern", ["github/create_issue", "github/*", "*/delete_*", "*", "my-srv/tool.v2", "a/<b>"]
)
def test_valid_patterns(pattern: str) -> None:
    assert r.validate_pattern(pattern) == pattern


@pytest.mark.parametrize(
    "pattern", ["", "github", "github/", "/x", "git hub/x", "a/b\x00", "30m", "a/" + "x" * 300]
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError):
        r.validate_pattern(pattern)


# ---------------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/status", ("status", [])),
        ("/STATUS", ("status", [])),
        ("/grant github/* 2h", ("grant", ["github/*", "2h"])),
        ("/grant@portero_bot github/* 2h", ("grant", ["github/*", "2h"])),
        ("/logs@Portero_Bot 5", ("logs", ["5"])),
        ("/logs@other_bot 5", None),
        ("hello", None),
        ("/", None),
        ("/st-atus", None),
    ],
)
def test_parse_command(text: str, expected: object) -> None:
    assert r.parse_command(text, "portero_bot") == expected


def test_command_for_a_bot_when_our_name_is_unknown_is_ignored() -> None:
    assert r.parse_command("/status@portero_bot", None) is None


def test_logs_count() -> None:
    assert r.parse_logs_count([]) == 10
    assert r.parse_logs_count(["3"]) == 3
    assert r.parse_logs_count(["500"]) == 50
    assert r.parse_logs_count(["0"]) == 1
    with pytest.raises(ValueError):
        r.parse_logs_count(["many"])


def test_help_lists_every_command() -> None:
    text = r.help_text()
    for name, _ in r.COMMANDS:
        assert f"/{name}" in text
    visible(text)


def test_grant_and_revoke_texts() -> None:
    assert "github/*" in visible(r.grant_text("github/*", 1800, expires_at=NOW))
    assert visible(r.revoke_text(2, None)) == "Revoked 2 grants in total."
    assert visible(r.revoke_text(1, "a/*")) == "Revoked 1 grant matching a/*."
