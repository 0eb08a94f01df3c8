"""The real TelegramBot against the fake Bot API server, over real HTTP on 127.0.0.1.

The broker and the store are small doubles that follow the interfaces of ``portero.approvals`` and
``portero.store``; the end-to-end path through the gateway is tested elsewhere.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio

from portero.telegram import TelegramBot, TelegramError, TelegramUnavailable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN, Call, Document, FakeBotAPI, Message  # noqa: E402

ADMIN = 4242
STRANGER = 666


# ------------------------------------------------------------------------------------------ doubles


@attrs.define(eq=False)
class ApprovalDouble:
    id: str
    tool: str = "github/create_issue"
    server: str = "github"
    rule: str = "rule:github/*"
    arguments_real: dict[str, Any] = attrs.field(factory=lambda: {"title": "Bug <b> & 🦀", "body": "x"})
    arguments_fake: dict[str, Any] = attrs.field(factory=dict)
    session: str | None = "sess-1"
    created_at: float = attrs.field(factory=time.time)
    expires_at: float = attrs.field(factory=lambda: time.time() + 120)
    state: str = "pending"
    source: str = ""


@attrs.define
class GrantDouble:
    pattern: str
    expires_at: float
    created_at: float
    id: int
    created_by: str


class GrantsDouble:
    def __init__(self) -> None:
        self.grants: list[GrantDouble] = []
        self.revoked: list[str | None] = []

    async def add(self, pattern: str, seconds: float, created_by: str) -> GrantDouble:
        now = time.time()
        g = GrantDouble(pattern, now + seconds, now, len(self.grants) + 1, created_by)
        self.grants.append(g)
        return g

    async def revoke(self, pattern: str | None, client: str | None = None) -> int:
        self.revoked.append(pattern if client is None else f"{client}:{pattern}")
        before = len(self.grants)
        self.grants = [g for g in self.grants if pattern is not None and g.pattern != pattern]
        return before - len(self.grants)

    def active(self) -> list[GrantDouble]:
        return list(self.grants)


class BrokerDouble:
    def __init__(self) -> None:
        self.table: dict[str, ApprovalDouble] = {}
        self.decisions: list[tuple[str, bool, float | None, str, str]] = []
        self.grants = GrantsDouble()

    def add(self, approval_id: str, **kw: Any) -> ApprovalDouble:
        a = ApprovalDouble(approval_id, **kw)
        self.table[approval_id] = a
        return a

    def decide(
        self, approval_id: str, approved: bool, *, grant_seconds: float | None = None, source: str = "admin"
    ) -> str:
        a = self.table.get(approval_id)
        if a is None:
            result = "unknown"
        elif a.state != "pending":
            result = "already"
        else:
            a.state, a.source = ("approved" if approved else "rejected"), source
            result = "ok"
        self.decisions.append((approval_id, approved, grant_seconds, source, result))
        return result

    def pending(self) -> list[ApprovalDouble]:
        return [a for a in self.table.values() if a.state == "pending"]


class StoreDouble:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.audit_requests: list[int] = []

    async def recent_audit(self, n: int) -> list[dict[str, Any]]:
        self.audit_requests.append(n)
        return [
            {
                "ts": 1_700_000_000.0 + i,
                "tool": f"fs/read_{i}",
                "decision": "allow",
                "source": "default",
                "outcome": "ok",
                "duration_ms": 3,
            }
            for i in range(n)
        ]

    async def record_event(self, kind: str, detail: dict[str, Any]) -> None:
        self.events.append((kind, detail))


def status() -> dict[str, Any]:
    return {
        "children": [
            {"name": "github", "state": "ready", "tools": 12, "restarts": 0},
            {"name": "flaky<&>", "state": "restarting", "tools": 0, "restarts": 3},
        ],
        "uptime_s": 3725.0,
        "pending": 0,
    }


# ----------------------------------------------------------------------------------------- fixtures


@attrs.define
class Env:
    fake: FakeBotAPI
    bot: TelegramBot
    broker: BrokerDouble
    store: StoreDouble


def make_bot(
    fake: FakeBotAPI,
    broker: BrokerDouble,
    store: StoreDouble,
    token: str = TOKEN,
    api_base: str | None = None,
) -> TelegramBot:
    config = SimpleNamespace(
        bot_token=token,
        admin_chat_id=ADMIN,
        api_base=api_base or fake.api_base,
        approval_timeout=120.0,
        max_grant=86400.0,
        pairing_code="",
        activity="off",
        activity_interval=60.0,
    )
    bot = TelegramBot(config, broker, status, store)
    bot.poll_timeout = 2.0
    bot.send_interval = 0.01
    bot.backoff_base = 0.01
    bot.backoff_cap = 0.05
    bot.drain_timeout = 0.5
    return bot


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBotAPI:
    api = FakeBotAPI()
    await nursery.start(api.serve)
    return api


@pytest.fixture
async def env(fake: FakeBotAPI, nursery: trio.Nursery) -> Env:
    broker, store = BrokerDouble(), StoreDouble()
    bot = make_bot(fake, broker, store)
    await nursery.start(bot.run)
    await fake.wait_for_call("setMyCommands")
    assert bot.available
    return Env(fake, bot, broker, store)


async def announce(env: Env, approval_id: str = "appr-1", **kw: Any) -> tuple[ApprovalDouble, Message]:
    a = env.broker.add(approval_id, **kw)
    since = len(env.fake.calls)
    await env.bot.announce(a)
    msg = await env.fake.wait_for_message(lambda m: approval_id in str(m.reply_markup), since=since)
    return a, msg


async def answer_for(fake: FakeBotAPI, qid: str) -> str:
    call = await fake.wait_for_call("answerCallbackQuery", lambda c: c.params["callback_query_id"] == qid)
    return str(call.params.get("text"))


async def edited(fake: FakeBotAPI, message_id: int, since: int = 0) -> Call:
    return await fake.wait_for_call(
        "editMessageText", lambda c: c.params["message_id"] == message_id, since=since
    )


async def reply_to(env: Env, text: str) -> Message:
    since = len(env.fake.calls)
    env.fake.inject_message(ADMIN, text)
    return await env.fake.wait_for_message(lambda m: m.chat_id == ADMIN, since=since)


# --------------------------------------------------------------------------------------- start-up


async def test_start_registers_commands_for_the_admin_chat_only(env: Env) -> None:
    call = await env.fake.wait_for_call("setMyCommands")
    assert call.params["scope"] == {"type": "chat", "chat_id": ADMIN}
    names = [c["command"] for c in env.fake.commands]
    rules = ["allow", "deny", "ask", "unrule", "rules"]  # the rules from the chat
    assert names == ["status", "pending", "grant", "revoke", *rules, "logs", "help"]
    # Once at start (a stale webhook would block getUpdates), keeping pending updates.
    assert env.fake.count("deleteWebhook", ok=None) == 1
    (dw,) = [c for c in env.fake.calls if c.method == "deleteWebhook"]
    assert dw.params.get("drop_pending_updates") in (False, "false", None)
    poll = await env.fake.wait_for_call("getUpdates", ok=None)
    assert poll.params["allowed_updates"] == ["message", "callback_query"]


# -------------------------------------------------------------------------------------- approvals


async def test_announce_shows_tool_rule_and_escaped_arguments(env: Env) -> None:
    _, msg = await announce(env)
    shown = msg.visible_text
    assert "github/create_issue" in shown and "rule:github/*" in shown and "Server: github" in shown
    assert '"title": "Bug <b> & 🦀"' in shown
    assert "left to decide" in shown
    assert [b["text"] for b in msg.buttons] == [
        "✅ Approve",
        "❌ Deny",
        "✅ Approve 30m",
        "📄 Full arguments",
    ]
    assert all(len(b["callback_data"].encode()) <= 64 for b in msg.buttons)


async def test_huge_arguments_still_send(env: Env) -> None:
    _, msg = await announce(env, arguments_real={"blob": "🦀<&>" * 5000})
    assert "(truncated: 20,000 characters)" in msg.visible_text


async def test_a_long_comment_does_not_hide_the_command(env: Env) -> None:
    # The reproduction: a client-ordered 3,000-character comment with U+2028 line breaks, then the command.
    comment = ("Nothing to see here.\u2028" * 200)[:3000] + "x" * 3000
    args = {"comment": comment, "command": "rm -rf /", "\u202eevil": "\u200bhidden\ufeff"}
    _, msg = await announce(env, arguments_real=args, session="0123456789abcdef-session-id")
    shown = msg.visible_text  # Telegram (the fake) accepted it: under 4096 units after entity parsing
    assert '"command": "rm -rf /"' in shown
    assert '"⟨U+202E⟩evil": "⟨U+200B⟩hidden⟨U+FEFF⟩"' in shown
    assert "⟨U+2028⟩" in shown and "\u2028" not in shown and "\u202e" not in shown
    assert "Session: 01234567…" in shown and "0123456789abcdef" not in shown
    assert "press 📄 Full arguments" in shown


async def test_full_arguments_button_sends_the_fake_side_and_decides_nothing(env: Env) -> None:
    fake_args = {"what": "the files of John Doe", "why": "line\u2028break"}
    a, msg = await announce(
        env, arguments_real={"what": "the files of Jane Realname"}, arguments_fake=fake_args
    )
    since = len(env.fake.calls)
    qid = env.fake.press(msg, "📄 Full arguments")
    assert await answer_for(env.fake, qid) == "Sending the full arguments"
    full = await env.fake.wait_for_message(lambda m: "Full arguments" in m.text, since=since)
    shown = full.visible_text
    assert "github/create_issue" in shown and "Realname" not in shown
    assert json.loads(shown.split("\n", 1)[1]) == fake_args
    assert "\\u2028" in shown and "\u2028" not in shown
    # Nothing was decided; the approval message keeps its buttons and can still be decided.
    assert env.broker.decisions == [] and a.state == "pending" and len(msg.buttons) == 4
    qid = env.fake.press(msg, "❌ Deny")
    assert await answer_for(env.fake, qid) == "Denied"
    await edited(env.fake, msg.message_id, since)
    # Afterwards the button (kept by a stale client, say) sends nothing.
    since = len(env.fake.calls)
    qid = env.fake.inject_callback(ADMIN, msg.message_id, f"f:{a.id}")
    assert await answer_for(env.fake, qid) == "Unknown or expired request"
    await trio.sleep(0.1)
    assert not [c for c in env.fake.calls[since:] if c.method in ("sendMessage", "sendDocument")]


async def test_full_arguments_too_long_for_messages_come_as_a_document(env: Env) -> None:
    fake_args = {"blob": "John Doe 🦀 <&> " * 5000, "command": "rm -rf /"}
    a, msg = await announce(env, arguments_real={"blob": "Jane Realname"}, arguments_fake=fake_args)
    since = len(env.fake.calls)
    qid = env.fake.press(msg, "📄 Full arguments")
    assert await answer_for(env.fake, qid) == "Sending the full arguments"
    await env.fake.wait_for_call("sendDocument", since=since)
    [doc] = env.fake.documents
    assert isinstance(doc, Document) and doc.chat_id == ADMIN
    assert doc.file_name == "github_create_issue-arguments.json" and doc.media_type == "application/json"
    assert json.loads(doc.content) == fake_args and b"Realname" not in doc.content
    assert "Full arguments" in doc.visible_caption and "github/create_issue" in doc.visible_caption
    assert a.state == "pending"


@pytest.mark.parametrize(
    ("button", "approved", "grant", "toast", "outcome"),
    [
        ("✅ Approve", True, None, "Approved", "✅ Approved"),
        ("❌ Deny", False, None, "Denied", "❌ Denied"),
        ("✅ Approve 30m", True, 1800, "Approved; allowed for 30m", "allowed for 30m"),
    ],
)
async def test_button_press_decides_and_edits(
    env: Env, button: str, approved: bool, grant: float | None, toast: str, outcome: str
) -> None:
    a, msg = await announce(env)
    since = len(env.fake.calls)
    qid = env.fake.press(msg, button)
    assert await answer_for(env.fake, qid) == toast
    assert env.broker.decisions == [("appr-1", approved, grant, "admin", "ok")]
    await edited(env.fake, msg.message_id, since)
    assert outcome in msg.visible_text
    assert msg.buttons == []
    # The broker then settles the approval: nothing is edited twice.
    await env.bot.settle(a)
    await trio.sleep(0.1)
    assert sum(1 for c in env.fake.calls if c.method == "editMessageText") == 1


async def test_timeout_settle_edits_the_message(env: Env) -> None:
    a, msg = await announce(env)
    a.state, a.source = "expired", "timeout"
    since = len(env.fake.calls)
    await env.bot.settle(a)
    await edited(env.fake, msg.message_id, since)
    assert "Timed out" in msg.visible_text and msg.buttons == []
    # A late press is answered, and changes nothing.
    qid = env.fake.inject_callback(ADMIN, msg.message_id, "a:appr-1")
    assert await answer_for(env.fake, qid) == "Already decided"
    assert a.state == "expired"


async def test_shutdown_settle(env: Env) -> None:
    a, msg = await announce(env)
    a.state, a.source = "rejected", "shutdown"
    since = len(env.fake.calls)
    await env.bot.settle(a)
    await edited(env.fake, msg.message_id, since)
    assert "shut down" in msg.visible_text and msg.buttons == []


async def test_replayed_and_forged_callbacks_do_nothing(env: Env) -> None:
    a, msg = await announce(env)
    data = msg.buttons[0]["callback_data"]
    qid = env.fake.inject_callback(ADMIN, msg.message_id, data)
    assert await answer_for(env.fake, qid) == "Approved"
    # Replay: the broker says "already"; nothing is re-applied.
    qid = env.fake.inject_callback(ADMIN, msg.message_id, "d:appr-1")
    assert await answer_for(env.fake, qid) == "Already decided"
    assert a.state == "approved"
    # Forged ids and garbage.
    b, msg_b = await announce(env, "appr-2")
    for forged in ("a:no-such-id", "x:appr-2", "garbage", "a:" + "z" * 60):
        qid = env.fake.inject_callback(ADMIN, msg_b.message_id, forged)
        assert await answer_for(env.fake, qid) == "Unknown or expired request"
    assert b.state == "pending"
    assert msg_b.buttons, "a forged press must not strip the buttons of a pending approval"


async def test_press_from_a_stranger_changes_nothing_and_is_recorded(env: Env) -> None:
    a, msg = await announce(env)
    data = msg.buttons[0]["callback_data"]
    # Same data, pressed in another chat, and by another user in the admin's private chat.
    q1 = env.fake.inject_callback(STRANGER, msg.message_id, data)
    q2 = env.fake.inject_callback(ADMIN, msg.message_id, data, user_id=STRANGER)
    assert await answer_for(env.fake, q1) == "Not allowed"
    assert await answer_for(env.fake, q2) == "Not allowed"
    assert a.state == "pending" and env.broker.decisions == []
    kinds = [(k, d["kind"], d["chat_id"], d["user_id"]) for k, d in env.store.events]
    assert kinds == [
        ("telegram_ignored", "callback", STRANGER, STRANGER),
        ("telegram_ignored", "callback", ADMIN, STRANGER),
    ]
    assert msg.buttons


async def test_settle_before_the_message_is_sent_edits_it_afterwards(env: Env) -> None:
    a = env.broker.add("appr-1")
    env.bot.send_interval = 0.3
    # Occupy the queue so the announcement waits, then settle while it waits.
    env.fake.inject_message(ADMIN, "/help")
    await env.fake.wait_for_call("sendMessage")
    async with trio.open_nursery() as n:
        n.start_soon(env.bot.announce, a)
        await trio.sleep(0.05)
        a.state, a.source = "expired", "timeout"
        await env.bot.settle(a)
    msg = await env.fake.wait_for_message(lambda m: "appr-1" in str(m.reply_markup) or "Timed out" in m.text)
    await edited(env.fake, msg.message_id)
    assert "Timed out" in msg.visible_text and msg.buttons == []


# ---------------------------------------------------------------------------------------- commands


async def test_stranger_grant_does_nothing_and_is_recorded(env: Env) -> None:
    since = len(env.fake.calls)
    env.fake.inject_message(STRANGER, "/grant * 24h")
    env.fake.inject_message(ADMIN, "/grant * 24h", user_id=STRANGER)
    await trio.sleep(0.2)
    assert env.broker.grants.grants == []
    assert [c for c in env.fake.calls[since:] if c.method == "sendMessage"] == []
    assert [(k, d["kind"], d["content"]) for k, d in env.store.events] == [
        ("telegram_ignored", "message", "/grant * 24h"),
        ("telegram_ignored", "message", "/grant * 24h"),
    ]


async def test_help(env: Env) -> None:
    msg = await reply_to(env, "/help")
    for name in ("/status", "/grant", "/revoke", "/pending", "/logs", "/help"):
        assert name in msg.visible_text


async def test_status(env: Env) -> None:
    env.broker.add("appr-1")
    await env.broker.grants.add("github/*", 1800, "telegram")
    msg = await reply_to(env, "/status@portero_test_bot")
    shown = msg.visible_text
    assert "github ready, 12 tools, 0 restarts" in shown
    assert "flaky<&> restarting, 0 tools, 3 restarts" in shown
    assert "github/create_issue (rule:github/*)" in shown
    assert "github/*, 30m left" in shown or "github/*, 29m" in shown
    assert "Telegram: polling" in shown
    assert "Uptime: 1h2m" in shown


async def test_command_for_another_bot_is_ignored(env: Env) -> None:
    since = len(env.fake.calls)
    env.fake.inject_message(ADMIN, "/status@some_other_bot")
    msg = await reply_to(env, "/help")
    assert "/status" in msg.visible_text
    assert sum(1 for c in env.fake.calls[since:] if c.method == "sendMessage") == 1


async def test_grant(env: Env) -> None:
    msg = await reply_to(env, "/grant github/* 1h30m")
    assert "Granted github/* for 1h30m" in msg.visible_text
    [g] = env.broker.grants.grants
    assert (g.pattern, round(g.expires_at - g.created_at)) == ("github/*", 5400)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("/grant github/* 48h", "longer than the maximum grant (1d)"),
        ("/grant github/* soon", "got 'soon'"),
        ("/grant 30m github/*", "Bad pattern '30m'"),
        ("/grant github/*", "Usage: /grant <pattern> <duration>"),
    ],
)
async def test_grant_errors(env: Env, text: str, error: str) -> None:
    msg = await reply_to(env, text)
    assert error in msg.visible_text
    assert env.broker.grants.grants == []


async def test_revoke(env: Env) -> None:
    await env.broker.grants.add("github/*", 600, "t")
    await env.broker.grants.add("fs/*", 600, "t")
    msg = await reply_to(env, "/revoke github/*")
    assert msg.visible_text == "Revoked 1 grant matching github/*."
    msg = await reply_to(env, "/revoke")
    assert msg.visible_text == "Revoked 1 grant in total."
    assert env.broker.grants.revoked == ["github/*", None]
    msg = await reply_to(env, "/revoke laptop github/*")  # one client's grants only
    assert msg.visible_text == "Revoked 0 grants matching github/* of client laptop."
    assert env.broker.grants.revoked[-1] == "laptop:github/*"


async def test_pending_lists_each_with_buttons_and_a_press_settles_every_copy(env: Env) -> None:
    msg = await reply_to(env, "/pending")
    assert msg.visible_text == "No pending approvals."
    _, original = await announce(env)
    since = len(env.fake.calls)
    env.fake.inject_message(ADMIN, "/pending")
    copy = await env.fake.wait_for_message(lambda m: bool(m.buttons), since=since)
    assert copy.message_id != original.message_id and "github/create_issue" in copy.visible_text
    since = len(env.fake.calls)
    qid = env.fake.press(copy, "❌ Deny")
    assert await answer_for(env.fake, qid) == "Denied"
    await edited(env.fake, original.message_id, since)
    await edited(env.fake, copy.message_id, since)
    assert original.buttons == [] and copy.buttons == []
    assert "Denied" in original.visible_text and "Denied" in copy.visible_text


async def test_logs(env: Env) -> None:
    msg = await reply_to(env, "/logs")
    assert env.store.audit_requests == [10]
    assert "fs/read_9 allow (default) ok 3ms" in msg.visible_text
    await reply_to(env, "/logs 500")
    await reply_to(env, "/logs 2")
    assert env.store.audit_requests == [10, 50, 2]
    msg = await reply_to(env, "/logs lots")
    assert "takes a number" in msg.visible_text


async def test_outbound_messages_respect_the_send_interval(env: Env) -> None:
    env.bot.send_interval = 0.2
    since = len(env.fake.calls)
    for _ in range(3):
        env.fake.inject_message(ADMIN, "/help")
    last = await env.fake.wait_for_call("sendMessage", lambda c: True, since=since)
    times = [last.at]
    for _ in range(2):
        idx = env.fake.calls.index(last) + 1
        last = await env.fake.wait_for_call("sendMessage", since=idx)
        times.append(last.at)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g >= 0.19 for g in gaps), gaps


# ------------------------------------------------------------------------------------- resilience


async def test_429_on_send_is_waited_out(env: Env) -> None:
    env.fake.fail_next("sendMessage", 1, code=429, retry_after=1)
    start = trio.current_time()
    _, msg = await announce(env)
    assert trio.current_time() - start >= 0.9
    failed = [c for c in env.fake.calls if c.method == "sendMessage" and c.status == 429]
    assert failed and failed[0].response["parameters"] == {"retry_after": 1}
    assert msg.buttons


async def test_5xx_and_dropped_connections_on_poll_are_survived(env: Env) -> None:
    env.fake.fail_next("getUpdates", 3, code=502)
    env.fake.inject_message(ADMIN, "/help")  # wakes the current poll; the next three fail
    await env.fake.wait_for_message(lambda m: "/status" in m.text)
    env.fake.fail_next("getUpdates", 2, code=0)
    env.fake.inject_message(ADMIN, "/logs 1")  # wakes the current poll; the next two are dropped
    await env.fake.wait_for_message(lambda m: "tool calls" in m.text)
    await env.fake.wait_for_call("getUpdates", lambda c: c.status == 0, ok=False)
    msg = await reply_to(env, "/help")
    assert "/grant" in msg.visible_text
    assert sum(1 for c in env.fake.calls if c.method == "getUpdates" and c.status == 502) == 3
    assert sum(1 for c in env.fake.calls if c.method == "getUpdates" and c.status == 0) == 2
    assert env.bot.state == "polling"


async def test_updates_are_confirmed_with_offset(env: Env) -> None:
    u = env.fake.inject_message(ADMIN, "/help")
    await env.fake.wait_for_message(lambda m: True)
    call = await env.fake.wait_for_call(
        "getUpdates", lambda c: int(c.params["offset"]) > u["update_id"], ok=None
    )
    assert call.params["offset"] == u["update_id"] + 1
    assert env.broker.decisions == []  # and the message was handled exactly once:
    assert env.fake.count("sendMessage") == 1


async def test_5xx_on_send_retried_then_announce_raises(env: Env) -> None:
    env.fake.fail_next("sendMessage", 1, code=500)
    await announce(env, "appr-1")
    env.fake.fail_next("sendMessage", 10, code=500)
    with pytest.raises(TelegramError, match="500"):
        await env.bot.announce(env.broker.add("appr-2"))
    assert env.bot.available  # transient trouble does not stop the bot


async def test_409_backs_off_and_is_reported(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.bot.backoff_base = env.bot.backoff_cap = 0.4
    env.fake.fail_next("getUpdates", 2, code=409)
    env.fake.inject_message(ADMIN, "/help")  # wakes the current poll
    await env.fake.wait_for_call("getUpdates", lambda c: c.status == 409, ok=False)
    for _ in range(200):  # the bot records the 409 a moment after the fake answered it
        if "conflict" in env.bot.state:
            break
        await trio.sleep(0.01)
    assert "webhook" in env.bot.state
    assert any("webhook" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    await env.fake.wait_for_message(lambda m: "Portero commands" in m.text)  # the /help got through
    msg = await reply_to(env, "/status")
    assert "Telegram: polling" in msg.visible_text
    # A 409 while running is another poller or a new webhook: reported, never "fixed" by force.
    assert env.fake.count("deleteWebhook", ok=None) == 1


async def test_401_at_start_stops_the_bot(fake: FakeBotAPI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "999:WRONG-secret-token"
    bot = make_bot(fake, BrokerDouble(), StoreDouble(), token=bad)
    with trio.fail_after(5):
        await bot.run()  # returns by itself: the gateway keeps serving
    assert not bot.available
    assert "stopped" in bot.state
    lines = [r.getMessage() for r in caplog.records]
    assert any("rejected the bot token" in line and "401" in line for line in lines)
    assert all(bad not in line for line in lines)
    with pytest.raises(TelegramUnavailable):
        await bot.announce(ApprovalDouble("x"))


async def test_401_while_running_stops_the_bot(
    fake: FakeBotAPI, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    broker = BrokerDouble()
    bot = make_bot(fake, broker, StoreDouble())
    done = trio.Event()

    async def run() -> None:
        await bot.run()
        done.set()

    nursery.start_soon(run)
    await fake.wait_for_call("setMyCommands")
    assert bot.available
    fake.token = "revoked"
    fake.inject_message(ADMIN, "/help")  # wakes the poll; the next call is refused
    with trio.fail_after(5):
        await done.wait()
    assert not bot.available
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("rejected the bot token" in line for line in errors)
    await bot.settle(broker.add("late"))  # never raises


async def test_token_never_in_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # Nothing listens on this port: every call is a network error.
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker, store = BrokerDouble(), StoreDouble()
    fake = FakeBotAPI()
    fake.port = port
    bot = make_bot(fake, broker, store)
    bot.send_attempts = 1
    bot._started = True  # pretend getMe worked earlier, so announce is attempted
    errors: list[BaseException] = []
    async with trio.open_nursery() as n:
        n.start_soon(bot.run)
        await trio.sleep(0.3)
        try:
            await bot.announce(broker.add("appr-1"))
        except TelegramError as e:
            errors.append(e)
        n.cancel_scope.cancel()
    assert errors
    text = "".join(traceback.format_exception(errors[0]))
    assert "ConnectError" in text and TOKEN not in text
    lines = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    assert any("ConnectError" in line for line in lines)
    assert all(TOKEN not in line for line in lines)


async def test_token_redacted_from_httpx_request_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await reply_to(env, "/help")
    httpx_lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("<bot-token>" in line for line in httpx_lines)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_press_on_a_decided_but_unsettled_message_removes_its_buttons(env: Env) -> None:
    a, msg = await announce(env)
    env.broker.decide(a.id, False, source="timeout")  # decided elsewhere; settle() never came
    since = len(env.fake.calls)
    qid = env.fake.press(msg, "✅ Approve")
    assert await answer_for(env.fake, qid) == "Already decided"
    await env.fake.wait_for_call("editMessageReplyMarkup", since=since)
    assert msg.buttons == [] and a.state == "rejected"


@pytest.mark.parametrize("api_base", ["127.0.0.1:8081", "ftp://127.0.0.1", "http://[::1"])
async def test_unusable_api_base_stops_the_bot_not_the_gateway(
    api_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeBotAPI()
    bot = make_bot(fake, BrokerDouble(), StoreDouble(), api_base=api_base)
    with trio.fail_after(5):
        await bot.run()
    assert not bot.available
    assert any("api_base" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


async def test_a_reload_applies_the_admin_chat_and_the_longest_grant(fake: FakeBotAPI) -> None:
    """SIGHUP's [telegram]: the admin chat and max_grant apply at once; a new token or API base
    needs a restart (apply_settings says so by returning False)."""
    bot = make_bot(fake, BrokerDouble(), StoreDouble())
    new = SimpleNamespace(
        bot_token=TOKEN,
        admin_chat_id=ADMIN + 1,
        api_base=fake.api_base,
        max_grant=60.0,
        pairing_code="",
        activity="batched",
        activity_interval=5.0,
    )
    assert bot.apply_settings(new) is True  # type: ignore[arg-type]
    assert f"chat={ADMIN + 1}" in repr(bot)
    assert bot._commands.max_grant == 60.0
    assert (bot.feed.mode, bot.feed_interval) == ("batched", 5.0)  # the activity feed follows a reload
    other_token = SimpleNamespace(
        bot_token="999:other", admin_chat_id=ADMIN, api_base=fake.api_base, max_grant=60.0
    )
    assert bot.apply_settings(other_token) is False  # type: ignore[arg-type]
    assert f"chat={ADMIN + 1}" in repr(bot)  # nothing applied from a config that needs a restart
