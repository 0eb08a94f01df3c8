"""Portero side by side with its peers: the same stdio echo child behind each, in one run.

Run by hand from the repository root (it installs the peers first if they are missing):

    .venv/bin/python bench/bench_peers.py [--rounds R] [--calls N] [--quick] [--json PATH]

Setups, all fronting the same child (bench/echo_server.py, started with this Python):

- direct stdio, the floor: the bench speaks to the child over its pipes;
- Portero: ``python -m portero serve``, bearer auth, every call audited to SQLite as in production;
- PyPI ``mcp-proxy`` 0.13.0 in its Streamable HTTP server mode (``mcp-proxy --port N -- CHILD``, /mcp),
  installed into bench/peers/.venv (created with the Python that runs this script);
- npm ``supergateway`` 4.0.0, ``--stdio CHILD --outputTransport streamableHttp --stateful``, installed
  with ``npm install --prefix bench/peers``; it has no host option, so bench/peers/loopback.cjs makes it
  listen on 127.0.0.1 only. Stateful supergateway starts one child per MCP session.

Measured (each figure the median over R rounds; within a round the setups take turns step by step, the
order rotating each round, so that noise on a shared machine hits all of them):

1. sequential ``tools/call`` latency, p50 and p99, one keep-alive client;
2. calls/s and p99 with 1, 16, 64 and 256 concurrent sessions, each its own keep-alive connection and MCP
   session (initialize + notifications/initialized), one request in flight each (direct stdio: that many
   in flight on its one pipe);
3. a 1 MB result (the child's ``big``) with no replacement rule anywhere; a 1 MB prose-like result with
   1,000 real values in it (the child's ``doc``, as in bench/bench_anonymize_gateway.py) with no rule
   anywhere, and through a second Portero with 1,000 ``[[replacements]]`` whose real values are those;
4. idle RSS right after start (the server process and its own helpers, not the echo children), and RSS
   with 1,000 idle sessions (opened over 10 keep-alive connections, then read), on a fresh instance;
5. time from start to the first successful call with three children (Portero: three ``[[mcp]]``;
   mcp-proxy: three ``--named-server``; supergateway fronts one command per process: n/a).

Output: a Markdown table, one row per metric, one column per setup, and Portero's figure over the best
peer's; ``--json PATH`` also saves every round's figures. ``--quick``: 1 round, 200 calls, 3 calls of
1 MB, 100 idle sessions (under a minute once the peers are installed). Stateful supergateway needs about
13 MiB per idle session (its children); opening idle sessions stops, with the figure n/a, if the machine
has less than MEM_FLOOR_MIB available.

The HTTP client is bench_gateway.py's minimal HTTP/1.1 one (imported, not copied). Only 127.0.0.1 is
used; every loop is bounded in count and time; every process started here is stopped at the end, also on
error or Ctrl-C. A peer that cannot be installed or started is reported as n/a with the reason.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import bench_anonymize_gateway  # noqa: E402
import bench_gateway  # noqa: E402
from bench_gateway import BenchError, HttpConn, now, pct  # noqa: E402

PEERS = os.path.join(BENCH, "peers")
PEER_VENV = os.path.join(PEERS, ".venv")
MCP_PROXY_VERSION = "0.13.0"  # pinned in peers/requirements.txt
SUPERGATEWAY_VERSION = "4.0.0"  # pinned in peers/package.json (`npm view supergateway version` then)
ECHO = os.path.join(BENCH, "echo_server.py")
CHILD = [sys.executable, ECHO]
LEVELS = (1, 16, 64, 256)
KB = 1024
IDLE_POOL = 10  # keep-alive connections that carry the idle sessions
REOPEN_AFTER_S = {"mcp-proxy": 3.0, "supergateway": 3.0}  # idle seconds, see ensure_open
MEM_FLOOR_MIB = 3072  # stop opening idle sessions if the machine has less memory available than this
STEP_DEADLINE_S = 240.0
SETUPS = ("direct", "portero", "mcp-proxy", "supergateway")
TITLES = {
    "direct": "direct stdio",
    "portero": "Portero",
    "mcp-proxy": f"mcp-proxy {MCP_PROXY_VERSION} (PyPI)",
    "supergateway": f"supergateway {SUPERGATEWAY_VERSION} (npm, --stateful)",
}
PEER_KEYS = ("mcp-proxy", "supergateway")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- installing the peers
def run_cmd(argv: list[str], timeout: float) -> None:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise BenchError(f"`{' '.join(os.path.basename(a) for a in argv[:3])}` failed: {' / '.join(tail)}")


def mcp_proxy_exe() -> str:
    return os.path.join(PEER_VENV, "bin", "mcp-proxy")


def install_mcp_proxy() -> None:
    exe = mcp_proxy_exe()
    if os.path.exists(exe):
        r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        if MCP_PROXY_VERSION in r.stdout + r.stderr:
            return
    log(f"installing mcp-proxy {MCP_PROXY_VERSION} into {os.path.relpath(PEER_VENV)}")
    if not os.path.exists(os.path.join(PEER_VENV, "bin", "python")):
        run_cmd([sys.executable, "-m", "venv", PEER_VENV], 300)
    pip = [os.path.join(PEER_VENV, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    run_cmd([*pip, "-q", "-r", os.path.join(PEERS, "requirements.txt")], 900)
    if not os.path.exists(exe):
        raise BenchError("mcp-proxy is not in the venv after pip install")


def supergateway_js() -> str:
    pkg_dir = os.path.join(PEERS, "node_modules", "supergateway")
    with open(os.path.join(pkg_dir, "package.json")) as f:
        pkg = json.load(f)
    if pkg.get("version") != SUPERGATEWAY_VERSION:
        raise BenchError(f"supergateway {pkg.get('version')} installed, {SUPERGATEWAY_VERSION} wanted")
    entry = pkg["bin"] if isinstance(pkg["bin"], str) else pkg["bin"]["supergateway"]
    return os.path.join(pkg_dir, entry)


def install_supergateway() -> None:
    if not shutil.which("node") or not shutil.which("npm"):
        raise BenchError("node or npm is not installed")
    try:
        supergateway_js()
        return
    except (OSError, KeyError, BenchError):
        pass
    log(f"installing supergateway {SUPERGATEWAY_VERSION} into {os.path.relpath(PEERS)}/node_modules")
    npm = shutil.which("npm") or "npm"
    run_cmd([npm, "install", "--prefix", PEERS, "--no-audit", "--no-fund", "--loglevel=error"], 900)
    supergateway_js()


def install_peers() -> dict[str, str]:
    """Installs what is missing; returns {peer: why it is unavailable} for those that failed."""
    failed = {}
    for key, install in (("mcp-proxy", install_mcp_proxy), ("supergateway", install_supergateway)):
        try:
            install()
        except (BenchError, OSError, subprocess.SubprocessError, ValueError) as exc:
            failed[key] = f"not installed: {one_line(exc)}"
            log(f"{key}: {failed[key]}")
    return failed


# ------------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_echo_child(pid: int) -> bool:
    return ECHO in cmdline(pid)  # the child itself, or the shell that supergateway starts it with


def rss_or_zero(pid: int) -> float:
    try:
        return bench_gateway.rss_mib(pid)
    except (OSError, BenchError):
        return 0.0  # exited meanwhile


def all_descendants(pid: int) -> list[int]:
    """Pids below ``pid``, with room for stateful supergateway's thousands (a shell and a child per
    session)."""
    return bench_gateway.descendants(pid, limit=20_000)


def mem_available_mib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


class Instance:
    """One running server: its process, port and one MCP endpoint per child."""

    def __init__(
        self,
        key: str,
        proc: subprocess.Popen[bytes],
        port: int,
        paths: list[str],
        prefixes: list[str],
        err: str = "",
    ) -> None:
        self.key, self.proc, self.port, self.paths, self.prefixes, self.err = (
            key,
            proc,
            port,
            paths,
            prefixes,
            err,
        )

    def conn(self, child: int = 0) -> HttpConn:
        c = HttpConn(self.port)
        c.reopen_after = REOPEN_AFTER_S.get(self.key)  # type: ignore[attr-defined]
        used(c)
        if self.paths[child] != "/mcp":
            c.head = c.head.replace("POST /mcp ", f"POST {self.paths[child]} ", 1)
        return c

    def tool(self, name: str, child: int = 0) -> str:
        return self.prefixes[child] + name

    def alive(self) -> bool:
        return self.proc.poll() is None

    def why(self) -> str:
        lines: list[str] = []
        if self.err:
            try:
                with open(self.err, errors="replace") as f:
                    lines = f.read().strip().splitlines()[-3:]
            except OSError:
                pass
        state = "running" if self.alive() else f"exited with {self.proc.returncode}"
        return state + (": " + " / ".join(lines) if lines else "")

    def rss(self) -> tuple[float, int, float]:
        """(server MiB: the process and its helpers; echo children running; their MiB with any shell
        they were started through)."""
        server = rss_or_zero(self.proc.pid)
        n_echo, echo = 0, 0.0
        for pid in all_descendants(self.proc.pid):
            if is_echo_child(pid):
                n_echo += not cmdline(pid).startswith(("/bin/sh ", "sh "))
                echo += rss_or_zero(pid)
            else:
                server += rss_or_zero(pid)
        return server, n_echo, echo

    def stop(self) -> None:
        kids = all_descendants(self.proc.pid) if self.alive() else []
        try:
            self._stop()
        finally:
            for pid in kids:  # an echo child left behind (checked by its command line: pids get reused)
                if is_echo_child(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass

    def _stop(self) -> None:
        if self.key.startswith("portero") and self.alive():
            # Portero drains for up to hypercorn's graceful_timeout (5 s) on SIGTERM once it has served a
            # `Connection: close` request (bench_gateway's health check sends one); a second SIGTERM
            # (bench_gateway.stop's) cuts the drain short.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        bench_gateway.stop(self.proc)


def start_portero(tmp: str, children: int) -> Instance:
    base = tempfile.mkdtemp(prefix="portero-", dir=tmp)
    more = "".join(
        f'[[mcp]]\nname = "echo{i}"\ncommand = {json.dumps(CHILD[0])}\nargs = [{json.dumps(ECHO)}]\n'
        for i in range(2, children + 1)
    )
    gw = bench_gateway.Gateway(base, CHILD, more)
    prefixes = ["echo__"] + [f"echo{i}__" for i in range(2, children + 1)]
    return Instance("portero", gw.proc, gw.port, ["/mcp"] * children, prefixes)


def start_mcp_proxy(tmp: str, children: int) -> Instance:
    port = free_port()
    argv = [mcp_proxy_exe(), "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    if children == 1:
        argv += ["--", *CHILD]
        paths = ["/mcp"]
    else:
        for i in range(1, children + 1):
            argv += ["--named-server", f"echo{i}", shlex.join(CHILD)]
        paths = [f"/servers/echo{i}/mcp" for i in range(1, children + 1)]
    return spawn_peer("mcp-proxy", tmp, argv, port, paths)


def start_supergateway(tmp: str, children: int) -> Instance:
    if children != 1:
        raise NotSupported("fronts one --stdio command per process")
    port = free_port()
    argv = [
        "node",
        "--require",
        os.path.join(PEERS, "loopback.cjs"),
        supergateway_js(),
        "--stdio",
        shlex.join(CHILD),
        "--outputTransport",
        "streamableHttp",
        "--stateful",
        "--port",
        str(port),
        "--logLevel",
        "none",
    ]
    return spawn_peer("supergateway", tmp, argv, port, ["/mcp"])


def spawn_peer(key: str, tmp: str, argv: list[str], port: int, paths: list[str]) -> Instance:
    err = tempfile.mktemp(prefix=f"{key}-", suffix=".stderr", dir=tmp)
    with open(err, "wb") as f:
        proc = bench_gateway.spawn(argv, cwd=BENCH, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    return Instance(key, proc, port, paths, [""] * len(paths), err)


class NotSupported(Exception):
    pass


class RulesUnavailable(Exception):
    """The step's other figures are in .values; the Portero with rules could not be measured."""

    def __init__(self, values: dict[str, float], why: str) -> None:
        super().__init__(why)
        self.values = values


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:240] or type(exc).__name__


