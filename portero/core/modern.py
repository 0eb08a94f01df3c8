"""The stateless era of MCP (2026-07-28): how a request without a session is told apart, checked
and answered. Pure: no I/O.

In this era there is no ``initialize`` and no ``Mcp-Session-Id``. Every request carries its
protocol version and the client's capabilities (and, optionally, its info and log level) in
``params._meta``, and over HTTP the ``MCP-Protocol-Version``, ``Mcp-Method`` and (for a tool, prompt
or resource) ``Mcp-Name`` headers repeat what the body says. :func:`classify` runs the checks in
the order the specification's SDKs do — the envelope, then the headers against the body, then the
version — and names the first failure as a JSON-RPC error; :data:`HTTP_STATUS` gives its status.

Every result carries ``resultType``; list results, ``resources/read`` and ``server/discover`` carry
the caching hints ``ttlMs`` and ``cacheScope`` (always ``private`` here: what a gateway lists
depends on who asks). :func:`decorate` adds them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from . import jsonrpc

MODERN_PROTOCOLS = ("2026-07-28",)
PROTOCOL_META = "io.modelcontextprotocol/protocolVersion"
CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_META = "io.modelcontextprotocol/subscriptionId"
ENVELOPE_PREFIX = "io.modelcontextprotocol/"

HEADER_MISMATCH = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY = -32021

# Methods of the handshake era that the stateless era removed: asked for, they do not exist.
REMOVED_METHODS = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
# Which body field the `Mcp-Name` header repeats, per method.
NAME_FIELDS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
ROUTING_HEADERS = ("mcp-protocol-version", "mcp-method", "mcp-name")
CACHEABLE = frozenset(
    {
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "server/discover",
    }
)
LIST_TTL_MS = 0  # what the gateway lists changes whenever a child's list does: never fresh for long

HTTP_STATUS = {
    jsonrpc.PARSE_ERROR: 400,
    jsonrpc.INVALID_REQUEST: 400,
    jsonrpc.INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    jsonrpc.UNSUPPORTED_PROTOCOL_VERSION: 400,
    jsonrpc.METHOD_NOT_FOUND: 404,
}

_BASE64_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")


@attrs.frozen
class Envelope:
    """What a request that passed :func:`classify` says about its client."""

    protocol_version: str
    capabilities: dict[str, Any]
    client_info: dict[str, Any]
    log_level: str | None


@attrs.frozen
class Rejection:
    """The first check a request failed, as a JSON-RPC error."""

    code: int
    message: str
    data: Any = None

    def response(self, rid: Any) -> dict[str, Any]:
        return jsonrpc.error_response(
            rid if jsonrpc.valid_id(rid) else None, self.code, self.message, self.data
        )

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 200)


def is_modern(
    method: Any, params: Any, headers: Mapping[str, str], handshake_versions: Iterable[str]
) -> bool:
    """Whether a POST without a session belongs to the stateless era (else it is a handshake-era
    request that forgot its session, or an ``initialize``)."""
    version = headers.get("mcp-protocol-version")
    if version in MODERN_PROTOCOLS:
        return True  # initialize included: the stateless era has none, so it does not exist there
    if method == "initialize":
        return False
    if version is not None and version not in set(handshake_versions):
        return True  # a version nobody speaks: the stateless era answers that
    meta = params.get("_meta") if isinstance(params, dict) else None
    return method == "server/discover" or (isinstance(meta, dict) and PROTOCOL_META in meta)


def decode_header_value(raw: str | None) -> str | None:
    """A header value as the client meant it: ``=?base64?…?=`` (non-ASCII names) decoded, else trimmed."""
    if raw is None:
        return None
    raw = raw.strip()
    found = _BASE64_SENTINEL.match(raw)
    if found is None:
        return raw
    try:
        return base64.b64decode(found["payload"], validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def duplicated_routing_header(raw_headers: Iterable[tuple[str, str]]) -> str | None:
    """A routing header sent twice (first-copy and last-copy readers would disagree), or None."""
    seen: set[str] = set()
    for name, _ in raw_headers:
        key = name.lower()
        if key in ROUTING_HEADERS:
            if key in seen:
                return key
            seen.add(key)
    return None


def classify(body: Mapping[str, Any], headers: Mapping[str, str] | None) -> Envelope | Rejection:
    """Check a stateless-era request: its envelope, then (over HTTP) its headers, then its version."""
    params = body.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if not isinstance(meta, dict):
        return Rejection(
            jsonrpc.INVALID_PARAMS,
            f"params._meta must be an object carrying {PROTOCOL_META!r} and {CAPABILITIES_META!r}",
        )
    missing = [key for key in (PROTOCOL_META, CAPABILITIES_META) if key not in meta]
    if missing:
        return Rejection(jsonrpc.INVALID_PARAMS, f"params._meta is missing {', '.join(missing)}")
    version = meta[PROTOCOL_META]
    if headers is not None:
        header_version = headers.get("mcp-protocol-version")
        if header_version is None or header_version != version:
            return Rejection(
                HEADER_MISMATCH,
                "the MCP-Protocol-Version header does not match params._meta's protocol version",
            )
        method = body.get("method")
        if headers.get("mcp-method") != method:
            return Rejection(HEADER_MISMATCH, "the Mcp-Method header does not match the request's method")
        field = NAME_FIELDS.get(method) if isinstance(method, str) else None
        if field is not None:
            value = params.get(field) if isinstance(params, dict) else None
            if value is not None and decode_header_value(headers.get("mcp-name")) != value:
                return Rejection(
                    HEADER_MISMATCH, f"the Mcp-Name header does not match the request's {field!r}"
                )
    if not isinstance(version, str):
        return Rejection(jsonrpc.INVALID_PARAMS, f"{PROTOCOL_META} must be a string")
    if version not in MODERN_PROTOCOLS:
        return unsupported(version)
    caps = meta[CAPABILITIES_META]
    if not isinstance(caps, dict):
        return Rejection(jsonrpc.INVALID_PARAMS, f"{CAPABILITIES_META} must be an object")
    info = meta.get(CLIENT_INFO_META)
    level = meta.get(LOG_LEVEL_META)
    return Envelope(
        protocol_version=version,
        capabilities=caps,
        client_info=info if isinstance(info, dict) else {},
        log_level=level if isinstance(level, str) else None,
    )


def unsupported(requested: Any) -> Rejection:
    return Rejection(
        jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        {"supported": list(MODERN_PROTOCOLS), "requested": requested},
    )


def strip_envelope(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a child gets them: of the envelope in ``_meta`` only the client's capabilities
    (a child that answers with ``input_required`` asks only for what the client can give); not its
    identity, version or log level (the child speaks the handshake era with the gateway).
    ``progressToken``, ``traceparent`` and the rest stay."""
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return params
    kept = {k: v for k, v in meta.items() if not k.startswith(ENVELOPE_PREFIX) or k == CAPABILITIES_META}
    out = {k: v for k, v in params.items() if k != "_meta"}
    if kept:
        out["_meta"] = kept
    return out


def decorate(method: str, result: dict[str, Any], server_info: dict[str, Any]) -> dict[str, Any]:
    """A result as the stateless era sends it: ``resultType``, the caching hints where they belong,
    and who answered in ``_meta``."""
    out = dict(result)
    out.setdefault("resultType", "complete")
    if method in CACHEABLE:
        out.setdefault("ttlMs", LIST_TTL_MS)
        out.setdefault("cacheScope", "private")
    meta = out.get("_meta")
    out["_meta"] = {**(meta if isinstance(meta, dict) else {}), SERVER_INFO_META: server_info}
    return out
