"""The Streamable HTTP adapter (``portero/front``) driven as an ASGI app in memory.

No sockets and no hypercorn: :mod:`.asgi_client` calls the app built by ``build_app`` with a real
``Router`` (from a parsed config, no running servers unless a test starts them) and real ``Sessions``
whose ``run`` owns the nursery calls run in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portero import __version__
from portero.config import Config, parse_config
from portero.core import jsonrpc
from portero.front.asgi import build_app
from portero.gateway.router import Router
from portero.gateway.sessions import LATEST_PROTOCOL, SUPPORTED_PROTOCOLS, Sessions

from .asgi_client import AsgiClient, HeaderValue, Response

TOKEN = "unit-test-token-0123456789abcdef"
MISSING_COMMAND = "/nonexistent/portero-unit-test-server"
SSE_ACCEPT = {"accept": "text/event-stream"}


def make_config(server_extra: str = "", rest: str = "") -> Config:
    text = f'[server]\nbearer_token = "{TOKEN}"\n{server_extra}\n{rest}'
    return parse_config(text, path="/tmp/x.toml", env={})


def rpc(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    return jsonrpc.request(id, method, params)


note = jsonrpc.notification


class Gateway:
    """The app over a real Router and Sessions. ``start`` runs ``Sessions.run`` in a nursery."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sessions = Sessions(idle_timeout=config.server.session_idle_timeout)
        self.router = Router(config, {}, sessions=self.sessions)
        self.router._settled = True  # lists don't wait for servers that never start here
        self.app = build_app(self.router, self.sessions, config.server)
        self.client = AsgiClient(self.app, token=TOKEN)

    @classmethod
    async def start(cls, nursery: trio.Nursery, server_extra: str = "", rest: str = "") -> Gateway:
        gw = cls(make_config(server_extra, rest))
        await nursery.start(gw.sessions.run)
        return gw

    async def post(
        self,
        body: Any,
        *,
        sid: str | None = None,
        headers: Mapping[str, HeaderValue] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        hdrs: dict[str, HeaderValue] = {"mcp-session-id": sid} if sid is not None else {}
        hdrs.update(headers or {})
        data = raw if raw is not None else json.dumps(body).encode()
        return await self.client.request("POST", "/mcp", headers=hdrs, body=data)

    async def initialize(self, version: str = LATEST_PROTOCOL) -> str:
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        resp = await self.post(rpc("initialize", params, id=0))
        assert resp.status == 200, resp.text
        assert resp.json()["result"]["protocolVersion"] == version
        sid = resp.header("mcp-session-id")
        assert sid
        return sid


@pytest.fixture
async def gw(nursery: trio.Nursery) -> Gateway:
    return await Gateway.start(nursery)


@pytest.fixture
async def sid(gw: Gateway) -> str:
    return await gw.initialize()


def error_of(resp: Response) -> dict[str, Any]:
    assert resp.header("content-type") == "application/json", resp.headers
    body = resp.json()
    assert body["jsonrpc"] == "2.0"
    err: dict[str, Any] = body["error"]
    return err


# ------------------------------------------------------------------------------------- the token


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        "Bearer ",
        b"Bearer \xff\xfe" + TOKEN.encode(),
    ],
)
async def test_post_without_the_right_token_is_401(gw: Gateway, authorization: HeaderValue) -> None:
    resp = await gw.post(rpc("initialize", {}), headers={"authorization": authorization})
    assert resp.status == 401
    assert "bearer token missing or invalid" in error_of(resp)["message"]
    assert (resp.header("www-authenticate") or "").startswith("Bearer")
    assert resp.header("mcp-session-id") is None
    assert len(gw.sessions) == 0


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
async def test_other_methods_without_token_are_401(gw: Gateway, sid: str, method: str) -> None:
    headers = {"authorization": None, "mcp-session-id": sid, **SSE_ACCEPT}
    resp = await gw.client.request(method, "/mcp", headers=headers)
    assert resp.status == 401
    assert resp.header("www-authenticate") is not None
    assert gw.sessions.get(sid) is not None  # an unauthenticated DELETE ended nothing


