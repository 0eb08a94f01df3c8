"""A small stdio MCP server for Portero's tests — stdlib only, so it starts fast.

It speaks newline-delimited JSON-RPC on stdin/stdout and can misbehave on request,
through tools (crash mid-call, print garbage or a huge line, never answer) or
command-line flags (ignore SIGTERM, exit at start, expose very long tool names).

Flags:
  --name NAME          server name reported in serverInfo and in tool results
  --ignore-sigterm     ignore SIGTERM (the gateway must escalate to SIGKILL)
  --exit-at-start      exit with status 3 before reading anything
  --long-names         also expose a tool whose name is 80 characters long
  --extra-tool NAME    also expose an echo-like tool with this name (repeatable)
  --spawn-grandchild   start a long-lived grandchild process (`sleep`) at start-up
  --pidfile PATH       write "<pid>\\n" (and the grandchild's pid) to PATH at start-up
  --slow-start SECS    sleep SECS before serving (a server that takes its time to come up)
  --describe TEXT      append TEXT to the echo tool's description
  --record PATH        append each tools/call's name and arguments (a JSON line) to PATH, and the
                       params of resources/read, prompts/get and completion/complete
  --only NAME          list only these tools (repeatable; the others can still be called)
  --redescribe         also expose `redescribe`: it sets another tool's description (`tool`,
                       `description`) and announces tools/list_changed (a definition that changes)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

args_parser = argparse.ArgumentParser()
args_parser.add_argument("--name", default="test")
args_parser.add_argument("--ignore-sigterm", action="store_true")
args_parser.add_argument("--exit-at-start", action="store_true")
args_parser.add_argument("--long-names", action="store_true")
args_parser.add_argument("--extra-tool", action="append", default=[])
args_parser.add_argument("--spawn-grandchild", action="store_true")
args_parser.add_argument("--pidfile", default="")
args_parser.add_argument("--slow-start", type=float, default=0.0, help="sleep this long before serving")
args_parser.add_argument("--describe", default="", help="text appended to the echo tool's description")
args_parser.add_argument("--record", default="", help="append every tools/call's arguments to this file")
args_parser.add_argument("--only", action="append", default=[], help="list only these tools")
args_parser.add_argument("--redescribe", action="store_true", help="expose the redescribe tool")
ARGS = args_parser.parse_args()

if ARGS.exit_at_start:
    sys.stderr.write("exiting at start as asked\n")
    sys.exit(3)
if ARGS.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

_out_lock = threading.Lock()
_stdout = sys.stdout.buffer


def send(msg: dict) -> None:
    data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
    with _out_lock:
        _stdout.write(data)
        _stdout.flush()


def send_raw(data: bytes) -> None:
    with _out_lock:
        _stdout.write(data)
        _stdout.flush()


def text_result(text: str, is_error: bool = False) -> dict:
    return {"content": [{"type": "text", "text": text}], "isError": is_error}


_cancelled: set = set()
_next_out_id = 0
_out_waiters: dict = {}
_out_lock2 = threading.Lock()


def request_client(method: str, params: dict, timeout: float = 30.0) -> dict:
    """Send a server→client request and wait for the answer."""
    global _next_out_id
    with _out_lock2:
        _next_out_id += 1
        rid = f"srv-{_next_out_id}"
        slot = {"event": threading.Event(), "msg": None}
        _out_waiters[rid] = slot
    send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    if not slot["event"].wait(timeout):
        raise TimeoutError(method)
    return slot["msg"]


EXTRA_TOOLS: list[str] = list(ARGS.extra_tool)
LONG_NAME = "a_really_long_tool_name_" + "x" * 56  # 80 characters

TOOLS = [
    ("echo", "Echo the given text back.", {"text": {"type": "string"}}, ["text"]),
    ("add", "Add two numbers.", {"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]),
    ("sleep", "Sleep for `seconds`, then answer.", {"seconds": {"type": "number"}}, ["seconds"]),
    ("crash", "Exit the whole server process mid-call.", {}, []),
    ("garbage", "Print a line of non-JSON garbage, then answer.", {}, []),
    ("huge", "Print one line of `mb` megabytes (not valid JSON-RPC).", {"mb": {"type": "number"}}, ["mb"]),
    ("big", "Answer with a text result of `kb` kilobytes.", {"kb": {"type": "number"}}, ["kb"]),
    ("hang", "Never answer.", {}, []),
    ("whoami", "Report this server's name and pid.", {}, []),
    ("progress", "Send `steps` progress notifications, then answer.", {"steps": {"type": "integer"}}, []),
    ("sample", "Ask the client to sample an LLM message.", {"prompt": {"type": "string"}}, ["prompt"]),
    ("elicit", "Ask the client for input.", {"message": {"type": "string"}}, ["message"]),
    ("roots", "Ask the client for its roots.", {}, []),
    ("log", "Send a logging notification, then answer.", {"message": {"type": "string"}}, ["message"]),
    (
        "add_tool",
        "Add a tool named `name` and announce tools/list_changed.",
        {"name": {"type": "string"}},
        [],
    ),
    ("delete_thing", "Pretend to delete something.", {"what": {"type": "string"}}, []),
    ("sample_then_cancel", "Ask the client to sample, then withdraw the request.", {}, []),
    ("touch", "Announce notifications/resources/updated for `uri`.", {"uri": {"type": "string"}}, ["uri"]),
    (
        "leak_json",
        "Answer with JSON text (ensure_ascii escapes, once and nested twice) holding `text`.",
        {"text": {"type": "string"}},
        ["text"],
    ),
    (
        "leak_data",
        "Answer with structuredContent holding `text` under a `data` key beside a `uri` key.",
        {"text": {"type": "string"}},
        ["text"],
    ),
]

# 1x1 PNG, base64: a real binary payload beside leak_data's text.
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


REDESCRIBE = (
    "redescribe",
    "Set the description of the tool `tool` to `description`, and announce tools/list_changed.",
    {"tool": {"type": "string"}, "description": {"type": "string"}},
    ["tool", "description"],
)
DESCRIPTIONS: dict[str, str] = {}  # set by `redescribe`


def tool_list() -> list[dict]:
    tools = [
        {
            "name": name,
            "description": desc,
            "inputSchema": {"type": "object", "properties": props, "required": req},
        }
        for name, desc, props, req in (*TOOLS, *([REDESCRIBE] if ARGS.redescribe else []))
    ]
    if ARGS.describe:
        tools[0]["description"] += " " + ARGS.describe
    names = list(EXTRA_TOOLS)
    if ARGS.long_names:
        names.append(LONG_NAME)
    for name in names:
        tools.append(
            {
                "name": name,
                "description": f"Echo tool {name}.",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
            }
        )
    for tool in tools:
        if tool["name"] in DESCRIPTIONS:
            tool["description"] = DESCRIPTIONS[tool["name"]]
    if ARGS.only:
        tools = [t for t in tools if t["name"] in ARGS.only]
    return tools


def call_tool(rid, name: str, arguments: dict, meta: dict) -> dict | None:
    if ARGS.record:
        with open(ARGS.record, "a") as f:
            f.write(json.dumps({"tool": name, "arguments": arguments, "meta": meta}) + "\n")
    if name == "echo" or name in EXTRA_TOOLS or name == LONG_NAME:
        return text_result(str(arguments.get("text", "")))
    if name == "add":
        return text_result(str(arguments["a"] + arguments["b"]))
    if name == "sleep":
        deadline = time.monotonic() + float(arguments.get("seconds", 1))
        while time.monotonic() < deadline:
            if rid in _cancelled:
                sys.stderr.write(f"request {rid} cancelled\n")
                sys.stderr.flush()
                return None
            time.sleep(0.01)
        return text_result("slept")
    if name == "crash":
        sys.stderr.write("crashing as asked\n")
        sys.stderr.flush()
        os._exit(7)
    if name == "garbage":
        send_raw(b"this is not json {{{\n")
        return text_result("after garbage")
    if name == "huge":
        size = int(float(arguments.get("mb", 1)) * 1024 * 1024)
        chunk = b"z" * (1024 * 1024)
        with _out_lock:
            remaining = size
            while remaining > 0:
                _stdout.write(chunk[: min(remaining, len(chunk))])
                remaining -= len(chunk)
            _stdout.write(b"\n")
            _stdout.flush()
        return text_result("after huge")
    if name == "big":
        return text_result("b" * int(float(arguments.get("kb", 1)) * 1024))
    if name == "hang":
        return None
    if name == "whoami":
        return text_result(json.dumps({"name": ARGS.name, "pid": os.getpid()}))
    if name == "progress":
        token = meta.get("progressToken")
        steps = int(arguments.get("steps", 3))
        for i in range(steps):
            if token is not None:
                send(
                    {
                        "jsonrpc": "2.0",
                        "method": "notifications/progress",
                        "params": {"progressToken": token, "progress": i + 1, "total": steps},
                    }
                )
            time.sleep(0.01)
        return text_result(f"progress done ({steps})")
    if name == "sample":
        answer = request_client(
            "sampling/createMessage",
            {
                "messages": [{"role": "user", "content": {"type": "text", "text": arguments["prompt"]}}],
                "maxTokens": 100,
            },
        )
        if "error" in answer:
            return text_result("sampling failed: " + answer["error"].get("message", ""), True)
        return text_result("sampled: " + answer["result"]["content"]["text"])
    if name == "elicit":
        answer = request_client(
            "elicitation/create",
            {
                "message": arguments["message"],
                "requestedSchema": {"type": "object", "properties": {"answer": {"type": "string"}}},
            },
        )
        if "error" in answer:
            return text_result("elicitation failed: " + answer["error"].get("message", ""), True)
        return text_result("elicited: " + json.dumps(answer["result"], sort_keys=True))
    if name == "roots":
        answer = request_client("roots/list", {})
        if "error" in answer:
            return text_result("roots failed: " + answer["error"].get("message", ""), True)
        return text_result("roots: " + json.dumps(answer["result"].get("roots", []), sort_keys=True))
    if name == "log":
        send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/message",
                "params": {"level": "info", "logger": ARGS.name, "data": arguments["message"]},
            }
        )
        return text_result("logged")
    if name == "redescribe" and ARGS.redescribe:
        DESCRIPTIONS[str(arguments.get("tool"))] = str(arguments.get("description"))
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        return text_result("redescribed")
    if name == "add_tool":
        EXTRA_TOOLS.append(str(arguments.get("name", "dynamic_tool")))
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        return text_result("added")
    if name == "sample_then_cancel":
        global _next_out_id
        with _out_lock2:
            _next_out_id += 1
            rid = f"srv-{_next_out_id}"
        send(
            {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "sampling/createMessage",
                "params": {"messages": [], "maxTokens": 1},
            }
        )
        time.sleep(0.3)
        send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "changed my mind"},
            }
        )
        time.sleep(0.1)
        return text_result("withdrawn")
    if name == "touch":
        send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/resources/updated",
                "params": {"uri": arguments["uri"]},
            }
        )
        return text_result("touched")
    if name == "delete_thing":
        return text_result("deleted " + str(arguments.get("what", "")))
    if name == "leak_json":
        text = str(arguments.get("text", ""))
        inner = json.dumps({"name": text}, ensure_ascii=True)
        return text_result(json.dumps({"name": text, "nested": inner}, ensure_ascii=True))
    if name == "leak_data":
        text = str(arguments.get("text", ""))
        return {
            "content": [{"type": "text", "text": "see structuredContent"}],
            "structuredContent": {
                "owner": {"uri": "crm://owner/1", "data": text},
                "typed": {"mimeType": "text/plain", "data": text, "blob": text},
                "picture": {"uri": "crm://owner/1/picture", "mimeType": "image/png", "data": PIXEL_PNG},
            },
            "isError": False,
        }
    raise KeyError(name)


RESOURCES = [
    {"uri": "test://static/hello", "name": "hello", "mimeType": "text/plain"},
    {"uri": "test://static/pixel", "name": "pixel", "mimeType": "image/png"},
]
TEMPLATES = [{"uriTemplate": "test://item/{id}", "name": "item", "mimeType": "text/plain"}]
PROMPTS = [
    {
        "name": "greet",
        "description": "Greet someone.",
        "arguments": [{"name": "who", "required": True}],
    }
]


def handle(msg: dict) -> None:
    method = msg.get("method")
    rid = msg.get("id")
    params = msg.get("params") or {}
    if ARGS.record and method in ("resources/read", "prompts/get", "completion/complete"):
        with open(ARGS.record, "a") as f:
            f.write(json.dumps({"method": method, "params": params}) + "\n")
    if method is None:
        # A response to one of our server→client requests.
        slot = _out_waiters.pop(rid, None)
        if slot is not None:
            slot["msg"] = msg
            slot["event"].set()
        return
    if rid is None:
        if method == "notifications/cancelled":
            _cancelled.add(params.get("requestId"))
        return
    try:
        result = dispatch(rid, method, params)
    except KeyError as exc:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"unknown: {exc}"}})
        return
    except NotImplementedError:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"no method {method}"}})
        return
    if result is not None:
        send({"jsonrpc": "2.0", "id": rid, "result": result})


def dispatch(rid, method: str, params: dict) -> dict | None:
    if method == "initialize":
        return {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {
                "tools": {"listChanged": True},
                "prompts": {},
                "resources": {"subscribe": True},
                "logging": {},
                "completions": {},
            },
            "serverInfo": {"name": ARGS.name, "version": "1.0.0"},
        }
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": tool_list()}
    if method == "tools/call":
        return call_tool(rid, params["name"], params.get("arguments") or {}, params.get("_meta") or {})
    if method == "prompts/list":
        return {"prompts": PROMPTS}
    if method == "prompts/get":
        if params.get("name") != "greet":
            raise KeyError(params.get("name"))
        who = (params.get("arguments") or {}).get("who", "nobody")
        return {
            "messages": [
                {"role": "user", "content": {"type": "text", "text": f"Hello, {who}! ({ARGS.name})"}}
            ]
        }
    if method == "resources/list":
        return {"resources": RESOURCES}
    if method == "resources/templates/list":
        return {"resourceTemplates": TEMPLATES}
    if method == "resources/read":
        uri = params["uri"]
        if uri == "test://static/hello":
            return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"hello from {ARGS.name}"}]}
        if uri == "test://static/pixel":
            return {"contents": [{"uri": uri, "mimeType": "image/png", "blob": "iVBORw0KGgo="}]}
        if uri.startswith("test://item/"):
            return {"contents": [{"uri": uri, "mimeType": "text/plain", "text": f"item {uri[12:]}"}]}
        raise KeyError(uri)
    if method == "completion/complete":
        value = params.get("argument", {}).get("value", "")
        return {"completion": {"values": [value + "-one", value + "-two"], "hasMore": False}}
    if method in ("resources/subscribe", "resources/unsubscribe", "logging/setLevel"):
        return {}
    raise NotImplementedError(method)


def main() -> None:
    if ARGS.pidfile:
        pids = [os.getpid()]
        if ARGS.spawn_grandchild:
            grandchild = subprocess.Popen(["sleep", "300"])
            pids.append(grandchild.pid)
        with open(ARGS.pidfile, "w") as f:
            f.write("\n".join(str(p) for p in pids) + "\n")
    if ARGS.slow_start:
        time.sleep(ARGS.slow_start)
    sys.stderr.write(f"{ARGS.name} test server ready\n")
    sys.stderr.flush()
    for line in sys.stdin.buffer:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
            continue
        method = msg.get("method")
        if method in ("tools/call",):
            threading.Thread(target=handle, args=(msg,), daemon=True).start()
        else:
            handle(msg)
    sys.stderr.write(f"{ARGS.name}: stdin closed, exiting\n")


if __name__ == "__main__":
    main()
