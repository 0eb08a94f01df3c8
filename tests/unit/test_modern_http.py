"""The stateless era (MCP 2026-07-28) on ``/mcp``, driven as an ASGI app in memory: requests without
a session that carry everything in ``_meta`` and the routing headers, next to handshake-era ones."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from portero.core import jsonrpc, modern
from portero.gateway.sessions import SUPPORTED_PROTOCOLS

from .asgi_client import Response
from .test_mcp_http import Gateway, rpc

V = "2026-07-28"
META = {
    modern.PROTOCOL_META: V,
    modern.CAPABILITIES_META: {},
    modern.CLIENT_INFO_META: {"name": "t", "version": "1"},
}
ACCEPT = "application/json, text/event-stream"


@pytest.fixture
async def gw(nursery: trio.Nursery) -> Gateway:
    return await Gateway.start(nursery)


async def call(
    gw: Gateway, method: str, params: dict[str, Any] | None = None, *, id: Any = 7, **headers: str
) -> Response:
    body = rpc(method, {**(params or {}), "_meta": META}, id=id)
    hdrs = {"mcp-protocol-version": V, "mcp-method": method, "accept": ACCEPT}
    name = (params or {}).get("name") or (params or {}).get("uri")
    if name is not None:
        hdrs["mcp-name"] = name
    hdrs.update({k.replace("_", "-"): v for k, v in headers.items()})
    return await gw.post(body, headers=hdrs)


async def test_discover_answers_without_a_session(gw: Gateway) -> None:
    resp = await call(gw, "server/discover")
    assert resp.status == 200
    result = resp.json()["result"]
    assert result["supportedVersions"][0] == V and set(SUPPORTED_PROTOCOLS) <= set(
        result["supportedVersions"]
    )
    assert {"tools", "prompts", "resources"} <= set(result["capabilities"])
    assert result["resultType"] == "complete" and result["cacheScope"] == "private" and result["ttlMs"] >= 0
    assert result["_meta"][modern.SERVER_INFO_META]["name"] == "portero"
    assert resp.header("mcp-session-id") is None and len(gw.sessions) == 0


async def test_lists_carry_result_type_and_cache_hints(gw: Gateway) -> None:
    for method in ("tools/list", "prompts/list", "resources/list", "resources/templates/list"):
        result = (await call(gw, method)).json()["result"]
        assert result["resultType"] == "complete" and result["cacheScope"] == "private", method
    assert len(gw.sessions) == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, jsonrpc.INVALID_PARAMS),  # no _meta
        ({"_meta": {modern.CAPABILITIES_META: {}}}, jsonrpc.INVALID_PARAMS),  # no version
        ({"_meta": {modern.PROTOCOL_META: V}}, jsonrpc.INVALID_PARAMS),  # no capabilities
    ],
)
async def test_a_broken_envelope_is_400_with_the_request_id(
    gw: Gateway, params: dict[str, Any], code: int
) -> None:
    body = rpc("server/discover", params, id="d")
    resp = await gw.post(body, headers={"mcp-protocol-version": V, "mcp-method": "server/discover"})
    assert resp.status == 400
    assert resp.json()["id"] == "d" and resp.json()["error"]["code"] == code


async def test_an_unsupported_version_names_what_is_supported(gw: Gateway) -> None:
    body = rpc("server/discover", {"_meta": {**META, modern.PROTOCOL_META: "v999"}}, id=3)
    resp = await gw.post(body, headers={"mcp-protocol-version": "v999", "mcp-method": "server/discover"})
    assert resp.status == 400
    error = resp.json()["error"]
    assert error["code"] == jsonrpc.UNSUPPORTED_PROTOCOL_VERSION
    assert error["data"] == {"supported": [V], "requested": "v999"}


@pytest.mark.parametrize(
    "headers",
    [
        {"mcp_protocol_version": "2025-11-25"},  # the header and the body disagree
        {"mcp_method": "tools/list"},
        {"mcp_name": "someone_else"},
    ],
)
async def test_routing_headers_must_match_the_body(gw: Gateway, headers: dict[str, str]) -> None:
    resp = await call(gw, "tools/call", {"name": "x__y", "arguments": {}}, **headers)
    assert resp.status == 400
    assert resp.json()["error"]["code"] == modern.HEADER_MISMATCH == -32020
    assert resp.json()["id"] == 7


@pytest.mark.parametrize(
    "method",
    ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe", "no/such"],
)
async def test_removed_and_unknown_methods_are_404(gw: Gateway, method: str) -> None:
    resp = await call(gw, method, {"uri": "x://y"} if "subscribe" in method else None)
    assert resp.status == 404
    assert resp.json()["error"]["code"] == jsonrpc.METHOD_NOT_FOUND and resp.json()["id"] == 7


async def test_an_unknown_resource_is_invalid_params(gw: Gateway) -> None:
    resp = await call(gw, "resources/read", {"uri": "nope://x"})
    assert resp.status == 400 and resp.json()["error"]["code"] == jsonrpc.INVALID_PARAMS


async def test_a_handshake_request_without_a_session_is_still_told_so(gw: Gateway) -> None:
    resp = await gw.post(rpc("tools/list"))
    assert resp.status == 400
    assert "Mcp-Session-Id" in resp.json()["error"]["message"]


async def test_server_discover_in_a_session_is_an_unknown_method(gw: Gateway) -> None:
    sid = await gw.initialize()
    resp = await gw.post(rpc("server/discover", {}), sid=sid)
    assert resp.json()["error"]["code"] == jsonrpc.METHOD_NOT_FOUND


async def test_listen_acknowledges_then_tags_each_change(gw: Gateway) -> None:
    body = rpc("subscriptions/listen", {"_meta": META, "notifications": {"toolsListChanged": True}}, id="L")
    hdrs = {"mcp-protocol-version": V, "mcp-method": "subscriptions/listen", "accept": ACCEPT}
    async with gw.client.open("POST", "/mcp", headers=hdrs, json_body=body) as ex:
        ((_, ack),) = await ex.wait_messages(1)
        assert len(gw.sessions.listeners) == 1
        gw.sessions.broadcast(jsonrpc.notification("notifications/prompts/list_changed"))  # not asked for
        gw.sessions.broadcast(jsonrpc.notification("notifications/tools/list_changed"))
        _, change = (await ex.wait_messages(2))[1]
    assert ex.response.status == 200 and ex.response.header("content-type") == "text/event-stream"
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    assert ack["params"]["notifications"] == {"toolsListChanged": True}
    assert change["method"] == "notifications/tools/list_changed"
    assert ack["params"]["_meta"][modern.SUBSCRIPTION_ID_META] == "L"
    assert change["params"]["_meta"][modern.SUBSCRIPTION_ID_META] == "L"
    assert len(gw.sessions.listeners) == 0  # the client left: the stream is gone


async def test_listen_needs_an_event_stream(gw: Gateway) -> None:
    body = rpc("subscriptions/listen", {"_meta": META, "notifications": {}})
    hdrs = {"mcp-protocol-version": V, "mcp-method": "subscriptions/listen", "accept": "application/json"}
    assert (await gw.post(body, headers=hdrs)).status == 406
