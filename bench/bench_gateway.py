"""Gateway latency and throughput: one stdio echo child, direct versus through Portero.

Run by hand from the repository root:

    .venv/bin/python bench/bench_gateway.py [--calls N] [--rounds R] [--child minimal|tests] [--no-httpx]

In one run it measures, for the same echo child:

1. direct stdio (the floor): the bench spawns the child itself, initializes, then N sequential
   ``tools/call`` over its stdin/stdout; then N calls with 16 in flight on the one pipe;
2. through the gateway (``python -m portero serve``, bearer auth, audit to SQLite as in production):
   N sequential calls from one keep-alive client; then N calls from 16 concurrent clients, each with
   its own MCP session and keep-alive connection (one thread, non-blocking sockets, ``selectors``);
3. a 1 MB result (``big`` with kb=1024), p50, direct versus gateway;
4. the gateway's RSS (``VmRSS``) right after start, and after the load;
5. for reference, sequential calls through httpx (to show what a heavier client adds);
6. for scale, the cost of one committed SQLite insert (WAL, synchronous=FULL) on the same disk,
   which is what the gateway's audit record costs per call when calls do not overlap.

Every figure is the median over R rounds; rounds interleave direct and gateway so that noise on a
shared machine hits both. The HTTP client is a minimal HTTP/1.1 one over a raw socket so its own
cost stays small. Only 127.0.0.1 is used; every loop is bounded; every process started here is
stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-token-0123456789abcdef"
PROTOCOL = "2025-06-18"
CONCURRENCY = 16
DEADLINE_S = 120.0  # no single phase may run longer than this
CHILDREN = {
    "minimal": [os.path.join(REPO, "bench", "echo_server.py")],
    "tests": [os.path.join(REPO, "tests", "servers", "stdio_server.py"), "--name", "echo"],
}


class BenchError(Exception):
    pass


def now() -> float:
    return time.perf_counter()


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile of latencies (seconds in, milliseconds out)."""
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k] * 1000


# ------------------------------------------------------------------------------- processes
_procs: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(argv, start_new_session=True, **kw)
    _procs.append(p)
    return p


