"""Hypothesis fuzzes the HTTP front of ONE real `portero serve`.

What it attacks: `POST/GET/DELETE /mcp` with any JSON value in any field of JSON-RPC messages (ids of
every type, integers of thousands of digits, nesting up to and past the parser's recursion limit,
real and unknown methods, params of every shape), batches, bodies that are not UTF-8, `NaN` /
`Infinity` / `1e999` literals, wrong Content-Type and Accept headers, session ids of another session,
of an ended one, garbage or none, garbage `Last-Event-ID`, odd HTTP methods and paths, and requests
without (or with a wrong) bearer token.

What every answer must be: a status below 500, a complete body (never a cut chunked body), strict
UTF-8 JSON when it says JSON (every SSE event too), ids that are valid JSON-RPC ids, and it must come
within a deadline. No unauthenticated request may reach the child (it records every call it gets in
a file: that file must not change across such a request). At the end the gateway still serves, its
log holds no traceback of its own, and its RSS grew by less than a generous bound.

`PORTERO_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/hostile/test_fuzz_http.py` runs more.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..integration.harness import TOKEN, GatewayProcess, child_toml, server_toml
from .rawhttp import Answer, auth_headers, build, check_answer, exchange, new_session, own_tracebacks, rss_mib

EXAMPLES = int(os.environ.get("PORTERO_FUZZ_EXAMPLES", "0") or 0)
MAX_BODY = 256 * 1024
REQUEST_TIMEOUT = 20.0  # no answer may take longer (the child's call_timeout is 3 s)
RSS_GROWTH_MIB = 100


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


# ------------------------------------------------------------------------------------------ fixture
@dataclass
class Fuzz:
    g: GatewayProcess
    port: int
    record: Path
    main: str  # a 2025-11-25 session the fuzzer uses
    other: str  # another live session (2025-06-18)
    ended: str  # a session ended with DELETE
    rss0: float

    def post(self, body: bytes, headers: list[tuple[str, str]] | None = None, **kw: Any) -> Answer:
        return exchange(
            self.port, build("POST", "/mcp", self.port, headers, body), timeout=REQUEST_TIMEOUT, **kw
        )


@pytest.fixture(scope="module")
def fz(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz_http")
    record = tmp / "record.jsonl"
    record.touch()
    cfg = (
        server_toml(tmp, extra=f"max_body_bytes = {MAX_BODY}")
        + child_toml("t", "--record", str(record), call_timeout="3s")
        # Anonymization on, so fuzzed values also go through both directions of it.
        + '[[replacements]]\nfake = "John Doe"\nreal = "Jane Realname"\n'
    )
    g = GatewayProcess(tmp, cfg)
    try:
        g.wait_ready()
        port = int(g.url.rsplit(":", 1)[1])
        main = new_session(port, "2025-11-25")
        other = new_session(port, "2025-06-18")
        ended = new_session(port, "2025-06-18")
        gone = exchange(port, build("DELETE", "/mcp", port, auth_headers(ended)))
        assert gone.status == 204, gone
        warm = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "t__echo", "arguments": {}},
            }
        ).encode()
        for _ in range(20):
            assert exchange(port, build("POST", "/mcp", port, auth_headers(main), warm)).status == 200
        yield Fuzz(g, port, record, main, other, ended, rss_mib(g.proc.pid))
    finally:
        g.stop()
        (tmp / "gateway.log").write_text(g.log_text())  # for a post-mortem


# ------------------------------------------------------------------------------------------ strategies
HUGE_INTS = [2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**100, -(10**300), int("9" * 4000)]
ODD_TEXT = ["\ud800", "a\udfffb", "\x00", "\u2028", "é", "😀", "John Doe", "\ufeff", "A" * 5000]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(ODD_TEXT),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
ids = st.one_of(
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
    json_values,
)

REAL_METHODS = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/roots/list_changed",
    "notifications/progress",
]
methods = st.one_of(
    st.sampled_from(REAL_METHODS),
    st.sampled_from(REAL_METHODS),
    st.text(max_size=30),
    json_values.filter(lambda v: not isinstance(v, str)),
)
URIS = ["test://static/hello", "test://static/pixel", "test://item/1", "test://item/", "test://nope"]
uris = st.one_of(st.sampled_from(URIS), st.text(max_size=20).map(lambda s: "test://item/" + s), json_values)
tool_names = st.one_of(
    st.sampled_from(
        ["t__echo", "t__whoami", "t__add", "t__progress", "t__log", "t__touch", "t__garbage", "t__big"]
        + ["t__delete_thing", "t__nope", "echo", "t/echo", ""]
    ),
    st.text(max_size=20),
    json_values,
)


def tool_arguments(name: Any) -> st.SearchStrategy[Any]:
    """Arguments of any shape, except where the test child itself would break (its bugs are not the
    gateway's): required keys present and of a type it can use."""
    extra = json_objects
    if name == "t__add":
        num = st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans())
        return st.fixed_dictionaries({"a": num, "b": num})
    if name == "t__progress":
        return st.fixed_dictionaries({"steps": st.integers(0, 5)})
    if name == "t__big":
        return st.fixed_dictionaries({"kb": st.integers(0, 64)})
    if name == "t__log":
        return st.builds(lambda e, m: {**e, "message": m}, extra, json_values)
    if name == "t__touch":
        return st.builds(lambda e, u: {**e, "uri": u}, extra, json_values)
    if isinstance(name, str) and name.startswith("t__"):
        return st.one_of(extra, st.builds(lambda e, t: {**e, "text": t}, extra, json_values))
    return st.one_of(json_values, extra)  # the gateway refuses the call before the child sees it