STARTERS: dict[str, Callable[[str, int], Instance]] = {
    "portero": start_portero,
    "mcp-proxy": start_mcp_proxy,
    "supergateway": start_supergateway,
}


# ------------------------------------------------------------------------------- calls
def echo_call(tool: str, i: int) -> dict[str, Any]:
    return {"name": tool, "arguments": {"text": f"hello {i}"}}


def doc_args() -> dict[str, Any]:
    return bench_anonymize_gateway.doc_params()["arguments"]


def session(inst: Instance, child: int = 0) -> HttpConn:
    c = inst.conn(child)
    c.initialize()
    return c


def used(*conns: HttpConn) -> None:
    for c in conns:
        c.used_at = now()  # type: ignore[attr-defined]


def ensure_open(c: HttpConn) -> None:
    """Before a step, outside the timing: reopen a keep-alive connection the server closed, and, for a
    server that closes idle connections after 5 s (node, uvicorn), one idle for over REOPEN_AFTER_S, so
    that a request is not sent just as the server closes (it would be reset). The MCP session is not
    tied to the connection, so it carries on over the new one. Portero (75 s) is left alone: it does
    not always notice a client closing an idle connection (CLOSE-WAIT), and such connections count
    against its limit of 512 until they time out."""
    reopen_after = getattr(c, "reopen_after", None)
    if reopen_after is not None and now() - getattr(c, "used_at", 0.0) > reopen_after:
        c.sock.close()
        c.sock = c._connect()
        c.buf.clear()
        c.reconnects += 1
        used(c)
        return
    c.sock.setblocking(False)
    try:
        closed = c.sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        closed = False
    except OSError:
        closed = True
    c.sock.setblocking(True)
    if closed:
        c.sock.close()
        c.sock = c._connect()
        c.buf.clear()
        c.reconnects += 1
        used(c)


