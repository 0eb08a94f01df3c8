"""Replies to approval messages, end to end (the real ``portero serve``, the fake Bot API): deny with a reason
the model reads, a reason after the Deny button (the record only), and approve with edited arguments,
checked against the tool's input schema.

One gateway for all of it: the bot sends one message a second, so the scenarios share it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import trio

from .harness import GatewayProcess, text_of
from .test_approvals_e2e import (
    ADMIN,
    DELETE,
    Mcp,
    asked,
    config_text,
    db_rows,
    launch,
    spawn,
    stop,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import FakeBotAPI, Message  # noqa: E402


async def reply(fake: FakeBotAPI, text: str, to: int) -> Message:
    """Reply to message ``to`` as the admin; the bot's answer."""
    since = len(fake.calls)
    fake.inject_message(ADMIN, text, reply_to=to)
    return await fake.wait_for_message(lambda m: m.chat_id == ADMIN and not m.buttons, since=since)


def audit_row(tmp: Path) -> dict[str, object]:
    return db_rows(tmp, "SELECT * FROM audit ORDER BY id DESC LIMIT 1")[0]


def approval_row(tmp: Path) -> dict[str, object]:
    return db_rows(tmp, "SELECT * FROM approvals ORDER BY created_at DESC LIMIT 1")[0]


async def test_deny_reasons_and_edited_arguments(tmp_path: Path, nursery: trio.Nursery) -> None:
    fake = FakeBotAPI()
    fake.wait_timeout = 10.0
    await nursery.start(fake.serve)
    g: GatewayProcess = await launch(tmp_path, config_text(tmp_path, fake.api_base))
    client = None
    try:
        await fake.wait_for_call("setMyCommands")
        client = await Mcp(g.url).initialize()

        # 1. A reply instead of Deny: denied at once, the model reads the reason (anonymized: the admin
        # wrote the real name), the approval and the audit row keep it.
        since = len(fake.calls)
        later = spawn(nursery, client.call, DELETE, {"what": "x"})
        msg = await asked(fake, since)
        assert "💬 To deny with a reason the model reads, reply to this message with it." in msg.visible_text
        answer = await reply(fake, "use the staging repository\nof Jane Realname instead", msg.message_id)
        assert answer.visible_text == "💬 Denied: the model reads your reason in the refusal."
        res = await later.wait()
        expected = (
            "Call to t/delete_thing refused: denied by the admin: use the staging repository of John Doe"
        )
        expected += " instead."
        assert res["isError"] is True and text_of(res) == expected
        row = audit_row(tmp_path)
        assert (row["decision"], row["source"], row["outcome"], row["error"]) == (
            "rejected",
            "admin",
            "refused",
            expected,
        )
        assert approval_row(tmp_path)["reason"] == "use the staging repository of John Doe instead"
        assert msg.visible_text.startswith("❌ Denied") and msg.buttons == []
        assert "Reason (as the model reads it): use the staging repository of John Doe instead" in (
            msg.visible_text
        )

        # 2. The Deny button: the plain refusal at once; a reply then is for the record only, and says so.
        since = len(fake.calls)
        later = spawn(nursery, client.call, DELETE, {"what": "y"})
        msg = await asked(fake, since)
        fake.press(msg, "❌ Deny")
        res = await later.wait()
        assert text_of(res) == "Call to t/delete_thing refused: approval denied by the admin."
        await fake.wait_for_call("editMessageText", lambda c: c.params["message_id"] == msg.message_id)
        assert "within 2m to record why in the audit" in msg.visible_text
        answer = await reply(fake, "Jane Realname asked me not to", msg.message_id)
        assert "the model did not see it" in answer.visible_text
        assert approval_row(tmp_path)["reason"] == "John Doe asked me not to"
        answer = await reply(fake, "and another thing", msg.message_id)
        assert answer.visible_text.startswith("A reason was already given")
        answer = await reply(fake, "what?", answer.message_id)  # a reply to a message that is no approval
        assert answer.visible_text.startswith("That message is not a pending or lately denied approval")

        # 3. Edited arguments: bad JSON and arguments that do not fit the schema leave the call pending
        # (the admin is told why); fitting ones run, as the admin wrote them (real values).
        since = len(fake.calls)
        later = spawn(nursery, client.call, DELETE, {"what": "the files of John Doe"})
        msg = await asked(fake, since)
        assert '✏️ Reply with corrected JSON to approve with it:\n{"what": "the files of Jane Realname"}' in (
            msg.visible_text
        )
        answer = await reply(fake, '{"what": ', msg.message_id)
        assert answer.visible_text.startswith("Not valid JSON: Expecting value (line 1, column 10).")
        answer = await reply(fake, '{"what": 5, "force": true}', msg.message_id)
        assert answer.visible_text == (
            "Not approved: the arguments do not match the tool's input schema:\n"
            "• what: expected string, got 5\n"
            "The call is still waiting: reply again with corrected JSON, or press Approve or Deny."
        )
        assert not later.done.is_set() and msg.buttons  # still pending
        answer = await reply(fake, '{"what": "the copy of Jane Realname", "force": true}', msg.message_id)
        assert answer.visible_text == "✏️ Approved with your arguments."
        res = await later.wait()
        # The child got the edited arguments; its answer is anonymized on the way back, as any other.
        assert res.get("isError") is not True and text_of(res) == "deleted the copy of John Doe"
        row = audit_row(tmp_path)
        approval = approval_row(tmp_path)
        assert (row["decision"], row["source"], row["outcome"]) == ("approved", "admin", "ok")
        assert json.loads(str(row["arguments"])) == {"what": "the files of John Doe"}  # as the client sent
        assert row["error"] == f"arguments edited by the admin (approval {approval['id']})"
        assert json.loads(str(approval["arguments"])) == {"what": "the files of John Doe"}
        assert json.loads(str(approval["edited_arguments"])) == {
            "what": "the copy of John Doe",
            "force": True,
        }
        assert msg.visible_text.startswith("✅ Approved") and msg.buttons == []
    finally:
        if client is not None:
            await client.aclose()
        assert await stop(g) == 0