async def test_token_is_checked_before_the_body_is_read(gw: Gateway) -> None:
    assert (await gw.post(None, raw=b"{not json", headers={"authorization": None})).status == 401
    huge = b"x" * (gw.config.server.max_body_bytes + 1)
    assert (await gw.post(None, raw=huge, headers={"authorization": None})).status == 401


async def test_bearer_scheme_is_case_insensitive(gw: Gateway) -> None:
    resp = await gw.post(rpc("initialize", {}), headers={"authorization": f"bearer {TOKEN}"})
    assert resp.status == 200
    assert resp.header("mcp-session-id")


async def test_auth_none_needs_no_token(nursery: trio.Nursery) -> None:
    gw = await Gateway.start(nursery, 'auth = "none"')
    resp = await gw.post(rpc("initialize", {}), headers={"authorization": None})
    assert resp.status == 200


# ------------------------------------------------------------------------------- Host and Origin

PATHS = ["/mcp", "/health", "/", "/.well-known/oauth-authorization-server"]


async def _get_or_post(gw: Gateway, path: str, headers: dict[str, HeaderValue]) -> Response:
    if path == "/mcp":
        return await gw.post(rpc("initialize", {}), headers=headers)
    return await gw.client.request("GET", path, headers=headers)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8443", "127.0.0.1.nip.io", "[::1"])
async def test_non_loopback_host_is_403_on_a_loopback_gateway(gw: Gateway, path: str, host: str) -> None:
    resp = await _get_or_post(gw, path, {"host": host})
    assert resp.status == 403
    assert "Forbidden" in error_of(resp)["message"]
    assert len(gw.sessions) == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://evil.example:8443", "null", "http://[::1"]
)
async def test_foreign_origin_is_403_on_a_loopback_gateway(gw: Gateway, path: str, origin: str) -> None:
    resp = await _get_or_post(gw, path, {"origin": origin})
    assert resp.status == 403
    assert "Forbidden" in error_of(resp)["message"]
    assert len(gw.sessions) == 0


async def test_host_check_comes_before_the_token(gw: Gateway) -> None:
    resp = await gw.post(rpc("initialize", {}), headers={"host": "evil.example", "authorization": None})
    assert resp.status == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"host": "localhost:8443"},
        {"host": "[::1]:8443"},
        {"host": "127.0.0.1"},
        {"host": None},
        {"origin": "http://localhost:5173"},
        {"origin": "http://127.0.0.1:8443/"},
    ],
)
async def test_loopback_host_and_origin_pass(gw: Gateway, headers: dict[str, HeaderValue]) -> None:
    assert (await gw.client.request("GET", "/health", headers=headers)).status == 200
    assert (await gw.post(rpc("initialize", {}), headers=headers)).status == 200


async def test_non_loopback_gateway_checks_origin_against_the_list(nursery: trio.Nursery) -> None:
    gw = await Gateway.start(nursery, 'host = "0.0.0.0"\nallowed_origins = ["https://app.example"]')
    c = gw.client
    # Any Host: a gateway on a public address is reached by its public name.
    assert (await c.request("GET", "/health", headers={"host": "gw.example.org"})).status == 200
    assert (await c.request("GET", "/health", headers={"origin": "https://app.example"})).status == 200
    assert (await c.request("GET", "/health", headers={"origin": "HTTPS://APP.EXAMPLE/"})).status == 200
    for origin in ("https://evil.example", "http://localhost:3000", "http://app.example"):
        assert (await c.request("GET", "/health", headers={"origin": origin})).status == 403, origin
        resp = await gw.post(rpc("initialize", {}), headers={"origin": origin})
        assert resp.status == 403, origin
    assert (await gw.post(rpc("initialize", {}), headers={"origin": "https://app.example"})).status == 200


# ------------------------------------------------------------------------------------------ /health


async def test_health_public_view_says_little(gw: Gateway) -> None:
    resp = await gw.client.request("GET", "/health", headers={"authorization": None})
    assert resp.status == 200
    assert resp.json() == {"status": "ok", "version": __version__, "servers": {}}


