"""Pure tests of Telegram rendering and command parsing (no trio, no HTTP)."""

from __future__ import annotations

import html
import json
import re
import sys
import unicodedata
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        assert f'…" (truncated: {len(filler * 20000):,} characters)' in shown
    assert "press 📄 Full arguments" in visible(r.approval_text(a, now=NOW))


def test_truncation_never_splits_a_surrogate_pair() -> None:
    a = approval(arguments_real={"e": "🦀" * 5000})
    shown = visible(r.approval_text(a, now=NOW))
    shown.encode("utf-8")  # a lone surrogate would raise here
    assert "\ufffd" not in shown


def test_small_arguments_are_not_truncated() -> None:
    text = r.approval_text(approval(), now=NOW)
    assert "truncated" not in text and "Full arguments" not in text


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


def test_status_says_failed_with_the_error_for_a_remote_server_that_is_down() -> None:
    children = [
        {
            "name": "linear",
            "state": "restarting",
            "tools": 0,
            "restarts": 3,
            "error": "cannot reach x",
            "remote": True,
        },
        {
            "name": "notion",
            "state": "needs-login",
            "tools": 0,
            "restarts": 0,
            "error": "not logged in",
            "remote": True,
        },
        {"name": "local", "state": "restarting", "tools": 0, "restarts": 1, "error": "exit status 1"},
    ]
    st = visible(
        r.status_text({"children": children}, pending=[], grants=[], telegram_state="polling", now=NOW)
    )
    assert "linear failed: cannot reach x, 0 tools, 3 restarts" in st
    assert "notion needs-login, 0 tools" in st
    assert "local restarting, 0 tools, 1 restarts" in st  # a local process keeps its state's name
    assert r.server_state({"state": "restarting", "remote": True}) == "failed"
    assert r.server_state({"state": "connecting", "remote": True, "error": "old"}) == "connecting"


# ------------------------------------------------------------------------------------- buttons


def test_keyboard_callback_data_fits_64_bytes() -> None:
    kb = r.approval_keyboard("Zx9_kQ-3vA1b2C3d4E5f6g")
    buttons = [b for row in kb["inline_keyboard"] for b in row]
    assert [b["callback_data"][:2] for b in buttons] == ["a:", "d:", "g:", "f:"]
    assert [b["text"] for b in buttons] == ["✅ Approve", "❌ Deny", "✅ Approve 30m", "📄 Full arguments"]
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
        ("f:abc", ("full", "abc")),
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
    assert r.callback_answer("ok", "full") == "Sending the full arguments"
    assert r.callback_answer("unknown", "full") == "Unknown or expired request"


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


# --------------------------------------------------------------- arguments: every key, hidden characters

HIDDEN_EXAMPLES = [
    "\u2028",
    "\u2029",
    *map(chr, range(0x202A, 0x202F)),  # bidi embeddings and overrides
    *map(chr, range(0x2066, 0x206A)),  # bidi isolates
    *map(chr, range(0x200B, 0x2010)),  # zero-width, LRM / RLM
    "\ufeff",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",  # C1
    "\u00ad",
    "\u061c",
    "\U000e0041",  # a tag character
    "\ud800",  # a lone surrogate (json.loads accepts "\\ud800")
]


def marker(ch: str) -> str:
    return f"⟨U+{ord(ch):04X}⟩"


def test_a_long_comment_cannot_push_the_command_out_of_the_message() -> None:
    # The reproduction: the client orders a 3,000-character comment full of U+2028 line breaks first.
    for length in (3000, 30000):
        comment = ("Routine cleanup of temporary files.\u2028" * 1000)[:length]
        args = {"comment": comment, "command": "rm -rf / --no-preserve-root"}
        a = approval(arguments_real=args, arguments_fake=args)
        for text in (r.approval_text(a, now=NOW), r.settled_text(a, state="approved", source="admin")):
            shown = visible(text)
            assert r.utf16_len(shown) <= r.TEXT_BUDGET
            assert '"command": "rm -rf / --no-preserve-root"' in shown
            assert '"comment": "Routine cleanup of temporary files.⟨U+2028⟩Routine' in shown
            assert "\u2028" not in shown
            assert ("(truncated: 30,000 characters)" in shown) == (length == 30000)


def test_every_key_is_shown_and_each_value_is_cut_on_its_own() -> None:
    args = {f"key_{i:02}": chr(ord("a") + i % 26) * 5000 for i in range(40)}
    args["last"] = "rm -rf /"
    shown = visible(r.approval_text(approval(arguments_real=args), now=NOW))
    assert r.utf16_len(shown) <= r.TEXT_BUDGET
    for key in args:
        assert f'"{key}": "' in shown
    assert '"last": "rm -rf /"' in shown
    assert shown.count("(truncated: 5,000 characters)") + shown.count('…"') >= 40


def test_nested_values_are_shortened_on_their_own_too() -> None:
    args = {
        "options": {"comment": "x" * 10000, "command": "rm -rf /"},
        "list": ["y" * 10000, "shutdown -h now"],
    }
    shown = visible(r.approval_text(approval(arguments_real=args), now=NOW))
    assert r.utf16_len(shown) <= r.TEXT_BUDGET
    assert '"command": "rm -rf /"' in shown and '"shutdown -h now"' in shown


def test_too_many_keys_say_how_many_more() -> None:
    args = {f"k{i}": i for i in range(3000)}
    shown = visible(r.approval_text(approval(arguments_real=args), now=NOW))
    assert r.utf16_len(shown) <= r.TEXT_BUDGET
    m = re.search(r"… and ([\d,]+) more keys", shown)
    assert m is not None
    listed = len(re.findall(r'"k\d+": \d+', shown))
    assert listed > 100 and listed + int(m.group(1).replace(",", "")) == 3000


