"""A token per client: the Guard naming clients by token, sessions bound to their client, and (below)
what each client sees and may do. Pure or in memory (the ASGI app over a real Router and Sessions)."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import attrs
import pytest
import trio

from portero.approvals import ApprovalBroker, Grants
from portero.cli.clients import ClientEditError, append_client, client_entries, remove_client
from portero.cli.main import main as cli_main
from portero.config import Config, parse_config
from portero.core import jsonrpc, modern
from portero.core.policy import Decision, Grant, PolicyEngine, apply_grant
from portero.front import security
from portero.front.asgi import build_app
from portero.front.security import Guard
from portero.gateway.clients import NOBODY, client_views
from portero.gateway.router import Router
from portero.gateway.sessions import LATEST_PROTOCOL, RequestContext, Sessions
from portero.store import Store, read_audit, read_grants
from portero.telegram import render
from portero.telegram.commands import AdminCommands, split_grant_client
from portero.upstream.supervisor import Listing

from .asgi_client import AsgiClient, Response
from .fakes import attach_fake_server, echo_call

DEFAULT_TOKEN = "default-token-0123456789abcdef"
LAPTOP_TOKEN = "laptop-token-0123456789abcdef"
CI_TOKEN = "ci-token-0123456789abcdef-xyz"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_config(*, bearer: str = DEFAULT_TOKEN, auth: str = "bearer", rest: str = "") -> Config:
    text = f"""
[server]
auth = "{auth}"
{f'bearer_token = "{bearer}"' if bearer else ""}

[[client]]
name = "laptop"
token_sha256 = "{sha(LAPTOP_TOKEN)}"
tools = ["one/*"]