async def test_health_views_with_a_failing_server(nursery: trio.Nursery) -> None:
    gw = await Gateway.start(nursery, rest=f'[[mcp]]\nname = "broken"\ncommand = "{MISSING_COMMAND}"\n')
    await nursery.start(gw.router.run_upstreams)
    with trio.fail_after(5):
        await gw.router.upstreams["broken"].ready.wait()  # set when it gives up for now
    assert "error" in gw.router.upstream_status()[0]
    await gw.initialize()

    public = await gw.client.request("GET", "/health", headers={"authorization": None})
    assert public.status == 503
    body = public.json()
    assert set(body) == {"status", "version", "servers"}
    assert body["status"] == "degraded"
    assert sum(body["servers"].values()) == 1
    assert "broken" not in public.text and "nonexistent" not in public.text and "children" not in body

    wrong = await gw.client.request("GET", "/health", headers={"authorization": "Bearer nope-nope-nope-nope"})
    assert set(wrong.json()) == {"status", "version", "servers"}

    full = await gw.client.request("GET", "/health")
    assert full.status == 503
    body = full.json()
    assert {"status", "version", "uptime_s", "children", "sessions"} <= set(body)
    assert body["sessions"] == 1
    [child] = body["children"]
    assert child["name"] == "broken"
    assert "nonexistent" in child["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ],
)
async def test_oauth_discovery_is_a_json_404(gw: Gateway, path: str) -> None:
    for token in (None, TOKEN):
        resp = await gw.client.request("GET", path, headers={"authorization": token and f"Bearer {token}"})
        assert resp.status == 404
        assert "static bearer token" in error_of(resp)["message"]


# ------------------------------------------------------------------------------ sessions (POST/DELETE)


@pytest.mark.parametrize("version", SUPPORTED_PROTOCOLS)
async def test_initialize_creates_a_session(gw: Gateway, version: str) -> None:
    sid = await gw.initialize(version)
    session = gw.sessions.get(sid)
    assert session is not None and session.protocol_version == version
    resp = await gw.post(rpc("ping"), sid=sid, headers={"mcp-protocol-version": version})
    assert resp.status == 200
    assert resp.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


async def test_initialize_with_an_unknown_version_gets_the_latest(gw: Gateway) -> None:
    resp = await gw.post(rpc("initialize", {"protocolVersion": "1999-01-01"}))
    assert resp.status == 200
    assert resp.json()["result"]["protocolVersion"] == LATEST_PROTOCOL


@pytest.mark.parametrize(
    "body",
    [
        [rpc("initialize", {}), rpc("ping", id=2)],
        [note("initialized"), rpc("initialize", {})],
        note("initialize", {}),
    ],
)
async def test_initialize_must_come_alone_with_an_id(gw: Gateway, body: Any) -> None:
    resp = await gw.post(body)
    assert resp.status == 400
    assert error_of(resp)["code"] == jsonrpc.INVALID_REQUEST
    assert len(gw.sessions) == 0


async def test_session_id_is_required_and_must_be_known(gw: Gateway, sid: str) -> None:
    resp = await gw.post(rpc("ping"))
    assert resp.status == 400
    assert "Mcp-Session-Id" in error_of(resp)["message"]
    resp = await gw.post(rpc("ping"), sid="no-such-session")
    assert resp.status == 404
    assert error_of(resp)["message"] == "Session not found"
    assert (await gw.post(rpc("ping"), sid=sid)).status == 200


async def test_delete_ends_the_session(gw: Gateway, sid: str) -> None:
    headers = {"mcp-session-id": sid}
    assert (await gw.client.request("DELETE", "/mcp", headers={})).status == 400
    assert (await gw.client.request("DELETE", "/mcp", headers={"mcp-session-id": "nope"})).status == 404
    resp = await gw.client.request("DELETE", "/mcp", headers=headers)
    assert resp.status == 204 and resp.body == b""
    assert gw.sessions.get(sid) is None
    assert (await gw.post(rpc("ping"), sid=sid)).status == 404
    assert (await gw.post(note("notifications/initialized"), sid=sid)).status == 404
    assert (await gw.client.request("GET", "/mcp", headers={**headers, **SSE_ACCEPT})).status == 404
    assert (await gw.client.request("DELETE", "/mcp", headers=headers)).status == 404


