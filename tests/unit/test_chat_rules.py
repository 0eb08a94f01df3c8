"""Rules from the chat: their precedence (pure), the store's section, the router keeping them across
reloads, and the Telegram commands and buttons that add them."""

from __future__ import annotations

import hashlib
import html
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from portero.config import parse_config
from portero.core.policy import Decision, PolicyEngine
from portero.gateway.clients import client_views
from portero.gateway.router import Router
from portero.gateway.sessions import Sessions
from portero.store import Store, StoreError, read_chat_rules
from portero.telegram import render
from portero.telegram.commands import AdminCommands, parse_rule_pattern

# --------------------------------------------------------------------------------- precedence (pure)


def test_a_chat_rule_beats_a_config_rule_of_equal_specificity_whatever_its_action() -> None:
    # Same pattern: the chat's wins, looser or stricter.
    e = PolicyEngine("deny", {"gh/*": "deny", "gh/get": "require-approval"}, chat={"gh/*": "allow"})
    assert e.decide("gh/list") == Decision("allow", "chat-rule:gh/*", "gh/*")
    assert e.decide("gh/get") == Decision("require-approval", "rule:gh/get", "gh/get")
    e = PolicyEngine("allow", {"gh/*": "allow"}, chat={"gh/*": "deny"})
    assert e.decide("gh/list") == Decision("deny", "chat-rule:gh/*", "gh/*")
    # Different patterns with the same number of literal characters: still the chat's.
    e = PolicyEngine("deny", {"gh/a*": "deny"}, chat={"gh/*b": "allow"})
    assert e.decide("gh/ab") == Decision("allow", "chat-rule:gh/*b", "gh/*b")


def test_an_exact_chat_rule_replaces_the_configs_exact_rule() -> None:
    e = PolicyEngine("allow", {"gh/delete": "allow"}, chat={"gh/delete": "deny"})
    assert e.decide("gh/delete") == Decision("deny", "chat-rule:gh/delete", "gh/delete")
    assert not e.visible("gh/delete")


def test_specificity_comes_before_where_a_rule_comes_from() -> None:
    # A config exact rule beats a chat pattern; a config pattern with more literals beats a chat pattern.
    e = PolicyEngine("deny", {"gh/delete": "deny", "gh/list_*": "require-approval"}, chat={"gh/*": "allow"})
    assert e.decide("gh/delete") == Decision("deny", "rule:gh/delete", "gh/delete")
    assert e.decide("gh/list_all") == Decision("require-approval", "rule:gh/list_*", "gh/list_*")
    assert e.decide("gh/get") == Decision("allow", "chat-rule:gh/*", "gh/*")
    # ... and the other way round: a chat exact rule beats a config pattern, a longer chat pattern wins.
    e = PolicyEngine("allow", {"gh/*": "allow"}, chat={"gh/delete": "deny", "gh/del*": "require-approval"})
    assert e.decide("gh/delete") == Decision("deny", "chat-rule:gh/delete", "gh/delete")
    assert e.decide("gh/delta") == Decision("require-approval", "chat-rule:gh/del*", "gh/del*")
    assert e.decide("gh/get") == Decision("allow", "rule:gh/*", "gh/*")


def test_the_stricter_chat_rule_wins_a_tie_among_chat_rules() -> None:
    e = PolicyEngine("allow", {"gh/ab": "allow"}, chat={"gh/a*": "allow", "gh/*b": "deny"})
    assert e.decide("gh/axb") == Decision("deny", "chat-rule:gh/*b", "gh/*b")


def test_a_clients_own_rule_beats_a_chat_rule_of_equal_specificity() -> None:
    e = PolicyEngine("deny", {"gh/*": "deny"}, first={"gh/*": "require-approval"}, chat={"gh/*": "allow"})
    assert e.decide("gh/x") == Decision("require-approval", "client-rule:gh/*", "gh/*")
    e = PolicyEngine("deny", {}, first={"gh/x": "allow"}, chat={"gh/x": "deny"})
    assert e.decide("gh/x") == Decision("allow", "client-rule:gh/x", "gh/x")
    # ... but a more specific chat rule beats a client's broad one.
    e = PolicyEngine("deny", {}, first={"gh/*": "allow"}, chat={"gh/x": "deny"})
    assert e.decide("gh/x") == Decision("deny", "chat-rule:gh/x", "gh/x")
    assert e.decide("gh/y") == Decision("allow", "client-rule:gh/*", "gh/*")


