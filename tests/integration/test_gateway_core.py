"""The gateway core end to end: a real `portero serve` with real stdio children."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .harness import (
    TOKEN,
    GatewayProcess,
    McpHttpClient,
    child_toml,
    pids_alive,
    server_toml,
    text_of,
)


@pytest.fixture
def gw(tmp_path: Path):
    cfg = server_toml(tmp_path) + child_toml("one") + child_toml("two", call_timeout="2s")
    g = GatewayProcess(tmp_path, cfg)
    g.wait_ready()
    yield g
    g.stop()


def test_health_lists_children(gw: GatewayProcess) -> None:
    r = gw.health()
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert {c["name"]: c["state"] for c in body["children"]} == {"one": "ready", "two": "ready"}
    assert all(c["tools"] >= 10 and c["restarts"] == 0 for c in body["children"])
    assert body["version"] and body["uptime_s"] >= 0


def test_initialize_returns_gateway_identity(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    assert c.init_result["serverInfo"]["name"] == "portero"
    assert c.init_result["protocolVersion"] == "2025-06-18"
    assert "tools" in c.init_result["capabilities"]


def test_merged_tools_and_routing(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
    assert {"one__echo", "two__echo", "one__whoami", "two__add"} <= names
    assert json.loads(text_of(c.call("one__whoami")))["name"] == "one"
    assert json.loads(text_of(c.call("two__whoami")))["name"] == "two"
    assert text_of(c.call("two__add", {"a": 2, "b": 40})) == "42"


def test_prompts_resources_completion_ping(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    prompts = {p["name"] for p in c.request("prompts/list")["result"]["prompts"]}
    assert prompts == {"one__greet", "two__greet"}
    msg = c.request("prompts/get", {"name": "two__greet", "arguments": {"who": "Ada"}})["result"]
    assert msg["messages"][0]["content"]["text"] == "Hello, Ada! (two)"
    uris = [r["uri"] for r in c.request("resources/list")["result"]["resources"]]
    assert "test://static/hello" in uris
    read = c.request("resources/read", {"uri": "test://static/hello"})["result"]
    assert read["contents"][0]["text"] == "hello from one"  # first in config wins
    templ = c.request("resources/templates/list")["result"]["resourceTemplates"]
    assert templ[0]["uriTemplate"] == "test://item/{id}"
    item = c.request("resources/read", {"uri": "test://item/42"})["result"]
    assert item["contents"][0]["text"] == "item 42"
    missing = c.request("resources/read", {"uri": "nope://x"})
    assert missing["error"]["code"] == -32002
    comp = c.request(
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "two__greet"}, "argument": {"name": "who", "value": "Ad"}},
    )["result"]
    assert comp["completion"]["values"] == ["Ad-one", "Ad-two"]
    assert c.request("ping") == {"jsonrpc": "2.0", "id": c._id, "result": {}}


def test_protocol_errors(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    r = c.post(b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    assert c.request("no/such/method")["error"]["code"] == -32601
    assert c.request("tools/call", {"name": "nope__x"})["error"]["code"] == -32602
    r = c.post({"jsonrpc": "2.0", "id": 5})
    assert r.json()["error"]["code"] == -32600
    r = c.post(b"[]")
    assert r.status_code == 400
    r = c.post(b"[" * 100_000 + b"]" * 100_000)  # nesting deeper than any parser allows
    assert r.status_code == 400 and r.json()["error"]["code"] == -32700
    deep = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "one__echo", "arguments": {"text": "x"}},
    }
    r = c.post(json.dumps(deep).replace('"x"', "[" * 900 + "]" * 900).encode())
    assert r.status_code == 200 and ("error" in r.json() or "result" in r.json())
    # The gateway is still fine after all of that.
    assert text_of(c.call("one__echo", {"text": "still here"})) == "still here"


def test_auth_origin_body_limit_sessions(gw: GatewayProcess) -> None:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"},
        },
    }
    url = gw.url + "/mcp"
    hdr = {"Accept": "application/json, text/event-stream"}
    r = httpx.post(url, json=init, headers=hdr)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = httpx.post(url, json=init, headers={**hdr, "Authorization": "Bearer wrong"})
    assert r.status_code == 401
    auth = {**hdr, "Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(url, json=init, headers={**auth, "Origin": "https://evil.example"})
    assert r.status_code == 403
    r = httpx.post(url, json=init, headers={**auth, "Origin": "http://localhost:3000"})
    assert r.status_code == 200
    r = httpx.post(url, json=init, headers={**auth, "Host": "evil.example"})
    assert r.status_code == 403
    r = httpx.post(
        url, content=b"x" * (5 * 1024 * 1024), headers={**auth, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    # No session → 400, unknown session → 404, deleted session → 404.
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert httpx.post(url, json=ping, headers=auth).status_code == 400
    assert httpx.post(url, json=ping, headers={**auth, "Mcp-Session-Id": "nope"}).status_code == 404
    c = McpHttpClient(gw.url)
    assert c.request("ping")["result"] == {}
    r = httpx.delete(url, headers={**auth, "Mcp-Session-Id": c.session_id})
    assert r.status_code == 204
    assert c.post(ping).status_code == 404
    # The legacy alias works too.
    c2 = McpHttpClient(gw.url)
    c2.url = gw.url + "/mcp/message"
    assert c2.request("ping")["result"] == {}


def test_concurrent_clients_with_the_same_ids(gw: GatewayProcess) -> None:
    def worker(i: int) -> list[str]:
        c = McpHttpClient(gw.url)
        out = []
        for j in range(10):
            c._id = 0  # every client uses id 1 for every call
            out.append(text_of(c.call("one__echo", {"text": f"{i}-{j}"})))
        return out

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    for i, res in enumerate(results):
        assert res == [f"{i}-{j}" for j in range(10)]


def test_call_timeout_cancels_the_child_call(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    t0 = time.monotonic()
    res = c.call("two__sleep", {"seconds": 10})
    assert time.monotonic() - t0 < 8
    assert res["isError"] is True and "timed out" in text_of(res)
    gw.wait_log("[two] request")  # the child logged the cancellation it received
    assert text_of(c.call("two__echo", {"text": "after"})) == "after"


def test_child_killed_mid_call_then_restarted(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    before = json.loads(text_of(c.call("one__whoami")))["pid"]
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(c.call, "one__sleep", {"seconds": 30})
        time.sleep(0.3)
        c2 = McpHttpClient(gw.url)
        t0 = time.monotonic()
        crash = c2.call("one__crash")
        res = slow.result(timeout=5)
        elapsed = time.monotonic() - t0
    assert crash["isError"] is True
    assert res["isError"] is True and "one" in text_of(res)
    assert elapsed < 1.5
    body = gw.wait_ready(timeout=40)
    one = next(ch for ch in body["children"] if ch["name"] == "one")
    assert one["restarts"] == 1
    after = json.loads(text_of(c.call("one__whoami")))["pid"]
    assert after != before
    # The other child never noticed.
    assert text_of(c.call("two__echo", {"text": "fine"})) == "fine"


def test_garbage_and_oversized_lines(tmp_path: Path) -> None:
    cfg = server_toml(tmp_path, extra="max_message_bytes = 1048576") + child_toml("one") + child_toml("two")
    g = GatewayProcess(tmp_path, cfg)
    try:
        g.wait_ready()
        c = McpHttpClient(g.url)
        assert text_of(c.call("one__garbage")) == "after garbage"
        g.wait_log("not JSON-RPC")
        res = c.call("one__huge", {"mb": 3})
        assert res["isError"] is True
        g.wait_log("restarting it")
        g.wait_ready(timeout=40)
        assert text_of(c.call("one__echo", {"text": "back"})) == "back"
        assert text_of(c.call("two__echo", {"text": "unharmed"})) == "unharmed"
    finally:
        g.stop()


def test_failing_child_does_not_take_the_gateway_down(tmp_path: Path) -> None:
    # A program that exists (so serve's preflight lets it through) but cannot be executed: its
    # interpreter is missing, so spawning it fails the way a vanished binary does.
    unstartable = tmp_path / "unstartable"
    unstartable.write_text("#!/nonexistent/interpreter\n")
    unstartable.chmod(0o755)
    cfg = (
        server_toml(tmp_path)
        + child_toml("good")
        + child_toml("bad", "--exit-at-start")
        + f'[[mcp]]\nname = "missing"\ncommand = "{unstartable}"\n'
    )
    g = GatewayProcess(tmp_path, cfg)
    try:
        body = g.wait_ready(expect=1)
        r = g.health()
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        states = {ch["name"]: ch["state"] for ch in body["children"]}
        assert states["good"] == "ready" and states["bad"] != "ready" and states["missing"] != "ready"
        c = McpHttpClient(g.url)
        names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
        assert "good__echo" in names and not any(n.startswith("bad__") for n in names)
        assert text_of(c.call("good__echo", {"text": "ok"})) == "ok"
        g.wait_log("[bad] exiting at start as asked")
    finally:
        g.stop()


def test_prefix_false_long_names_and_clashes(tmp_path: Path) -> None:
    cfg = (
        server_toml(tmp_path, extra='tool_separator = "."')
        + child_toml("one", "--long-names", "--extra-tool", "shared", prefix=False)
        + child_toml("two", "--extra-tool", "shared", prefix=False)
    )
    g = GatewayProcess(tmp_path, cfg)
    try:
        g.wait_ready()
        c = McpHttpClient(g.url)
        tools = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
        assert "echo" in tools and "shared" in tools
        assert all(len(n) <= 64 for n in tools)
        long = [n for n in tools if n.startswith("a_really_long_tool_name_")]
        assert len(long) == 1 and len(long[0]) == 64
        assert text_of(c.call(long[0], {"text": "long ok"})) == "long ok"
        assert json.loads(text_of(c.call("whoami")))["name"] == "one"  # first in config wins
        g.wait_log("name clash")
    finally:
        g.stop()


def test_list_changed_refreshes_catalog(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    assert c.call("two__add_tool", {"name": "fresh"})["isError"] is False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
        if "two__fresh" in names:
            break
        time.sleep(0.05)
    assert "two__fresh" in names
    assert text_of(c.call("two__fresh", {"text": "new"})) == "new"


def test_sigterm_leaves_no_process_behind(tmp_path: Path) -> None:
    pidfiles = [tmp_path / "a.pid", tmp_path / "b.pid"]
    cfg = (
        server_toml(tmp_path)
        + child_toml("a", "--pidfile", str(pidfiles[0]), "--spawn-grandchild")
        + child_toml("b", "--pidfile", str(pidfiles[1]), "--ignore-sigterm")
    )
    g = GatewayProcess(tmp_path, cfg)
    g.wait_ready()
    pids = [int(x) for p in pidfiles for x in p.read_text().split()]
    assert len(pids) == 3 and len(pids_alive(pids)) == 3
    c = McpHttpClient(g.url)
    assert text_of(c.call("b__echo", {"text": "x"})) == "x"
    assert g.stop(signal.SIGTERM) == 0
    deadline = time.monotonic() + 5
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_alive(pids) == []


def test_first_requests_wait_for_children_still_starting(tmp_path: Path) -> None:
    cfg = server_toml(tmp_path) + child_toml("quick") + child_toml("slow", "--slow-start", "1.5")
    g = GatewayProcess(tmp_path, cfg)  # returns as soon as the gateway listens
    try:
        c = McpHttpClient(g.url)
        # No waiting for /health here: the call and the list wait for the slow child instead.
        assert text_of(c.call("slow__echo", {"text": "worth the wait"})) == "worth the wait"
        names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
        assert "slow__echo" in names and "quick__echo" in names
    finally:
        g.stop()


def test_per_session_children(tmp_path: Path) -> None:
    cfg = server_toml(tmp_path) + child_toml("shared") + child_toml("own", per_session=True)
    g = GatewayProcess(tmp_path, cfg)
    try:
        g.wait_ready()
        a, b = McpHttpClient(g.url), McpHttpClient(g.url)
        # The listing comes from the shared instance; calls go to the session's own process.
        assert "own__whoami" in {t["name"] for t in a.request("tools/list")["result"]["tools"]}
        pid_a = json.loads(text_of(a.call("own__whoami")))["pid"]
        pid_b = json.loads(text_of(b.call("own__whoami")))["pid"]
        assert pid_a != pid_b
        assert json.loads(text_of(a.call("own__whoami")))["pid"] == pid_a
        # Servers without the option are still shared.
        assert (
            json.loads(text_of(a.call("shared__whoami")))["pid"]
            == json.loads(text_of(b.call("shared__whoami")))["pid"]
        )
        # Ending the session stops its process.
        r = httpx.delete(
            g.url + "/mcp", headers={"Authorization": f"Bearer {TOKEN}", "Mcp-Session-Id": a.session_id}
        )
        assert r.status_code == 204
        deadline = time.monotonic() + 10
        while pids_alive([pid_a]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pids_alive([pid_a]) == []
        assert pids_alive([pid_b]) == [pid_b]
    finally:
        g.stop()
    assert pids_alive([pid_b]) == []


def test_startup_failures_are_one_clear_line(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        cases = {
            "port": server_toml(tmp_path).replace("port = 0", f"port = {port}") + child_toml("t"),
            "data": server_toml(tmp_path).replace(str(tmp_path / "data"), "/proc/no-such-dir/data"),
        }
        for name, text in cases.items():
            cfg = tmp_path / f"{name}.toml"
            cfg.write_text(text)
            out = subprocess.run(
                [sys.executable, "-m", "portero", "serve", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert out.returncode == 1, (name, out.stderr[-2000:])
            assert "Traceback" not in out.stderr
            expected = "Address already in use" if name == "port" else "cannot open the database"
            assert expected in out.stderr
    finally:
        taken.close()


def test_http_edges(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    # Version negotiation: a supported version is echoed, an unknown one gets the latest.
    old = McpHttpClient(gw.url, initialize=False)
    r = old.post(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}}
    )
    assert r.json()["result"]["protocolVersion"] == "2025-03-26"
    r = old.post(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}}
    )
    assert r.json()["result"]["protocolVersion"] == "2025-11-25"
    # An unsupported MCP-Protocol-Version header is refused.
    assert c.post(ping, headers={"MCP-Protocol-Version": "1999-01-01"}).status_code == 400
    assert c.post(ping, headers={"MCP-Protocol-Version": "2025-06-18"}).status_code == 200
    # Accept and Content-Type.
    assert c.post(ping, headers={"Accept": "text/html"}).status_code == 406
    assert c.post(ping, headers={"Content-Type": "text/plain"}).status_code == 415
    # Batches (2025-03-26): one answer per request, none for notifications.
    r = c.post(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        ]
    )
    answers = {m["id"]: m for m in r.json()}
    assert answers["a"]["result"] == {} and answers["b"]["error"]["code"] == -32601
    # Methods other than GET/POST/DELETE.
    r = httpx.put(gw.url + "/mcp", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 405
    # GET without an event-stream Accept, and GET for an unknown session.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(gw.url + "/mcp", headers={**auth, "Mcp-Session-Id": c.session_id}).status_code == 406
    r = httpx.get(gw.url + "/mcp", headers={**auth, "Accept": "text/event-stream", "Mcp-Session-Id": "x"})
    assert r.status_code == 404
    # A 2026-era probe is answered in that era: a malformed envelope is a 400 naming what is missing,
    # a proper one gets the versions and capabilities (no session either way).
    probe = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {"protocolVersion": "2026-07-28"},
    }
    r = httpx.post(
        gw.url + "/mcp", json=probe, headers={**auth, "Accept": "application/json, text/event-stream"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602 and r.json()["id"] == 1
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    probe["params"] = {"_meta": meta}
    modern_headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "server/discover"}
    r = httpx.post(gw.url + "/mcp", json=probe, headers={**auth, **modern_headers})
    assert r.status_code == 200 and "mcp-session-id" not in r.headers
    assert {"2026-07-28", "2025-11-25"} <= set(r.json()["result"]["supportedVersions"])
    # /health needs no token; everything else does.
    assert httpx.get(gw.url + "/health").status_code == 200
    assert httpx.get(gw.url + "/mcp", headers={"Accept": "text/event-stream"}).status_code == 401