@pytest.mark.parametrize("version", ["2024-10-07", "2099-01-01", "latest", ""])
async def test_unsupported_protocol_version_header_is_400(gw: Gateway, sid: str, version: str) -> None:
    resp = await gw.post(rpc("ping"), sid=sid, headers={"mcp-protocol-version": version})
    assert resp.status == 400
    assert "MCP-Protocol-Version" in error_of(resp)["message"]
    get = await gw.client.request(
        "GET", "/mcp", headers={"mcp-session-id": sid, "mcp-protocol-version": version, **SSE_ACCEPT}
    )
    assert get.status == 400


async def test_options_and_unknown_methods(gw: Gateway) -> None:
    resp = await gw.client.request("OPTIONS", "/mcp")
    assert resp.status == 204
    assert "POST" in (resp.header("allow") or "")
    resp = await gw.client.request("PUT", "/mcp")
    assert resp.status == 405
    assert resp.header("allow") == "GET, POST, DELETE"


# ----------------------------------------------------------------------------- POST: headers and body


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/plain, image/png"])
async def test_accept_without_json_or_sse_is_406(gw: Gateway, sid: str, accept: str) -> None:
    resp = await gw.post(rpc("ping"), sid=sid, headers={"accept": accept})
    assert resp.status == 406


@pytest.mark.parametrize(
    "accept", [None, "application/json", "text/event-stream", "*/*", "application/*", "APPLICATION/JSON"]
)
async def test_acceptable_accept_headers_get_the_answer(gw: Gateway, sid: str, accept: str | None) -> None:
    resp = await gw.post(rpc("ping", id="p"), sid=sid, headers={"accept": accept})
    assert resp.status == 200
    assert resp.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_wrong_content_type_is_415(gw: Gateway, sid: str, ctype: str) -> None:
    resp = await gw.post(rpc("ping"), sid=sid, headers={"content-type": ctype})
    assert resp.status == 415


async def test_json_content_type_with_parameters_is_fine(gw: Gateway, sid: str) -> None:
    headers = {"content-type": "application/json; charset=utf-8"}
    assert (await gw.post(rpc("ping"), sid=sid, headers=headers)).status == 200


async def test_body_over_the_limit_is_413(nursery: trio.Nursery) -> None:
    gw = await Gateway.start(nursery, "max_body_bytes = 1024")
    sid = await gw.initialize()
    ping = json.dumps(rpc("ping")).encode()
    exact = ping + b" " * (1024 - len(ping))
    assert (await gw.post(None, raw=exact, sid=sid)).status == 200
    over = exact + b" "
    resp = await gw.post(None, raw=over, sid=sid)
    assert resp.status == 413
    assert "1024" in error_of(resp)["message"]
    # Declared too large: refused before reading.
    resp = await gw.post(None, raw=ping, sid=sid, headers={"content-length": "1025"})
    assert resp.status == 413
    # No Content-Length, the body in chunks: refused once the chunks add up to too much.
    resp = await gw.client.request(
        "POST", "/mcp", headers={"mcp-session-id": sid, "content-length": None}, body=[over[:600], over[600:]]
    )
    assert resp.status == 413
    resp = await gw.client.request(
        "POST",
        "/mcp",
        headers={"mcp-session-id": sid, "content-length": None},
        body=[exact[:600], exact[600:]],
    )
    assert resp.status == 200


