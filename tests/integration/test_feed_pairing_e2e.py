"""The activity feed, pairing and /whoami end to end: the real ``portero serve`` process, the fake Bot API.

The bot sends at most one message a second, so each test shares one gateway across several steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from .harness import server_toml, text_of
from .test_approvals_e2e import Mcp, db_rows, launch, stop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN, FakeBotAPI, Message  # noqa: E402

from .harness import child_toml  # noqa: E402

ADMIN = 4242
STRANGER = 666
CODE = "pair-me-please-42"

POLICIES = """
[policies]
default = "allow"
[policies.rules]
"t/delete_thing" = "require-approval"
"t/add" = "deny"
"""


def config_text(tmp: Path, api_base: str, telegram: str) -> str:
    head = f'[telegram]\nbot_token = "{TOKEN}"\napi_base = "{api_base}"\napproval_timeout = "20s"\n'
    return server_toml(tmp) + head + telegram + POLICIES + child_toml("t")


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBotAPI:
    api = FakeBotAPI()
    api.wait_timeout = 10.0
    await nursery.start(api.serve)
    return api


async def said(fake: FakeBotAPI, chat: int, text: str, *, by: int | None = None) -> Message:
    """Send ``text`` from ``chat`` (user ``by``) and wait for the bot's next message to that chat."""
    since = len(fake.calls)
    fake.inject_message(chat, text, user_id=by)
    return await fake.wait_for_message(lambda m: m.chat_id == chat, since=since)


def events(tmp: Path, kind: str) -> list[str]:
    return [r["detail"] for r in db_rows(tmp, "SELECT detail FROM events WHERE kind = ? ORDER BY id", kind)]


async def test_feed_batches_fifty_calls_into_one_message(tmp_path: Path, fake: FakeBotAPI) -> None:
    telegram = f'admin_chat_id = {ADMIN}\nactivity = "batched"\nactivity_interval = "4s"\n'
    g = await launch(tmp_path, config_text(tmp_path, fake.api_base, telegram))
    client = await Mcp(g.url).initialize()
    try:
        # One call first, to learn when an interval starts: the next one begins when its summary is out.
        await client.call("t__echo", {"text": "warm-up"})
        first = await fake.wait_for_message(lambda m: "t/echo" in m.text)
        assert first.text == "1 call: t/echo ×1"
        since = len(fake.calls)
        for i in range(50):
            assert text_of(await client.call("t__echo", {"text": str(i)})) == str(i)
        assert "denied" in text_of(await client.call("t__add", {"a": 1, "b": 2}))
        batch = await fake.wait_for_message(lambda m: m.chat_id == ADMIN, since=since)
        assert batch.text == "50 calls: t/echo ×50; denied: t/add ×1"
        await trio.sleep(5)  # a quiet interval: nothing is sent
        assert [c for c in fake.calls[since:] if c.method == "sendMessage"] == [
            c for c in fake.calls[since:] if c.method == "sendMessage" and c.params["text"] == batch.text
        ]
    finally:
        await client.aclose()
        await stop(g)


async def test_pairing_whoami_rate_limit_restart_and_unpair(tmp_path: Path, fake: FakeBotAPI) -> None:
    text = config_text(tmp_path, fake.api_base, f'pairing_code = "{CODE}"\n')
    g = await launch(tmp_path, text)
    try:
        await fake.wait_for_call("getUpdates", ok=None)
        assert fake.count("setMyCommands") == 0  # no admin chat: no command menu yet

        # Anyone may ask for their chat id, and gets nothing else.
        assert (await said(fake, STRANGER, "/whoami")).text == f"Your chat id: {STRANGER}"

        # Unpaired: an approval cannot be delivered, so it is denied as when Telegram is unreachable.
        client = await Mcp(g.url).initialize()
        try:
            res = await client.call("t__delete_thing", {"id": "1"})
            assert res.get("isError") and "Telegram unreachable" in text_of(res)
        finally:
            await client.aclose()

        # Wrong codes: five answered, then the chat is held back -- even with the right code.
        for _ in range(5):
            assert (await said(fake, STRANGER, "/pair not-the-code")).text == "Wrong pairing code."
        assert (await said(fake, STRANGER, f"/pair {CODE}")).text.startswith("Too many wrong pairing codes")
        assert len(events(tmp_path, "telegram_pair_failed")) == 5
        assert len(events(tmp_path, "telegram_pair_limited")) == 1
        assert all(
            CODE not in d and "not-the-code" not in d for d in events(tmp_path, "telegram_pair_failed")
        )

        # The right code from another chat pairs it, and the command menu is set for it.
        assert (await said(fake, ADMIN, f"/pair {CODE}")).text.startswith("Paired")
        menu = await fake.wait_for_call("setMyCommands")
        assert menu.params["scope"] == {"type": "chat", "chat_id": ADMIN}
        assert db_rows(tmp_path, "SELECT value FROM settings WHERE key = 'telegram.admin_chat_id'") == [
            {"value": str(ADMIN)}
        ]
        # Now a stranger's /pair is ignored (and recorded), and the admin's commands work.
        fake.inject_message(STRANGER, f"/pair {CODE}")
        assert "Portero commands" in (await said(fake, ADMIN, "/help")).text
        assert len(events(tmp_path, "telegram_ignored")) == 1
    finally:
        await stop(g)

    # The paired chat survives a restart.
    since = len(fake.calls)
    g = await launch(tmp_path, text)
    try:
        await fake.wait_for_call("setMyCommands", since=since)
        assert "Portero commands" in (await said(fake, ADMIN, "/help")).text
        # /unpair from the admin releases it: its commands are ignored again.
        assert (await said(fake, ADMIN, "/unpair")).text.startswith("Unpaired")
        assert db_rows(tmp_path, "SELECT * FROM settings") == []
        fake.inject_message(ADMIN, "/help")
        assert (await said(fake, STRANGER, "/whoami")).text == f"Your chat id: {STRANGER}"
        assert len(events(tmp_path, "telegram_ignored")) == 2
        assert len(events(tmp_path, "telegram_unpaired")) == 1
    finally:
        await stop(g)
