"""A minimal stdio MCP server for bench/bench_gateway.py — stdlib only, no threads.

Newline-delimited JSON-RPC on stdin/stdout. Tools: ``echo`` (text back), ``big`` (a text
result of ``kb`` kilobytes) and ``doc`` (prose-like text of about ``kb`` kilobytes from a fixed word
list, with the given ``names`` sprinkled in ``count`` times, evenly spaced, cycling through the list;
used by bench/bench_anonymize_gateway.py; the last few documents built are cached so the child's own
cost stays small). Requests are answered inline, in order, so the direct-stdio floor
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
    {
        "name": "doc",
        "description": "About `kb` kilobytes of prose-like text with `names` sprinkled in `count` times.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "kb": {"type": "number"},
                "names": {"type": "array", "items": {"type": "string"}},
                "count": {"type": "number"},
            },
            "required": ["kb"],
        },
    },
]

# Prose-like filler, about one word in five capitalized; some are common first names and surnames, so a
# scanner looking for "Firstname Surname" values meets many near misses as well as the real matches.
WORDS = (
    "the report of the Monday meeting with Anna about quarterly Revenue and the new Rome office was sent "
    "to Peter on Friday after a review by the legal team who asked Maria for changes in section three of "
    "the contract while Berg and Novak checked the Invoices from Marco and the audit by Laura found that "
    "Keller had signed for David in March so Sofia wrote to Rossi and Elena before the Board met in Paris"
).split()
_doc_cache: dict[tuple, str] = {}


def make_doc(kb: float, names: list[str], count: int) -> str:
    key = (kb, tuple(names), count)
    if key in _doc_cache:
        return _doc_cache[key]
    size = int(kb * 1024)
    every = size // count if names and count > 0 else size + 1  # characters between two names
    parts: list[str] = []
    length = 0
    placed = 0
    next_at = every // 2
    i = 0
    while length < size:
        if placed < count and length >= next_at:
            word = names[placed % len(names)]
            placed += 1
            next_at += every
        else:
            word = WORDS[(i * 7 + i // 13) % len(WORDS)]
            i += 1
        parts.append(word)
        length += len(word) + 1
    text = " ".join(parts)
    if len(_doc_cache) >= 4:
        _doc_cache.clear()
    _doc_cache[key] = text
    return text


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
        elif name == "doc":
            names = [str(n) for n in args.get("names") or []]
            text = make_doc(float(args.get("kb", 1)), names, int(args.get("count", len(names))))
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
