"""Approvals and the Telegram bot end to end: the real ``portero serve`` process, the fake Bot API.

The fake Bot API (``tests/servers/fake_botapi.py``) serves on 127.0.0.1 in the test's trio nursery and the
gateway's ``[telegram] api_base`` points at it. The gateway runs as a child process; starting and stopping
it blocks, so that runs in a worker thread while the fake keeps serving, and the MCP client is an
``httpx.AsyncClient`` (cancellable, and it can read an SSE answer as it streams).

The bot sends at most one message a second (``send_interval``), so each test shares one gateway across
several scenarios where they cannot disturb each other.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from .harness import TOKEN as BEARER
from .harness import GatewayProcess, child_toml, server_toml, text_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN, Call, FakeBotAPI, Message  # noqa: E402

ADMIN = 4242
STRANGER = 666
WRONG_TOKEN = "999:WRONG-secret-token-xyz"

POLICIES = """
[policies]
default = "allow"
[policies.rules]
"t/delete_thing" = "require-approval"
"t/whoami" = "require-approval"
"t/add" = "deny"
"t/echo" = "allow"
"""

REPLACEMENTS = """
[[replacements]]
fake = "John Doe"
real = "Jane Realname"
"""

DELETE = "t__delete_thing"


def config_text(tmp: Path, api_base: str, *, timeout: str = "30s", token: str = TOKEN) -> str:
    telegram = (
        "[telegram]\n"
        f'bot_token = "{token}"\n'
        f"admin_chat_id = {ADMIN}\n"
        f'api_base = "{api_base}"\n'
        f'approval_timeout = "{timeout}"\n'
    )
    return server_toml(tmp) + telegram + POLICIES + REPLACEMENTS + child_toml("t")


# ------------------------------------------------------------------------------------------ helpers


async def launch(tmp: Path, text: str) -> GatewayProcess:
    """Start the gateway (blocking, so in a thread) and wait until its child is ready."""
    g = await trio.to_thread.run_sync(GatewayProcess, tmp, text)
    try:
        await trio.to_thread.run_sync(g.wait_ready)
    except BaseException:
        await stop(g)
        raise
    return g


async def stop(g: GatewayProcess, sig: int = signal.SIGTERM) -> int:
    return await trio.to_thread.run_sync(g.stop, sig)


def db_rows(tmp: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    conn = sqlite3.connect(tmp / "data" / "gateway.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def audit(tmp: Path) -> list[tuple[str, str, str, str]]:
    return [
        (r["tool"], r["decision"], r["source"], r["outcome"])
        for r in db_rows(tmp, "SELECT * FROM audit ORDER BY id")
    ]


def approval_id(msg: Message) -> str:
    data = msg.buttons[0]["callback_data"]
    assert data.startswith("a:"), data
    return str(data[2:])


def parse_sse_block(block: str) -> dict[str, Any] | None:
    data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
    return json.loads("\n".join(data)) if data else None


class Mcp:
    """A minimal async MCP Streamable HTTP client: JSON or SSE answers, read as they stream."""

    def __init__(self, url: str) -> None:
        self.url = url + "/mcp"
        self.http = httpx.AsyncClient(timeout=60)
        self.headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "Authorization": f"Bearer {BEARER}",
        }
        self.session_id: str | None = None
        self._id = 0

    async def aclose(self) -> None:
        await self.http.aclose()

    async def initialize(self) -> Mcp:
        resp, _ = await self.request_raw(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "approvals-e2e", "version": "0"},
            },
        )
        assert "result" in resp, resp
        r = await self.http.post(
            self.url,
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
            headers={**self.headers, "Mcp-Session-Id": self.session_id or ""},
        )
        assert r.status_code == 202, r.text
        return self

    async def request_raw(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the response, the messages streamed before it); ``on_message`` sees each as it arrives."""
        self._id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id, "method": method}
        if params is not None:
            msg["params"] = params
        headers = dict(self.headers)
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        async with self.http.stream("POST", self.url, json=msg, headers=headers) as r:
            assert r.status_code == 200, (r.status_code, await r.aread())
            if "mcp-session-id" in r.headers:
                self.session_id = r.headers["mcp-session-id"]
            if not r.headers["content-type"].startswith("text/event-stream"):
                return json.loads(await r.aread()), []
            streamed: list[dict[str, Any]] = []
            buf = ""
            async for chunk in r.aiter_text():
                buf += chunk.replace("\r\n", "\n")
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    m = parse_sse_block(block)
                    if m is None:
                        continue
                    if m.get("id") == self._id and ("result" in m or "error" in m):
                        return m, streamed
                    streamed.append(m)
                    if on_message is not None:
                        on_message(m)
        raise AssertionError(f"the stream ended without a response; got {streamed}")

    async def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        resp, _ = await self.request_raw("tools/call", {"name": tool, "arguments": arguments or {}})
        assert "result" in resp, resp
        return resp["result"]


