"""The stateless era's pure checks (portero.core.modern): envelope, headers, version, decoration."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from portero.core import jsonrpc, modern

V = "2026-07-28"
META = {modern.PROTOCOL_META: V, modern.CAPABILITIES_META: {"sampling": {}}}
HANDSHAKE = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")


def body(method: str = "tools/call", **params: Any) -> dict[str, Any]:
    return jsonrpc.request(1, method, {"_meta": META, **params})


def headers(method: str = "tools/call", name: str | None = "x") -> dict[str, str]:
    out = {"mcp-protocol-version": V, "mcp-method": method}
    if name is not None:
        out["mcp-name"] = name
    return out


def test_a_good_request_gives_its_envelope() -> None:
    meta = {**META, modern.CLIENT_INFO_META: {"name": "c"}, modern.LOG_LEVEL_META: "info"}
    got = modern.classify(jsonrpc.request(1, "tools/call", {"name": "x", "_meta": meta}), headers())
    assert got == modern.Envelope(V, {"sampling": {}}, {"name": "c"}, "info")


def test_the_checks_come_in_order() -> None:
    # A broken envelope is named before a header mismatch, a mismatch before the version.
    no_meta = modern.classify(jsonrpc.request(1, "tools/call", {"name": "x"}), {})
    assert isinstance(no_meta, modern.Rejection) and no_meta.code == jsonrpc.INVALID_PARAMS
    old = {**META, modern.PROTOCOL_META: "1999-01-01"}
    mismatch = modern.classify(jsonrpc.request(1, "tools/call", {"name": "x", "_meta": old}), headers())
    assert isinstance(mismatch, modern.Rejection) and mismatch.code == modern.HEADER_MISMATCH
    unknown = modern.classify(
        jsonrpc.request(1, "tools/call", {"name": "x", "_meta": old}),
        {**headers(), "mcp-protocol-version": "1999-01-01"},
    )
    assert isinstance(unknown, modern.Rejection) and unknown.code == jsonrpc.UNSUPPORTED_PROTOCOL_VERSION
    assert unknown.data == {"supported": [V], "requested": "1999-01-01"} and unknown.status == 400


def test_mcp_name_may_be_base64_for_non_ascii_names() -> None:
    name = "café"
    encoded = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
    assert isinstance(modern.classify(body(name=name), headers(name=encoded)), modern.Envelope)
    assert modern.decode_header_value("=?base64?not base64!?=") is None
    assert modern.decode_header_value("  plain  ") == "plain"


def test_without_headers_only_the_body_is_checked() -> None:
    assert isinstance(modern.classify(body(name="x"), None), modern.Envelope)


@pytest.mark.parametrize(
    ("method", "params", "hdrs", "expected"),
    [
        ("tools/list", {}, {}, False),  # a handshake client that forgot its session
        ("initialize", {}, {}, False),
        ("initialize", {}, {"mcp-protocol-version": V}, True),  # removed in 2026: 404 there
        ("server/discover", {}, {}, True),
        ("tools/list", {"_meta": META}, {}, True),
        ("tools/list", {}, {"mcp-protocol-version": "v999"}, True),
        ("tools/list", {}, {"mcp-protocol-version": "2025-06-18"}, False),
    ],
)
def test_which_requests_are_of_the_stateless_era(
    method: str, params: dict[str, Any], hdrs: dict[str, str], expected: bool
) -> None:
    assert modern.is_modern(method, params, hdrs, HANDSHAKE) is expected


def test_a_duplicated_routing_header_is_found() -> None:
    assert modern.duplicated_routing_header([("Mcp-Method", "a"), ("mcp-method", "a")]) == "mcp-method"
    assert modern.duplicated_routing_header([("Mcp-Method", "a"), ("X-Other", "b"), ("x-other", "c")]) is None


def test_only_the_capabilities_of_the_envelope_are_passed_on() -> None:
    params = {"name": "x", "_meta": {**META, "progressToken": 3, "traceparent": "00-ab-cd-01"}}
    kept = {modern.CAPABILITIES_META: {"sampling": {}}, "progressToken": 3, "traceparent": "00-ab-cd-01"}
    assert modern.strip_envelope(params) == {"name": "x", "_meta": kept}
    caps_only = {"name": "x", "_meta": {modern.CAPABILITIES_META: {"sampling": {}}}}
    assert modern.strip_envelope({"name": "x", "_meta": {**META, modern.CLIENT_INFO_META: {}}}) == caps_only
    assert modern.strip_envelope({"name": "x"}) == {"name": "x"}


def test_results_are_decorated_by_kind() -> None:
    info = {"name": "portero", "version": "1"}
    listed = modern.decorate("tools/list", {"tools": []}, info)
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "private" and listed["ttlMs"] == 0
    called = modern.decorate("tools/call", {"content": [], "_meta": {"k": 1}}, info)
    assert "ttlMs" not in called and called["_meta"] == {"k": 1, modern.SERVER_INFO_META: info}
    kept = modern.decorate("tools/call", {"resultType": "input_required"}, info)
    assert kept["resultType"] == "input_required"
