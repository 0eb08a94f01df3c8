"""A minimal stdio MCP server for bench/bench_gateway.py — stdlib only, no threads.

Newline-delimited JSON-RPC on stdin/stdout. Tools: ``echo`` (text back) and ``big`` (a text
result of ``kb`` kilobytes). Requests are answered inline, in order, so the direct-stdio floor
measures the pipe and JSON, not thread start-up (tests/servers/stdio_server.py starts a thread
per tools/call). Exits when stdin closes.
"""

from __future__ import annotations

import json
import sys

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the given text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "big",
        "description": "Answer with a text result of `kb` kilobytes.",
        "inputSchema": {"type": "object", "properties": {"kb": {"type": "number"}}, "required": ["kb"]},
    },
]


def answer(msg: dict) -> dict | None:
    rid = msg.get("id")
    method = msg.get("method")
    if rid is None or method is None:
        return None  # notifications and stray responses
    params = msg.get("params") or {}
    if method == "initialize":
        result: dict = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-echo", "version": "1.0.0"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        name = params.get("name")
        args = params.get("arguments") or {}
        if name == "echo":
            text = str(args.get("text", ""))
        elif name == "big":
            text = "b" * int(float(args.get("kb", 1)) * 1024)
        else:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"unknown tool {name}"}}
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"no method {method}"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


def main() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            resp: dict | None = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "parse error"},
            }
        else:
            resp = answer(msg) if isinstance(msg, dict) else None
        if resp is not None:
            out.write(json.dumps(resp, separators=(",", ":")).encode() + b"\n")
            out.flush()


if __name__ == "__main__":
    main()