[[client]]
name = "ci"
token_sha256 = "{sha(CI_TOKEN)}"
{rest}
"""
    return parse_config(text, path="/tmp/x.toml", env={})


# ------------------------------------------------------------------------------------------ the Guard


def test_each_token_names_its_client() -> None:
    config = make_config()
    guard = Guard(config.server, config.clients)
    assert guard.identify(f"Bearer {LAPTOP_TOKEN}") == "laptop"
    assert guard.identify(f"bearer   {CI_TOKEN} ") == "ci"
    assert guard.identify(f"Bearer {DEFAULT_TOKEN}") == "default"
    for wrong in (None, "", "Bearer", "Bearer ", f"Basic {CI_TOKEN}", CI_TOKEN, f"Bearer {CI_TOKEN}x"):
        assert guard.identify(wrong) is None, wrong
        assert not guard.token_ok(wrong)
    # The hash of an empty token is a known value: even a client stored with it is not matched by nothing.
    empty = parse_config(f'[[client]]\nname = "e"\ntoken_sha256 = "{sha("")}"\n', path="/tmp/x.toml", env={})
    assert Guard(empty.server, empty.clients).identify("Bearer ") is None


def test_clients_without_a_bearer_token() -> None:
    config = make_config(bearer="")
    guard = Guard(config.server, config.clients)
    assert guard.identify(f"Bearer {LAPTOP_TOKEN}") == "laptop"
    assert guard.identify("Bearer ") is None
    assert guard.identify(None) is None


def test_auth_none_is_the_default_client() -> None:
    config = make_config(bearer="", auth="none")
    assert Guard(config.server, config.clients).identify(None) == "default"


@pytest.mark.parametrize(
    "authorization",
    [f"Bearer {LAPTOP_TOKEN}", f"Bearer {CI_TOKEN}", f"Bearer {DEFAULT_TOKEN}", "Bearer x", None],
)
def test_every_entry_is_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch, authorization: str | None
) -> None:
    """One hash of the presented token, then hmac.compare_digest against *every* stored hash (the
    default token's too), whichever matches first: no early exit says which client matched."""
    config = make_config()
    guard = Guard(config.server, config.clients)
    compared: list[tuple[bytes, bytes]] = []
    hashed: list[bytes] = []
    real_compare, real_sha = hmac.compare_digest, hashlib.sha256

    def compare(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare(a, b)

    def sha256(data: bytes = b"") -> Any:
        hashed.append(data)
        return real_sha(data)

    stored = {bytes.fromhex(sha(t)) for t in (LAPTOP_TOKEN, CI_TOKEN, DEFAULT_TOKEN)}
    monkeypatch.setattr(security.hmac, "compare_digest", compare)
    monkeypatch.setattr(security.hashlib, "sha256", sha256)
    guard.identify(authorization)
    monkeypatch.undo()
    assert {b for _, b in compared} == stored and len(compared) == 3
    assert all(len(a) == 32 for a, _ in compared)  # digests, not the token itself
    assert len(hashed) == 1  # one hash per request


def test_reload_installs_new_tokens_and_drops_revoked_ones() -> None:
    config = make_config()
    guard = Guard(config.server, config.clients)
    assert guard.identify(f"Bearer {CI_TOKEN}") == "ci"
    guard.set_clients([c for c in config.clients if c.name != "ci"])
    assert guard.identify(f"Bearer {CI_TOKEN}") is None
    assert guard.identify(f"Bearer {LAPTOP_TOKEN}") == "laptop"
    assert guard.identify(f"Bearer {DEFAULT_TOKEN}") == "default"  # server.bearer_token stays


# ---------------------------------------------------------------------- sessions bound to their client


class Gateway:
    def __init__(self, config: Config) -> None:
        self.sessions = Sessions(idle_timeout=config.server.session_idle_timeout)
        self.router = Router(config, {}, sessions=self.sessions)
        self.router._settled = True
        self.app = build_app(self.router, self.sessions, config.server, Guard(config.server, config.clients))
        self.client = AsgiClient(self.app, token=LAPTOP_TOKEN)

    async def post(self, body: Any, token: str, sid: str | None = None) -> Response:
        headers = {"authorization": f"Bearer {token}", **({"mcp-session-id": sid} if sid else {})}
        return await self.client.request("POST", "/mcp", headers=headers, body=json.dumps(body).encode())

    async def initialize(self, token: str) -> str:
        params = {"protocolVersion": LATEST_PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t"}}
        resp = await self.post(jsonrpc.request(0, "initialize", params), token)
        assert resp.status == 200, resp.text
        sid = resp.header("mcp-session-id")
        assert sid
        return sid


@pytest.fixture
async def gw(nursery: trio.Nursery) -> Gateway:
    gateway = Gateway(make_config())
    await nursery.start(gateway.sessions.run)
    return gateway


async def test_a_session_belongs_to_the_client_that_opened_it(gw: Gateway) -> None:
    sid = await gw.initialize(LAPTOP_TOKEN)
    session = gw.sessions.get(sid)
    assert session is not None and session.client == "laptop"
    ping = jsonrpc.request(1, "ping", {})
    assert (await gw.post(ping, LAPTOP_TOKEN, sid)).status == 200
    for other in (CI_TOKEN, DEFAULT_TOKEN):
        resp = await gw.post(ping, other, sid)
        assert resp.status == 404 and "Session not found" in resp.text
        stream = await gw.client.request(
            "GET",
            "/mcp",
            headers={
                "authorization": f"Bearer {other}",
                "mcp-session-id": sid,
                "accept": "text/event-stream",
            },
        )
        assert stream.status == 404
        gone = await gw.client.request(
            "DELETE", "/mcp", headers={"authorization": f"Bearer {other}", "mcp-session-id": sid}
        )
        assert gone.status == 404
    assert gw.sessions.get(sid) is session  # another client's DELETE ended nothing
    assert (await gw.post(ping, LAPTOP_TOKEN, sid)).status == 200


async def test_a_stateless_request_is_its_clients(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = gw.sessions.transient

    def transient(*args: Any, **kwargs: Any) -> Any:
        session = real(*args, **kwargs)
        seen.append(session.client)
        return session

    monkeypatch.setattr(gw.sessions, "transient", transient)
    meta = {
        modern.PROTOCOL_META: "2026-07-28",
        modern.CAPABILITIES_META: {},
        modern.CLIENT_INFO_META: {"name": "t", "version": "1"},
    }
    body = jsonrpc.request(1, "tools/list", {"_meta": meta})
    headers = {
        "authorization": f"Bearer {CI_TOKEN}",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/list",
        "accept": "application/json, text/event-stream",
    }
    resp = await gw.client.request("POST", "/mcp", headers=headers, body=json.dumps(body).encode())
    assert resp.status == 200, resp.text
    assert seen == ["ci"]


# ------------------------------------------------------------------------- one policy engine per client


def test_a_clients_rules_compose_with_the_global_ones() -> None:
    rules = {"gh/*": "require-approval", "gh/delete_repo": "deny", "fs/write": "deny"}
    own = {"gh/create_pr": "allow", "gh/*": "allow", "fs/write": "allow", "fs/*": "deny"}
    engine = PolicyEngine("allow", rules, first=own)
    # More specific wins, whoever's rule it is.
    assert engine.decide("gh/create_pr") == Decision("allow", "client-rule:gh/create_pr", "gh/create_pr")
    assert engine.decide("gh/delete_repo").action == "deny"  # a global exact rule beats a client's glob
    assert engine.decide("fs/read") == Decision("deny", "client-rule:fs/*", "fs/*")
    # Equal specificity: the client's rule wins, even when it is less strict.
    assert engine.decide("gh/issues") == Decision("allow", "client-rule:gh/*", "gh/*")
    assert engine.decide("fs/write") == Decision("allow", "client-rule:fs/write", "fs/write")
    # Nothing of the client's matches: the global rules and default, as before.
    assert engine.decide("other/x") == Decision("allow", "default", None)
    plain = PolicyEngine("allow", rules)
    assert plain.decide("gh/issues") == Decision("require-approval", "rule:gh/*", "gh/*")
    with pytest.raises(ValueError, match="alow"):
        PolicyEngine("allow", rules, first={"x/*": "alow"})


def test_client_views_see_their_globs() -> None:
    config = make_config(rest='tools = ["notes/*", "files/read_*"]\npolicy = { "files/read_x" = "deny" }')
    views = client_views(config.clients, config.policies)
    assert set(views) == {"default", "laptop", "ci"}
    assert views["default"].sees("anything/at_all") and views["default"].policy is None
    assert views["laptop"].sees("one/x") and not views["laptop"].sees("two/x")
    assert views["laptop"].policy is None  # no rules of its own: the global engine, across reloads
    ci = views["ci"]
    assert ci.sees("notes/write") and ci.sees("files/read_text") and not ci.sees("files/write")
    assert ci.policy is not None and ci.policy.decide("files/read_x").source == "client-rule:files/read_x"
    assert not NOBODY.sees("one/x")


def test_grants_scoped_to_a_client() -> None:
    everyone = Grant("gh/*", expires_at=100, created_at=0)
    laptops = Grant("fs/*", expires_at=100, created_at=0, client="laptop")
    decision = Decision("require-approval", "rule:fs/*", "fs/*")
    assert apply_grant(decision, [everyone, laptops], "fs/write", 50, "laptop").action == "allow"
    assert apply_grant(decision, [everyone, laptops], "fs/write", 50, "ci") == decision
    assert apply_grant(decision, [everyone, laptops], "fs/write", 50) == decision
    assert apply_grant(decision, [everyone, laptops], "gh/x", 50, "ci").source == "grant:gh/*"


async def test_grants_keep_their_client_in_the_store(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    try:
        grants = Grants(store, wall_clock=lambda: 1000.0)
        await grants.add("fs/*", 60, "admin", client="laptop")
        await grants.add("gh/*", 60, "admin")
        loaded = await Grants.load(store, lambda: 1000.0)
        assert {(g.pattern, g.client) for g in loaded.active()} == {("fs/*", "laptop"), ("gh/*", None)}
        assert {(g.pattern, g.client) for g in read_grants(path, now=1000.0)} == {
            ("fs/*", "laptop"),
            ("gh/*", None),
        }
        assert await grants.revoke(None, client="laptop") == 1
        assert [(g.pattern, g.client) for g in grants.active()] == [("gh/*", None)]
        assert [g.pattern for g in await store.active_grants(1000.0)] == ["gh/*"]
    finally:
        await store.aclose()


# ------------------------------------------------------------- what each client sees, through the router

ROUTER_CONFIG = f"""
[server]
bearer_token = "{DEFAULT_TOKEN}"

[policies]
default = "allow"

[policies.rules]
"files/publish" = "deny"

[[client]]
name = "laptop"
token_sha256 = "{sha(LAPTOP_TOKEN)}"
tools = ["files/*"]
policy = {{ "files/publish" = "allow" }}

[[client]]
name = "ci"
token_sha256 = "{sha(CI_TOKEN)}"
tools = ["notes/*"]

[[mcp]]
name = "files"
command = "never-started"

[[mcp]]
name = "notes"
command = "never-started"
"""

ROUTER_TOOLS: dict[str, list[dict[str, Any]]] = {
    "files": [
        {"name": "read", "inputSchema": {"type": "object"}},
        {"name": "publish", "inputSchema": {"type": "object"}},
    ],
    "notes": [{"name": "write", "inputSchema": {"type": "object"}}],
}


@attrs.define
class RouterGateway:
    router: Router
    sessions: Sessions
    store: Store
    ids: int = 0

    async def ask(self, client: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        session = self.sessions.new(client)
        assert session is not None
        self.ids += 1
        with trio.fail_after(5):
            resp = await self.router.handle(
                jsonrpc.request(self.ids, method, params), RequestContext(session)
            )
        assert resp is not None
        return resp

    async def tools(self, client: str) -> list[str]:
        return [t["name"] for t in (await self.ask(client, "tools/list", {}))["result"]["tools"]]


@pytest.fixture
async def rgw(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RouterGateway]:
    store = await Store.open(str(tmp_path / "gateway.db"))
    config = parse_config(ROUTER_CONFIG, path="/tmp/x.toml", env={})
    sessions = Sessions(idle_timeout=3600)
    router = Router(config, {}, sessions=sessions, store=store)
    for name, up in router.upstreams.items():
        await attach_fake_server(
            nursery,
            up,
            router.on_upstream_message,
            tools=ROUTER_TOOLS[name],
            handlers={"tools/call": echo_call},
        )
        up.listing = Listing(
            tools=ROUTER_TOOLS[name],
            prompts=[{"name": f"{name}-prompt"}],
            resources=[{"uri": f"{name}://r", "name": "r"}],
            templates=[{"uriTemplate": f"{name}://t/{{x}}", "name": "t"}],
        )
    router.rebuild_catalog()
    with trio.fail_after(1):
        await router.settled()
    yield RouterGateway(router, sessions, store)
    await store.aclose()


async def test_each_client_lists_its_own_tools(rgw: RouterGateway) -> None:
    assert await rgw.tools("laptop") == ["files__read", "files__publish"]
    assert await rgw.tools("ci") == ["notes__write"]
    assert await rgw.tools("default") == ["files__read", "notes__write"]  # publish: denied globally
    assert await rgw.tools("removed-meanwhile") == []  # not configured (any more): sees nothing
    assert await rgw.tools("laptop") == ["files__read", "files__publish"]  # the cache is per client

    prompts = await rgw.ask("ci", "prompts/list", {})
    assert [p["name"] for p in prompts["result"]["prompts"]] == ["notes__notes-prompt"]
    resources = await rgw.ask("laptop", "resources/list", {})
    assert [r["uri"] for r in resources["result"]["resources"]] == ["files://r"]
    templates = await rgw.ask("ci", "resources/templates/list", {})
    assert [t["uriTemplate"] for t in templates["result"]["resourceTemplates"]] == ["notes://t/{x}"]
    unseen = await rgw.ask("ci", "resources/read", {"uri": "files://r"})
    assert unseen["error"]["code"] == jsonrpc.RESOURCE_NOT_FOUND
    unseen = await rgw.ask("laptop", "prompts/get", {"name": "notes__notes-prompt"})
    assert "Unknown prompt" in unseen["error"]["message"]


async def test_a_tool_a_client_does_not_see_is_unknown_to_it(rgw: RouterGateway) -> None:
    resp = await rgw.ask("ci", "tools/call", {"name": "files__read", "arguments": {}})
    assert resp["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert resp["error"]["message"] == "Unknown tool: files__read"
    same = await rgw.ask("ci", "tools/call", {"name": "nothing__here", "arguments": {}})
    assert same["error"]["message"] == "Unknown tool: nothing__here"
    [row, _] = await rgw.store.recent_audit(2)
    assert (row["client"], row["decision"], row["source"]) == ("ci", "deny", "invalid")


async def test_same_tool_different_decisions_named_in_the_audit(rgw: RouterGateway) -> None:
    allowed = await rgw.ask("laptop", "tools/call", {"name": "files__publish", "arguments": {"a": 1}})
    assert not allowed["result"].get("isError"), allowed
    denied = await rgw.ask("default", "tools/call", {"name": "files__publish", "arguments": {"a": 1}})
    assert (
        denied["result"]["isError"]
        and "denied by rule 'files/publish'" in denied["result"]["content"][0]["text"]
    )
    rows = await rgw.store.recent_audit(2)
    assert [(r["client"], r["tool"], r["decision"], r["source"]) for r in rows] == [
        ("default", "files/publish", "deny", "rule:files/publish"),
        ("laptop", "files/publish", "allow", "client-rule:files/publish"),
    ]


async def test_reloaded_clients_apply_to_the_next_request(rgw: RouterGateway) -> None:
    assert await rgw.tools("ci") == ["notes__write"]
    config = parse_config(
        ROUTER_CONFIG.replace('tools = ["notes/*"]', 'tools = ["*/read"]'), path="/x", env={}
    )
    rgw.router.set_clients(client_views(config.clients, config.policies))
    assert await rgw.tools("ci") == ["files__read"]


async def test_audit_rows_by_client(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    try:
        base = {"ts": 1.0, "session": "s", "tool": "a/b", "arguments": {}, "decision": "allow"}
        for client in ("laptop", "ci", None):  # None: a record from before clients existed
            await store.record_audit({**base, "source": "default", "outcome": "ok", "client": client})
    finally:
        await store.aclose()
    assert [r["client"] for r in read_audit(path, since=None, tool=None)] == ["laptop", "ci", None]
    assert [r["client"] for r in read_audit(path, since=None, tool=None, client="ci")] == ["ci"]
    assert [r["client"] for r in read_audit(path, since=None, tool=None, client="default")] == [None]


# --------------------------------------------------------------------- the client named to the admin


def _visible(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def test_the_approval_message_names_the_client() -> None:
    approval = SimpleNamespace(
        tool="files/publish",
        server="files",
        rule="rule:files/*",
        session="abcdef123456",
        client="laptop",
        arguments_real={"path": "/x"},
        expires_at=160.0,
    )
    shown = _visible(render.approval_text(approval, now=100.0))
    assert "Client: laptop" in shown.splitlines()
    status = render.status_text(
        {},
        pending=[approval],
        grants=[
            Grant("fs/*", expires_at=1000, created_at=0, client="laptop"),
            Grant("gh/*", expires_at=1000, created_at=0),
        ],
        telegram_state="polling",
        now=100.0,
    )
    shown = _visible(status)
    assert "• files/publish (rule:files/*), 1m left [laptop]" in shown
    assert "• fs/* (client laptop only), 15m left" in shown and "• gh/*, 15m left" in shown
    logs = _visible(render.logs_text([{"ts": 0, "tool": "a/b", "decision": "allow", "client": "ci"}]))
    assert "[ci] a/b allow" in logs


@pytest.mark.parametrize(
    ("args", "client", "rest"),
    [
        (["laptop", "github/*", "30m"], "laptop", ["github/*", "30m"]),
        (["laptop", "github/*", "1h", "30m"], "laptop", ["github/*", "1h", "30m"]),
        (["github/*", "30m"], None, ["github/*", "30m"]),
        (["github/*", "1h", "30m"], None, ["github/*", "1h", "30m"]),  # github/* is no client name
        (["ci-2", "*", "2h"], "ci-2", ["*", "2h"]),
    ],
)
def test_grant_for_a_client(args: list[str], client: str | None, rest: list[str]) -> None:
    assert split_grant_client(args) == (client, rest)


async def test_grant_command_scopes_to_a_client(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    try:
        broker = ApprovalBroker(store, timeout=60, approver=None)
        commands = AdminCommands(broker, store, dict, telegram_state=lambda: "polling", max_grant=86400)
        reply = await commands.run("grant", ["laptop", "files/*", "30m"])
        assert reply is not None and "Granted files/* to client laptop for 30m" in _visible(reply.text or "")
        await commands.run("grant", ["notes/*", "30m"])
        assert {(g.pattern, g.client) for g in broker.grants.active()} == {
            ("files/*", "laptop"),
            ("notes/*", None),
        }
        needs = Decision("require-approval", "default", None)
        assert broker.grants.apply(needs, "files/x", "laptop").action == "allow"
        assert broker.grants.apply(needs, "files/x", "ci") == needs
        assert broker.grants.apply(needs, "notes/x", "ci").action == "allow"
    finally:
        await store.aclose()


# ------------------------------------------------------------------------- portero client add|list|revoke

MIDDLE = f"""# the admin's own comment
[server]
bearer_token = "{DEFAULT_TOKEN}"

[[client]]  # the laptop
name = "laptop"
token_sha256 = "{sha(LAPTOP_TOKEN)}"
tools = [
  "one/*",
]

[client.policy]
"one/x" = "allow"

# the CI runner, below
[[client]]
name = "ci"
token_sha256 = "{sha(CI_TOKEN)}"

[[mcp]]
name = "one"
command = "python"
"""


def test_remove_a_block_wherever_it_is() -> None:
    without_laptop = remove_client(MIDDLE, "laptop")
    assert [e["name"] for e in client_entries(without_laptop)] == ["ci"]
    assert "# the admin's own comment" in without_laptop and "# the CI runner, below" in without_laptop
    assert '"one/x"' not in without_laptop  # its subtable went with it
    without_ci = remove_client(MIDDLE, "ci")
    assert [e["name"] for e in client_entries(without_ci)] == ["laptop"]
    assert parse_config(without_ci, path="/tmp/x.toml", env={}).mcp[0].name == "one"  # [[mcp]] kept
    assert without_ci.startswith(MIDDLE[: MIDDLE.index("# the CI runner")])
    with pytest.raises(ClientEditError, match="no client named 'nobody'"):
        remove_client(MIDDLE, "nobody")


def test_append_keeps_the_text_and_refuses_duplicates() -> None:
    new = append_client(MIDDLE.rstrip("\n"), "phone", "ab" * 32, ["one/read_*"])
    assert new.startswith(MIDDLE.rstrip("\n") + "\n\n[[client]]\n")
    config = parse_config(new, path="/tmp/x.toml", env={})
    assert [(c.name, c.tools) for c in config.clients][-1] == ("phone", ("one/read_*",))
    with pytest.raises(ClientEditError, match="already exists"):
        append_client(MIDDLE, "ci", "ab" * 32, [])
    with pytest.raises(ClientEditError, match="client of server.bearer_token"):
        append_client(MIDDLE, "default", "ab" * 32, [])
    with pytest.raises(ClientEditError, match="letters, digits"):
        append_client(MIDDLE, "my laptop", "ab" * 32, [])
    with pytest.raises(ClientEditError, match="whitespace"):
        append_client(MIDDLE, "x", "ab" * 32, ["one/a b"])


def test_client_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "portero.toml"
    path.write_text(MIDDLE)
    path.chmod(0o600)
    assert cli_main(["client", "add", "phone", "--tools", "one/*, two/read_*", "--config", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    config = parse_config(path.read_text(), path=str(path), env={})
    phone = config.clients[-1]
    assert (phone.name, phone.tools) == ("phone", ("one/*", "two/read_*"))
    assert Guard(config.server, config.clients).identify(f"Bearer {token}") == "phone"
    assert token not in path.read_text() and path.stat().st_mode & 0o777 == 0o600

    assert cli_main(["client", "add", "phone", "--config", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err

    assert cli_main(["client", "list", "--config", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "laptop   one/*" in listed and "  1  " in listed  # one rule of its own
    assert sha(LAPTOP_TOKEN) not in listed and sha(LAPTOP_TOKEN)[:8] in listed

    assert cli_main(["client", "revoke", "laptop", "--config", str(path)]) == 0
    assert "systemctl reload portero" in capsys.readouterr().out
    assert [c.name for c in parse_config(path.read_text(), path=str(path), env={}).clients] == ["ci", "phone"]