@st.composite
def params_for(draw: st.DrawFn, method: Any) -> Any:
    """Params of any shape; for methods the gateway forwards to the child, the fields it routes on are
    fuzzed and the rest kept to what the test child survives."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # any shape at all: the gateway must refuse what it cannot route
    if method == "tools/call":
        name = draw(tool_names)
        p: dict[str, Any] = {"name": name}
        if draw(st.booleans()) or name == "t__add":
            p["arguments"] = draw(tool_arguments(name))
        if draw(st.integers(0, 3)) == 0:
            p["_meta"] = draw(st.one_of(json_values, st.fixed_dictionaries({"progressToken": json_values})))
        return p
    if method == "prompts/get":
        name = draw(st.one_of(st.just("t__greet"), st.just("greet"), json_values))
        p = {"name": name}
        if draw(st.booleans()):
            p["arguments"] = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3))
        return p
    if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        return {"uri": draw(uris)}
    if method == "completion/complete":
        ref = draw(
            st.one_of(
                st.fixed_dictionaries(
                    {"type": st.just("ref/prompt"), "name": st.one_of(st.just("t__greet"), json_values)}
                ),
                st.fixed_dictionaries({"type": st.just("ref/resource"), "uri": uris}),
                json_values,
            )
        )
        return {"ref": ref, "argument": {"name": "who", "value": draw(st.text(max_size=10))}}
    if method == "logging/setLevel":
        return {
            "level": draw(st.one_of(st.sampled_from(["debug", "info", "emergency", "nope"]), json_values))
        }
    if method == "initialize":
        return {
            "protocolVersion": draw(
                st.one_of(
                    st.sampled_from(["2025-11-25", "2025-06-18", "2025-03-26", "9999-99-99"]), json_values
                )
            ),
            "capabilities": draw(json_values),
            "clientInfo": draw(json_values),
        }
    if method == "notifications/cancelled":
        return {"requestId": draw(ids), "reason": draw(json_values)}
    return draw(st.one_of(json_objects, json_values))


ABSENT = object()


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(methods)
    msg: dict[str, Any] = {}
    jr = draw(st.sampled_from(["2.0"] * 8 + ["1.0", ABSENT]))
    if jr is not ABSENT:
        msg["jsonrpc"] = jr
    shape = draw(st.integers(0, 9))
    if shape < 7:  # a request or a notification
        msg["method"] = method
        rid = draw(st.one_of(st.just(ABSENT), ids, st.integers(0, 1000)))
        if rid is not ABSENT:
            msg["id"] = rid
        p = draw(st.one_of(st.just(ABSENT), params_for(method)))
        if p is not ABSENT:
            msg["params"] = p
    elif shape < 9:  # something that looks like a response (to no request of ours)
        msg["id"] = draw(ids)
        if draw(st.booleans()):
            msg["result"] = draw(json_values)
        else:
            msg["error"] = draw(json_values)
    else:  # anything at all
        msg.update(draw(json_objects))
    return msg


# ------------------------------------------------------------------------------------------ checks
def expect_valid(fz: Fuzz, ans: Answer, sent: Any) -> None:
    check_answer(ans)
    assert fz.g.proc.poll() is None, fz.g.log_text()[-3000:]
    # A single well-formed request answered 200 with JSON-RPC carries the request's own id.
    if (
        ans.status == 200
        and isinstance(sent, dict)
        and isinstance(sent.get("method"), str)
        and sent.get("method") != "server/discover"
        and "id" in sent
        and (
            isinstance(sent["id"], str) or (isinstance(sent["id"], int) and not isinstance(sent["id"], bool))
        )
    ):
        final = ans.events[-1] if ans.events else (ans.json() if ans.body else None)
        if isinstance(final, dict) and final.get("jsonrpc") == "2.0":
            assert final.get("id") == sent["id"], (final, sent)


def encode(value: Any) -> bytes:
    """JSON text; lone surrogates escaped (json.dumps does); big ints allowed."""
    return json.dumps(value).encode()


# ------------------------------------------------------------------------------------------ tests
@fuzz_settings(250)
@given(msg=messages(), session=st.sampled_from(["main", "main", "main", "other", "ended", "none"]))
def test_fuzzed_messages(fz: Fuzz, msg: dict[str, Any], session: str) -> None:
    sid = {"main": fz.main, "other": fz.other, "ended": fz.ended, "none": None}[session]
    ans = fz.post(encode(msg), auth_headers(sid))
    expect_valid(fz, ans, msg)


@fuzz_settings(80)
@given(
    batch=st.one_of(
        st.lists(messages(), max_size=6),
        st.lists(st.one_of(messages(), json_values), max_size=6),
    )
)
def test_fuzzed_batches(fz: Fuzz, batch: list[Any]) -> None:
    ans = fz.post(encode(batch), auth_headers(fz.main))
    expect_valid(fz, ans, batch)
    if ans.status == 200 and "json" in ans.ctype:
        assert isinstance(ans.json(), list | dict)


def _nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def ping_with(x: str) -> bytes:
    return ('{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":' + x + "}}").encode()


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bodies that are not (quite) JSON, or JSON that stretches the parser."""
    kind = draw(st.integers(0, 8))
    call = (
        '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"t__echo","arguments":{"text":%s}}}'
    )
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:  # invalid UTF-8 inside otherwise good JSON
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80abc"]))
        return (call % ("1", '"X"')).encode().replace(b"X", bad)
    if kind == 2:  # NaN, Infinity and friends where numbers go
        lit = draw(
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1E400", "-0", "1e-999"])
        )
        where = draw(st.integers(0, 2))
        if where == 0:
            return (call % (lit, "1")).encode()
        if where == 1:
            return (call % ("1", lit)).encode()
        return ping_with(lit)
    if kind == 3:  # deep nesting, around and past the recursion limit
        depth = draw(st.one_of(st.integers(1, 3000), st.integers(900, 1100)))
        inner = _nested(depth, draw(st.sampled_from(["list", "dict"])))
        where = draw(st.integers(0, 3))
        if where == 0:
            return (call % ("1", inner)).encode()
        if where == 1:
            return (call % (inner, "1")).encode()
        if where == 2:
            return ping_with(inner)
        return inner.encode()
    if kind == 4:  # truncated JSON
        full = (call % ("1", json.dumps(draw(st.text(max_size=20))))).encode()
        return full[: draw(st.integers(0, len(full) - 1))]
    if kind == 5:  # other encodings and marks
        text = call % ("1", '"hé"')
        enc = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1"]))
        return text.encode(enc)
    if kind == 6:  # an integer of thousands of digits
        digits = draw(st.integers(4000, 6000))
        return (call % ("1" * digits, "1")).encode()
    if kind == 7:  # duplicate keys, trailing garbage, comments, single quotes
        return draw(
            st.sampled_from(
                [
                    b'{"jsonrpc":"2.0","id":1,"id":"x","method":"ping","method":"tools/list"}',
                    b'{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"ping"}',
                    b'{"jsonrpc":"2.0","id":1,"method":"ping"}garbage',
                    b'// comment\n{"jsonrpc":"2.0","id":1,"method":"ping"}',
                    b"{'jsonrpc':'2.0','id':1,'method':'ping'}",
                    b"",
                    b"null",
                    b"[]",
                    b"[[]]",
                    b'"ping"',
                    b"   \n\t  ",
                ]
            )
        )
    size = draw(st.sampled_from([MAX_BODY - 200, MAX_BODY + 1, MAX_BODY * 2]))
    return (call % ("1", json.dumps("x" * size))).encode()


