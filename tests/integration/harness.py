"""Run the real `portero serve` process on 127.0.0.1 and talk MCP to it over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = ROOT / "tests" / "servers" / "stdio_server.py"
TOKEN = "test-token-0123456789abcdef"


def child_toml(name: str, *args: str, **extra: Any) -> str:
    argv = [str(TEST_SERVER), "--name", name, *args]
    lines = [
        "[[mcp]]",
        f'name = "{name}"',
        f"command = {json.dumps(sys.executable)}",
        f"args = {json.dumps(argv)}",
    ]
    for k, v in extra.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def server_toml(tmp: Path, *, auth: str = "bearer", extra: str = "") -> str:
    return (
        "[server]\n"
        'host = "127.0.0.1"\n'
        "port = 0\n"
        f'auth = "{auth}"\n'
        f'bearer_token = "{TOKEN}"\n'
        f'data_dir = "{tmp / "data"}"\n'
        'log_level = "debug"\n'
        f"{extra}\n"
    )


def console_passwd(config: Path, password: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``portero console passwd --config <config>`` with ``password`` on stdin (``argv``: another way to
    run portero than ``python -m portero``, e.g. a zipapp)."""
    return subprocess.run(
        [*(argv or (sys.executable, "-m", "portero")), "console", "passwd", "--config", str(config)],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=str(config.parent),
        timeout=60,
    )


class GatewayProcess:
    """`python -m portero serve` with a config file; knows its URL once it listens."""

    def __init__(self, tmp: Path, config_text: str, *, env: dict[str, str] | None = None) -> None:
        self.config_path = tmp / "portero.toml"
        self.config_path.write_text(config_text)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.url = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portero", "serve", "--config", str(self.config_path)],
            cwd=str(tmp),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(30):
            self.stop()
            raise RuntimeError("gateway did not start:\n" + self.log_text())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("portero: listening on "):
                self.url = line.split("listening on ", 1)[1].strip()
                self._listening.set()

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{self.log_text()[-4000:]}")

    def health(self, *, token: str | None = TOKEN) -> httpx.Response:
        """GET /health; with the bearer token (the default) the full view, without it the public one."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + "/health", headers=headers, timeout=5)

    def wait_ready(self, timeout: float = 30.0, expect: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.health()
            body = r.json()
            ready = [c for c in body["children"] if c["state"] == "ready"]
            if (expect is None and r.status_code == 200) or (expect is not None and len(ready) >= expect):
                return body
            time.sleep(0.05)
        raise AssertionError(f"not ready: {body}\n{self.log_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


class McpHttpClient:
    """A minimal Streamable HTTP client: initialize, then requests that answer JSON or SSE."""

    # What the client declares at initialize: everything a server may ask a client for.
    CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}}

    def __init__(
        self,
        url: str,
        token: str | None = TOKEN,
        *,
        initialize: bool = True,
        capabilities: dict[str, Any] | None = None,
    ) -> None:
        self.capabilities = self.CAPABILITIES if capabilities is None else capabilities
        self.url = url + "/mcp"
        self.http = httpx.Client(timeout=30)
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.session_id: str | None = None
        self._id = 0
        self.init_result: dict[str, Any] = {}
        if initialize:
            self.initialize()

    def close(self) -> None:
        self.http.close()

    def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        h = dict(self.headers)
        if self.session_id:
            h["Mcp-Session-Id"] = self.session_id
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return self.http.post(self.url, content=data, headers=h)

    def initialize(self, protocol_version: str = "2025-06-18") -> dict[str, Any]:
        r = self.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": protocol_version,
                    "capabilities": self.capabilities,
                    "clientInfo": {"name": "test", "version": "0"},
                },
            }
        )
        assert r.status_code == 200, r.text
        self.session_id = r.headers["mcp-session-id"]
        self.init_result = r.json()["result"]
        self.notify("notifications/initialized")
        return self.init_result

    def notify(self, method: str, params: dict[str, Any] | None = None) -> httpx.Response:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        r = self.post(msg)
        assert r.status_code == 202, r.text
        return r

    def request_raw(
        self, method: str, params: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Returns (response message, messages streamed before it)."""
        self._id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id, "method": method}
        if params is not None:
            msg["params"] = params
        r = self.post(msg)
        assert r.status_code == 200, (r.status_code, r.text)
        if r.headers["content-type"].startswith("text/event-stream"):
            events = parse_sse(r.text)
            return events[-1], events[:-1]
        return r.json(), []

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        resp, _ = self.request_raw(method, params)
        return resp

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.request("tools/call", {"name": tool, "arguments": arguments or {}})
        assert "result" in resp, resp
        return resp["result"]


def parse_sse(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        data = [line[5:].lstrip() for line in block.split("\n") if line.startswith("data:")]
        if data:
            out.append(json.loads("\n".join(data)))
    return out


def text_of(result: dict[str, Any]) -> str:
    return "".join(c.get("text", "") for c in result.get("content", []))


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # A zombie still answers kill(0); check its state.
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    continue
        except FileNotFoundError:
            continue
        alive.append(pid)
    return alive
