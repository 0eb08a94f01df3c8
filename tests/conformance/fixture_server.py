"""The stdio child for the MCP conformance suite, written with the official Python SDK (lowlevel ``Server``).

It implements exactly the tools, resources and prompts that the server scenarios of
``@modelcontextprotocol/conformance`` call (names and payloads as the scenarios describe them),
so the suite, pointed at Portero, tests the gateway's protocol handling end to end.
Handlers return plain dicts so schemas reach the wire untouched (``$schema``, ``$defs``, ``oneOf``…).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import PromptsListChanged, ToolsListChanged

warnings.simplefilter(
    "ignore"
)  # logging/sampling are deprecated as of 2026-07-28; the suite tests 2025-11-25

# A 1x1 red PNG and a tiny silent WAV, generated here rather than pasted.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
).decode()


def _wav() -> str:
    rate, samples = 8000, 8
    data = b"\x00\x00" * samples
    header = (
        b"RIFF"
        + (36 + len(data)).to_bytes(4, "little")
        + b"WAVE"
        + b"fmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + (rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + len(data).to_bytes(4, "little")
    )
    return base64.b64encode(header + data).decode()


WAV = _wav()
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


TOOLS: list[dict[str, Any]] = [
    {"name": "test_simple_text", "description": "Returns simple text", "inputSchema": NO_ARGS},
    {"name": "test_image_content", "description": "Returns an image", "inputSchema": NO_ARGS},
    {"name": "test_audio_content", "description": "Returns audio", "inputSchema": NO_ARGS},
    {"name": "test_embedded_resource", "description": "Returns an embedded resource", "inputSchema": NO_ARGS},
    {
        "name": "test_multiple_content_types",
        "description": "Returns text, image and resource",
        "inputSchema": NO_ARGS,
    },
    {
        "name": "test_tool_with_logging",
        "description": "Logs three messages while running",
        "inputSchema": NO_ARGS,
    },
    {"name": "test_error_handling", "description": "Always fails", "inputSchema": NO_ARGS},
    {"name": "test_tool_with_progress", "description": "Reports progress 0, 50, 100", "inputSchema": NO_ARGS},
    {
        "name": "test_sampling",
        "description": "Asks the client for an LLM completion",
        "inputSchema": {
            "type": "object",
            "properties": {"prompt": {"type": "string"}},
            "required": ["prompt"],
        },
    },
    {
        "name": "test_elicitation",
        "description": "Asks the user for input",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
    },
    {
        "name": "test_elicitation_sep1034_defaults",
        "description": "Elicitation with defaults",
        "inputSchema": NO_ARGS,
    },
    {
        "name": "test_elicitation_sep1330_enums",
        "description": "Elicitation with every enum form",
        "inputSchema": NO_ARGS,
    },
    {
        "name": "test_reconnection",
        "description": "Takes a moment, for the SSE polling scenario",
        "inputSchema": NO_ARGS,
    },
    # The 2026 suite's diagnostic tools (server-stateless): a server→client request mid-call
    # (which a stateless-era client cannot take), logging, and changes to the tool and prompt lists.
    {"name": "test_missing_capability", "description": "Asks the client to sample", "inputSchema": NO_ARGS},
    {"name": "test_streaming_elicitation", "description": "Asks the user mid-call", "inputSchema": NO_ARGS},
    {"name": "test_logging_tool", "description": "Logs while running", "inputSchema": NO_ARGS},
    {"name": "test_trigger_tool_change", "description": "Adds a tool", "inputSchema": NO_ARGS},
    {"name": "test_trigger_prompt_change", "description": "Adds a prompt", "inputSchema": NO_ARGS},
    {
        "name": "json_schema_2020_12_tool",
        "description": "Tool with JSON Schema 2020-12 features",
        "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
    },
]

SEP1034_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

SEP1330_SCHEMA = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}


# ---- input_required results (MRTR, 2026-07-28): what a server of that era answers instead of
# asking the client mid-call. The gateway relays them (and the client's inputResponses and the
# opaque requestState) untouched.
MRTR_TOOLS = (
    "elicitation",
    "sampling",
    "list_roots",
    "request_state",
    "multiple_inputs",
    "multi_round",
    "tampered_state",
    "capabilities",
)
TOOLS += [
    {"name": f"test_input_required_result_{t}", "description": f"input_required: {t}", "inputSchema": NO_ARGS}
    for t in MRTR_TOOLS
]
STATE_KEY = secrets.token_bytes(32)


def elicit(message: str, prop: str, kind: str = "string") -> dict[str, Any]:
    schema = {"type": "object", "properties": {prop: {"type": kind}}, "required": [prop]}
    return {"method": "elicitation/create", "params": {"message": message, "requestedSchema": schema}}


def sample(text_: str, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": {"type": "text", "text": text_}}]
    return {"method": "sampling/createMessage", "params": {"messages": messages, "maxTokens": max_tokens}}


ROOTS = {"method": "roots/list", "params": {}}


def sign(state: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(state, sort_keys=True).encode()).decode()
    mac = hmac.new(STATE_KEY, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def verify(token: str | None) -> dict[str, Any] | None:
    if not token or "." not in token:
        return None
    body, mac = token.rsplit(".", 1)
    if not hmac.compare_digest(mac, hmac.new(STATE_KEY, body.encode(), hashlib.sha256).hexdigest()):
        return None
    return json.loads(base64.urlsafe_b64decode(body))  # type: ignore[no-any-return]


def answered(params: Any) -> dict[str, Any]:
    raw = getattr(params, "input_responses", None) or {}
    return {
        k: (v.model_dump(mode="json", by_alias=True) if hasattr(v, "model_dump") else v)
        for k, v in raw.items()
    }


def need(requests: dict[str, Any], state: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"resultType": "input_required", "inputRequests": requests}
    if state is not None:
        out["requestState"] = sign(state)
    return out


def mrtr(name: str, params: Any, meta: dict[str, Any]) -> dict[str, Any]:
    got = answered(params)
    token = getattr(params, "request_state", None)
    if name == "elicitation":
        reply = got.get("user_name")
        if not isinstance(reply, dict) or not isinstance(reply.get("content"), dict):
            return need({"user_name": elicit("What is your name?", "name")})
        return {"content": [text(f"Hello, {reply['content'].get('name')}!")]}
    if name == "sampling":
        if "capital_question" not in got:
            return need({"capital_question": sample("What is the capital of France?", 100)})
        content = got["capital_question"].get("content") or {}
        return {"content": [text(f"The answer: {content.get('text', '')}")]}
    if name == "list_roots":
        if "client_roots" not in got:
            return need({"client_roots": ROOTS})
        roots = [r.get("uri") for r in got["client_roots"].get("roots") or []]
        return {"content": [text(f"Roots: {', '.join(map(str, roots))}")]}
    if name in ("request_state", "tampered_state"):
        if token is None:
            return need({"confirm": elicit("Please confirm", "ok", "boolean")}, {"tool": name})
        if verify(token) != {"tool": name}:
            raise MCPError(code=-32602, message="requestState failed its integrity check")
        return {"content": [text("state-ok: confirmed")]}
    if name == "multiple_inputs":
        keys = {"user_name", "greeting", "client_roots"}
        if token is None or not keys <= set(got) or verify(token) != {"tool": name}:
            requests = {
                "user_name": elicit("What is your name?", "name"),
                "greeting": sample("Generate a greeting", 50),
                "client_roots": ROOTS,
            }
            return need(requests, {"tool": name})
        return {"content": [text("All three inputs received")]}
    if name == "multi_round":
        state = verify(token) or {}
        step = state.get("round", 0) if state.get("tool") == name else 0
        first = {"step1": elicit("Step 1: What is your name?", "name")}
        second = {"step2": elicit("Step 2: What is your favorite color?", "color")}
        if step == 0 or (step == 1 and "step1" not in got):
            return need(first, {"tool": name, "round": 1})
        if step == 1 or "step2" not in got:
            return need(second, {"tool": name, "round": 2})
        return {"content": [text("Both steps done")]}
    if name == "capabilities":
        caps = meta.get("io.modelcontextprotocol/clientCapabilities") or {}
        requests = {}
        if "sampling" in caps:
            requests["question"] = sample("Say something", 20)
        if "elicitation" in caps:
            requests["user_name"] = elicit("What is your name?", "name")
        if "roots" in caps:
            requests["client_roots"] = ROOTS
        if requests and not set(requests) <= set(got):
            return need(requests)
        return {"content": [text(f"Capabilities honoured: {sorted(caps)}")]}
    return {"isError": True, "content": [text(f"Unknown tool: {name}")]}


async def list_tools(ctx: Any, params: Any) -> dict[str, Any]:
    return {"tools": TOOLS}


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
    name = params.name
    args = params.arguments or {}
    session = ctx.session
    meta = dict(ctx.meta or {})
    if name.startswith("test_input_required_result_"):
        return mrtr(name.removeprefix("test_input_required_result_"), params, meta)
    if name == "test_simple_text":
        return {"content": [text("This is a simple text response for testing.")]}
    if name == "test_image_content":
        return {"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}
    if name == "test_audio_content":
        return {"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}
    if name == "test_embedded_resource":
        return {
            "content": [
                {
                    "type": "resource",
                    "resource": {
                        "uri": "test://embedded-resource",
                        "mimeType": "text/plain",
                        "text": "This is an embedded resource content.",
                    },
                }
            ]
        }
    if name == "test_multiple_content_types":
        return {
            "content": [
                text("Multiple content types test:"),
                {"type": "image", "data": PNG, "mimeType": "image/png"},
                {
                    "type": "resource",
                    "resource": {
                        "uri": "test://mixed-content-resource",
                        "mimeType": "application/json",
                        "text": json.dumps({"test": "data", "value": 123}),
                    },
                },
            ]
        }
    caps = meta.get("io.modelcontextprotocol/clientCapabilities")
    if name in ("test_missing_capability", "test_streaming_elicitation") and isinstance(caps, dict):
        # Asked in the stateless era (the gateway speaks it with this server): no mid-call request.
        wanted = "sampling" if name == "test_missing_capability" else "elicitation"
        if wanted not in caps:
            raise MCPError(
                code=-32021, message=f"this tool needs {wanted}", data={"requiredCapabilities": {wanted: {}}}
            )
        if "ask" not in answered(params):
            return need({"ask": elicit("Asked during the call", "answer")})
        return {"content": [text("answered")]}
    if name == "test_missing_capability":
        name = "test_sampling"
        args = {"prompt": "a capability the client did not declare"}
    if name == "test_streaming_elicitation":
        name, args = "test_elicitation", {"message": "asked in the middle of the call"}
    if name == "test_logging_tool":
        name = "test_tool_with_logging"
    if name in ("test_trigger_tool_change", "test_trigger_prompt_change"):
        kind = "tool" if name.endswith("tool_change") else "prompt"
        added = {"name": f"test_added_{kind}_{len(TOOLS) + len(PROMPTS)}", "description": "Added at run time"}
        # A handshake-era client hears of it through a notification; a stateless-era one through
        # its subscriptions/listen stream (the bus).
        if kind == "tool":
            TOOLS.append({**added, "inputSchema": NO_ARGS})
            if "io.modelcontextprotocol/clientCapabilities" in meta:
                await BUS.publish(ToolsListChanged())
            else:
                await session.send_tool_list_changed()
        else:
            PROMPTS.append(added)
            if "io.modelcontextprotocol/clientCapabilities" in meta:
                await BUS.publish(PromptsListChanged())
            else:
                await session.send_prompt_list_changed()
        return {"content": [text(f"added {added['name']}")]}
    if name == "test_tool_with_logging":
        for i, message in enumerate(
            ("Tool execution started", "Tool processing data", "Tool execution completed")
        ):
            if i:
                await anyio.sleep(0.05)
            await session.send_log_message(
                "info", message, logger="conformance", related_request_id=ctx.request_id
            )
        return {"content": [text("Tool with logging executed successfully")]}
    if name == "test_error_handling":
        return {"isError": True, "content": [text("This tool intentionally returns an error for testing")]}
    if name == "test_tool_with_progress":
        token = (ctx.meta or {}).get("progress_token", (ctx.meta or {}).get("progressToken"))
        for i, value in enumerate((0, 50, 100)):
            if i:
                await anyio.sleep(0.05)
            if token is not None:
                await session.send_progress_notification(token, value, 100, related_request_id=ctx.request_id)
        return {"content": [text("Tool with progress executed successfully")]}
    if name == "test_sampling":
        result = await session.create_message(
            [
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=str(args.get("prompt", "")))
                )
            ],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        reply = getattr(content, "text", None) or json.dumps(result.model_dump(mode="json", by_alias=True))
        return {"content": [text(f"LLM response: {reply}")]}
    if name == "test_elicitation":
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await session.elicit_form(
            str(args.get("message", "")), schema, related_request_id=ctx.request_id
        )
        return {
            "content": [text(f"User response: action={result.action}, content={json.dumps(result.content)}")]
        }
    if name in ("test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"):
        schema = SEP1034_SCHEMA if name.endswith("defaults") else SEP1330_SCHEMA
        result = await session.elicit_form(
            "Please review and submit the form", schema, related_request_id=ctx.request_id
        )
        return {
            "content": [
                text(f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}")
            ]
        }
    if name == "test_reconnection":
        await anyio.sleep(0.1)
        return {"content": [text("Reconnection test completed successfully")]}
    return {"isError": True, "content": [text(f"Unknown tool: {name}")]}


RESOURCES = [
    {
        "uri": "test://static-text",
        "name": "static-text",
        "description": "A static text resource",
        "mimeType": "text/plain",
    },
    {
        "uri": "test://static-binary",
        "name": "static-binary",
        "description": "A static binary resource (PNG)",
        "mimeType": "image/png",
    },
    {
        "uri": "test://watched-resource",
        "name": "watched-resource",
        "description": "A resource clients can subscribe to",
        "mimeType": "text/plain",
    },
]
TEMPLATES = [
    {
        "uriTemplate": "test://template/{id}/data",
        "name": "template-data",
        "description": "Data for an id",
        "mimeType": "application/json",
    }
]


async def list_resources(ctx: Any, params: Any) -> dict[str, Any]:
    return {"resources": RESOURCES}


async def list_templates(ctx: Any, params: Any) -> dict[str, Any]:
    return {"resourceTemplates": TEMPLATES}


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> dict[str, Any]:
    uri = str(params.uri)
    if uri == "test://static-text":
        return {
            "contents": [
                {
                    "uri": uri,
                    "mimeType": "text/plain",
                    "text": "This is the content of the static text resource.",
                }
            ]
        }
    if uri == "test://static-binary":
        return {"contents": [{"uri": uri, "mimeType": "image/png", "blob": PNG}]}
    if uri == "test://watched-resource":
        return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}]}
    if uri.startswith("test://template/") and uri.endswith("/data"):
        ident = uri[len("test://template/") : -len("/data")]
        body = json.dumps({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})
        return {"contents": [{"uri": uri, "mimeType": "application/json", "text": body}]}
    raise MCPError(code=-32002, message=f"Resource not found: {uri}", data={"uri": uri})


SUBSCRIBED: set[str] = set()


async def subscribe(ctx: Any, params: Any) -> dict[str, Any]:
    SUBSCRIBED.add(str(params.uri))
    return {}


async def unsubscribe(ctx: Any, params: Any) -> dict[str, Any]:
    SUBSCRIBED.discard(str(params.uri))
    return {}


PROMPTS = [
    {"name": "test_simple_prompt", "description": "A simple prompt without arguments"},
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with two arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt embedding a resource",
        "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed", "required": True}
        ],
    },
    {"name": "test_prompt_with_image", "description": "A prompt with an image"},
    {"name": "test_input_required_result_prompt", "description": "A prompt that needs the user's context"},
]


async def list_prompts(ctx: Any, params: Any) -> dict[str, Any]:
    return {"prompts": PROMPTS}


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> dict[str, Any]:
    args = params.arguments or {}
    if params.name == "test_simple_prompt":
        return {"messages": [{"role": "user", "content": text("This is a simple prompt for testing.")}]}
    if params.name == "test_prompt_with_arguments":
        msg = f"Prompt with arguments: arg1='{args.get('arg1', '')}', arg2='{args.get('arg2', '')}'"
        return {"messages": [{"role": "user", "content": text(msg)}]}
    if params.name == "test_prompt_with_embedded_resource":
        return {
            "messages": [
                {
                    "role": "user",
                    "content": {
                        "type": "resource",
                        "resource": {
                            "uri": args.get("resourceUri", "test://example-resource"),
                            "mimeType": "text/plain",
                            "text": "Embedded resource content for testing.",
                        },
                    },
                },
                {"role": "user", "content": text("Please process the embedded resource above.")},
            ]
        }
    if params.name == "test_input_required_result_prompt":
        reply = answered(params).get("user_context")
        if not isinstance(reply, dict):
            return need({"user_context": elicit("What context should the prompt use?", "context")})
        context = (reply.get("content") or {}).get("context", "")
        return {"messages": [{"role": "user", "content": text(f"Use this context: {context}")}]}
    if params.name == "test_prompt_with_image":
        return {
            "messages": [
                {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
                {"role": "user", "content": text("Please analyze the image above.")},
            ]
        }
    raise MCPError(code=-32602, message=f"Unknown prompt: {params.name}")


async def complete(ctx: Any, params: types.CompleteRequestParams) -> dict[str, Any]:
    value = params.argument.value
    choices = [c for c in ("paris", "park", "party", "test", "testing") if c.startswith(value)]
    return {"completion": {"values": choices, "total": len(choices), "hasMore": False}}


async def set_level(ctx: Any, params: Any) -> dict[str, Any]:
    return {}


def typed(model: Any, handler: Any) -> Any:
    """``handler`` answering with ``model`` (or an InputRequiredResult): the SDK serializes typed
    results for either era (a plain dict lacks what 2026-07-28 requires: resultType, ttlMs...)."""

    async def run(ctx: Any, params: Any) -> Any:
        out = await handler(ctx, params)
        if isinstance(out, dict) and out.get("resultType") == "input_required":
            return types.InputRequiredResult.model_validate(out)
        return model.model_validate(out) if isinstance(out, dict) else out

    return run


BUS = InMemorySubscriptionBus()
server = Server(
    "portero-conformance-fixture",
    version="1.0.0",
    on_list_tools=typed(types.ListToolsResult, list_tools),
    on_call_tool=typed(types.CallToolResult, call_tool),
    on_list_resources=typed(types.ListResourcesResult, list_resources),
    on_list_resource_templates=typed(types.ListResourceTemplatesResult, list_templates),
    on_read_resource=typed(types.ReadResourceResult, read_resource),
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=unsubscribe,
    on_list_prompts=typed(types.ListPromptsResult, list_prompts),
    on_get_prompt=typed(types.GetPromptResult, get_prompt),
    on_completion=typed(types.CompleteResult, complete),
    on_set_logging_level=set_level,
    on_subscriptions_listen=ListenHandler(BUS),
)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        changes = NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
        options = server.create_initialization_options(notification_options=changes)
        await server.run(read_stream, write_stream, options)


if __name__ == "__main__":
    anyio.run(main)