@pytest.mark.parametrize("content_length", [b"\xb2", "9" * 5000])
async def test_odd_content_length_is_not_a_crash(gw: Gateway, sid: str, content_length: bytes | str) -> None:
    resp = await gw.post(rpc("ping"), sid=sid, headers={"content-length": content_length})
    assert resp.status < 500


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"", b"\xff\xfe{}", b'{"a":1}{"b":2}', b"[" * 100_000, b"{'single': 'quotes'}"],
)
async def test_malformed_json_is_a_parse_error(gw: Gateway, sid: str, raw: bytes) -> None:
    resp = await gw.post(None, raw=raw, sid=sid)
    assert resp.status == 400
    body = resp.json()
    assert body["id"] is None
    assert body["error"]["code"] == jsonrpc.PARSE_ERROR


NON_JSON_NUMBERS = [
    b'{"x": Infinity}',
    b'{"x": NaN}',
    b'{"x": -Infinity}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"n":NaN}}',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping","params":[Infinity]}]',
]


@pytest.mark.parametrize("raw", NON_JSON_NUMBERS)
async def test_nan_and_infinity_are_parse_errors(gw: Gateway, sid: str, raw: bytes) -> None:
    resp = await gw.post(None, raw=raw, sid=sid)
    assert resp.status == 400
    assert error_of(resp)["code"] == jsonrpc.PARSE_ERROR


async def test_nan_never_reaches_the_router(gw: Gateway) -> None:
    # An initialize would create a session: with Infinity in it, nothing is created.
    raw = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    raw += b'"n":Infinity}}'
    resp = await gw.post(None, raw=raw)
    assert resp.status == 400
    assert error_of(resp)["code"] == jsonrpc.PARSE_ERROR
    assert resp.header("mcp-session-id") is None
    assert len(gw.sessions) == 0


@pytest.mark.parametrize("body", [5, "ping", None, True, [], [1, 2], [rpc("ping"), "x"]])
async def test_a_body_that_is_not_messages_is_an_invalid_request(gw: Gateway, sid: str, body: Any) -> None:
    resp = await gw.post(body, sid=sid)
    assert resp.status == 400
    assert error_of(resp)["code"] == jsonrpc.INVALID_REQUEST


@pytest.mark.parametrize(
    "msg",
    [{}, {"jsonrpc": "2.0", "id": 7}, {"jsonrpc": "2.0", "id": 7, "method": 42}, {"id": 7, "params": {}}],
)
async def test_a_single_invalid_message_is_400(gw: Gateway, sid: str, msg: dict[str, Any]) -> None:
    resp = await gw.post(msg, sid=sid)
    assert resp.status == 400
    body = resp.json()
    assert body["error"]["code"] == jsonrpc.INVALID_REQUEST
    assert body["id"] == msg.get("id")


# ------------------------------------------------------------------------------------------ batches