class Later:
    """The result of a call running in the background."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None

    async def wait(self) -> Any:
        with trio.fail_after(20):
            await self.done.wait()
        return self.value


def spawn(nursery: trio.Nursery, fn: Callable[..., Awaitable[Any]], *args: Any) -> Later:
    later = Later()

    async def run() -> None:
        later.value = await fn(*args)
        later.done.set()

    nursery.start_soon(run)
    return later


async def answer_for(fake: FakeBotAPI, qid: str) -> str:
    call = await fake.wait_for_call("answerCallbackQuery", lambda c: c.params["callback_query_id"] == qid)
    return str(call.params.get("text"))


async def edited(fake: FakeBotAPI, message_id: int, since: int = 0) -> Call:
    return await fake.wait_for_call(
        "editMessageText", lambda c: c.params["message_id"] == message_id, since=since
    )


async def asked(fake: FakeBotAPI, since: int) -> Message:
    """The next approval message (one with buttons) sent after call index ``since``."""
    return await fake.wait_for_message(lambda m: bool(m.buttons), since=since)


async def reply_to(fake: FakeBotAPI, text: str, chat: int = ADMIN) -> Message:
    since = len(fake.calls)
    fake.inject_message(chat, text)
    return await fake.wait_for_message(lambda m: m.chat_id == ADMIN and not m.buttons, since=since)


def approval_messages(fake: FakeBotAPI, since: int = 0) -> int:
    """How many approval messages (with buttons) were sent from call index ``since``."""
    return sum(
        1 for c in fake.calls[since:] if c.method == "sendMessage" and c.ok and c.params.get("reply_markup")
    )


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBotAPI:
    api = FakeBotAPI()
    api.wait_timeout = 10.0
    await nursery.start(api.serve)
    return api


@pytest.fixture
async def gw(tmp_path: Path, fake: FakeBotAPI):
    g = await launch(tmp_path, config_text(tmp_path, fake.api_base))
    await fake.wait_for_call("setMyCommands")
    try:
        yield g
    finally:
        await stop(g)


@pytest.fixture
async def client(gw: GatewayProcess):
    c = await Mcp(gw.url).initialize()
    try:
        yield c
    finally:
        await c.aclose()


# ------------------------------------------------------------------------------------------- tests


async def test_approve_deny_replay_and_admin_commands(
    tmp_path: Path, fake: FakeBotAPI, gw: GatewayProcess, client: Mcp, nursery: trio.Nursery
) -> None:
    # 1. require-approval → the admin sees the canonical name and the REAL arguments → Approve → it runs.
    since = len(fake.calls)
    later = spawn(nursery, client.call, DELETE, {"what": "the files of John Doe"})
    msg = await asked(fake, since)
    shown = msg.visible_text
    assert "Tool: t/delete_thing" in shown and "Rule: rule:t/delete_thing" in shown
    assert '"what": "the files of Jane Realname"' in shown
    assert "John Doe" not in shown
    assert [b["text"] for b in msg.buttons] == [
        "✅ Approve",
        "❌ Deny",
        "✅ Approve 30m",
        "♾️ Always allow",
        "⛔ Always deny",
        "📄 Full arguments",
    ]
    assert client.session_id is not None and client.session_id not in shown  # only a short prefix
    assert f"Session: {client.session_id[:8]}…" in shown
    first_id = approval_id(msg)
    since = len(fake.calls)
    qid = fake.press(msg, "✅ Approve")
    assert await answer_for(fake, qid) == "Approved"
    res = await later.wait()
    assert not res.get("isError"), res
    assert text_of(res) == "deleted the files of John Doe"  # real → fake on the way back
    await edited(fake, msg.message_id, since)
    assert msg.visible_text.startswith("✅ Approved") and msg.buttons == []
    [row] = db_rows(tmp_path, "SELECT * FROM approvals WHERE id = ?", first_id)
    assert (row["tool"], row["state"], row["source"]) == ("t/delete_thing", "approved", "admin")
    assert json.loads(row["arguments"]) == {"what": "the files of John Doe"}

    # 2. Deny → a one-line refusal; the message says so, without buttons.
    since = len(fake.calls)
    later = spawn(nursery, client.call, DELETE, {"what": "x"})
    msg2 = await asked(fake, since)
    since = len(fake.calls)
    qid = fake.press(msg2, "❌ Deny")
    assert await answer_for(fake, qid) == "Denied"
    res = await later.wait()
    assert res["isError"] is True
    assert text_of(res) == "Call to t/delete_thing refused: approval denied by the admin."
    await edited(fake, msg2.message_id, since)
    assert msg2.visible_text.startswith("❌ Denied") and msg2.buttons == []

    # 8. Replayed and forged button data change nothing.
    qid = fake.inject_callback(ADMIN, msg.message_id, f"d:{first_id}")
    assert await answer_for(fake, qid) == "Already decided"
    qid = fake.inject_callback(ADMIN, msg2.message_id, f"a:{approval_id_of(msg2, fake)}")
    assert await answer_for(fake, qid) == "Already decided"
    qid = fake.inject_callback(ADMIN, msg.message_id, "a:made-up-approval-id")
    assert await answer_for(fake, qid) == "Unknown or expired request"
    [row] = db_rows(tmp_path, "SELECT state, source FROM approvals WHERE id = ?", first_id)
    assert row == {"state": "approved", "source": "admin"}

    # 9. /pending (none, then one with its buttons), /status, and a press on the /pending copy.
    assert (await reply_to(fake, "/pending")).visible_text == "No pending approvals."
    since = len(fake.calls)
    later = spawn(nursery, client.call, DELETE, {"what": "John Doe"})
    original = await asked(fake, since)
    since = len(fake.calls)
    fake.inject_message(ADMIN, "/pending")
    copy = await asked(fake, since)
    assert copy.message_id != original.message_id
    assert "t/delete_thing" in copy.visible_text and "Jane Realname" in copy.visible_text
    assert copy.buttons == original.buttons
    status = (await reply_to(fake, "/status")).visible_text
    assert re.search(r"• t ready, \d+ tools, 0 restarts", status), status
    assert "Pending approvals (1)" in status and "• t/delete_thing (rule:t/delete_thing)" in status
    assert "Telegram: polling" in status
    since = len(fake.calls)
    qid = fake.press(copy, "✅ Approve")
    assert await answer_for(fake, qid) == "Approved"
    assert text_of(await later.wait()) == "deleted John Doe"
    await edited(fake, original.message_id, since)
    await edited(fake, copy.message_id, since)
    assert original.buttons == [] and copy.buttons == []

    # Calls that need no approval send nothing to Telegram.
    before = approval_messages(fake)
    assert text_of(await client.call("t__echo", {"text": "hi John Doe"})) == "hi John Doe"
    res = await client.call("t__add", {"a": 1, "b": 2})
    assert res["isError"] is True and text_of(res) == "Call to t/add denied by rule 't/add'."

    logs = (await reply_to(fake, "/logs 3")).visible_text
    assert "Last 3 tool calls" in logs
    assert "t/add deny (rule:t/add) refused" in logs
    assert "t/echo allow (rule:t/echo) ok" in logs
    assert "t/delete_thing approved (admin) ok" in logs
    assert approval_messages(fake) == before

    assert audit(tmp_path) == [
        ("t/delete_thing", "approved", "admin", "ok"),
        ("t/delete_thing", "rejected", "admin", "refused"),
        ("t/delete_thing", "approved", "admin", "ok"),
        ("t/echo", "allow", "rule:t/echo", "ok"),
        ("t/add", "deny", "rule:t/add", "refused"),
    ]
    rows = db_rows(tmp_path, "SELECT * FROM audit ORDER BY id")
    assert all(r["session"] == client.session_id for r in rows)
    assert json.loads(rows[0]["arguments"]) == {"what": "the files of John Doe"}
    assert not any("Realname" in r["arguments"] for r in rows)
    assert not any("Realname" in r["arguments"] for r in db_rows(tmp_path, "SELECT arguments FROM approvals"))


def approval_id_of(msg: Message, fake: FakeBotAPI) -> str:
    """The approval id of a message whose buttons are gone: from the sendMessage that created it."""
    for c in fake.calls:
        if (
            c.method == "sendMessage"
            and c.ok
            and c.response
            and c.response["result"]["message_id"] == msg.message_id
        ):
            markup = c.params["reply_markup"]
            if isinstance(markup, str):
                markup = json.loads(markup)
            return str(markup["inline_keyboard"][0][0]["callback_data"][2:])
    raise AssertionError(f"no sendMessage for message {msg.message_id}")


async def test_grants_from_buttons_and_commands(
    tmp_path: Path, fake: FakeBotAPI, gw: GatewayProcess, client: Mcp, nursery: trio.Nursery
) -> None:
    # 3. Approve 30m → this call passes, and the next one without asking (a grant).
    since = len(fake.calls)
    later = spawn(nursery, client.call, DELETE, {"what": "a"})
    msg = await asked(fake, since)
    since = len(fake.calls)
    qid = fake.press(msg, "✅ Approve 30m")
    assert await answer_for(fake, qid) == "Approved; allowed for 30m"
    assert text_of(await later.wait()) == "deleted a"
    await edited(fake, msg.message_id, since)
    assert (
        "Approved" in msg.visible_text
        and "t/delete_thing allowed for 30m (this tool only)" in msg.visible_text
    )
    assert msg.buttons == []
    before = approval_messages(fake)
    assert text_of(await client.call(DELETE, {"what": "b"})) == "deleted b"
    [grant] = db_rows(tmp_path, "SELECT * FROM grants")
    assert grant["pattern"] == "t/delete_thing" and grant["revoked_at"] is None
    assert round(grant["expires_at"] - grant["created_at"]) == 1800
    assert "Grants (1)" in (await reply_to(fake, "/status")).visible_text

    # 5. /revoke → approval is needed again (denied here).
    reply = await reply_to(fake, "/revoke")
    assert reply.visible_text == "Revoked 1 grant in total."
    since = len(fake.calls)
    later = spawn(nursery, client.call, DELETE, {"what": "c"})
    msg = await asked(fake, since)
    fake.press(msg, "❌ Deny")
    assert (await later.wait())["isError"] is True

    # A stranger's /grant does nothing (and is recorded); the admin's /grant t/* 1h does.
    fake.inject_message(STRANGER, "/grant t/* 1h")
    fake.inject_message(ADMIN, "/grant t/* 1h", user_id=STRANGER)
    reply = await reply_to(fake, "/status")  # handled after the two above
    assert "Grants (0)" in reply.visible_text
    ignored = db_rows(tmp_path, "SELECT detail FROM events WHERE kind = 'telegram_ignored' ORDER BY id")
    assert [(json.loads(r["detail"])["chat_id"], json.loads(r["detail"])["content"]) for r in ignored] == [
        (STRANGER, "/grant t/* 1h"),
        (ADMIN, "/grant t/* 1h"),
    ]
    reply = await reply_to(fake, "/grant t/* 1h")
    assert reply.visible_text.startswith("✅ Granted t/* for 1h")
    before = approval_messages(fake)
    assert text_of(await client.call(DELETE, {"what": "d"})) == "deleted d"
    assert "pid" in text_of(await client.call("t__whoami"))  # also require-approval, also granted by t/*
    # A grant never overrides deny.
    res = await client.call("t__add", {"a": 1, "b": 2})
    assert res["isError"] is True and "denied by rule 't/add'" in text_of(res)
    assert approval_messages(fake) == before

    # /revoke t/* → approval needed again.
    reply = await reply_to(fake, "/revoke t/*")
    assert reply.visible_text == "Revoked 1 grant matching t/*."
    since = len(fake.calls)
    later = spawn(nursery, client.call, DELETE, {"what": "e"})
    msg = await asked(fake, since)
    fake.press(msg, "✅ Approve")
    assert text_of(await later.wait()) == "deleted e"

    assert audit(tmp_path) == [
        ("t/delete_thing", "approved", "admin", "ok"),
        ("t/delete_thing", "allow", "grant:t/delete_thing", "ok"),
        ("t/delete_thing", "rejected", "admin", "refused"),
        ("t/delete_thing", "allow", "grant:t/*", "ok"),
        ("t/whoami", "allow", "grant:t/*", "ok"),
        ("t/add", "deny", "rule:t/add", "refused"),
        ("t/delete_thing", "approved", "admin", "ok"),
    ]


async def test_timeout_restart_keeps_grants_and_sigkill_keeps_decisions(
    tmp_path: Path, fake: FakeBotAPI, nursery: trio.Nursery
) -> None:
    # 4. Nobody answers: denied after approval_timeout; the message says it timed out.
    g = await launch(tmp_path, config_text(tmp_path, fake.api_base, timeout="3s"))
    try:
        await fake.wait_for_call("setMyCommands")
        c = await Mcp(g.url).initialize()
        since = len(fake.calls)
        later = spawn(nursery, c.call, DELETE, {"what": "slowly"})
        msg = await asked(fake, since)
        assert "left to decide" in msg.visible_text
        res = await later.wait()
        assert res["isError"] is True
        assert text_of(res) == "Call to t/delete_thing refused: approval timed out after 3s."
        await edited(fake, msg.message_id)
        assert msg.visible_text.startswith("⌛ Timed out") and msg.buttons == []
        qid = fake.inject_callback(ADMIN, msg.message_id, f"a:{approval_id_of(msg, fake)}")
        assert await answer_for(fake, qid) == "Already decided"
        [row] = db_rows(tmp_path, "SELECT state, source FROM approvals")
        assert row == {"state": "expired", "source": "timeout"}

        # 6. A grant in force survives a restart (SIGTERM, then a new process on the same data_dir).
        update = fake.inject_message(ADMIN, "/grant t/delete_thing 1h")
        reply = await fake.wait_for_message(lambda m: "Granted" in m.text)
        assert "t/delete_thing for 1h" in reply.visible_text
        # Let the bot confirm the update, so the next process does not see it again.
        await fake.wait_for_call(
            "getUpdates", lambda call: int(call.params.get("offset", 0)) > update["update_id"], ok=None
        )

        # Shutdown while a call waits for the admin: it is denied, answered, and its message says so.
        since = len(fake.calls)
        waiting = spawn(nursery, c.call, "t__whoami")
        msg = await asked(fake, since)
        since = len(fake.calls)
    finally:
        assert await stop(g) == 0
    res = await waiting.wait()
    assert res["isError"] is True
    assert text_of(res) == "Call to t/whoami refused: the gateway shut down before the admin decided."
    await edited(fake, msg.message_id, since)
    assert msg.visible_text.startswith("🛑 Gateway shut down") and msg.buttons == []
    await c.aclose()
    assert not [line for line in g.lines if "Traceback" in line], g.log_text()[-3000:]

    restarted = len(fake.calls)
    g = await launch(tmp_path, config_text(tmp_path, fake.api_base, timeout="30s"))
    try:
        await fake.wait_for_call("setMyCommands", since=restarted)
        c = await Mcp(g.url).initialize()
        before = approval_messages(fake)
        assert text_of(await c.call(DELETE, {"what": "after restart"})) == "deleted after restart"
        assert approval_messages(fake) == before

        # 7. SIGKILL right after a decision: the answered call's decision and audit record are on disk.
        since = len(fake.calls)
        later = spawn(nursery, c.call, "t__whoami")
        msg = await asked(fake, since)
        aid = approval_id(msg)
        qid = fake.press(msg, "✅ Approve")
        assert await answer_for(fake, qid) == "Approved"
        res = await later.wait()
        assert not res.get("isError"), res
        # And one left pending when the process dies: closed as expired at the next start.
        since = len(fake.calls)
        spawn(nursery, _call_ignoring_errors, c, "t__whoami")
        pending_msg = await asked(fake, since)
        pending_id = approval_id(pending_msg)
    finally:
        await stop(g, signal.SIGKILL)
    assert g.proc.returncode == -signal.SIGKILL
    await c.aclose()

    [row] = db_rows(tmp_path, "SELECT state, source, tool FROM approvals WHERE id = ?", aid)
    assert row == {"state": "approved", "source": "admin", "tool": "t/whoami"}
    [row] = db_rows(tmp_path, "SELECT state FROM approvals WHERE id = ?", pending_id)
    assert row == {"state": "pending"}
    assert audit(tmp_path) == [
        ("t/delete_thing", "expired", "timeout", "refused"),
        ("t/whoami", "rejected", "shutdown", "refused"),
        ("t/delete_thing", "allow", "grant:t/delete_thing", "ok"),
        ("t/whoami", "approved", "admin", "ok"),
    ]

    restarted = len(fake.calls)
    g = await launch(tmp_path, config_text(tmp_path, fake.api_base, timeout="30s"))
    try:
        await trio.to_thread.run_sync(g.wait_log, "closed 1 approval(s) left pending")
        [row] = db_rows(tmp_path, "SELECT state, source FROM approvals WHERE id = ?", pending_id)
        assert row == {"state": "expired", "source": "timeout"}
        # Its message still shows buttons: a press is refused and takes them away.
        await fake.wait_for_call("setMyCommands", since=restarted)
        since = len(fake.calls)
        qid = fake.press(pending_msg, "✅ Approve")
        assert await answer_for(fake, qid) == "Unknown or expired request"
        await fake.wait_for_call("editMessageReplyMarkup", since=since)
        assert pending_msg.buttons == []
    finally:
        await stop(g)


async def _call_ignoring_errors(c: Mcp, tool: str) -> None:
    try:
        await c.call(tool)
    except (httpx.HTTPError, AssertionError):
        pass  # the gateway is killed while this call waits


async def test_wrong_bot_token_stops_the_bot_not_the_gateway(tmp_path: Path, fake: FakeBotAPI) -> None:
    g = await launch(tmp_path, config_text(tmp_path, fake.api_base, token=WRONG_TOKEN))
    try:
        await trio.to_thread.run_sync(g.wait_log, "Telegram bot stopped")
        c = await Mcp(g.url).initialize()
        try:
            assert text_of(await c.call("t__echo", {"text": "still here"})) == "still here"
            res = await c.call(DELETE, {"what": "x"})
            assert res["isError"] is True
            assert text_of(res) == "Call to t/delete_thing refused: Telegram unreachable."
            assert (await trio.to_thread.run_sync(g.health)).status_code == 200
        finally:
            await c.aclose()
    finally:
        assert await stop(g) == 0
    # The first call (deleteWebhook) gets 401 and the bot stops there: nothing else is tried.
    assert fake.count("deleteWebhook", ok=False) == 1 and fake.count("getMe", ok=None) == 0
    assert fake.count("sendMessage", ok=None) == 0
    text = g.log_text()
    assert "rejected the bot token" in text
    assert WRONG_TOKEN not in text and "WRONG-secret" not in text
    assert audit(tmp_path) == [
        ("t/echo", "allow", "rule:t/echo", "ok"),
        ("t/delete_thing", "rejected", "unreachable", "refused"),
    ]


async def test_progress_while_waiting_for_approval(
    tmp_path: Path, fake: FakeBotAPI, gw: GatewayProcess, client: Mcp, nursery: trio.Nursery
) -> None:
    progressed = trio.Event()

    def on_message(m: dict[str, Any]) -> None:
        if m.get("method") == "notifications/progress":
            progressed.set()

    params = {"name": DELETE, "arguments": {"what": "slowly"}, "_meta": {"progressToken": "p1"}}
    since = len(fake.calls)
    later = spawn(nursery, client.request_raw, "tools/call", params, on_message)
    msg = await asked(fake, since)
    with trio.fail_after(10):  # the broker ticks every 5 s
        await progressed.wait()
    fake.press(msg, "✅ Approve")
    resp, streamed = await later.wait()
    assert text_of(resp["result"]) == "deleted slowly"
    assert streamed, "no progress before the answer"
    assert all(m["method"] == "notifications/progress" for m in streamed)
    assert [m["params"]["progressToken"] for m in streamed] == ["p1"] * len(streamed)
    assert [m["params"]["progress"] for m in streamed] == list(range(1, len(streamed) + 1))
    assert "waiting for the admin's approval" in streamed[0]["params"]["message"]
    assert audit(tmp_path) == [("t/delete_thing", "approved", "admin", "ok")]


LOOKALIKE_POLICIES = """
[policies]
default = "allow"
[policies.rules]
"evil/create_*" = "require-approval"
"t/delete_*" = "deny"
"""


async def test_exact_grants_lookalike_names_and_full_arguments(
    tmp_path: Path, fake: FakeBotAPI, nursery: trio.Nursery
) -> None:
    telegram = f'[telegram]\nbot_token = "{TOKEN}"\nadmin_chat_id = {ADMIN}\napi_base = "{fake.api_base}"\n'
    text = (
        server_toml(tmp_path)
        + telegram
        + LOOKALIKE_POLICIES
        + REPLACEMENTS
        # prefix = false, and before t in the file: its t__delete_thing used to take t's exposed name.
        + child_toml("u", "--extra-tool", "t__delete_thing", prefix=False)
        + child_toml("evil", "--extra-tool", "create_*", "--extra-tool", "create_anything")
        + child_toml("t")
    )
    g = await launch(tmp_path, text)
    try:
        await trio.to_thread.run_sync(lambda: g.wait_ready(expect=3))
        await fake.wait_for_call("setMyCommands")
        c = await Mcp(g.url).initialize()
        try:
            # 1. The unprefixed look-alike is exposed prefixed; t__delete_thing is t's, and denied.
            resp, _ = await c.request_raw("tools/list")
            names = {t["name"] for t in resp["result"]["tools"]}
            assert "u__t__delete_thing" in names and "t__delete_thing" not in names
            assert "echo" in names and "t__echo" in names and "evil__create_*" in names
            res = await c.call("t__delete_thing", {"what": "everything"})
            assert res["isError"] is True and "denied by rule 't/delete_*'" in text_of(res)
            assert text_of(await c.call("u__t__delete_thing", {"text": "u's own"})) == "u's own"
            await trio.to_thread.run_sync(
                g.wait_log, "u/t__delete_thing (prefix = false) contains the separator"
            )

            # 2. The approval shows the real arguments; Full arguments sends them as the client sent them.
            since = len(fake.calls)
            later = spawn(nursery, c.call, "evil__create_*", {"text": "for John Doe"})
            msg = await asked(fake, since)
            assert "Tool: evil/create_*" in msg.visible_text and "Jane Realname" in msg.visible_text
            since = len(fake.calls)
            qid = fake.press(msg, "📄 Full arguments")
            assert await answer_for(fake, qid) == "Sending the full arguments"
            full = await fake.wait_for_message(lambda m: "Full arguments" in m.text, since=since)
            assert json.loads(full.visible_text.split("\n", 1)[1]) == {"text": "for John Doe"}
            assert "Realname" not in full.text and msg.buttons

            # 3. Approve 30m on evil/create_* grants that tool only, not the glob.
            since = len(fake.calls)
            qid = fake.press(msg, "✅ Approve 30m")
            assert await answer_for(fake, qid) == "Approved; allowed for 30m"
            assert text_of(await later.wait()) == "for John Doe"
            [grant] = db_rows(tmp_path, "SELECT pattern FROM grants")
            assert grant["pattern"] == "evil/create_\\*"
            assert text_of(await c.call("evil__create_*", {"text": "again"})) == "again"  # granted
            since = len(fake.calls)
            later = spawn(nursery, c.call, "evil__create_anything", {"text": "unasked?"})
            msg = await asked(fake, since)  # not granted: the admin is asked
            assert "Tool: evil/create_anything" in msg.visible_text
            fake.press(msg, "❌ Deny")
            res = await later.wait()
            assert res["isError"] is True and "approval denied by the admin" in text_of(res)
        finally:
            await c.aclose()
    finally:
        assert await stop(g) == 0
    assert audit(tmp_path) == [
        ("t/delete_thing", "deny", "rule:t/delete_*", "refused"),
        ("u/t__delete_thing", "allow", "default", "ok"),
        ("evil/create_*", "approved", "admin", "ok"),
        ("evil/create_*", "allow", "grant:evil/create_\\*", "ok"),
        ("evil/create_anything", "rejected", "admin", "refused"),
    ]


# ----------------------------------------------- approvals as tasks (2026-07-28, the tasks extension)
V2026 = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"


async def modern(
    gw: GatewayProcess, method: str, params: dict[str, Any], *, tasks: bool = True, name: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One stateless-era request (no session): the envelope in _meta, the routing headers."""
    caps: dict[str, Any] = {"extensions": {TASKS: {}}} if tasks else {}
    meta = {
        "io.modelcontextprotocol/protocolVersion": V2026,
        "io.modelcontextprotocol/clientCapabilities": caps,
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {BEARER}",
        "MCP-Protocol-Version": V2026,
        "Mcp-Method": method,
    }
    if name is not None:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": meta}}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(gw.url + "/mcp", json=body, headers=headers)
    return r.status_code, r.json()


