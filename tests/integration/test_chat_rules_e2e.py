"""Rules from the chat end to end: the real ``portero serve``, the fake Bot API, ``portero tools``.

/allow /deny /ask /unrule /rules and the Always allow / Always deny buttons; a chat rule beating the
config's rule of equal specificity; the rules surviving SIGHUP and a restart. One gateway (restarted once)
for everything: the bot sends one message a second.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from .harness import GatewayProcess, child_toml, server_toml, text_of
from .test_approvals_e2e import (
    ADMIN,
    Mcp,
    answer_for,
    approval_messages,
    asked,
    audit,
    db_rows,
    edited,
    launch,
    reply_to,
    spawn,
    stop,
)
from .test_clients_e2e import reload
from .test_tools_cmd import free_port, run_tools

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN, FakeBotAPI  # noqa: E402

POLICIES = """
[policies]
default = "allow"
[policies.rules]
"t/delete_*" = "require-approval"
"t/add" = "deny"
"t/echo" = "allow"
"""


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBotAPI:
    api = FakeBotAPI()
    api.wait_timeout = 10.0
    await nursery.start(api.serve)
    return api


def config_text(tmp: Path, api_base: str, port: int) -> str:
    telegram = (
        f'[telegram]\nbot_token = "{TOKEN}"\nadmin_chat_id = {ADMIN}\napi_base = "{api_base}"\n'
        'approval_timeout = "30s"\n'
    )
    return server_toml(tmp).replace("port = 0", f"port = {port}") + telegram + POLICIES + child_toml("t")


async def started(tmp: Path, fake: FakeBotAPI, text: str) -> GatewayProcess:
    since = len(fake.calls)
    g = await launch(tmp, text)
    await fake.wait_for_call("setMyCommands", since=since)
    return g


async def test_rules_from_the_chat_and_the_always_buttons(
    tmp_path: Path, fake: FakeBotAPI, nursery: trio.Nursery
) -> None:
    text = config_text(tmp_path, fake.api_base, free_port())
    gw = await started(tmp_path, fake, text)
    try:
        client = await Mcp(gw.url).initialize()

        # /deny t/echo: the chat's exact rule beats the config's exact allow (equal specificity).
        reply = await reply_to(fake, "/deny t/echo")
        assert reply.visible_text == "Rule from the chat: t/echo → deny. /rules shows all."
        res = await client.call("t__echo", {"text": "hi"})
        assert res["isError"] is True and "denied by rule 't/echo'" in text_of(res)
        # /allow t/add: ... and the config's exact deny.
        reply = await reply_to(fake, "/allow t/add")
        assert reply.visible_text == "Rule from the chat: t/add → allow. /rules shows all."
        assert text_of(await client.call("t__add", {"a": 1, "b": 2})) == "3"

        # /ask t/echo replaces the deny; the approval has Always allow: it runs, and the next call without
        # asking.
        reply = await reply_to(fake, "/ask t/echo")
        assert (
            reply.visible_text
            == "Rule from the chat: t/echo → require-approval (was deny). /rules shows all."
        )
        since = len(fake.calls)
        later = spawn(nursery, client.call, "t__echo", {"text": "one"})
        msg = await asked(fake, since)
        assert "Rule: chat-rule:t/echo" in msg.visible_text
        assert msg.reply_markup is not None
        assert [[b["text"] for b in row] for row in msg.reply_markup["inline_keyboard"]] == [
            ["✅ Approve", "❌ Deny"],
            ["✅ Approve 30m"],
            ["♾️ Always allow", "⛔ Always deny"],
            ["📄 Full arguments"],
        ]
        since = len(fake.calls)
        qid = fake.press(msg, "♾️ Always allow")
        assert await answer_for(fake, qid) == "Approved; always allowed from now on"
        assert text_of(await later.wait()) == "one"
        await edited(fake, msg.message_id, since)
        assert "t/echo always allowed from now on: a rule from the chat" in msg.visible_text
        assert msg.buttons == []
        since = len(fake.calls)
        assert text_of(await client.call("t__echo", {"text": "two"})) == "two"

        # Always deny on a tool a config pattern asks about: refused now, and from now on without asking.
        later = spawn(nursery, client.call, "t__delete_thing", {"what": "x"})
        msg = await asked(fake, since)
        assert "Rule: rule:t/delete_*" in msg.visible_text
        since = len(fake.calls)
        qid = fake.press(msg, "⛔ Always deny")
        assert await answer_for(fake, qid) == "Denied; always denied from now on"
        assert (await later.wait())["isError"] is True
        await edited(fake, msg.message_id, since)
        assert "t/delete_thing always denied from now on" in msg.visible_text
        since = len(fake.calls)
        res = await client.call("t__delete_thing", {"what": "y"})
        assert res["isError"] is True and "denied by rule 't/delete_thing'" in text_of(res)

        # /unrule t/add: the config's deny again.
        reply = await reply_to(fake, "/unrule t/add")
        assert reply.visible_text == "Removed the rule from the chat t/add → allow."
        assert (await client.call("t__add", {"a": 1, "b": 2}))["isError"] is True
        assert approval_messages(fake, since) == 0  # neither asked about again

        rules = (await reply_to(fake, "/rules")).visible_text.splitlines()
        assert rules[:8] == [
            "Rules (default: allow)",
            "From the chat (2)",
            "• t/delete_thing → deny",
            "• t/echo → allow — beats the config's allow",
            "From the config (3)",
            "• t/echo → allow — overridden by the chat's rule",
            "• t/add → deny",
            "• t/delete_* → require-approval",
        ]
        assert "Rules from the chat: 2 (/rules)" in (await reply_to(fake, "/status")).visible_text
        stored = db_rows(tmp_path, "SELECT pattern, action, created_by FROM chat_rules ORDER BY pattern")
        assert stored == [
            {"pattern": "t/delete_thing", "action": "deny", "created_by": "telegram"},
            {"pattern": "t/echo", "action": "allow", "created_by": "telegram"},
        ]

        # SIGHUP with a changed config: the chat's rules stay in force.
        gw.config_path.write_text(text.replace('"t/add" = "deny"', '"t/add" = "require-approval"'))
        await trio.to_thread.run_sync(reload, gw)
        res = await client.call("t__delete_thing", {"what": "z"})
        assert res["isError"] is True and "denied by rule 't/delete_thing'" in text_of(res)
        await client.aclose()
    finally:
        await stop(gw)

    # A restart: loaded from the store before the first call.
    gw = await started(tmp_path, fake, text)
    try:
        client = await Mcp(gw.url).initialize()
        res = await client.call("t__delete_thing", {"what": "after"})
        assert res["isError"] is True and "denied by rule 't/delete_thing'" in text_of(res)
        assert text_of(await client.call("t__echo", {"text": "after"})) == "after"
        await client.aclose()
        # portero tools (another process, the store read-only) says which rule applies.
        done = await trio.to_thread.run_sync(run_tools, gw.config_path, "--json")
        assert done.returncode == 0, done.stderr
        rows = {r.get("canonical"): r for r in map(json.loads, done.stdout.splitlines()) if "canonical" in r}
        assert (rows["t/echo"]["action"], rows["t/echo"]["source"]) == ("allow", "chat-rule:t/echo")
        assert "t/delete_thing" not in rows and "t/add" not in rows  # denied: not listed
    finally:
        await stop(gw)

    assert audit(tmp_path) == [
        ("t/echo", "deny", "chat-rule:t/echo", "refused"),
        ("t/add", "allow", "chat-rule:t/add", "ok"),
        ("t/echo", "approved", "admin", "ok"),
        ("t/echo", "allow", "chat-rule:t/echo", "ok"),
        ("t/delete_thing", "rejected", "admin", "refused"),
        ("t/delete_thing", "deny", "chat-rule:t/delete_thing", "refused"),
        ("t/add", "deny", "rule:t/add", "refused"),
        ("t/delete_thing", "deny", "chat-rule:t/delete_thing", "refused"),
        ("t/delete_thing", "deny", "chat-rule:t/delete_thing", "refused"),
        ("t/echo", "allow", "chat-rule:t/echo", "ok"),
    ]