async def test_batch_gets_one_answer_per_request(gw: Gateway, sid: str) -> None:
    batch = [
        rpc("ping", id=1),
        {"jsonrpc": "2.0", "id": 2, "method": 5},  # method not a string
        note("notifications/initialized"),  # no answer
        rpc("no/such/method", id=3),
        rpc("ping", [1, 2], id=4),  # params not an object
        {"foo": "bar"},  # not a message at all: answered with id null
        {"jsonrpc": "2.0", "id": "client-answer", "result": {}},  # a client response: no answer
        rpc("ping", id={"obj": 1}),  # an id that is no JSON-RPC id: answered with id null
        rpc("tools/list", id="t"),
    ]
    resp = await gw.post(batch, sid=sid)
    assert resp.status == 200
    answers = resp.json()
    assert isinstance(answers, list)
    assert len(answers) == 7
    by_id: dict[Any, list[dict[str, Any]]] = {}
    for a in answers:
        assert a["jsonrpc"] == "2.0"
        by_id.setdefault(a["id"], []).append(a)
    assert by_id[1] == [{"jsonrpc": "2.0", "id": 1, "result": {}}]
    assert by_id[2][0]["error"]["code"] == jsonrpc.INVALID_REQUEST
    assert by_id[3][0]["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert by_id[4][0]["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert [a["error"]["code"] for a in by_id[None]] == [jsonrpc.INVALID_REQUEST] * 2
    assert by_id["t"] == [{"jsonrpc": "2.0", "id": "t", "result": {"tools": []}}]


@pytest.mark.parametrize(
    "body",
    [
        note("notifications/initialized"),
        [note("notifications/initialized"), note("notifications/roots/list_changed"), note("x/unknown")],
        {"jsonrpc": "2.0", "id": {"an": "object"}, "result": {}},
        {"jsonrpc": "2.0", "id": [1, 2], "result": {}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "no"}},
        {"jsonrpc": "2.0", "id": "never-asked", "result": {}},
        [{"jsonrpc": "2.0", "id": {"a": 1}, "result": {}}, note("notifications/initialized")],
        note("notifications/cancelled", {"requestId": {"an": "object"}}),
        note("notifications/cancelled", {"requestId": [1]}),
        note("notifications/cancelled", {"requestId": None, "reason": {"x": 1}}),
        note("notifications/cancelled", [1, 2]),
        note("notifications/cancelled", "nope"),
    ],
)
async def test_notifications_and_client_responses_get_202(
    gw: Gateway, sid: str, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    resp = await gw.post(body, sid=sid)
    assert resp.status == 202, resp.text
    assert resp.body == b""
    # Handled, not a bug caught on the way (which would be logged and still answer 202).
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert (await gw.post(rpc("ping"), sid=sid)).status == 200  # the session is fine


# -------------------------------------------------------------------------------------- server/discover


async def test_server_discover_in_a_session_is_an_unknown_method(gw: Gateway, sid: str) -> None:
    resp = await gw.post(rpc("server/discover", {}), sid=sid)
    assert resp.status == 200
    assert resp.json()["error"]["code"] == jsonrpc.METHOD_NOT_FOUND


@pytest.mark.parametrize("bad_id", [{"an": "object"}, [1, 2], True, 1.5])
async def test_server_discover_does_not_echo_an_invalid_id(gw: Gateway, bad_id: Any) -> None:
    resp = await gw.post(rpc("server/discover", {}, id=bad_id))
    assert resp.status < 500
    assert resp.json()["id"] is None


async def test_server_discover_with_a_deeply_nested_id_is_not_a_crash(gw: Gateway) -> None:
    # The depth that parses but does not serialize depends on the stack depth: try them all.
    for depth in range(900, 1100):
        raw = b'{"jsonrpc":"2.0","method":"server/discover","id":' + b"[" * depth + b"]" * depth + b"}"
        resp = await gw.post(None, raw=raw)
        assert resp.status < 500, depth


# ----------------------------------------------------------------------------------- the GET stream


def _get_headers(sid: str, last_event_id: HeaderValue = None) -> dict[str, HeaderValue]:
    return {"mcp-session-id": sid, "last-event-id": last_event_id, **SSE_ACCEPT}


async def test_get_needs_accept_event_stream(gw: Gateway, sid: str) -> None:
    for accept in (None, "application/json", "*/*"):
        resp = await gw.client.request("GET", "/mcp", headers={"mcp-session-id": sid, "accept": accept})
        assert resp.status == 406, accept
    resp = await gw.client.request("GET", "/mcp", headers=SSE_ACCEPT)
    assert resp.status == 400
    resp = await gw.client.request("GET", "/mcp", headers={"mcp-session-id": "nope", **SSE_ACCEPT})
    assert resp.status == 404


async def test_get_stream_delivers_a_broadcast_with_an_event_id(gw: Gateway, sid: str) -> None:
    msg = jsonrpc.notification("notifications/tools/list_changed")
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        assert ex.response.status == 200
        assert ex.response.header("content-type") == "text/event-stream"
        priming = ex.response.events[0]
        assert (priming.id, priming.data) == ("0", "")  # 2025-11-25: primes reconnection
        gw.sessions.broadcast(msg)
        [(eid, got)] = await ex.wait_messages(1)
        assert (eid, got) == ("1", msg)
        assert ex.response.events[-1].event == "message"
        gw.sessions.broadcast(jsonrpc.notification("notifications/prompts/list_changed"))
        msgs = await ex.wait_messages(2)
        assert msgs[1] == ("2", jsonrpc.notification("notifications/prompts/list_changed"))
        assert not ex.response.complete  # a stream: open until the client leaves


async def test_get_stream_of_an_older_protocol_has_no_priming_event(gw: Gateway) -> None:
    sid = await gw.initialize("2025-06-18")
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as ex:
        await ex.wait_until(lambda r: "stream open" in r.comments)
        assert ex.response.events == []
        gw.sessions.broadcast(note("notifications/resources/list_changed"))
        assert await ex.wait_messages(1) == [("1", note("notifications/resources/list_changed"))]


async def test_reconnect_with_last_event_id_gets_what_was_missed(gw: Gateway, sid: str) -> None:
    first, second, third = (note(f"notifications/n{i}") for i in range(3))
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        gw.sessions.broadcast(first)
        [(seen, _)] = await ex.wait_messages(1)
    assert seen == "1"
    # No stream open: the messages are kept for replay.
    gw.sessions.broadcast(second)
    gw.sessions.broadcast(third)
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid, seen)) as ex:
        assert await ex.wait_messages(2) == [("2", second), ("3", third)]
        assert ex.response.events[0].id == seen  # the priming event says where we are
    # A new stream without Last-Event-ID gets only what comes next.
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        assert ex.response.events[0].id == "3"
        gw.sessions.broadcast(first)
        assert await ex.wait_messages(1) == [("4", first)]
    # And from the start, all of them.
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid, "0")) as ex:
        got = await ex.wait_messages(4)
        assert [m for _, m in got] == [first, second, third, first]