def test_no_chat_rule_matches_the_default() -> None:
    e = PolicyEngine("require-approval", {}, chat={"gh/*": "allow"})
    assert e.decide("fs/read") == Decision("require-approval", "default", None)


def test_chat_rules_are_validated_like_config_rules() -> None:
    with pytest.raises(ValueError, match="'gh/ x'"):
        PolicyEngine("deny", {}, chat={"gh/ x": "allow"})
    with pytest.raises(ValueError, match="action 'maybe'"):
        PolicyEngine("deny", {}, chat={"gh/x": "maybe"})


def test_with_chat_keeps_everything_else_and_is_itself_when_unchanged() -> None:
    e = PolicyEngine("deny", {"gh/*": "require-approval"}, first={"gh/own": "allow"})
    assert e.with_chat({}) is e
    f = e.with_chat({"gh/*": "allow"})
    assert (f.default, f.rules, f.first, f.chat) == (
        "deny",
        {"gh/*": "require-approval"},
        {"gh/own": "allow"},
        {"gh/*": "allow"},
    )
    assert f.decide("gh/own").source == "client-rule:gh/own"
    assert f.decide("gh/x").source == "chat-rule:gh/*"
    assert f.with_chat({"gh/*": "allow"}) is f


# --------------------------------------------------------------------------------------------- store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "gateway.db"))
    yield store
    await store.aclose()


async def test_the_store_keeps_adds_replaces_and_deletes_chat_rules(store: Store, tmp_path: Path) -> None:
    assert await store.chat_rules() == {}
    await store.set_chat_rule("gh/*", "allow", "telegram", 1.0)
    await store.set_chat_rule("gh/delete", "deny", "telegram", 2.0)
    await store.set_chat_rule("gh/*", "require-approval", "telegram", 3.0)  # replaced, one row
    assert await store.chat_rules() == {"gh/delete": "deny", "gh/*": "require-approval"}
    assert read_chat_rules(str(tmp_path / "gateway.db")) == {"gh/delete": "deny", "gh/*": "require-approval"}
    assert await store.delete_chat_rule("gh/*") is True
    assert await store.delete_chat_rule("gh/*") is False
    assert await store.chat_rules() == {"gh/delete": "deny"}