def initialize_msg() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": bench_gateway.PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        },
    }


def open_sessions(conns: list[HttpConn], total: int, guard: Callable[[int], None] | None = None) -> int:
    """Opens ``total`` MCP sessions over the connections, all connections at once with one request in
    flight on each: initialize, then notifications/initialized (HttpConn.initialize, in parallel). A
    connection keeps the last session it opened. ``guard(n)`` may stop the loop by raising."""
    sel = selectors.DefaultSelector()
    phase: dict[int, str] = {}
    started = opened = 0

    def begin(c: HttpConn) -> None:
        nonlocal started
        c.session = ""
        phase[id(c)] = "initialize"
        c.sock.sendall(c.encode(initialize_msg()))
        started += 1

    try:
        for c in conns:
            ensure_open(c)
            c.sock.setblocking(False)
            sel.register(c.sock, selectors.EVENT_READ, c)
            if started < total:
                begin(c)
        deadline = now() + STEP_DEADLINE_S
        while phase:
            if now() > deadline:
                raise BenchError(f"stopped at {opened} sessions: over {STEP_DEADLINE_S:.0f} s")
            for key, _ in sel.select(timeout=5.0):
                c = key.data
                try:
                    data = c.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    if id(c) not in phase:  # done, and closed by the server while idle: fine
                        sel.unregister(c.sock)
                        continue
                    raise BenchError(f"the server closed a connection after {opened} sessions")
                c.buf += data
                r = c.parse()
                if r is None:
                    continue
                status, headers, body = r
                if headers.get("connection", "").lower() == "close":
                    sel.unregister(c.sock)
                    c.after(headers)
                    sel.register(c.sock, selectors.EVENT_READ, c)
                if phase[id(c)] == "initialize":
                    c.message(status, headers, body)  # raises unless a 200 answer
                    c.session = headers.get("mcp-session-id", "")
                    if not c.session:
                        raise BenchError("no Mcp-Session-Id in the initialize answer")
                    phase[id(c)] = "initialized"
                    c.sock.sendall(c.encode({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                    continue
                if status != 202:
                    raise BenchError(f"notifications/initialized answered {status}: {body[:200]!r}")
                del phase[id(c)]
                opened += 1
                if guard:
                    guard(opened)
                if started < total:
                    begin(c)
                else:
                    sel.unregister(c.sock)
        return opened
    finally:
        sel.close()
        for c in conns:
            c.sock.setblocking(True)
        used(*conns)


def first_ok(try_once: Callable[[], None], t0: float, alive: Callable[[], bool], what: str) -> float:
    """Retries try_once (bounded) until it succeeds; returns the seconds since t0."""
    last = ""
    for _ in range(20_000):
        try:
            try_once()
            return now() - t0
        except (OSError, BenchError, ValueError, KeyError, IndexError) as exc:
            last = str(exc)[:120]
        if not alive():
            raise BenchError(f"{what}: the server exited ({last})")
        if now() - t0 > 60:
            raise BenchError(f"{what}: no successful call within 60 s ({last})")
        time.sleep(0.005)
    raise BenchError(f"{what}: no successful call ({last})")


def sequential(c: HttpConn, tool: str, n: int) -> list[float]:
    lat = []
    deadline = now() + STEP_DEADLINE_S
    for i in range(n):
        t = now()
        r = c.call(echo_call(tool, i))
        lat.append(now() - t)
        bench_gateway.check_echo(r, i)
        if now() > deadline:
            raise BenchError("sequential phase overran its deadline")
    used(c)
    return lat


def concurrent(conns: list[HttpConn], tool: str, n: int) -> tuple[float, list[float]]:
    """n calls spread over the connections (each its own MCP session), one in flight on each."""
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    state: dict[int, tuple[float, int]] = {}
    issued = 0

    def send(c: HttpConn) -> None:
        nonlocal issued
        state[id(c)] = (now(), issued)
        c.sock.sendall(c.encode(c.tool_request(echo_call(tool, issued))))
        issued += 1

    t0 = now()
    try:
        for c in conns:
            c.sock.setblocking(False)
            if issued < n:
                send(c)
            sel.register(c.sock, selectors.EVENT_READ, c)
        deadline = t0 + STEP_DEADLINE_S
        while state:
            if now() > deadline:
                raise BenchError(f"{len(conns)} sessions: phase overran its deadline")
            for key, _ in sel.select(timeout=5.0):
                c = key.data
                try:
                    data = c.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    raise BenchError("the server closed a connection under load")
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
                msg = c.message(*r)
                if "result" not in msg:
                    raise BenchError(f"tools/call failed: {str(msg)[:200]}")
                bench_gateway.check_echo(msg["result"], i)
                if issued < n:
                    send(c)
        return n / (now() - t0), lat
    finally:
        sel.close()
        for c in conns:
            c.sock.setblocking(True)
        used(*conns)


def timed_calls(call: Callable[[], dict[str, Any]], n: int, check: Callable[[str], None]) -> list[float]:
    lat = []
    deadline = now() + STEP_DEADLINE_S
    for _ in range(n):
        t = now()
        r = call()
        lat.append(now() - t)
        if r.get("isError"):
            raise BenchError(f"tool error: {str(r)[:200]}")
        if now() > deadline:
            raise BenchError("phase overran its deadline")
    check(r["content"][0]["text"])
    return lat


def check_big(text: str) -> None:
    if len(text) != KB * 1024:
        raise BenchError(f"big result of {len(text)} characters")


def check_doc_plain(text: str) -> None:
    bench_anonymize_gateway.check_doc("A", text)  # no rule: every real value, no fake


def check_doc_rules(text: str) -> None:
    bench_anonymize_gateway.check_doc("B", text)  # 1,000 rules: every fake, no real value


# ------------------------------------------------------------------------------- the setups
class Setup:
    """A setup's long-lived instance with its sessions; fresh instances for start-up and RSS."""

    def __init__(self, key: str, tmp: str, args: argparse.Namespace) -> None:
        self.key, self.tmp, self.args = key, tmp, args
        self.child: bench_gateway.StdioChild | None = None
        self.inst: Instance | None = None
        self.rules: Instance | None = None
        self.seq: HttpConn | None = None
        self.conns: list[HttpConn] = []
        self.rules_error = ""
        self.rules_thread: threading.Thread | None = None
        if key == "direct":
            self.child = bench_gateway.StdioChild(CHILD)
            return
        self.inst = STARTERS[key](tmp, 1)
        first_ok(lambda: self._first_session(), now(), self.inst.alive, f"{key} start")
        self.conns = [self.inst.conn() for _ in range(max(LEVELS))]
        open_sessions(self.conns, len(self.conns))
        if key == "portero":
            # Loading 1,000 rules takes Portero a while (15-30 s here, most of it checking the config). With
            # --quick it starts in a thread while the other setups start and warm up, and is waited for
            # (wait_rules) before the rounds begin; this may push it past bench_gateway.Gateway's 30 s.
            if args.quick:
                self.rules_thread = threading.Thread(target=self.start_rules, daemon=True)
                self.rules_thread.start()
            else:
                self.start_rules()

    def start_rules(self) -> None:
        """A second Portero with 1,000 [[replacements]] whose real values are in the `doc` result; if it
        cannot start, only its figure is missing."""
        try:
            a = bench_anonymize_gateway
            gw = a.Gateway(tempfile.mkdtemp(dir=self.tmp), "rules", a.N_RULES)
            self.rules = Instance("portero-rules", gw.proc, gw.port, ["/mcp"], ["echo__"])
            self.rules_conn = gw.conn
            used(gw.conn)
            check_doc_rules(
                gw.conn.call({"name": "echo__doc", "arguments": doc_args()})["content"][0]["text"]
            )
        except ERRORS as exc:
            why = one_line(exc)
            if why.endswith(":"):
                why += " no `listening` line within bench_gateway.Gateway's 30 s"
            self.rules_error = f"Portero with 1,000 rules: {why}"
            log(self.rules_error)
            if self.rules is not None:
                self.rules.stop()
                self.rules = None

    def _first_session(self) -> None:
        assert self.inst is not None
        c = session(self.inst)
        bench_gateway.check_echo(c.call(echo_call(self.inst.tool("echo"), 0)), 0)
        self.seq = c
        used(c)

    def alive(self) -> str:
        """'' if the long-lived instances run, else why not."""
        for inst in (self.inst, self.rules):
            if inst is not None and not inst.alive():
                return f"{inst.key} {inst.why()}"
        return ""

    def reopen(self) -> None:
        for c in [self.seq, *self.conns] + ([self.rules_conn] if self.rules else []):
            if c is not None:
                ensure_open(c)

    # -- steps: each returns {metric: value}
    def wait_rules(self) -> None:
        """Waits for the Portero with rules (if any) and warms it up."""
        if self.rules_thread is not None:
            self.rules_thread.join(90)
            if self.rules_thread.is_alive():
                self.rules_error = "Portero with 1,000 rules: not up within 90 s"
                return
        if self.rules is not None:
            rc = self.rules_conn
            timed_calls(lambda: rc.call({"name": "echo__doc", "arguments": doc_args()}), 2, check_doc_rules)
            used(rc)

    def warm(self) -> dict[str, float]:
        n = max(50, self.args.calls // 10)
        phases: list[Callable[[], object]] = [lambda: self.step_seq(n)]
        phases += [lambda k=k: self.step_conc(k, max(n, 2 * k)) for k in LEVELS]
        phases += [lambda: self.step_big(2), lambda: self.step_doc(2, rules=False)]
        for phase in phases:
            self.reopen()
            try:
                phase()
            except RulesUnavailable:
                pass  # reported with the figures
        return {}

    def step_seq(self, n: int) -> dict[str, float]:
        if self.child is not None:
            lat = bench_gateway.direct_sequential(self.child, n)
        else:
            assert self.seq is not None and self.inst is not None
            lat = sequential(self.seq, self.inst.tool("echo"), n)
        return {"seq.p50": pct(lat, 50), "seq.p99": pct(lat, 99)}

    def step_conc(self, k: int, n: int) -> dict[str, float]:
        if self.child is not None:
            rate, lat = bench_gateway.direct_concurrent(self.child, n, k)
        else:
            assert self.inst is not None
            rate, lat = concurrent(self.conns[:k], self.inst.tool("echo"), n)
        return {f"c{k}.rate": rate, f"c{k}.p99": pct(lat, 99)}

    def step_big(self, n: int) -> dict[str, float]:
        if self.child is not None:
            lat = bench_gateway.direct_big(self.child, n, KB)
        else:
            assert self.seq is not None and self.inst is not None
            seq, tool = self.seq, self.inst.tool("big")
            lat = timed_calls(lambda: seq.call({"name": tool, "arguments": {"kb": KB}}), n, check_big)
            used(seq)
        return {"big.p50": pct(lat, 50)}

    def step_doc(self, n: int, rules: bool = True) -> dict[str, float]:
        if self.child is not None:
            child = self.child
            lat = timed_calls(
                lambda: child.call("tools/call", {"name": "doc", "arguments": doc_args()}), n, check_doc_plain
            )
            return {"doc.p50": pct(lat, 50)}
        assert self.seq is not None and self.inst is not None
        seq, tool = self.seq, self.inst.tool("doc")
        out = {
            "doc.p50": pct(
                timed_calls(lambda: seq.call({"name": tool, "arguments": doc_args()}), n, check_doc_plain), 50
            )
        }
        used(seq)
        if not rules:
            return out
        if self.rules_error:
            raise RulesUnavailable(out, self.rules_error)
        if self.rules is not None:
            rc = self.rules_conn
            lat = timed_calls(
                lambda: rc.call({"name": "echo__doc", "arguments": doc_args()}), n, check_doc_rules
            )
            out["doc_rules.p50"] = pct(lat, 50)
            used(rc)
        return out

    def step_start3(self) -> dict[str, float]:
        """Start with three children; time to the first successful call, and to a call through each."""
        if self.child is not None:
            t0 = now()
            kids, first = [], 0.0
            try:
                for i in range(3):
                    kids.append(bench_gateway.StdioChild(CHILD))
                    bench_gateway.check_echo(kids[-1].call("tools/call", echo_call("echo", 0)), 0)
                    if i == 0:
                        first = now() - t0
                return {"start3.first": first * 1000, "start3.all": (now() - t0) * 1000}
            finally:
                for k in kids:
                    bench_gateway.stop(k.proc)
        t0 = now()
        inst = STARTERS[self.key](self.tmp, 3)
        try:
            out = {}
            for i in range(3):

                def once(i: int = i) -> None:
                    c = session(inst, i)
                    try:
                        bench_gateway.check_echo(c.call(echo_call(inst.tool("echo", i), 0)), 0)
                    finally:
                        c.sock.close()

                dt = first_ok(once, t0, inst.alive, f"{self.key} with 3 children")
                if i == 0:
                    out["start3.first"] = dt * 1000
            out["start3.all"] = (now() - t0) * 1000
            return out
        finally:
            inst.stop()

    def step_rss(self, n_sessions: int) -> dict[str, float]:
        """A fresh instance: RSS idle after start, then with n_sessions idle sessions."""
        if self.child is not None:
            return {}
        inst = STARTERS[self.key](self.tmp, 1)
        pool: list[HttpConn] = []
        try:
            first_ok(lambda: pool.append(session(inst)), now(), inst.alive, f"{self.key} start")
            time.sleep(1.0)  # let start-up settle
            pool[0].sock.close()
            pool.clear()
            idle, _, _ = inst.rss()
            pool.extend(inst.conn() for _ in range(IDLE_POOL))

            def guard(n: int) -> None:
                if n % 20 == 0 and mem_available_mib() < MEM_FLOOR_MIB:
                    raise BenchError(
                        f"stopped at {n} sessions: less than {MEM_FLOOR_MIB} MiB of memory available"
                    )

            open_sessions(pool, n_sessions - 1, guard)  # and the one that saw it up
            time.sleep(0.5)
            busy, n_echo, echo = inst.rss()
            if not inst.alive():
                raise BenchError(f"{self.key} {inst.why()}")
            return {"rss.idle": idle, "rss.sessions": busy, "echo.count": n_echo, "echo.rss": echo}
        finally:
            for c in pool:
                c.sock.close()
            inst.stop()
            time.sleep(2.0)  # let the machine settle (supergateway: a thousand processes ending)

    def close(self) -> None:
        if self.rules_thread is not None:
            self.rules_thread.join(2)  # it spawns at once; stop_all stops what it started
        for c in [self.seq, *self.conns]:
            if c is not None:
                c.sock.close()
        for inst in (self.inst, self.rules):
            if inst is not None:
                inst.stop()
        if self.child is not None:
            bench_gateway.stop(self.child.proc)


# ------------------------------------------------------------------------------- the run
Step = tuple[str, list[str], bool, Callable[[Setup], dict[str, float]]]  # label, metrics, on main, fn
ERRORS = (BenchError, NotSupported, OSError, ValueError, KeyError, IndexError)


def steps(args: argparse.Namespace) -> list[Step]:
    n, big = args.calls, args.big_calls
    out: list[Step] = [("sequential", ["seq.p50", "seq.p99"], True, lambda s: s.step_seq(n))]
    for k in LEVELS:
        out.append(
            (f"{k} sessions", [f"c{k}.rate", f"c{k}.p99"], True, lambda s, k=k: s.step_conc(k, max(n, 2 * k)))
        )
    out += [
        ("1 MB big", ["big.p50"], True, lambda s: s.step_big(big)),
        ("1 MB doc", ["doc.p50", "doc_rules.p50"], True, lambda s: s.step_doc(big)),
        ("start, 3 children", ["start3.first", "start3.all"], False, lambda s: s.step_start3()),
        (
            f"RSS, {args.idle_sessions} sessions",
            ["rss.idle", "rss.sessions", "echo.count", "echo.rss"],
            False,
            lambda s: s.step_rss(args.idle_sessions),
        ),
    ]
    return out


def run(args: argparse.Namespace, unavailable: dict[str, str]) -> dict[str, Any]:
    res: dict[str, dict[str, list[float]]] = {k: {} for k in args.setups}
    na: dict[str, dict[str, str]] = {k: {} for k in args.setups}  # metric ("*": all) -> why not
    broken: dict[str, str] = {}  # setups whose long-lived instance can no longer be measured
    setups: dict[str, Setup] = {}
    t_start = now()
    with tempfile.TemporaryDirectory(prefix="portero-bench-peers-") as tmp:
        try:
            for key in args.setups:
                if key in unavailable:
                    na[key]["*"] = unavailable[key]
                    continue
                t = now()
                try:
                    setups[key] = Setup(key, tmp, args)
                    setups[key].warm()
                    log(f"{key}: up with {max(LEVELS) + 1} sessions, warm ({now() - t:.1f} s)")
                except ERRORS as exc:
                    na[key]["*"] = f"did not start or failed its warm-up: {one_line(exc)}"
                    log(f"{key}: {na[key]['*']}")
                    setups.pop(key, None)
            for s in setups.values():
                try:
                    s.wait_rules()
                except ERRORS as exc:
                    s.rules_error = f"Portero with 1,000 rules: {one_line(exc)}"
                    log(s.rules_error)
            keys = list(setups)
            for rnd in range(args.rounds):
                order = keys[rnd % len(keys) :] + keys[: rnd % len(keys)] if keys else []
                for label, metrics, on_main, fn in steps(args):
                    for key in order:
                        s = setups[key]
                        if on_main and key in broken:
                            continue
                        why = s.alive()
                        if why and on_main:
                            broken[key] = why
                            for m in metrics:
                                na[key].setdefault(m, why)
                            continue
                        t = now()
                        try:
                            if on_main:
                                s.reopen()
                            try:
                                values = fn(s)
                            except RulesUnavailable as exc:
                                values = exc.values
                                na[key].setdefault("doc_rules.p50", one_line(exc))
                            for m, v in values.items():
                                res[key].setdefault(m, []).append(v)
                        except ERRORS as exc:
                            why = one_line(exc)
                            for m in metrics:
                                na[key].setdefault(m, why)
                            if on_main and not isinstance(exc, NotSupported):
                                broken[key] = why  # connections may hold half an answer: stop using them
                            log(f"round {rnd + 1} {label} {key}: {why}")
                            continue
                        log(f"round {rnd + 1} {label} {key}: {now() - t:.1f} s")
            reconnects = {k: sum(c.reconnects for c in [s.seq, *s.conns] if c) for k, s in setups.items()}
        finally:
            for s in setups.values():
                try:
                    s.close()
                except ERRORS as exc:
                    log(f"closing {s.key}: {exc}")
    med = {k: {m: statistics.median(v) for m, v in ms.items()} for k, ms in res.items()}
    return {
        "median": med,
        "rounds": res,
        "na": na,
        "reconnects": reconnects,
        "elapsed_s": now() - t_start,
    }


# ------------------------------------------------------------------------------- the report
def node_version() -> str:
    try:
        return subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def portero_version() -> str:
    """The commit measured, and how many files under portero/ differ from it (others' work in progress)."""
    try:
        head = subprocess.run(
            ["git", "-C", bench_gateway.REPO, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", bench_gateway.REPO, "status", "--porcelain", "--", "portero"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (f" with {len(dirty)} uncommitted files under portero/" if dirty else "")


def fmt(v: float, digits: int) -> str:
    return f"{v:,.{digits}f}"


def report(out: dict[str, Any], args: argparse.Namespace) -> str:
    med, na = out["median"], out["na"]
    keys = list(args.setups)
    peers = [k for k in keys if k in PEER_KEYS]
    notes: dict[str, int] = {}

    def why(key: str, m: str) -> str:
        reason = na[key].get("*") or na[key].get(m)
        if not reason:
            return "–"
        n = notes.setdefault(reason, len(notes) + 1)
        return f"n/a [{n}]"

    def cell(key: str, m: str, digits: int) -> str:
        v = med[key].get(m)
        return why(key, m) if v is None else fmt(v, digits)

    n_idle = args.idle_sessions
    rows: list[tuple[str, str, str, int]] = [
        ("sequential p50 ms", "seq.p50", "low", 2),
        ("sequential p99 ms", "seq.p99", "low", 2),
    ]
    for k in LEVELS:
        s = "session" if k == 1 else "sessions"
        rows += [(f"{k} {s}: calls/s", f"c{k}.rate", "high", 0), (f"{k} {s}: p99 ms", f"c{k}.p99", "low", 2)]
    rows += [
        ("1 MB result (`big`), no rules: p50 ms", "big.p50", "low", 1),
        ("1 MB prose result with 1,000 real values (`doc`), no rules: p50 ms", "doc.p50", "low", 1),
        ("same `doc` result, Portero with 1,000 `[[replacements]]`: p50 ms ¹", "doc_rules.p50", "low", 1),
        ("RSS MiB right after start (server and its helpers, not the echo child)", "rss.idle", "low", 1),
        (f"RSS MiB with {n_idle:,} idle sessions ²", "rss.sessions", "low", 1),
        (f"echo children running with {n_idle:,} idle sessions (their RSS MiB)", "echo", "info", 0),
        ("start → first successful call, 3 children: ms", "start3.first", "low", 0),
        ("start → a successful call through each of the 3 children: ms", "start3.all", "low", 0),
    ]
    lines = [
        "| metric (median of rounds) | " + " | ".join(TITLES[k] for k in keys) + " | Portero ÷ best peer |",
        "|---|" + "---|" * len(keys) + "---|",
    ]
    for name, m, better, digits in rows:
        cells = []
        for k in keys:
            if m == "echo":
                c, r = med[k].get("echo.count"), med[k].get("echo.rss")
                cells.append(
                    "–" if k == "direct" else why(k, "echo.count") if c is None else f"{c:,.0f} ({r:,.0f})"
                )
            elif m == "doc_rules.p50" and k != "portero":
                cells.append(why(k, m) if "*" in na[k] else "no rules" if k in PEER_KEYS else "–")
            else:
                cells.append("–" if k == "direct" and m.startswith("rss.") else cell(k, m, digits))
        ratio = "–"
        if better != "info" and "portero" in keys:
            pm = "doc.p50" if m == "doc_rules.p50" else m
            vals = [med[k][pm] for k in peers if pm in med[k] and "*" not in na[k]]
            mine = med["portero"].get(m)
            if vals and mine is not None:
                best = min(vals) if better == "low" else max(vals)
                ratio = f"{mine / best:.2f}×" if best else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    lines += [
        "",
        "Lower is better for ms and MiB, higher for calls/s; the ratio is Portero's figure over the best "
        "peer's for that metric. Direct stdio at k sessions: k requests in flight on its one pipe. "
        "Portero checks a bearer token and commits an audit record per call; the peers do neither.",
        "¹ Its ratio compares Portero with 1,000 rules to the best peer passing the same result through "
        "untouched (the peers have no such feature).",
        f"² Opened over {IDLE_POOL} keep-alive connections (initialize + notifications/initialized each) "
        "on a fresh instance, then read. Stateful supergateway starts one echo child per session (next row).",
        "Before a step, the peers' keep-alive connections idle for over 3 s are reopened (node and uvicorn "
        "close them after 5 s idle; the MCP sessions carry on); Portero's are kept.",
    ]
    lines += [f"[{n}] {reason}" for reason, n in notes.items()]
    cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable), *sys.argv])
    head = [
        f"Command: `{cmd}`",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {out['elapsed_s']:.0f} s; python "
        f"{platform.python_version()}, node {node_version()}, {os.cpu_count()} CPUs, Portero at "
        f"{portero_version()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end; rounds {args.rounds}, {args.calls:,} calls per "
        f"latency/throughput figure, {args.big_calls} 1 MB calls per figure.",
        "",
    ]
    return "\n".join(head + lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    ap.add_argument(
        "--calls", type=int, default=2000, help="calls per latency/throughput figure (default 2000)"
    )
    ap.add_argument("--big-calls", type=int, default=20, help="1 MB calls per figure (default 20)")
    ap.add_argument(
        "--idle-sessions", type=int, default=1000, help="idle sessions for the RSS figure (default 1000)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round, 200 calls, 3 MB calls, 100 idle sessions"
    )
    ap.add_argument(
        "--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}"
    )
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.calls, args.big_calls, args.idle_sessions = 1, 200, 3, 100
    args.setups = [k.strip() for k in args.setups.split(",") if k.strip()]
    if any(k not in SETUPS for k in args.setups) or not args.setups:
        ap.error(f"--setups: choose from {','.join(SETUPS)}")
    if min(args.rounds, args.calls, args.big_calls, args.idle_sessions) < 1:
        ap.error("--rounds, --calls, --big-calls and --idle-sessions must be positive")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    t0 = now()
    try:
        unavailable = install_peers() if any(k in PEER_KEYS for k in args.setups) else {}
        out = run(args, unavailable)
    except BenchError as exc:
        log(str(exc))
        return 1
    finally:
        bench_gateway.stop_all()
    out["total_s"] = now() - t0
    out["env"] = {
        "argv": sys.argv,
        "python": platform.python_version(),
        "node": node_version(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items()},
    }
    print(report(out, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    log(f"done in {out['total_s']:.0f} s (installs included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