def test_small_arguments_read_as_json() -> None:
    args = {"title": "Bug", "labels": ["a", "b"], "meta": {"n": 1, "ok": True, "none": None}, "empty": {}}
    shown = visible(r.approval_text(approval(arguments_real=args), now=NOW))
    assert json.dumps(args, indent=2) in shown


@pytest.mark.parametrize("ch", HIDDEN_EXAMPLES, ids=lambda c: f"U+{ord(c):04X}")
def test_control_and_formatting_characters_are_made_visible(ch: str) -> None:
    a = approval(
        tool=f"evil/run{ch}",
        rule=f"rule:evil/{ch}",
        arguments_real={f"k{ch}ey": f"safe{ch}text", "n": ch * 5},
    )
    for text in (r.approval_text(a, now=NOW), r.settled_text(a, state="expired", source="timeout")):
        shown = visible(text)
        assert ch not in shown
        if ch >= " ":  # C0 controls inside a JSON string are JSON escapes (\u001b, \n) already
            assert f"k{marker(ch)}ey" in shown and f"safe{marker(ch)}text" in shown
            assert f"Tool: evil/run{marker(ch)}" in shown
        else:
            assert json.dumps(f"safe{ch}text") in shown


def test_every_format_and_control_character_of_this_unicode_version_is_marked() -> None:
    missed = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs", "Zl", "Zp") and r.mark_hidden(chr(c)) == chr(c)
    ]
    assert missed == []
    assert r.mark_hidden("plain ascii, émoji 🦀, ❤️ and 中文") == "plain ascii, émoji 🦀, ❤️ and 中文"


def test_session_shows_only_a_short_prefix() -> None:
    sid = "AbCdEfGh" + "X" * 24
    shown = visible(r.approval_text(approval(session=sid), now=NOW))
    assert "Session: AbCdEfGh…" in shown and sid not in shown and "AbCdEfGhX" not in shown
    assert "Session: s1\n" in visible(r.approval_text(approval(session="s1"), now=NOW))


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=1000)
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=30), inner, max_size=8),
    max_leaves=15,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=40), _json_value, max_size=20))
def test_any_arguments_fit_with_every_key_and_nothing_hidden(args: dict[str, object]) -> None:
    a = approval(arguments_real=args, session="s" * 40)
    for text in (r.approval_text(a, now=NOW), r.settled_text(a, state="approved", source="admin", note="n")):
        shown = visible(text)
        assert r.utf16_len(shown) <= r.TEXT_BUDGET
        assert r.mark_hidden(shown.replace("\n", " ")) == shown.replace("\n", " ")
        for key in args:
            key_shown = r.mark_hidden(json.dumps(key, ensure_ascii=False)[1:-1])
            if r.utf16_len(key_shown) > 90:  # a key is cut at 100 units
                key_shown = key_shown[:20]
            assert '\n  "' + key_shown in shown


# ------------------------------------------------------------------------------------ full arguments


def test_full_arguments_are_the_fake_side_as_exact_json() -> None:
    fake = {"what": "the files of John Doe", "note": "line\u2028break \u202eevil", "n": [1, 2]}
    a = approval(arguments_real={"what": "the files of Jane Realname"}, arguments_fake=fake)
    messages = r.full_arguments_messages(a)
    assert messages is not None and len(messages) == 1
    shown = visible(messages[0])
    assert "Jane Realname" not in shown and "Realname" not in messages[0]
    assert "Full arguments" in shown and "github/create_issue" in shown
    body = shown.split("\n", 1)[1]
    assert json.loads(body) == fake
    assert "\u2028" not in body and "\u202e" not in body
    assert "\\u2028" in body and "\\u202e" in body


def test_full_arguments_split_over_messages_then_a_document() -> None:
    fake = {f"k{i}": "v" * 100 for i in range(60)}  # ~6,900 characters: two messages
    a = approval(arguments_fake=fake, arguments_real={"real": "Jane Realname"})
    messages = r.full_arguments_messages(a)
    assert messages is not None and len(messages) == 2
    assert [visible(m).split("\n", 1)[0].count(f"({i}/2)") for i, m in enumerate(messages, 1)] == [1, 1]
    for m in messages:
        assert r.utf16_len(visible(m)) <= r.TEXT_BUDGET
    assert json.loads("".join(visible(m).split("\n", 1)[1] for m in messages)) == fake

    big = approval(arguments_fake={"blob": "🦀" * 20000, "cmd": "x\u2029y"}, arguments_real={"real": "Jane"})
    assert r.full_arguments_messages(big) is None
    name, content, caption = r.full_arguments_document(big)
    assert name == "github_create_issue-arguments.json"
    assert json.loads(content) == {"blob": "🦀" * 20000, "cmd": "x\u2029y"}
    assert "\u2029".encode() not in content and b"Jane" not in content
    assert "Full arguments" in visible(caption) and r.utf16_len(visible(caption)) <= 1024


def test_full_arguments_of_a_lone_surrogate_and_odd_values_do_not_crash() -> None:
    a = approval(arguments_fake={"s": "\ud800", "o": object(), "deep": [[[[[[[[["x"]]]]]]]]]})
    messages = r.full_arguments_messages(a)
    assert messages is not None
    body = visible(messages[0]).split("\n", 1)[1]
    assert json.loads(body)["s"] == "\ud800" and json.loads(body)["deep"] == [[[[[[[[["x"]]]]]]]]]
    shown = visible(r.approval_text(approval(arguments_real=a.arguments_fake), now=NOW))
    assert "⟨U+D800⟩" in shown and '"x"' in shown