async def task_state(gw: GatewayProcess, task_id: str) -> dict[str, Any]:
    status, body = await modern(gw, "tasks/get", {"taskId": task_id}, name=task_id)
    assert status == 200, body
    result: dict[str, Any] = body["result"]
    return result


async def settled(gw: GatewayProcess, task_id: str) -> dict[str, Any]:
    """The task once it has left ``working`` (polled, as a client of tasks does), within 20 s."""
    for _ in range(200):
        state = await task_state(gw, task_id)
        if state["status"] != "working":
            return state
        await trio.sleep(0.1)
    raise AssertionError(f"task {task_id} still working: {state}")


async def test_an_approval_is_a_task_for_a_2026_client_that_asks(
    tmp_path: Path, fake: FakeBotAPI, gw: GatewayProcess
) -> None:
    status, body = await modern(gw, "server/discover", {})
    assert TASKS in body["result"]["capabilities"]["extensions"]

    # 1. The call that needs approval comes back at once as a task, working, with the waiting message.
    since = len(fake.calls)
    status, body = await modern(gw, "tools/call", {"name": DELETE, "arguments": {"what": "x"}}, name=DELETE)
    assert status == 200, body
    task = body["result"]
    assert task["resultType"] == "task" and task["status"] == "working"
    assert "approval of t/delete_thing" in task["statusMessage"]
    msg = await asked(fake, since)  # the admin is asked as for any call
    assert (await task_state(gw, task["taskId"]))["status"] == "working"
    fake.press(msg, "✅ Approve")
    state = await settled(gw, task["taskId"])
    assert state["status"] == "completed" and state["resultType"] == "complete"
    assert text_of(state["result"]) == "deleted x"

    # 2. Denied: the task completes with the refusal as the tool's result (isError), as a blocking call.
    since = len(fake.calls)
    _, body = await modern(gw, "tools/call", {"name": DELETE, "arguments": {"what": "y"}}, name=DELETE)
    fake.press(await asked(fake, since), "❌ Deny")
    state = await settled(gw, body["result"]["taskId"])
    assert state["status"] == "completed" and state["result"]["isError"] is True

    # 3. Cancelled by the client: the approval is withdrawn, the call never runs.
    since = len(fake.calls)
    _, body = await modern(gw, "tools/call", {"name": DELETE, "arguments": {"what": "z"}}, name=DELETE)
    await asked(fake, since)
    task_id = body["result"]["taskId"]
    status, ack = await modern(gw, "tasks/cancel", {"taskId": task_id}, name=task_id)
    assert status == 200 and ack["result"]["resultType"] == "complete"
    state = await settled(gw, task_id)
    assert state["status"] == "cancelled"

    # An unknown task id is an error; a client that did not ask for tasks keeps the blocking call.
    status, body = await modern(gw, "tasks/get", {"taskId": "no-such-task"}, name="no-such-task")
    assert status == 400 and body["error"]["code"] == -32602
    since = len(fake.calls)
    blocking = trio.Event()
    result: dict[str, Any] = {}

    async def call_without_tasks() -> None:
        _, answer = await modern(
            gw, "tools/call", {"name": DELETE, "arguments": {"what": "w"}}, tasks=False, name=DELETE
        )
        result.update(answer)
        blocking.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call_without_tasks)
        fake.press(await asked(fake, since), "✅ Approve")
        with trio.fail_after(20):
            await blocking.wait()
    assert text_of(result["result"]) == "deleted w" and "taskId" not in result["result"]
    done = [row for row in audit(tmp_path) if row[0] == "t/delete_thing"]
    # approved, denied, cancelled while waiting (as a client that goes away), approved
    assert [(row[1], row[3]) for row in done][-4:] == [
        ("approved", "ok"),
        ("rejected", "refused"),
        ("expired", "error"),
        ("approved", "ok"),
    ]