async def test_a_new_get_stream_ends_the_older_one(gw: Gateway, sid: str) -> None:
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as old:
        await old.wait_until(lambda r: bool(r.events))
        async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as new:
            await new.wait_until(lambda r: bool(r.events))
            await old.wait_finished()
            assert old.response.complete
            gw.sessions.broadcast(note("notifications/x"))
            assert await new.wait_messages(1) == [("1", note("notifications/x"))]
    assert old.response.messages == []  # each message travels on one stream only


async def test_delete_and_shutdown_end_get_streams(gw: Gateway, sid: str) -> None:
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        resp = await gw.client.request("DELETE", "/mcp", headers={"mcp-session-id": sid})
        assert resp.status == 204
        await ex.wait_finished()
        assert ex.response.complete
    other = await gw.initialize()
    async with gw.client.open("GET", "/mcp", headers=_get_headers(other)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        gw.sessions.closing.set()
        await ex.wait_finished()
        assert ex.response.complete


@pytest.mark.parametrize(
    "last_event_id",
    [
        "abc",
        "²",
        b"\xb2",
        "١",
        "1/x",
        "x/1",
        "/",
        "1/",
        "0/0",
        "1/²",
        "-1",
        " 3 ",
        "1e3",
        "99999999999999999999999",
        "99999999999999999999999/1",
        "1/99999999999999999999999",
        "9" * 5000,
        "",
    ],
)
async def test_odd_last_event_ids_never_give_a_5xx(gw: Gateway, sid: str, last_event_id: HeaderValue) -> None:
    gw.sessions.broadcast(note("notifications/before"))
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid, last_event_id)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        assert ex.response.status == 200
        # Not a resumption of anything: a plain stream from "now" on.
        gw.sessions.broadcast(note("notifications/after"))
        assert await ex.wait_messages(1) == [("2", note("notifications/after"))]


# ---------------------------------------------------------------------- POST answers that become SSE

SLOW = f'[[mcp]]\nname = "slow"\ncommand = "{MISSING_COMMAND}"\n'


async def _slow_gateway(nursery: trio.Nursery) -> Gateway:
    """tools/list waits for the (never started) server until the test sets its `ready` event, and
    a request not answered within `sse_keepalive` becomes an SSE stream."""
    gw = await Gateway.start(nursery, "sse_keepalive = 0.05", SLOW)
    gw.router._settled = False
    return gw


