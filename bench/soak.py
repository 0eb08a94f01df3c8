"""Soak: many client sessions call tools through a real gateway while its child is killed and its
config reloaded, for a bounded time; then the books are checked against the audit log.

Run by hand from the repository root:

    .venv/bin/python bench/soak.py [--seconds 40] [--clients 64] [--kill-every 4] [--hup-every 2]

What runs: ``python -m portero serve`` (bearer auth, audit to SQLite as in production) in front of one
child, ``tests/servers/stdio_server.py --pidfile``; ``--clients`` threads, each its own MCP session on
its own keep-alive HTTP/1.1 connection (a minimal client over a raw socket), calling ``echo`` (most
calls), ``sleep`` (20-100 ms, so calls are in flight when the child dies), ``whoami`` and
``delete_thing`` (which a reload alternately denies and allows) until the time is up. Meanwhile a
fault thread SIGKILLs the child (its pid from the pidfile, once the gateway reports it ready again)
every ``--kill-every`` seconds, and rewrites the config (policy rule and anonymization value
flipped) and sends SIGHUP every ``--hup-every`` seconds.

At the end it prints: tools/call requests sent (fully written), answers by kind (ok, tool error,
JSON-RPC error, HTTP error / no answer), faults injected, the audit rows in ``data_dir/gateway.db``
(``SELECT COUNT(*) FROM audit``, and by outcome) and whether they equal the tools/call sent, and the
gateway's RSS before and after. A mismatch is reported, not hidden: README promises one audit row
per tools/call. Exit status 0 unless the run itself could not be carried out.

Only 127.0.0.1 is used; every loop is bounded by the deadline; every process started here (the
gateway, and through it the child) is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(REPO, "tests", "servers", "stdio_server.py")
TOKEN = "soak-token-0123456789abcdef"
PROTOCOL = "2025-06-18"
IO_TIMEOUT = 30.0  # one request's socket timeout (call_timeout is 10 s)


class SoakError(Exception):
    pass


# ------------------------------------------------------------------------------- the gateway
def write_config(path: str, data_dir: str, pidfile: str, flip: bool) -> None:
    """The config; ``flip`` alternates what a SIGHUP reload changes (a policy rule, a replacement)."""
    args = json.dumps([CHILD, "--name", "soak", "--pidfile", pidfile])
    text = (
        "[server]\n"
        'host = "127.0.0.1"\nport = 0\nauth = "bearer"\n'
        f'bearer_token = "{TOKEN}"\n'
        f"data_dir = {json.dumps(data_dir)}\n"
        'log_level = "info"\n'
        "[policies]\n"
        'default = "allow"\n'
        "[policies.rules]\n"
        f'"soak/delete_thing" = "{"deny" if flip else "allow"}"\n'
        "[[replacements]]\n"
        'fake = "John Doe"\n'
        f'real = "{"Jane Realname" if flip else "Janet Othername"}"\n'
        "[[mcp]]\n"
        'name = "soak"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f"args = {args}\n"
        'call_timeout = "10s"\n'
    )
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # a reload never reads a half-written file


class Gateway:
    def __init__(self, tmp: str) -> None:
        self.tmp = tmp
        self.data_dir = os.path.join(tmp, "data")
        self.config = os.path.join(tmp, "portero.toml")
        self.pidfile = os.path.join(tmp, "child.pid")
        write_config(self.config, self.data_dir, self.pidfile, flip=False)
        venv_python = os.path.join(REPO, ".venv", "bin", "python")
        python = venv_python if os.path.exists(venv_python) else sys.executable
        self.proc = subprocess.Popen(
            [python, "-m", "portero", "serve", "--config", self.config],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def drain() -> None:  # keeps the pipe from filling up; notes the port
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if line.startswith("portero: listening on ") and not self.port:
                    self.port = int(line.rsplit(":", 1)[1].split("/")[0])
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60) or not self.port:
            self.stop()
            raise SoakError("the gateway did not start:\n" + "\n".join(self.lines[-20:]))

    def health(self) -> dict[str, Any]:
        req = (
            f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(req)
            data = b""
            for _ in range(10_000):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        return dict(json.loads(body))

    def child_state(self) -> tuple[str, int]:
        ch = self.health()["children"][0]
        return str(ch["state"]), int(ch["restarts"])

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.child_state()[0] == "ready":
                    return True
            except (OSError, ValueError, IndexError, KeyError):
                pass
            time.sleep(0.05)
        return False

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise SoakError("no VmRSS")

    def audit(self) -> tuple[int, dict[str, int]]:
        db = os.path.join(self.data_dir, "gateway.db")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            total = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
            by = dict(conn.execute("SELECT outcome, COUNT(*) FROM audit GROUP BY outcome").fetchall())
        return int(total), {str(k): int(v) for k, v in by.items()}

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # The child runs in its own process group (the gateway's doing): make sure it is gone too.
        pid = child_pid(self.pidfile)
        if pid is not None and is_our_child(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                print(f"soak: the child {pid} outlived the gateway; killed it", file=sys.stderr)
            except OSError:
                pass
        return self.proc.returncode


def child_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def is_our_child(pid: int) -> bool:
    """A live (not zombie) process running the soak's child script."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return CHILD.encode() in cmd and state != "Z"