def descendants(pid: int, limit: int = 1000) -> list[int]:
    """Pids below ``pid`` (from /proc/<pid>/task/*/children), depth first; a bounded walk."""
    out: list[int] = []
    todo = [pid]
    for _ in range(limit):
        if not todo:
            break
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def stop(p: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, wait, SIGKILL the process and anything it started (own process groups included)."""
    if p.poll() is not None:
        return
    kids = descendants(p.pid)
    for stream in (p.stdin,):
        try:
            if stream:
                stream.close()
        except OSError:
            pass
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            p.kill()
        p.wait(grace)
    for k in kids:  # children the gateway started in their own sessions, if it left any behind
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass


def stop_all() -> None:
    while _procs:
        p = _procs.pop()
        try:
            stop(p)
        except Exception as exc:  # keep stopping the others
            print(f"bench: could not stop pid {p.pid}: {exc}", file=sys.stderr)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


# ------------------------------------------------------------------------------- direct stdio
class StdioChild:
    """The echo child spoken to directly: newline-delimited JSON over its stdin/stdout."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = spawn(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        self.buf = bytearray()
        self.next_id = 0
        self.call(
            "initialize", {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "bench"}}
        )
        self.write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def write(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def read_line(self) -> bytes:
        for _ in range(1_000_000):
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return line
            data = os.read(self.rfd, 1 << 20)
            if not data:
                raise BenchError("the echo child closed its output")
            self.buf += data
        raise BenchError("no line from the echo child")

    def request(self, method: str, params: dict[str, Any]) -> int:
        self.next_id += 1
        self.write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        return self.next_id

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = self.request(method, params)
        msg = json.loads(self.read_line())
        if msg.get("id") != rid or "result" not in msg:
            raise BenchError(f"unexpected answer from the child: {str(msg)[:200]}")
        return msg["result"]


def echo_params(i: int) -> dict[str, Any]:
    return {"name": "echo", "arguments": {"text": f"hello {i}"}}


def check_echo(result: dict[str, Any], i: int) -> None:
    if result.get("isError") or result["content"][0]["text"] != f"hello {i}":
        raise BenchError(f"wrong echo result: {str(result)[:200]}")


def direct_sequential(child: StdioChild, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t = now()
        r = child.call("tools/call", echo_params(i))
        lat.append(now() - t)
        check_echo(r, i)
    return lat


def direct_concurrent(child: StdioChild, n: int, window: int) -> tuple[float, list[float]]:
    """n calls with ``window`` in flight on the one pipe; returns (calls/s, latencies)."""
    sent: dict[int, tuple[float, int]] = {}
    lat: list[float] = []
    issued = 0
    t0 = now()
    while issued < min(window, n):
        sent[child.request("tools/call", echo_params(issued))] = (now(), issued)
        issued += 1
    deadline = t0 + DEADLINE_S
    while sent:
        msg = json.loads(child.read_line())
        t_sent, i = sent.pop(msg["id"])
        lat.append(now() - t_sent)
        check_echo(msg["result"], i)
        if issued < n:
            sent[child.request("tools/call", echo_params(issued))] = (now(), issued)
            issued += 1
        if now() > deadline:
            raise BenchError("direct concurrent phase overran its deadline")
    return n / (now() - t0), lat


def direct_big(child: StdioChild, n: int, kb: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = now()
        r = child.call("tools/call", {"name": "big", "arguments": {"kb": kb}})
        lat.append(now() - t)
        if len(r["content"][0]["text"]) != kb * 1024:
            raise BenchError("short big result")
    return lat


# ------------------------------------------------------------------------------- minimal HTTP/1.1 client
class HttpConn:
    """One keep-alive HTTP/1.1 connection; Content-Length and chunked bodies; SSE answers unwrapped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = self._connect()
        self.buf = bytearray()
        self.reconnects = 0
        self.session = ""
        self.next_id = 0
        self.head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        )

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def after(self, headers: dict[str, str]) -> None:
        """Hypercorn closes a keep-alive connection after 1000 requests (keep_alive_max_requests):
        reconnect as a real client would (the MCP session survives; it is not tied to the connection)."""
        if headers.get("connection", "").lower() == "close":
            blocking = self.sock.getblocking()
            self.sock.close()
            self.sock = self._connect()
            self.sock.setblocking(blocking)
            self.buf.clear()
            self.reconnects += 1

    # -- framing
    def encode(self, msg: dict[str, Any]) -> bytes:
        body = json.dumps(msg, separators=(",", ":")).encode()
        sid = f"Mcp-Session-Id: {self.session}\r\n" if self.session else ""
        return f"{self.head}{sid}Content-Length: {len(body)}\r\n\r\n".encode() + body

    def parse(self) -> tuple[int, dict[str, str], bytes] | None:
        """A complete response from the buffer (consumed), or None if more bytes are needed."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for h in lines[1:]:
            k, _, v = h.partition(":")
            headers[k.strip().lower()] = v.strip()
        pos = end + 4
        if "content-length" in headers:
            stop_at = pos + int(headers["content-length"])
            if len(buf) < stop_at:
                return None
            body = bytes(buf[pos:stop_at])
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            for _ in range(1_000_000):
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    return None
                size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
                if size == 0:
                    if buf.find(b"\r\n", nl + 2) != nl + 2:  # no trailers expected
                        return None if len(buf) < nl + 4 else self._bad("trailers")
                    stop_at = nl + 4
                    break
                if len(buf) < nl + 2 + size + 2:
                    return None
                parts.append(bytes(buf[nl + 2 : nl + 2 + size]))
                pos = nl + 2 + size + 2
            else:
                return self._bad("too many chunks")
            body = b"".join(parts)
        else:
            stop_at = pos
            body = b""
        del buf[:stop_at]
        return status, headers, body

    @staticmethod
    def _bad(why: str) -> Any:
        raise BenchError(f"cannot parse the response: {why}")

    @staticmethod
    def message(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        if status != 200:
            raise BenchError(f"HTTP {status}: {body[:200]!r}")
        if headers.get("content-type", "").startswith("text/event-stream"):
            data = [ln[5:].strip() for ln in body.decode().splitlines() if ln.startswith("data:")]
            return json.loads(data[-1])  # the answer comes last
        return json.loads(body)

    # -- blocking use
    def roundtrip(self, msg: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(self.encode(msg))
        for _ in range(10_000_000):
            r = self.parse()
            if r is not None:
                self.after(r[1])
                return r
            data = self.sock.recv(1 << 20)
            if not data:
                raise BenchError("the gateway closed the connection")
            self.buf += data
        raise BenchError("no response")

    def initialize(self) -> None:
        status, headers, body = self.roundtrip(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"},
                },
            }
        )
        self.message(status, headers, body)
        self.session = headers.get("mcp-session-id", "")
        if not self.session:
            raise BenchError("no Mcp-Session-Id in the initialize answer")
        status, _, body = self.roundtrip({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status != 202:
            raise BenchError(f"notifications/initialized answered {status}: {body[:200]!r}")

    def tool_request(self, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call", "params": params}

    def call(self, params: dict[str, Any]) -> dict[str, Any]:
        msg = self.message(*self.roundtrip(self.tool_request(params)))
        if "result" not in msg:
            raise BenchError(f"tools/call failed: {str(msg)[:200]}")
        return msg["result"]


def gateway_params(i: int) -> dict[str, Any]:
    return {"name": "echo__echo", "arguments": {"text": f"hello {i}"}}


def gateway_sequential(conn: HttpConn, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t = now()
        r = conn.call(gateway_params(i))
        lat.append(now() - t)
        check_echo(r, i)
    return lat


def gateway_concurrent(conns: list[HttpConn], n: int) -> tuple[float, list[float]]:
    """n calls spread over the connections, each connection with one request in flight."""
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    state: dict[int, tuple[float, int]] = {}
    issued = 0
    t0 = now()
    try:
        for c in conns:
            c.sock.setblocking(False)
            if issued < n:
                state[id(c)] = (now(), issued)
                c.sock.sendall(c.encode(c.tool_request(gateway_params(issued))))
                issued += 1
            sel.register(c.sock, selectors.EVENT_READ, c)
        deadline = t0 + DEADLINE_S
        while state:
            if now() > deadline:
                raise BenchError("gateway concurrent phase overran its deadline")
            for key, _ in sel.select(timeout=5.0):
                c = key.data
                data = c.sock.recv(1 << 20)
                if not data:
                    raise BenchError("the gateway closed a connection")
                c.buf += data
                r = c.parse()
                if r is None:
                    continue
                if r[1].get("connection", "").lower() == "close":
                    sel.unregister(c.sock)
                    c.after(r[1])
                    sel.register(c.sock, selectors.EVENT_READ, c)
                t_sent, i = state.pop(id(c))
                lat.append(now() - t_sent)
                check_echo(c.message(*r)["result"], i)
                if issued < n:
                    state[id(c)] = (now(), issued)
                    c.sock.sendall(c.encode(c.tool_request(gateway_params(issued))))
                    issued += 1
        return n / (now() - t0), lat
    finally:
        sel.close()
        for c in conns:
            c.sock.setblocking(True)


def gateway_big(conn: HttpConn, n: int, kb: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = now()
        r = conn.call({"name": "echo__big", "arguments": {"kb": kb}})
        lat.append(now() - t)
        if len(r["content"][0]["text"]) != kb * 1024:
            raise BenchError("short big result")
    return lat


def httpx_sequential(port: int, n: int) -> list[float]:
    import httpx

    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}
    lat = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "bench-httpx", "version": "0"},
            },
        }
        r = client.post("/mcp", json=init)
        r.raise_for_status()
        client.headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
        client.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}).raise_for_status()
        for i in range(n):
            t = now()
            r = client.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": gateway_params(i)},
            )
            msg = r.json()
            lat.append(now() - t)
            check_echo(msg["result"], i)
    return lat


# ------------------------------------------------------------------------------- the gateway
class Gateway:
    """`portero serve` on a free port fronting one child; `extra_toml` is appended to the config."""

    def __init__(self, tmp: str, child_argv: list[str], extra_toml: str = "") -> None:
        self.data_dir = os.path.join(tmp, "data")
        self.config = os.path.join(tmp, "portero.toml")
        args = ", ".join(json.dumps(a) for a in child_argv[1:])
        with open(self.config, "w") as f:
            f.write(
                "[server]\n"
                'host = "127.0.0.1"\nport = 0\nauth = "bearer"\n'
                f'bearer_token = "{TOKEN}"\n'
                f"data_dir = {json.dumps(self.data_dir)}\n"
                'log_level = "warning"\n'
                "[[mcp]]\n"
                'name = "echo"\n'
                f"command = {json.dumps(child_argv[0])}\n"
                f"args = [{args}]\n"
                f"{extra_toml}"
            )
        self.stderr: list[str] = []
        venv_python = os.path.join(REPO, ".venv", "bin", "python")
        python = venv_python if os.path.exists(venv_python) else sys.executable
        self.proc = spawn(
            [python, "-m", "portero", "serve", "--config", self.config],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.port = 0
        ready = threading.Event()

        def drain() -> None:  # keeps the pipe from filling up; notes the port
            assert self.proc.stderr is not None
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                self.stderr.append(line)
                if "listening on http://127.0.0.1:" in line and not self.port:
                    self.port = int(line.rsplit(":", 1)[1].split("/")[0])
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(30) or not self.port:
            raise BenchError("the gateway did not start:\n" + "\n".join(self.stderr[-20:]))
        self.wait_healthy()

    def wait_healthy(self) -> None:
        request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n".encode()
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(request)
                    head = s.recv(64)
                if head.startswith(b"HTTP/1.1 200"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError("the gateway never became healthy:\n" + "\n".join(self.stderr[-20:]))

    def audit_rows(self) -> int:
        db = os.path.join(self.data_dir, "gateway.db")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT count(*) FROM audit").fetchone()[0]


def sqlite_commit_cost(tmp: str, n: int) -> list[float]:
    """One INSERT + COMMIT per row, WAL, synchronous=FULL: the audit path's disk cost per call."""
    conn = sqlite3.connect(os.path.join(tmp, "commit-cost.db"), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, ts REAL, tool TEXT, arguments TEXT)"
        )
        lat = []
        for i in range(n):
            t = now()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO audit (ts, tool, arguments) VALUES (?, ?, ?)",
                (time.time(), "echo/echo", f'{{"text":"hello {i}"}}'),
            )
            conn.execute("COMMIT")
            lat.append(now() - t)
        return lat
    finally:
        conn.close()


# ------------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict[str, Any]:
    child_argv = [sys.executable, *CHILDREN[args.child]]
    n, rounds, big_n, kb = args.calls, args.rounds, args.big_calls, 1024
    results: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        results.setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="portero-bench-") as tmp:
        t_start = now()
        direct = StdioChild(child_argv)
        gw = Gateway(tmp, child_argv)
        time.sleep(1.0)  # let start-up settle before reading the idle RSS
        rss_idle = rss_mib(gw.proc.pid)
        seq = HttpConn(gw.port)
        seq.initialize()
        conns = [HttpConn(gw.port) for _ in range(CONCURRENCY)]
        for c in conns:
            c.initialize()
        # Warm-up (not measured): code paths, allocator, page cache of the database.
        direct_sequential(direct, 200)
        gateway_sequential(seq, 200)
        gateway_concurrent(conns, 200)
        direct_big(direct, 2, kb)
        gateway_big(seq, 2, kb)
        print(
            f"bench: gateway pid {gw.proc.pid} on port {gw.port}; warm; {rounds} rounds of {n} calls",
            file=sys.stderr,
        )

        def d_seq() -> None:
            lat = direct_sequential(direct, n)
            note("direct.seq.p50", pct(lat, 50))
            note("direct.seq.p99", pct(lat, 99))
            note("direct.seq.rate", n / sum(lat))

        def d_conc() -> None:
            rate, lat = direct_concurrent(direct, n, CONCURRENCY)
            note("direct.conc.rate", rate)
            note("direct.conc.p50", pct(lat, 50))
            note("direct.conc.p99", pct(lat, 99))

        def d_big() -> None:
            note("direct.big.p50", pct(direct_big(direct, big_n, kb), 50))

        def g_seq() -> None:
            lat = gateway_sequential(seq, n)
            note("gateway.seq.p50", pct(lat, 50))
            note("gateway.seq.p99", pct(lat, 99))
            note("gateway.seq.rate", n / sum(lat))

        def g_conc() -> None:
            rate, lat = gateway_concurrent(conns, n)
            note("gateway.conc.rate", rate)
            note("gateway.conc.p50", pct(lat, 50))
            note("gateway.conc.p99", pct(lat, 99))

        def g_big() -> None:
            note("gateway.big.p50", pct(gateway_big(seq, big_n, kb), 50))

        def h_seq() -> None:
            lat = httpx_sequential(gw.port, max(100, n // 4))
            note("httpx.seq.p50", pct(lat, 50))
            note("httpx.seq.p99", pct(lat, 99))

        def commit() -> None:
            lat = sqlite_commit_cost(tmp, 200)
            note("sqlite.commit.p50", pct(lat, 50))

        steps: list[tuple[str, Callable[[], None]]] = [
            ("direct seq", d_seq),
            ("gateway seq", g_seq),
            ("direct 16", d_conc),
            ("gateway 16", g_conc),
            ("direct 1MB", d_big),
            ("gateway 1MB", g_big),
            ("sqlite commit", commit),
        ]
        if args.httpx:
            steps.append(("httpx seq", h_seq))
        for r in range(rounds):
            for label, step in steps:
                t = now()
                step()
                print(f"bench: round {r + 1} {label}: {now() - t:.1f} s", file=sys.stderr)
        rss_load = rss_mib(gw.proc.pid)
        reconnects = seq.reconnects + sum(c.reconnects for c in conns)
        seq.sock.close()
        for c in conns:
            c.sock.close()
        child_rss = [rss_mib(k) for k in descendants(gw.proc.pid) if os.path.exists(f"/proc/{k}/status")]
        stop(gw.proc)
        audited = gw.audit_rows()
        stop(direct.proc)
        med = {k: statistics.median(v) for k, v in results.items()}
        med["gateway.rss.idle"] = rss_idle
        med["gateway.rss.load"] = rss_load
        med["child.rss"] = child_rss[0] if child_rss else float("nan")
        med["audit.rows"] = audited
        med["http.reconnects"] = reconnects
        med["elapsed.s"] = now() - t_start
        return {"median": med, "rounds": results}


def fmt(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if x == x else "–"


def report(out: dict[str, Any], args: argparse.Namespace) -> str:
    m = out["median"]
    rows = []

    def row(
        what: str, d: float | None, g: float | None, digits: int = 2, added: bool = False, ratio: bool = True
    ) -> None:
        cells = [what, "–" if d is None else fmt(d, digits), "–" if g is None else fmt(g, digits)]
        cells.append(f"{g / d:.3g}×" if ratio and d and g else "–")
        cells.append(fmt(g - d, 2) if added and d is not None and g is not None else "–")
        rows.append("| " + " | ".join(cells) + " |")

    row("sequential p50 ms", m["direct.seq.p50"], m["gateway.seq.p50"], added=True)
    row("sequential p99 ms", m["direct.seq.p99"], m["gateway.seq.p99"], added=True)
    row("sequential calls/s", m["direct.seq.rate"], m["gateway.seq.rate"], 0)
    row(
        "16 in flight: calls/s (direct: one pipe; gateway: 16 clients)",
        m["direct.conc.rate"],
        m["gateway.conc.rate"],
        0,
    )
    row("16 in flight: p50 ms", m["direct.conc.p50"], m["gateway.conc.p50"], added=True)
    row("16 in flight: p99 ms", m["direct.conc.p99"], m["gateway.conc.p99"], added=True)
    row("1 MB result p50 ms", m["direct.big.p50"], m["gateway.big.p50"], 1, added=True)
    row("RSS MiB after start (idle)", None, m["gateway.rss.idle"], 1, ratio=False)
    row(
        f"RSS MiB after the load ({m['audit.rows']} calls audited)",
        m["child.rss"],
        m["gateway.rss.load"],
        1,
        ratio=False,
    )
    if "httpx.seq.p50" in m:
        row(
            "gateway via httpx: sequential p50 ms (reference)",
            m["gateway.seq.p50"],
            m["httpx.seq.p50"],
            added=True,
            ratio=False,
        )
        row(
            "gateway via httpx: sequential p99 ms (reference)",
            m["gateway.seq.p99"],
            m["httpx.seq.p99"],
            added=True,
            ratio=False,
        )
    row(
        "one SQLite INSERT+COMMIT (WAL, synchronous=FULL), same disk, p50 ms",
        None,
        m["sqlite.commit.p50"],
        3,
        ratio=False,
    )
    head = [
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, child `{args.child}`, N={args.calls}, "
        f"R={args.rounds}, 1 MB calls per round={args.big_calls}, run took {m['elapsed.s']:.0f} s",
        "",
        "| measure (median of rounds) | direct stdio | gateway | gateway/direct | added ms/call |",
        "|---|---|---|---|---|",
    ]
    notes = [
        "",
        "RSS row: the 'direct stdio' cell is the echo child's RSS under the gateway, for scale.",
        "httpx rows: the 'direct stdio' column holds the minimal client through the gateway,",
        "the 'gateway' column httpx through the gateway.",
        f"Reconnects of the minimal client (hypercorn closes a connection after 1000 requests): "
        f"{m['http.reconnects']}, included in the figures.",
    ]
    return "\n".join(head + rows + notes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    ap.add_argument("--big-calls", type=int, default=20, help="1 MB calls per round and side (default 20)")
    ap.add_argument(
        "--child",
        choices=sorted(CHILDREN),
        default="minimal",
        help="minimal: bench/echo_server.py (default); tests: tests/servers/stdio_server.py",
    )
    ap.add_argument("--no-httpx", dest="httpx", action="store_false", help="skip the httpx reference row")
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    args = ap.parse_args()
    if args.calls < 1 or args.rounds < 1 or args.big_calls < 1:
        ap.error("--calls, --rounds and --big-calls must be positive")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        out = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    print(report(out, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