async def test_slow_answer_becomes_an_sse_stream(nursery: trio.Nursery) -> None:
    gw = await _slow_gateway(nursery)
    sid = await gw.initialize("2025-06-18")
    async with gw.client.open(
        "POST", "/mcp", headers={"mcp-session-id": sid}, json_body=rpc("tools/list", id=9)
    ) as ex:
        await ex.wait_until(lambda r: "keepalive" in r.comments)
        assert ex.response.status == 200
        assert ex.response.header("content-type") == "text/event-stream"
        gw.router.upstreams["slow"].ready.set()
        await ex.wait_until(lambda r: r.complete)
    # Not resumable on 2025-06-18: no event ids.
    assert ex.response.messages == [(None, {"jsonrpc": "2.0", "id": 9, "result": {"tools": []}})]


async def test_answer_is_json_when_the_client_accepts_only_json(nursery: trio.Nursery) -> None:
    gw = await _slow_gateway(nursery)
    sid = await gw.initialize()
    async with gw.client.open(
        "POST",
        "/mcp",
        headers={"mcp-session-id": sid, "accept": "application/json"},
        json_body=rpc("tools/list", id=9),
    ) as ex:
        await trio.sleep(0.2)  # several keepalive periods
        assert ex.response.status == 0  # nothing sent yet
        gw.router.upstreams["slow"].ready.set()
        await ex.wait_until(lambda r: r.complete)
    assert ex.response.header("content-type") == "application/json"
    assert ex.response.json() == {"jsonrpc": "2.0", "id": 9, "result": {"tools": []}}


async def test_resumable_post_stream_survives_a_disconnect(nursery: trio.Nursery) -> None:
    gw = await _slow_gateway(nursery)
    sid = await gw.initialize("2025-11-25")
    async with gw.client.open(
        "POST", "/mcp", headers={"mcp-session-id": sid}, json_body=rpc("tools/list", id="r")
    ) as ex:
        await ex.wait_until(lambda r: bool(r.events) and "keepalive" in r.comments)
        priming = ex.response.events[0]
        assert priming.data == ""
        assert priming.id is not None and priming.id.endswith("/0")
    assert not ex.response.complete  # the client went away before the answer
    stream_no = priming.id.partition("/")[0]
    # The call goes on; its answer waits for the client to resume.
    gw.router.upstreams["slow"].ready.set()
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid, priming.id)) as ex:
        await ex.wait_until(lambda r: r.complete)
    assert ex.response.status == 200
    assert ex.response.messages == [
        (f"{stream_no}/1", {"jsonrpc": "2.0", "id": "r", "result": {"tools": []}})
    ]
    # Delivered: resuming it again is a plain GET stream.
    async with gw.client.open("GET", "/mcp", headers=_get_headers(sid, priming.id)) as ex:
        await ex.wait_until(lambda r: bool(r.events))
        assert ex.response.events[0].id == "0"
        assert not ex.response.complete


# --------------------------------------------------------------------------------------- properties

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_methods = st.sampled_from(
    [
        "ping",
        "initialize",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/read",
        "resources/subscribe",
        "resources/templates/list",
        "completion/complete",
        "logging/setLevel",
        "notifications/cancelled",
        "notifications/initialized",
        "no/such",
    ]
)
_message = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | _json, "method": _methods | _json},
    optional={"id": st.integers() | st.text(max_size=5) | _json, "params": _json, "result": _json},
)
_bodies = _json | _message | st.lists(_message | _json, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies)
async def test_arbitrary_json_bodies_never_give_a_5xx(body: Any) -> None:
    async with trio.open_nursery() as nursery:
        gw = await Gateway.start(nursery)
        sid = await gw.initialize()
        # Infinity stays in (json.dumps writes it): those bodies must be parse errors.
        resp = await gw.post(None, raw=json.dumps(body).encode(), sid=sid)
        assert resp.status < 500, (resp.status, resp.text)
        if resp.status == 202:
            assert resp.body == b""
        else:
            assert resp.header("content-type") == "application/json"
            answer = resp.json()
            assert isinstance(answer, list if resp.status == 200 and isinstance(body, list) else dict)
        assert (await gw.post(rpc("ping"), sid=sid)).status == 200  # the session still works
        nursery.cancel_scope.cancel()