@fuzz_settings(120)
@given(body=raw_bodies(), chunked=st.booleans())
def test_raw_bodies(fz: Fuzz, body: bytes, chunked: bool) -> None:
    ans = exchange(
        fz.port,
        build("POST", "/mcp", fz.port, auth_headers(fz.main), body, chunked=chunked),
        timeout=REQUEST_TIMEOUT,
    )
    check_answer(ans)
    assert fz.g.proc.poll() is None
    if len(body) > MAX_BODY:
        assert ans.status == 413, ans


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=60
)
CTYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json-seq",
    "",
    "*/*",
]
ACCEPTS = [
    None,
    "application/json, text/event-stream",
    "application/json",
    "text/event-stream",
    "*/*",
    "application/*",
    "text/html",
    "",
    "text/event-stream;q=0, application/json;q=0",
]
LAST_EVENT_IDS = [
    "0",
    "1/0",
    "1/1",
    "999999999999999999999/1",
    "-1",
    "1/-1",
    "abc",
    "/",
    "//",
    "0/0/0",
    "١٢",
    "1e3",
]


@st.composite
def hostile_requests(draw: st.DrawFn, fz: Fuzz) -> tuple[str, str, list[tuple[str, str]], bytes, bool]:
    http_method = draw(
        st.sampled_from(["POST"] * 5 + ["GET"] * 3 + ["DELETE", "OPTIONS", "PUT", "PATCH", "HEAD", "FOO"])
    )
    path = draw(
        st.sampled_from(
            ["/mcp"] * 6
            + ["/mcp/", "/mcp/message", "/health", "/", "/.well-known/oauth-authorization-server", "/nope"]
            + ["/mcp?x=1", "//mcp", "/%ff", "/mcp/../health", "*"]
        )
    )
    headers: list[tuple[str, str]] = [("Authorization", f"Bearer {TOKEN}")]
    ctype = draw(st.one_of(st.sampled_from(CTYPES), header_text))
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    accept = draw(st.one_of(st.sampled_from(ACCEPTS), header_text))
    if accept is not None:
        headers.append(("Accept", accept))
    which = draw(st.sampled_from(["main", "other", "ended", "garbage", "long", "none", "fresh"]))
    if which == "fresh":
        sid: str | None = new_session(fz.port, "2025-11-25")
    else:
        sid = {
            "main": fz.main,
            "other": fz.other,
            "ended": fz.ended,
            "garbage": draw(header_text),
            "long": "s" * draw(st.integers(100, 20000)),
            "none": None,
        }[which]
    if http_method == "DELETE" and which in ("main", "other"):
        sid = fz.ended  # the fuzzer keeps its own two sessions
    if sid is not None:
        headers.append(("Mcp-Session-Id", sid))
    if draw(st.booleans()):
        headers.append(
            (
                "MCP-Protocol-Version",
                draw(st.sampled_from(["2025-11-25", "2025-06-18", "1.0", ""]) | header_text),
            )
        )
    if http_method == "GET" and draw(st.booleans()):
        headers.append(("Last-Event-ID", draw(st.sampled_from(LAST_EVENT_IDS) | header_text)))
    if draw(st.integers(0, 5)) == 0:
        headers.append(
            (
                "Origin",
                draw(st.sampled_from(["http://localhost", "https://evil.example", "null"]) | header_text),
            )
        )
    msg = draw(messages()) if draw(st.booleans()) else {"jsonrpc": "2.0", "id": 7, "method": "ping"}
    body = encode(msg) if http_method not in ("GET", "HEAD", "DELETE") or draw(st.booleans()) else b""
    return http_method, path, headers, body, draw(st.booleans())


