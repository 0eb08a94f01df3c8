"""A hostile stdio MCP server (stdlib only) for tests/hostile/test_fuzz_child.py.

It attacks the gateway from below. After `initialize` it behaves, until a tool asks it not to:

  garbage {lines}            print lines that are not JSON-RPC (binary, half JSON, arrays, numbers,
                             objects with wrong types), then answer
  flood {n, kind, after}     send n notifications as fast as it can (kind: message | progress |
                             list_changed | ping-requests | cancelled), then answer; with after=true
                             answer first and flood with no call in flight
  unknown_ids {}             send responses to ids the gateway never used (and of every JSON type),
                             then answer
  bad_utf8 {then_good}       answer with a line that is not UTF-8 (then, if asked, a good answer)
  surrogates {raw}           answer with lone surrogates: escaped (valid JSON) or as raw CESU-8
                             bytes (not UTF-8)
  nan {literal, then_good}   answer with NaN / Infinity / 1e999 in the result; with
      {in_notification, after}   in a log message before the answer (or after it)
  stop_reading {}            answer, then never read stdin again (the gateway keeps writing)
  close_stdout {exit}        print half a message and close stdout (and exit, if asked)
  echo {text}                behave

Flags: --name NAME; --pidfile PATH (writes its pid at start); --flood-at-start N (N log
notifications right after `notifications/initialized`); --garbage-at-start (garbage before the
`initialize` answer).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--name", default="hostile")
parser.add_argument("--pidfile", default="")
parser.add_argument("--flood-at-start", type=int, default=0)
parser.add_argument("--garbage-at-start", action="store_true")
ARGS = parser.parse_args()

_lock = threading.Lock()
_out = sys.stdout.buffer
_stop_reading = threading.Event()


def write(data: bytes) -> None:
    with _lock:
        _out.write(data)
        _out.flush()


def send(msg: dict) -> None:
    write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


def answer(rid: object, result: dict) -> None:
    send({"jsonrpc": "2.0", "id": rid, "result": result})


def text(t: str, is_error: bool = False) -> dict:
    return {"content": [{"type": "text", "text": t}], "isError": is_error}


GARBAGE = [
    b"\x00\x01\x02\xff\xfe garbage",
    b'{"jsonrpc":"2.0","id":',
    b"[1,2,3]",
    b"42",
    b'"just a string"',
    b"null",
    b"{}",
    b'{"jsonrpc":"2.0","method":42}',
    b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}',
    b'{"jsonrpc":"2.0","id":[1],"result":{}}',
    b'{"jsonrpc":"2.0","id":true,"result":{}}',
    b'{"jsonrpc":"2.0","id":null,"error":"not an object"}',
    b'{"jsonrpc":"2.0","error":{"code":"x","message":7}}',
    b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":{"x":1},"progress":"a"}}',
    b'{"jsonrpc":"2.0","method":"notifications/message","params":"not an object"}',
    b'{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":["x"]}}',
    b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":{"x":[]}}}',
    b'{"jsonrpc":"2.0","id":"srv-1","method":"sampling/createMessage","params":7}',
    b'{"jsonrpc":"2.0","id":"srv-2","method":"roots/list"}',
    b'{"jsonrpc":"2.0","id":"srv-3","method":"no/such/method","params":{}}',
    b"   ",
    b"\r",
    b"x" * 100_000,
    b"[" * 5000 + b"]" * 5000,
    b'{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":'
    + b"[" * 990
    + b"]" * 990
    + b"}}",
]

TOOLS = [
    "echo",
    "garbage",
    "flood",
    "unknown_ids",
    "bad_utf8",
    "surrogates",
    "nan",
    "stop_reading",
    "close_stdout",
    "whoami",
]


def flood(n: int, kind: str, token: object) -> None:
    for i in range(n):
        if kind == "progress":
            msg = {
                "jsonrpc": "2.0",
                "method": "notifications/progress",
                "params": {"progressToken": token, "progress": i},
            }
        elif kind == "list_changed":
            msg = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        elif kind == "ping-requests":
            msg = {"jsonrpc": "2.0", "id": f"p{i}", "method": "ping"}
        elif kind == "cancelled":
            msg = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": f"x{i}"}}
        else:
            msg = {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "logger": ARGS.name, "data": f"flood {i}"},
            }
        send(msg)


def call_tool(rid: object, name: str, args: dict, meta: dict) -> None:
    if name == "echo":
        return answer(rid, text(str(args.get("text", ""))))
    if name == "whoami":
        return answer(rid, text(json.dumps({"name": ARGS.name, "pid": os.getpid()})))
    if name == "garbage":
        for i in range(int(args.get("lines", len(GARBAGE)))):
            write(GARBAGE[i % len(GARBAGE)] + b"\n")
        return answer(rid, text("after garbage"))
    if name == "flood":
        n = int(args.get("n", 1000))
        kind = str(args.get("kind", "message"))
        token = meta.get("progressToken", "no-token")
        if args.get("after"):
            answer(rid, text("flooding now"))
            flood(n, kind, token)
            return None
        flood(n, kind, token)
        return answer(rid, text(f"flooded {n}"))
    if name == "unknown_ids":
        for bad in [999_999, -1, 0, "abc", None, {"x": 1}, [1], 1.5, True, 2**70, f"{rid}", str(rid) + "x"]:
            send({"jsonrpc": "2.0", "id": bad, "result": text("to nobody")})
            send({"jsonrpc": "2.0", "id": bad, "error": {"code": -1, "message": "to nobody"}})
        return answer(rid, text("the real answer"))
    if name == "bad_utf8":
        line = json.dumps({"jsonrpc": "2.0", "id": rid, "result": text("XX")}).encode()
        write(line.replace(b"XX", b"\xff\xfe\xc3(") + b"\n")
        if args.get("then_good"):
            answer(rid, text("good after bad"))
        return None
    if name == "surrogates":
        if args.get("raw"):
            line = json.dumps({"jsonrpc": "2.0", "id": rid, "result": text("XX")}).encode()
            write(line.replace(b"XX", b"\xed\xa0\x80 lone") + b"\n")  # CESU-8 surrogate: not UTF-8
            if args.get("then_good"):
                answer(rid, text("good after raw surrogate"))
            return None
        # Escaped lone surrogates are valid JSON: the gateway must pass them on as valid UTF-8 JSON.
        send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "data": "log \ud800 \udfff"},
            }
        )
        return answer(rid, {**text("a\ud800b\udc00c"), "structuredContent": {"k\udbff": "v\ud800"}})
    if name == "nan":
        literal = str(args.get("literal", "NaN"))
        if args.get("in_notification"):
            log = '{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":'
            if args.get("after"):
                answer(rid, text("answered first"))
                time.sleep(0.2)
                write((log + literal + "}}\n").encode())
                return None
            write((log + literal + "}}\n").encode())
            return answer(rid, text("after a log message with " + literal))
        head = json.dumps({"jsonrpc": "2.0", "id": rid, "result": text("n")})[:-2]
        write((head + ',"structuredContent":{"v":' + literal + "}}}\n").encode())
        if args.get("then_good"):
            answer(rid, text("good after " + literal))
        return None
    if name == "close_stdout":
        with _lock:
            _out.write(b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode() + b',"result":{"content":[{"ty')
            _out.flush()
            os.close(1)
        if args.get("exit"):
            os._exit(0)
        return None
    send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"unknown tool {name}"}})
    return None


def handle(msg: dict) -> None:
    method = msg.get("method")
    rid = msg.get("id")
    params = msg.get("params") or {}
    if method is None or rid is None:
        if method == "notifications/initialized" and ARGS.flood_at_start:
            threading.Thread(target=flood, args=(ARGS.flood_at_start, "message", None), daemon=True).start()
        return
    if method == "initialize":
        if ARGS.garbage_at_start:
            for g in GARBAGE:
                write(g + b"\n")
        return answer(
            rid,
            {
                "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {"listChanged": True}, "logging": {}},
                "serverInfo": {"name": ARGS.name, "version": "6.6.6"},
            },
        )
    if method == "tools/list":
        tools = [{"name": t, "description": f"hostile {t}", "inputSchema": {"type": "object"}} for t in TOOLS]
        return answer(rid, {"tools": tools})
    if method == "ping" or method == "logging/setLevel":
        return answer(rid, {})
    if method == "tools/call" and params.get("name") == "stop_reading":
        # Inline, so the main loop reads nothing after it (a thread would race its next readline).
        answer(rid, text("I stop reading now"))
        _stop_reading.set()
        return None
    if method == "tools/call":
        threading.Thread(
            target=call_tool,
            args=(rid, params.get("name"), params.get("arguments") or {}, params.get("_meta") or {}),
            daemon=True,
        ).start()
        return None
    send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"no method {method}"}})


def main() -> None:
    if ARGS.pidfile:
        with open(ARGS.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    sys.stderr.write(f"{ARGS.name}: hostile server ready\n")
    sys.stderr.flush()
    stdin = sys.stdin.buffer
    while True:
        if _stop_reading.is_set():
            sys.stderr.write(f"{ARGS.name}: not reading stdin any more\n")
            sys.stderr.flush()
            while True:
                time.sleep(3600)
        line = stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict):
            handle(msg)


if __name__ == "__main__":
    main()