# ------------------------------------------------------------------------------- a minimal client
class Conn:
    """One keep-alive HTTP/1.1 connection and one MCP session."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.rfile: Any = None
        self.session = ""
        self.next_id = 0

    def connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")

    def close(self) -> None:
        for thing in (self.rfile, self.sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        self.sock = self.rfile = None

    def send(self, msg: dict[str, Any]) -> None:
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        body = json.dumps(msg, separators=(",", ":")).encode()
        sid = f"Mcp-Session-Id: {self.session}\r\n" if self.session else ""
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n{sid}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)

    def receive(self) -> tuple[int, dict[str, str], bytes]:
        f = self.rfile
        status_line = f.readline(65537)
        if not status_line:
            raise ConnectionError("closed by the gateway")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        for _ in range(200):
            line = f.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = f.read(int(headers["content-length"]))
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            for _ in range(10_000_000):
                size = int(f.readline(1024).split(b";")[0], 16)
                if size == 0:
                    f.readline(1024)
                    break
                parts.append(f.read(size))
                f.readline(1024)
            body = b"".join(parts)
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()  # hypercorn ends a keep-alive connection after 1000 requests
        return status, headers, body

    def roundtrip(self, msg: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        self.send(msg)
        return self.receive()

    def initialize(self) -> None:
        self.session = ""
        status, headers, body = self.roundtrip(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "soak"}},
            }
        )
        if status != 200 or "mcp-session-id" not in headers:
            raise SoakError(f"initialize answered {status}: {body[:200]!r}")
        self.session = headers["mcp-session-id"]
        status, _, body = self.roundtrip({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if status != 202:
            raise SoakError(f"notifications/initialized answered {status}: {body[:200]!r}")


def final_message(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    if headers.get("content-type", "").startswith("text/event-stream"):
        data = [ln[5:].strip() for ln in body.decode().splitlines() if ln.startswith("data:")]
        data = [d for d in data if d]
        return dict(json.loads(data[-1]))
    return dict(json.loads(body))


# ------------------------------------------------------------------------------- the soak
class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()  # first words of error texts

    def add(self, kind: str, detail: str = "") -> None:
        with self.lock:
            self.counts[kind] += 1
            if detail:
                self.errors[f"{kind}: {detail[:70]}"] += 1


def pick_call(rng: random.Random, i: int) -> dict[str, Any]:
    r = rng.random()
    if r < 0.70:
        name, args = "soak__echo", {"text": f"hello {i} John Doe"}
    elif r < 0.85:
        name, args = "soak__sleep", {"seconds": rng.uniform(0.02, 0.1)}
    elif r < 0.95:
        name, args = "soak__delete_thing", {"what": f"thing {i}"}
    else:
        name, args = "soak__whoami", {}
    return {"name": name, "arguments": args}


def client(port: int, deadline: float, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    conn = Conn(port)
    try:
        for attempt in range(20):
            try:
                conn.initialize()
                break
            except (OSError, ValueError, SoakError) as exc:
                stats.add("initialize failed", str(exc))
                conn.close()
                time.sleep(0.1 * (attempt + 1))
        else:
            return
        i = 0
        while time.monotonic() < deadline:
            i += 1
            conn.next_id += 1
            msg = {"jsonrpc": "2.0", "id": conn.next_id, "method": "tools/call", "params": pick_call(rng, i)}
            try:
                conn.send(msg)
            except OSError as exc:  # not sent: not counted as a call
                stats.add("send failed", str(exc))
                conn.close()
                continue
            stats.add("sent")
            try:
                status, headers, body = conn.receive()
            except (OSError, ValueError) as exc:
                stats.add("http error", f"no answer: {exc.__class__.__name__}")
                conn.close()
                continue
            if status != 200:
                stats.add("http error", f"HTTP {status} {body[:60]!r}")
                if status == 404:  # the session is gone: start another, as a client would
                    try:
                        conn.initialize()
                    except (OSError, ValueError, SoakError) as exc:
                        stats.add("initialize failed", str(exc))
                        conn.close()
                continue
            try:
                answer = final_message(headers, body)
            except (ValueError, IndexError) as exc:
                stats.add("http error", f"unreadable body: {exc}")
                continue
            if "error" in answer:
                stats.add("json-rpc error", str(answer["error"].get("message", "")))
            elif answer.get("result", {}).get("isError"):
                texts = [c.get("text", "") for c in answer["result"].get("content", [])]
                stats.add("tool error", " ".join(texts))
                time.sleep(0.01)  # as a client would, instead of spinning on a server that is down
            else:
                stats.add("ok")
    finally:
        conn.close()


def faults(gw: Gateway, deadline: float, kill_every: float, hup_every: float, stats: Stats) -> None:
    next_kill = time.monotonic() + kill_every
    next_hup = time.monotonic() + hup_every / 2
    flip = False
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_kill:
            pid = child_pid(gw.pidfile)
            try:
                state, _ = gw.child_state()
            except (OSError, ValueError, KeyError, IndexError):
                state = "?"
            if state == "ready" and pid is not None and is_our_child(pid):
                os.kill(pid, signal.SIGKILL)
                stats.add("fault: SIGKILL child")
                next_kill = now + kill_every
            else:
                stats.add("kill skipped: child not ready")
                next_kill = now + 0.5
        if now >= next_hup:
            flip = not flip
            write_config(gw.config, gw.data_dir, gw.pidfile, flip)
            gw.proc.send_signal(signal.SIGHUP)
            stats.add("fault: SIGHUP reload")
            next_hup = now + hup_every
        time.sleep(0.05)


def run(args: argparse.Namespace) -> int:
    tmp = tempfile.mkdtemp(prefix="portero-soak-")
    gw = Gateway(tmp)
    stats = Stats()
    try:
        if not gw.wait_ready(60):
            raise SoakError("the child never became ready:\n" + "\n".join(gw.lines[-20:]))
        warm = Conn(gw.port)
        warm.initialize()
        for i in range(50):
            warm.next_id += 1
            warm.roundtrip(
                {
                    "jsonrpc": "2.0",
                    "id": warm.next_id,
                    "method": "tools/call",
                    "params": {"name": "soak__echo", "arguments": {"text": str(i)}},
                }
            )
        warm.close()
        warm_calls = 50
        rss_before = gw.rss_mib()
        rss_peak = rss_before
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        threads = [
            threading.Thread(target=client, args=(gw.port, deadline, stats, 1000 + n), daemon=True)
            for n in range(args.clients)
        ]
        threads.append(
            threading.Thread(
                target=faults, args=(gw, deadline, args.kill_every, args.hup_every, stats), daemon=True
            )
        )
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            time.sleep(1)
            rss_peak = max(rss_peak, gw.rss_mib())
            if gw.proc.poll() is not None:
                raise SoakError("the gateway died:\n" + "\n".join(gw.lines[-40:]))
        for t in threads:
            t.join(IO_TIMEOUT + 15)
        stuck = sum(t.is_alive() for t in threads)
        elapsed = time.monotonic() - t0
        gw.wait_ready(35)  # let the child come back, so the end state is comparable
        rss_after = gw.rss_mib()
        try:
            state, restarts = gw.child_state()
        except (OSError, ValueError, KeyError, IndexError):
            state, restarts = "?", -1
        audit_running, _ = gw.audit()
        code = gw.stop()
        audit_total, by_outcome = gw.audit()
    finally:
        gw.stop()

    c = stats.counts
    sent = c["sent"] + warm_calls
    answered = c["ok"] + c["tool error"] + c["json-rpc error"]
    reloads = sum("reloaded" in ln for ln in gw.lines)
    refused = sum("reload refused" in ln for ln in gw.lines)
    verdict = "yes" if audit_total == sent else f"NO ({audit_total - sent:+,} rows)"
    out = [
        f"soak: {args.clients} clients, {elapsed:.1f} s, kill every {args.kill_every} s, "
        f"SIGHUP every {args.hup_every} s; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end",
        "",
        "| measure | value |",
        "|---|---|",
        f"| tools/call sent (incl. {warm_calls} warm-up) | {sent:,} |",
        f"| answers: ok | {c['ok'] + warm_calls:,} |",
        f"| answers: tool error (isError) | {c['tool error']:,} |",
        f"| answers: JSON-RPC error | {c['json-rpc error']:,} |",
        f"| answers: HTTP error or no answer | {c['http error']:,} |",
        f"| requests not sent (socket error) / sessions that failed to start | {c['send failed']:,} / "
        f"{c['initialize failed']:,} |",
        f"| calls per second (answered) | {answered / elapsed:,.0f} |",
        f"| faults: child SIGKILLed | {c['fault: SIGKILL child']} (skipped while not ready: "
        f"{c['kill skipped: child not ready']}) |",
        f"| faults: SIGHUP reloads sent / logged 'reloaded' / refused | {c['fault: SIGHUP reload']} / "
        f"{reloads} / {refused} |",
        f"| child restarts (from /health) / state at the end | {restarts} / {state} |",
        f"| audit rows (gateway running, clients done) | {audit_running:,} |",
        f"| audit rows after the gateway stopped (exit {code}) | {audit_total:,} |",
        f"| audit rows by outcome | {', '.join(f'{k} {v:,}' for k, v in sorted(by_outcome.items()))} |",
        f"| audit rows == tools/call sent | {verdict} |",
        f"| gateway RSS MiB before / peak / after | {rss_before:.1f} / {rss_peak:.1f} / {rss_after:.1f} |",
        f"| client threads stuck at the end | {stuck} |",
        "",
        "Most frequent error texts:",
    ]
    for text, n in stats.errors.most_common(8):
        out.append(f"- {n:,} × {text}")
    print("\n".join(out))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--kill-every", type=float, default=4.0)
    ap.add_argument("--hup-every", type=float, default=2.0)
    args = ap.parse_args()
    if not (1 <= args.clients <= 512 and 1 <= args.seconds <= 3600):
        ap.error("--clients 1..512, --seconds 1..3600")
    try:
        return run(args)
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