@fuzz_settings(150)
@given(data=st.data())
def test_fuzzed_headers_and_methods(fz: Fuzz, data: st.DataObject) -> None:
    http_method, path, headers, body, chunked = data.draw(hostile_requests(fz))
    payload = build(http_method, path, fz.port, headers, body, chunked=chunked and bool(body))
    ans = exchange(
        fz.port, payload, timeout=REQUEST_TIMEOUT, head_only=http_method == "HEAD", peek_stream=0.3
    )
    check_answer(ans)
    assert fz.g.proc.poll() is None


BAD_AUTH = [
    None,
    "",
    "Bearer",
    "Bearer ",
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN}x",
    f"Bearer x{TOKEN}",
    f"Bearer {TOKEN.upper()}",
    f"Bearer{TOKEN}",
    f"Basic {TOKEN}",
    TOKEN,
    f"Token {TOKEN}",
    f"Bearer {TOKEN[: len(TOKEN) // 2]}",
    "Bearer tökén-0123456789abcdef",
]


@st.composite
def unauthenticated(draw: st.DrawFn, fz: Fuzz) -> tuple[str, str, list[tuple[str, str]], bytes, str]:
    nonce = "nonce-" + uuid.uuid4().hex  # unique per example, also while Hypothesis shrinks
    auth = draw(st.one_of(st.sampled_from(BAD_AUTH), header_text.map(lambda s: "Bearer " + s)))
    headers: list[tuple[str, str]] = [] if auth is None else [("Authorization", auth)]
    headers += [("Accept", "application/json, text/event-stream"), ("Content-Type", "application/json")]
    sid = draw(st.sampled_from([fz.main, fz.other, None]))
    if sid:
        headers.append(("Mcp-Session-Id", sid))
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "DELETE"]))
    path = draw(st.sampled_from(["/mcp", "/mcp/", "/mcp/message"]))
    kind = draw(st.integers(0, 4))
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    if kind == 0:
        msg: Any = {**call, "params": {"name": "t__echo", "arguments": {"text": nonce}}}
    elif kind == 1:  # a batch
        msg = [
            {**call, "id": i, "params": {"name": "t__echo", "arguments": {"text": nonce}}} for i in range(3)
        ]
    elif kind == 2:
        msg = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "resources/read",
            "params": {"uri": "test://item/" + nonce},
        }
    elif kind == 3:
        msg = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "prompts/get",
            "params": {"name": "t__greet", "arguments": {"who": nonce}},
        }
    else:
        msg = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": nonce}},
        }
    return method, path, headers, encode(msg), nonce