async def test_the_chat_rules_survive_reopening_the_store(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    await store.set_chat_rule("gh/x", "deny", "telegram", 1.0)
    await store.aclose()
    store = await Store.open(path)
    try:
        assert await store.chat_rules() == {"gh/x": "deny"}
    finally:
        await store.aclose()


def test_read_chat_rules_without_a_database_or_from_before_migration_6(tmp_path: Path) -> None:
    assert read_chat_rules(str(tmp_path / "none.db")) == {}
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    assert read_chat_rules(str(old)) == {}


async def test_a_closed_store_refuses_to_set_a_rule(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    await store.aclose()
    with pytest.raises(StoreError):
        await store.set_chat_rule("gh/x", "deny", "telegram", 1.0)


# -------------------------------------------------------------------------------------------- router

CONFIG = f"""
[policies]
default = "require-approval"
rules = {{ "gh/*" = "require-approval", "gh/delete" = "deny" }}

[[client]]
name = "laptop"
token_sha256 = "{hashlib.sha256(b"t").hexdigest()}"
policy = {{ "gh/*" = "allow" }}
"""


async def test_the_router_puts_chat_rules_in_every_engine_and_keeps_them_across_a_reload(
    store: Store,
) -> None:
    config = parse_config(CONFIG, path="/tmp/x.toml", env={})
    router = Router(config, {}, sessions=Sessions(idle_timeout=3600), store=store)
    router.set_chat_rules({"gh/*": "allow", "fs/write": "deny"})
    assert router.policy.decide("gh/x").source == "chat-rule:gh/*"
    laptop = router.clients["laptop"].policy
    assert laptop is not None
    assert laptop.decide("gh/x").source == "client-rule:gh/*"  # the client's own beat the chat's
    assert laptop.decide("fs/write").source == "chat-rule:fs/write"
    # SIGHUP: app.reload_config builds engines from the new config alone; the router adds the chat's.
    new = parse_config(CONFIG.replace('"gh/delete" = "deny"', '"gh/delete" = "allow"'), path="/x", env={})
    router.reload(PolicyEngine(new.policies.default, dict(new.policies.rules)), router.anonymizer)
    router.set_clients(client_views(new.clients, new.policies))
    assert router.policy.decide("gh/x").source == "chat-rule:gh/*"
    assert router.policy.decide("gh/delete") == Decision("allow", "rule:gh/delete", "gh/delete")
    laptop = router.clients["laptop"].policy
    assert laptop is not None and laptop.decide("fs/write").source == "chat-rule:fs/write"


async def test_the_router_stores_a_chat_rule_before_applying_it(store: Store) -> None:
    config = parse_config(CONFIG, path="/tmp/x.toml", env={})
    router = Router(config, {}, sessions=Sessions(idle_timeout=3600), store=store)
    assert await router.add_chat_rule("gh/list", "allow") is None
    assert await router.add_chat_rule("gh/list", "deny") == "allow"
    assert await store.chat_rules() == {"gh/list": "deny"}
    assert router.policy.decide("gh/list").source == "chat-rule:gh/list"
    with pytest.raises(ValueError):
        await router.add_chat_rule("gh/list", "sometimes")
    assert await router.remove_chat_rule("gh/list") == "deny"
    assert await router.remove_chat_rule("gh/list") is None
    assert await store.chat_rules() == {}
    assert router.policy.decide("gh/list").source == "rule:gh/*"


async def test_a_rule_that_cannot_be_stored_changes_nothing(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    config = parse_config(CONFIG, path="/tmp/x.toml", env={})
    router = Router(config, {}, sessions=Sessions(idle_timeout=3600), store=store)
    await store.aclose()
    with pytest.raises(StoreError):
        await router.add_chat_rule("gh/list", "allow")
    assert router.chat_rules == {}
    assert router.policy.decide("gh/list").source == "rule:gh/*"


# ------------------------------------------------------------------------------- commands and render


def visible(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", markup))


class FakeRules:
    def __init__(self, config_rules: Mapping[str, str]) -> None:
        self.policy = PolicyEngine("require-approval", config_rules)
        self.chat_rules: dict[str, str] = {}
        self.fail = False

    async def add_chat_rule(self, pattern: str, action: str, by: str = "telegram") -> str | None:
        if self.fail:
            raise StoreError("database write failed: disk I/O error")
        PolicyEngine("deny", {pattern: action})
        before = self.chat_rules.get(pattern)
        self.chat_rules[pattern] = action
        return before

    async def remove_chat_rule(self, pattern: str) -> str | None:
        return self.chat_rules.pop(pattern, None)


class FakeBroker:
    class grants:  # noqa: N801 - stands in for the broker's grants
        @staticmethod
        def active() -> list[Any]:
            return []

    def pending(self) -> list[Any]:
        return []


def commands(rules: FakeRules | None) -> AdminCommands:
    c = AdminCommands(
        FakeBroker(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        lambda: {"children": [], "uptime_s": 5.0},
        telegram_state=lambda: "polling",
        max_grant=86400,
    )
    c.rules = rules
    return c


async def run(c: AdminCommands, name: str, *args: str) -> str:
    reply = await c.run(name, list(args))
    assert reply is not None and reply.text is not None
    return visible(reply.text)


async def test_allow_deny_ask_and_unrule_answer_in_one_line() -> None:
    rules = FakeRules({"gh/*": "require-approval"})
    c = commands(rules)
    assert await run(c, "allow", "gh/list") == "Rule from the chat: gh/list → allow. /rules shows all."
    assert await run(c, "deny", "gh/list") == (
        "Rule from the chat: gh/list → deny (was allow). /rules shows all."
    )
    assert await run(c, "ask", "fs/*") == "Rule from the chat: fs/* → require-approval. /rules shows all."
    assert rules.chat_rules == {"gh/list": "deny", "fs/*": "require-approval"}
    assert await run(c, "unrule", "gh/list") == "Removed the rule from the chat gh/list → deny."
    assert await run(c, "unrule", "gh/list") == "No rule from the chat for gh/list (/rules lists them)."
    for text in (await run(c, "allow"), await run(c, "deny", "a/b", "c/d"), await run(c, "unrule")):
        assert text.startswith("Usage: /")
        assert "\n" not in text
    text = await run(c, "allow", "30m")
    assert text.startswith("Bad pattern '30m'") and "Usage: /allow <pattern>" in text
    assert rules.chat_rules == {"fs/*": "require-approval"}


async def test_a_rule_that_cannot_be_stored_is_answered() -> None:
    rules = FakeRules({})
    rules.fail = True
    assert (await run(commands(rules), "deny", "gh/x")).startswith("Not added: database write failed")


async def test_without_a_rule_book_the_commands_say_so() -> None:
    c = commands(None)
    for name in ("allow", "deny", "ask", "unrule", "rules"):
        assert await run(c, name, "gh/x") == "Rules from the chat are not available here."
    assert "Rules from the chat" not in await run(c, "status")


async def test_rules_shows_both_sets_most_specific_first_and_which_wins() -> None:
    rules = FakeRules({"gh/*": "require-approval", "gh/delete": "deny"})
    c = commands(rules)
    await run(c, "allow", "gh/*")
    await run(c, "deny", "fs/write")
    text = await run(c, "rules")
    lines = text.splitlines()
    assert lines[:7] == [
        "Rules (default: require-approval)",
        "From the chat (2)",
        "• fs/write → deny",
        "• gh/* → allow — beats the config's require-approval",
        "From the config (2)",
        "• gh/delete → deny",
        "• gh/* → require-approval — overridden by the chat's rule",
    ]
    assert "at equal specificity a rule from the chat beats the config's" in lines[7]
    assert "Rules from the chat: 2 (/rules)" in await run(c, "status")


def test_rules_text_without_any_rules() -> None:
    text = visible(render.rules_text("deny", {}, {}))
    assert "From the chat (0)\nnone (/allow, /deny, /ask" in text
    assert "From the config (0)\nnone" in text


def test_parse_rule_pattern() -> None:
    assert parse_rule_pattern("allow", ["github/create_issue"]) == "github/create_issue"
    assert parse_rule_pattern("deny", ["*"]) == "*"
    for bad in ([], ["a"], ["a/b", "c"], ["github/"]):
        with pytest.raises(ValueError, match="Usage: /deny"):
            parse_rule_pattern("deny", bad)


def test_the_commands_are_in_help() -> None:
    names = [name for name, _ in render.COMMANDS]
    for name in ("allow", "deny", "ask", "unrule", "rules"):
        assert name in names
        assert f"/{name}: " in render.help_text()


def test_always_buttons_are_a_row_of_their_own_with_data_no_other_button_uses() -> None:
    plain = render.approval_keyboard("abc")["inline_keyboard"]
    rows = render.approval_keyboard("abc", always=True)["inline_keyboard"]
    assert rows == [*plain[:-1], render.always_buttons("abc"), plain[-1]]
    assert [b["text"] for b in render.always_buttons("abc")] == ["♾️ Always allow", "⛔ Always deny"]
    assert [b["callback_data"] for b in render.always_buttons("abc")] == ["ra:abc", "rd:abc"]
    assert render.parse_callback("ra:abc") == ("always-allow", "abc")
    assert render.parse_callback("rd:abc") == ("always-deny", "abc")
    assert render.parse_pin_callback("ra:abc") is None
    others = [b["callback_data"] for row in plain for b in row]
    assert not {"ra:abc", "rd:abc"} & set(others)
    assert render.callback_answer("ok", "always-allow") == "Approved; always allowed from now on"
    assert render.callback_answer("ok", "always-deny") == "Denied; always denied from now on"


def test_status_counts_the_chat_rules_only_when_told() -> None:
    status: dict[str, Any] = {"children": []}
    with_rules = render.status_text(
        status, pending=[], grants=[], telegram_state="polling", now=0, chat_rules=3
    )
    assert "Rules from the chat: 3 (/rules)" in visible(with_rules)
    without = render.status_text(status, pending=[], grants=[], telegram_state="polling", now=0)
    assert "Rules from the chat" not in without


# ----------------------------------------------------------------------------------- portero tools


def test_portero_tools_names_the_chat_rule_and_the_servers_it_denies() -> None:
    from portero.cli.tools import describe, whole_server_denials

    engine = PolicyEngine("allow", {"gh/*": "require-approval"}, chat={"gh/list": "allow"})
    tool = {"name": "gh__list", "_meta": {"io.portero/canonical": "gh/list"}}
    row = describe(tool, engine, [], 0.0)
    assert (row["action"], row["source"]) == ("allow", "chat-rule:gh/list")
    config = parse_config(
        '[server]\nauth = "none"\n'
        '[[mcp]]\nname = "gh"\ncommand = "true"\n[[mcp]]\nname = "fs"\ncommand = "true"\n',
        path="/tmp/x.toml",
        env={},
    )
    assert whole_server_denials(config, {"fs/*": "deny", "gh/list": "deny"}) == [
        {"deny": "chat-rule:fs/*", "servers": ["fs"]}
    ]
