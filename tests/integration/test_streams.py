"""The GET stream, resumption with Last-Event-ID, resource subscriptions and session expiry."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import TOKEN, GatewayProcess, McpHttpClient, child_toml, parse_sse, server_toml


@pytest.fixture
def gw(tmp_path: Path):
    g = GatewayProcess(tmp_path, server_toml(tmp_path, extra='session_idle_timeout = "2s"') + child_toml("t"))
    g.wait_ready()
    yield g
    g.stop()


class StreamReader:
    """Reads a GET /mcp stream in a thread, collecting (event id, message) pairs."""

    def __init__(self, url: str, session_id: str, last_event_id: str | None = None) -> None:
        self.events: list[tuple[str | None, Any]] = []
        self.raw = ""
        self.status = 0
        headers = {
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session_id,
        }
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _run(self, url: str, headers: dict[str, str]) -> None:
        import json

        with httpx.stream("GET", url + "/mcp", headers=headers, timeout=30) as r:
            self.status = r.status_code
            self._started.set()
            for chunk in r.iter_text():
                self.raw += chunk
                while "\n\n" in self.raw:
                    block, self.raw = self.raw.split("\n\n", 1)
                    eid = None
                    data = []
                    for line in block.split("\n"):
                        if line.startswith("id:"):
                            eid = line[3:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].strip())
                    payload = "\n".join(data)
                    self.events.append((eid, json.loads(payload) if payload else None))
                if self._stop.is_set():
                    return

    def wait_for(self, pred, timeout: float = 10.0) -> tuple[str | None, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.events):
                if e[1] is not None and pred(e[1]):
                    return e
            time.sleep(0.02)
        raise AssertionError(f"no matching event in {self.events}")

    def close(self) -> None:
        self._stop.set()


def test_get_stream_gets_list_changed_and_resource_updates(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    stream = StreamReader(gw.url, c.session_id)
    assert stream.status == 200
    c.call("t__add_tool", {"name": "brand_new"})
    eid, msg = stream.wait_for(lambda m: m.get("method") == "notifications/tools/list_changed")
    assert eid is not None and eid.isdigit()
    stream.close()


def test_last_event_id_replays_what_was_missed(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    # No stream is open while these happen: the session keeps their events for replay.
    c.call("t__add_tool", {"name": "one"})
    c.call("t__add_tool", {"name": "two"})

    def changes(stream: StreamReader) -> list[int]:
        return [
            int(eid)
            for eid, m in stream.events
            if m is not None and m.get("method") == "notifications/tools/list_changed"
        ]

    s1 = StreamReader(gw.url, c.session_id, last_event_id="0")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(changes(s1)) < 2:
        time.sleep(0.02)
    missed = changes(s1)
    assert len(missed) >= 2 and missed == sorted(missed)
    s1.close()
    # A reconnect after the last seen id gets only what came after it.
    c.call("t__add_tool", {"name": "three"})
    s2 = StreamReader(gw.url, c.session_id, last_event_id=str(missed[-1]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not changes(s2):
        time.sleep(0.02)
    assert changes(s2) and min(changes(s2)) > missed[-1]
    s2.close()


def test_subscribed_resource_updates_reach_only_subscribers(gw: GatewayProcess) -> None:
    sub, other = McpHttpClient(gw.url), McpHttpClient(gw.url)
    s_sub, s_other = StreamReader(gw.url, sub.session_id), StreamReader(gw.url, other.session_id)
    assert sub.request("resources/subscribe", {"uri": "test://static/hello"})["result"] == {}
    other.call("t__touch", {"uri": "test://static/hello"})
    other.call("t__touch", {"uri": "test://static/pixel"})
    _, msg = s_sub.wait_for(lambda m: m.get("method") == "notifications/resources/updated")
    assert msg["params"]["uri"] == "test://static/hello"
    time.sleep(0.3)
    updates = [m for _, m in s_sub.events if m and m.get("method") == "notifications/resources/updated"]
    assert [m["params"]["uri"] for m in updates] == ["test://static/hello"]
    assert not [m for _, m in s_other.events if m and m.get("method") == "notifications/resources/updated"]
    assert sub.request("resources/unsubscribe", {"uri": "test://static/hello"})["result"] == {}
    other.call("t__touch", {"uri": "test://static/hello"})
    time.sleep(0.3)
    updates = [m for _, m in s_sub.events if m and m.get("method") == "notifications/resources/updated"]
    assert len(updates) == 1
    s_sub.close()
    s_other.close()


def test_priming_event_for_2025_11_25_sessions(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url, initialize=False)
    assert c.initialize("2025-11-25")["protocolVersion"] == "2025-11-25"
    s = StreamReader(gw.url, c.session_id)
    deadline = time.monotonic() + 5
    while not s.events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.events[0] == ("0", None)  # an id with empty data primes reconnection
    s.close()


def test_idle_sessions_expire(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    assert c.request("ping")["result"] == {}
    before = gw.health().json()["sessions"]
    assert before >= 1
    time.sleep(3.5)
    r = c.post({"jsonrpc": "2.0", "id": 99, "method": "ping"})
    assert r.status_code == 404
    gw.wait_log("expired after")


def test_sse_answer_when_progress_precedes_it(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    resp, before = c.request_raw(
        "tools/call", {"name": "t__progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok"}}
    )
    assert [m["params"]["progress"] for m in before] == [1, 2, 3]
    assert all(m["params"]["progressToken"] == "tok" for m in before)
    assert resp["result"]["content"][0]["text"] == "progress done (3)"
    # Without anything before the answer, it is plain JSON.
    r = c.post(
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {"name": "t__echo", "arguments": {"text": "x"}},
        }
    )
    assert r.headers["content-type"] == "application/json"
    # A client that only accepts JSON still gets its answer (progress is dropped).
    r = c.post(
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {"name": "t__progress", "arguments": {"steps": 2}, "_meta": {"progressToken": "t2"}},
        },
        headers={"Accept": "application/json"},
    )
    assert r.headers["content-type"] == "application/json"
    assert r.json()["result"]["content"][0]["text"] == "progress done (2)"


def test_log_level_is_per_session(gw: GatewayProcess) -> None:
    quiet, chatty = McpHttpClient(gw.url), McpHttpClient(gw.url)
    assert quiet.request("logging/setLevel", {"level": "warning"})["result"] == {}
    resp, before = quiet.request_raw("tools/call", {"name": "t__log", "arguments": {"message": "hush"}})
    assert resp["result"]["content"][0]["text"] == "logged" and before == []
    resp, before = chatty.request_raw("tools/call", {"name": "t__log", "arguments": {"message": "hello"}})
    assert [m["params"]["data"] for m in before if m.get("method") == "notifications/message"] == ["hello"]


def test_child_cancels_its_own_request_to_the_client(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    resp, before = c.request_raw("tools/call", {"name": "t__sample_then_cancel", "arguments": {}})
    assert resp["result"]["content"][0]["text"] == "withdrawn"
    ask = next(m for m in before if m.get("method") == "sampling/createMessage")
    cancel = next(m for m in before if m.get("method") == "notifications/cancelled")
    # The client sees the gateway's id for the request, in both messages.
    assert cancel["params"]["requestId"] == ask["id"] and str(ask["id"]).startswith("g")


@pytest.fixture
def gw_long_idle(tmp_path: Path):
    """Sessions that do not expire while a test creates a thousand of them on a loaded machine."""
    g = GatewayProcess(tmp_path, server_toml(tmp_path, extra='session_idle_timeout = "1h"') + child_toml("t"))
    g.wait_ready()
    yield g
    g.stop()


def test_session_count_is_bounded(gw_long_idle: GatewayProcess) -> None:
    from portero.gateway.sessions import MAX_SESSIONS

    gw = gw_long_idle
    first = McpHttpClient(gw.url)
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "x", "version": "1"},
        },
    }
    with httpx.Client(timeout=30) as http:
        for _ in range(MAX_SESSIONS):
            r = http.post(gw.url + "/mcp", json=init, headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
    assert gw.health().json()["sessions"] == MAX_SESSIONS
    # The oldest idle session made room for the newest.
    assert first.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 404
    gw.wait_log("session limit")


def test_long_wait_becomes_a_stream_with_keepalives(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, server_toml(tmp_path, extra='sse_keepalive = "1s"') + child_toml("t"))
    try:
        g.wait_ready()
        c = McpHttpClient(g.url)
        body = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "t__sleep", "arguments": {"seconds": 2.5}},
        }
        r = c.post(body)
        assert r.headers["content-type"] == "text/event-stream"
        assert r.text.count(": keepalive") >= 2
        assert parse_sse(r.text)[-1]["result"]["content"][0]["text"] == "slept"
        # A client that accepts only JSON just waits for the JSON answer.
        r = c.post(body, headers={"Accept": "application/json"})
        assert r.headers["content-type"] == "application/json"
        assert r.json()["result"]["content"][0]["text"] == "slept"
    finally:
        g.stop()


def test_a_lost_post_stream_is_resumed_with_last_event_id(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, server_toml(tmp_path, extra='sse_keepalive = "1s"') + child_toml("t"))
    try:
        g.wait_ready()
        c = McpHttpClient(g.url, initialize=False)
        c.initialize("2025-11-25")
        headers = {**c.headers, "Mcp-Session-Id": c.session_id}
        call = {
            "jsonrpc": "2.0",
            "id": 42,
            "method": "tools/call",
            "params": {"name": "t__sleep", "arguments": {"seconds": 2.5}},
        }
        # Read until the priming event (an id with empty data), then drop the connection.
        last_id = None
        with httpx.stream("POST", g.url + "/mcp", json=call, headers=headers, timeout=30) as resp:
            assert resp.headers["content-type"] == "text/event-stream"
            for line in resp.iter_lines():
                if line.startswith("id:"):
                    last_id = line[3:].strip()
                    break
        assert last_id is not None and "/" in last_id
        # The call goes on without its client; resume and get the answer.
        time.sleep(0.3)
        r = httpx.get(
            g.url + "/mcp",
            headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id},
            timeout=30,
        )
        events = parse_sse(r.text)
        assert events[-1]["id"] == 42 and events[-1]["result"]["content"][0]["text"] == "slept"
        assert not any("cancelled" in line for line in g.lines if "[t]" in line)
        # Delivered in full: the stream is gone, a second resume gets a plain GET stream instead.
        with httpx.stream(
            "GET",
            g.url + "/mcp",
            headers={**headers, "Accept": "text/event-stream", "Last-Event-ID": last_id},
            timeout=5,
        ) as again:
            assert again.status_code == 200
            first = next(again.iter_lines())
            assert first.startswith("id:") and "/" not in first
    finally:
        g.stop()