@fuzz_settings(100)
@given(data=st.data())
def test_unauthenticated_requests_never_reach_the_child(fz: Fuzz, data: st.DataObject) -> None:
    method, path, headers, body, nonce = data.draw(unauthenticated(fz))
    before = fz.record.read_bytes()
    ans = exchange(fz.port, build(method, path, fz.port, headers, body), timeout=REQUEST_TIMEOUT)
    check_answer(ans)
    # h11 refuses some header bytes itself (400); everything else is the gateway's 401.
    assert ans.status in (400, 401), (ans.status, ans.body[:300])
    assert "mcp-session-id" not in ans.headers
    if ans.status == 401:
        assert ans.headers.get("www-authenticate", "").startswith("Bearer")
    after = fz.record.read_bytes()
    assert after == before, after[len(before) :][:500]
    assert nonce.encode() not in after
    # An unauthenticated DELETE ended nothing: the session still answers.
    ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    for sid in (fz.main, fz.other):
        assert fz.post(ping, auth_headers(sid)).status == 200


def test_the_gateway_survived(fz: Fuzz) -> None:
    """Runs last in this file: after everything above, the gateway still serves and did not bloat."""
    g = fz.g
    assert g.proc.poll() is None, g.log_text()[-3000:]
    body = g.wait_ready(timeout=40)
    assert g.health().status_code == 200, body
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "t__echo", "arguments": {"text": "ok"}},
    }
    ans = fz.post(encode(call), auth_headers(fz.main))
    assert ans.status == 200 and "ok" in ans.body.decode(), ans
    rss = rss_mib(g.proc.pid)
    assert rss - fz.rss0 < RSS_GROWTH_MIB, (fz.rss0, rss)
    assert not own_tracebacks(g.lines), "\n---\n".join(own_tracebacks(g.lines))
    # The fuzzer keeps what reaches the child to shapes the test child survives: a restart would mean
    # the gateway forwarded something it should have refused.
    assert [c["restarts"] for c in body["children"]] == [0], body
