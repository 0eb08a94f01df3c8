"""A token per client: the Guard naming clients by token, sessions bound to their client, and (below)
what each client sees and may do. Pure or in memory (the ASGI app over a real Router and Sessions)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
import trio

from portero.config import Config, parse_config
from portero.core import jsonrpc, modern
from portero.front import security
from portero.front.asgi import build_app
from portero.front.security import Guard
from portero.gateway.router import Router
from portero.gateway.sessions import LATEST_PROTOCOL, Sessions

from .asgi_client import AsgiClient, Response

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
