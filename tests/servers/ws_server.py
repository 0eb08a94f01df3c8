"""A small MCP server over WebSocket for Portero's tests (MCP 2025-06-18, one message per text frame).

Run it as ``python tests/servers/ws_server.py --port N`` (``--port 0``: the bound port is printed on
stdout as the first line), or in-process with :func:`serve` (``await nursery.start(serve, ...)``
returns the port).

It requires the ``mcp`` subprotocol (400 otherwise) and, with ``--require-token T``, the header
``Authorization: Bearer T`` (401 with ``WWW-Authenticate: Bearer`` otherwise). With ``--record PATH``
it appends each tools/call's name and arguments to PATH as a JSON line (what really reached it).

Tools:
  echo {text}       answer the text
  whoami            the handshake headers this connection came with (Authorization and X-*),
                    as a JSON object with lower-case names, plus the server's name
  progress {steps}  send notifications/progress (when the call has a progressToken), then answer
  ask {prompt}      send sampling/createMessage to the client; answer "sampled: <its text>"
  junk              send a binary frame and a text frame that is not JSON, then answer
  close {code}      answer, then close the connection with `code` (default 4000)
  delete_thing      pretend to delete something (for deny rules)
"""

from __future__ import annotations

import argparse
import functools
import json
import ssl
import sys
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

PROTOCOL_VERSION = "2025-06-18"
REPORTED_HEADERS = ("authorization",)  # and every X-* header

TOOLS: list[dict[str, Any]] = [
    {"name": "echo", "description": "Echo the given text back.", "properties": {"text": {"type": "string"}}},
    {"name": "whoami", "description": "The handshake headers this connection came with.", "properties": {}},
    {
        "name": "progress",
        "description": "Send `steps` progress notifications, then answer.",
        "properties": {"steps": {"type": "integer"}},
    },
    {
        "name": "ask",
        "description": "Ask the client to sample an LLM message.",
        "properties": {"prompt": {"type": "string"}},
    },
    {"name": "junk", "description": "Send frames that are not JSON-RPC, then answer.", "properties": {}},
    {"name": "close", "description": "Answer, then close the connection.", "properties": {"code": {}}},
    {
        "name": "delete_thing",
        "description": "Pretend to delete something.",
        "properties": {"what": {"type": "string"}},
    },
]


def text_result(text: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


class Session:
    """One client connection: a reader loop, each request handled in its own task."""

    def __init__(self, ws: WebSocketConnection, headers: dict[str, str], name: str, record: str = "") -> None:
        self.ws = ws
        self.record = record
        self.headers = headers
        self.name = name
        self.waiting: dict[str, tuple[trio.Event, list[dict[str, Any]]]] = {}
        self.next_id = 0
        self.close_code: int | None = None

    async def send(self, msg: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(msg))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    frame = await self.ws.get_message()
                except ConnectionClosed:
                    break
                try:
                    msg = json.loads(frame)
                except ValueError:
                    await self.send(
                        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse"}}
                    )
                    continue
                if "method" not in msg:  # an answer to one of our requests
                    slot = self.waiting.pop(str(msg.get("id")), None)
                    if slot is not None:
                        slot[1].append(msg)
                        slot[0].set()
                elif "id" in msg:
                    nursery.start_soon(self.answer, msg)
            nursery.cancel_scope.cancel()

    async def request_client(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        rid = f"srv-{self.next_id}"
        event, box = trio.Event(), []
        self.waiting[rid] = (event, box)
        await self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        with trio.fail_after(30):
            await event.wait()
        return box[0]

    async def answer(self, msg: dict[str, Any]) -> None:
        rid, method, params = msg["id"], msg["method"], msg.get("params") or {}
        try:
            result = await self.dispatch(method, params)
        except LookupError as exc:
            reply: dict[str, Any] = {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {"code": -32601, "message": str(exc)},
            }
        else:
            reply = {"jsonrpc": "2.0", "id": rid, "result": result}
        try:
            await self.send(reply)
            if self.close_code is not None:
                await self.ws.aclose(self.close_code, "asked to close")
        except ConnectionClosed:
            pass

    async def dispatch(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "initialize":
            return {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": self.name, "version": "1.0.0"},
            }
        if method == "ping":
            return {}
        if method == "tools/list":
            return {
                "tools": [
                    {
                        "name": t["name"],
                        "description": t["description"],
                        "inputSchema": {"type": "object", "properties": t["properties"]},
                    }
                    for t in TOOLS
                ]
            }
        if method == "tools/call":
            args = params.get("arguments") or {}
            meta = params.get("_meta") or {}
            if self.record:
                with open(self.record, "a") as f:  # noqa: ASYNC230 - a test server, one short line
                    f.write(json.dumps({"tool": params.get("name"), "arguments": args}) + "\n")
            return await self.call(str(params.get("name")), args, meta)
        raise LookupError(f"no method {method}")

    async def call(self, name: str, args: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
        if name == "echo":
            return text_result(str(args.get("text", "")))
        if name == "whoami":
            return text_result(json.dumps({"name": self.name, "headers": self.headers}, sort_keys=True))
        if name == "progress":
            steps = int(args.get("steps", 3))
            token = meta.get("progressToken")
            for i in range(steps):
                if token is not None:
                    await self.send(
                        {
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {"progressToken": token, "progress": i + 1, "total": steps},
                        }
                    )
                await trio.sleep(0.01)
            return text_result(f"progress done ({steps})")
        if name == "ask":
            answer = await self.request_client(
                "sampling/createMessage",
                {
                    "messages": [
                        {"role": "user", "content": {"type": "text", "text": str(args.get("prompt"))}}
                    ],
                    "maxTokens": 100,
                },
            )
            if "error" in answer:
                return text_result("sampling failed: " + str(answer["error"].get("message")), True)
            return text_result("sampled: " + answer["result"]["content"]["text"])
        if name == "junk":
            await self.ws.send_message(b"\x00binary\xff")
            await self.ws.send_message("this is not json {{{")
            return text_result("after junk")
        if name == "close":
            self.close_code = int(args.get("code", 4000))
            return text_result("closing")
        if name == "delete_thing":
            return text_result("deleted " + str(args.get("what", "")))
        return text_result(f"unknown tool {name}", True)


async def serve(
    port: int = 0,
    *,
    require_token: str = "",
    name: str = "ws",
    record: str = "",
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on 127.0.0.1:``port`` (over TLS with ``ssl_context``) until cancelled;
    ``task_status.started`` gets the bound port."""

    async def handler(request: WebSocketRequest) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if "mcp" not in request.proposed_subprotocols:
            await request.reject(400, body=b"the mcp subprotocol is required")
            return
        if require_token and headers.get("authorization") != f"Bearer {require_token}":
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Bearer realm="ws"')])
            return
        ws = await request.accept(subprotocol="mcp")
        seen = {k: v for k, v in headers.items() if k in REPORTED_HEADERS or k.startswith("x-")}
        await Session(ws, seen, name, record).run()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", port, ssl_context)
        task_status.started(server.port)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--require-token", default="")
    parser.add_argument("--name", default="ws")
    parser.add_argument("--record", default="")
    args = parser.parse_args()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                functools.partial(
                    serve, args.port, require_token=args.require_token, name=args.name, record=args.record
                )
            )
            sys.stdout.write(f"{port}\n")
            sys.stdout.flush()

    trio.run(run)


if __name__ == "__main__":
    main()
