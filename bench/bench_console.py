"""The web console's audit page on a big audit table: store queries and HTTP page loads, 100,000 rows or few.

Run by hand from the repository root:

    .venv/bin/python bench/bench_console.py [--rows N] [--small-rows M] [--repeat R] [--requests Q]
                                            [--no-http] [--json FILE]

For each table size (N, default 100,000; M, default 1,000; and an empty table) it creates ``gateway.db`` with
``Store.open`` (the real schema) and fills ``audit`` in one bulk ``executemany``: ts spread evenly over the
last 30 days (ids in time order), 22 tools over 5 servers (files/read the most frequent), clients NULL
(the oldest 10%, recorded before clients existed), ``default``, ``laptop``, ``ci``; decisions allow 90%,
deny 5%, approved 4%, expired 0.6%, rejected 0.4% (refused outcomes for the last three of those; 3% of the
others end in error). One row, in the middle of the table, is the only call of ``admin/rotate_keys``.

1. Store: ``Store.audit_page`` (what the console calls, thread hop included) R times per filter (default 30):
   first page, a deep page, client, tool glob, a rare decision, time ranges, a filter matching 1 row.
   Two reference rows on the N-row table show what the chosen SQL avoids: the same 1-row tool filter through
   a Python ``glob_match`` SQL function, and a 30-day range on SQLite's own plan (the ``audit_ts`` index).
2. HTTP (skipped, with the reason, when the console is not there): ``python -m portero serve`` with
   ``[console] enabled = true`` on each prepared database (the bench echo child as its one server), the
   password set with ``portero console passwd`` from stdin, a login with httpx (GET /console/login, its
   hidden csrf, POST), then Q timed GETs (default 30) of /console/audit per filter and of /console/.

Figures are p50 / p95 / max in milliseconds (nearest rank). Only 127.0.0.1 is used; every process started
here is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import html.parser
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gateway  # noqa: E402
from bench_gateway import REPO, BenchError, now, pct, stop, stop_all  # noqa: E402

sys.path.insert(0, REPO)
import trio  # noqa: E402

from portero.core.policy import glob_match  # noqa: E402
from portero.store import Store  # noqa: E402

DAY = 86400.0
SPAN = 30 * DAY
PASSWORD = "bench-console-password-0123"
SERVERS = {
    "files": ["read", "write", "list", "stat", "delete"],
    "github": ["create_issue", "list_issues", "get_file", "create_pr", "search_code", "list_commits"],
    "postgres": ["query", "list_tables", "describe"],
    "slack": ["post_message", "list_channels", "search", "react"],
    "jira": ["create_ticket", "get_ticket", "transition", "comment"],
}
TOOLS = [f"{server}/{tool}" for server, tools in SERVERS.items() for tool in tools]
TOOL_WEIGHTS = [8 if t == "files/read" else 3 if t.startswith(("files/", "github/")) else 1 for t in TOOLS]
RARE_TOOL = "admin/rotate_keys"
COLUMNS = "ts, session, tool, arguments, decision, source, outcome, duration_ms, error, client"


# ------------------------------------------------------------------------------- the database
def build_db(path: str, n: int, t_end: float) -> None:
    """``gateway.db`` at ``path`` with the real schema and ``n`` audit rows ending at ``t_end``."""

    async def create() -> None:
        store = await Store.open(path)
        await store.aclose()

    trio.run(create)
    rnd = random.Random(16)
    start = t_end - SPAN
    rows = []
    for i in range(n):
        ts = start + (i + rnd.random()) * SPAN / n
        tool = rnd.choices(TOOLS, TOOL_WEIGHTS)[0]
        r = rnd.random()
        if r < 0.90:
            decision, source = "allow", "default"
        elif r < 0.95:
            decision, source = "deny", "rule"
        elif r < 0.99:
            decision, source = "approved", "admin"
        elif r < 0.996:
            decision, source = "expired", "timeout"
        else:
            decision, source = "rejected", "admin"
        if decision in ("deny", "expired", "rejected"):
            outcome, error, duration = "refused", f"refused: {decision}", 0.0
        elif rnd.random() < 0.03:
            outcome, error, duration = "error", "the server answered with an error", rnd.random() * 200
        else:
            outcome, error, duration = "ok", None, rnd.random() * 50
        if i < n // 10:
            client = None
        else:
            client = rnd.choices(["default", "laptop", "ci"], [50, 35, 15])[0]
        if i == n // 2:
            tool, decision, source, outcome, error = RARE_TOOL, "approved", "admin", "ok", None
        arguments = json.dumps({"path": f"/srv/projects/app/src/module_{i % 997}.py", "limit": 100})
        session = f"sess-{i // 40:06d}"
        rows.append((ts, session, tool, arguments, decision, source, outcome, duration, error, client))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(f"INSERT INTO audit ({COLUMNS}) VALUES ({', '.join('?' * 10)})", rows)
        conn.execute("UPDATE audit_watermark SET settled_below = ?", (n + 1,))  # every outcome is known
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def cases(t_end: float, oldest_id: int) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """(label, audit_page keyword arguments, the same as the console's query string)."""
    old = t_end - 10 * DAY
    return [
        ("first page, no filter", {}, {}),
        ("deep page (before = oldest id + 60)", {"before": oldest_id + 60}, {"before": str(oldest_id + 60)}),
        ("client = laptop (35%)", {"client": "laptop"}, {"client": "laptop"}),
        ("client = default (45%, NULL too)", {"client": "default"}, {"client": "default"}),
        ("tool = github/* (glob)", {"tool": "github/*"}, {"tool": "github/*"}),
        ("decision = rejected (0.4%)", {"decision": "rejected"}, {"decision": "rejected"}),
        ("last hour (since = 1h)", {"since": t_end - 3600}, {"since": "1h"}),
        (
            "1-hour window 10 days ago",
            {"since": old - 3600, "until": old},
            {"since": iso(old - 3600), "until": iso(old)},
        ),
        (
            "31 days, decision = rejected (wide range)",
            {"since": t_end - 31 * DAY, "until": t_end + 60, "decision": "rejected"},
            {"since": "31d", "until": iso(t_end + 60), "decision": "rejected"},
        ),
        ("tool = admin/* (1 row)", {"tool": "admin/*"}, {"tool": "admin/*"}),
        ("client = nobody (0 rows)", {"client": "nobody"}, {"client": "nobody"}),
    ]


def summary(lat: list[float]) -> dict[str, float]:
    return {"p50": pct(lat, 50), "p95": pct(lat, 95), "max": max(lat) * 1000}


# ------------------------------------------------------------------------------- 1. the store
def bench_store(path: str, t_end: float, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def run() -> None:
        store = await Store.open(path)
        try:
            for label, kwargs, _query in cases(t_end, 1):  # a fresh table: the oldest id is 1
                lat = []
                for _ in range(repeat):
                    t = now()
                    rows, next_before = await store.audit_page(**kwargs)
                    lat.append(now() - t)
                out[label] = {**summary(lat), "rows": len(rows), "more": next_before is not None}
        finally:
            await store.aclose()

    trio.run(run)
    return out


def bench_references(path: str, t_end: float, repeat: int) -> dict[str, Any]:
    """What audit_page's SQL avoids, timed with sqlite3 directly (no thread hop)."""
    columns = f"id, {COLUMNS}"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("portero_glob", 2, glob_match, deterministic=True)
    refs: list[tuple[str, str, tuple[Any, ...]]] = [
        (
            "(reference) tool = admin/* through a Python glob_match SQL function",
            f"SELECT {columns} FROM audit WHERE portero_glob(?, tool) ORDER BY id DESC LIMIT 51",
            ("admin/*",),
        ),
        (
            "(reference) 31 days, decision = rejected, SQLite's own plan (audit_ts)",
            f"SELECT {columns} FROM audit WHERE ts >= ? AND ts < ? AND decision = ?"
            " ORDER BY id DESC LIMIT 51",
            (t_end - 31 * DAY, t_end + 60, "rejected"),
        ),
    ]
    out: dict[str, Any] = {}
    try:
        for label, sql, params in refs:
            lat = []
            for _ in range(repeat):
                t = now()
                rows = conn.execute(sql, params).fetchall()
                lat.append(now() - t)
            plan = "; ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            out[label] = {**summary(lat), "rows": min(len(rows), 50), "more": len(rows) > 50, "plan": plan}
    finally:
        conn.close()
    return out


# ------------------------------------------------------------------------------- 2. HTTP
class _Csrf(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.token: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "input" and a.get("name") == "csrf" and self.token is None:
            self.token = a.get("value")


def console_committed() -> bool:
    log = subprocess.run(
        ["git", "log", "--oneline", "-200"], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )
    return any(line.split(" ", 1)[-1].startswith("console:") for line in log.stdout.splitlines())


def bench_http(base: str, t_end: float, requests: int) -> dict[str, Any] | str:
    """Page loads through a real gateway on the database in ``base``/data; a reason string when skipped."""
    import httpx

    gw = bench_gateway.Gateway(
        base, [sys.executable, os.path.join(REPO, "bench", "echo_server.py")], "[console]\nenabled = true\n"
    )
    try:
        python = os.path.join(REPO, ".venv", "bin", "python")
        done = subprocess.run(
            [python if os.path.exists(python) else sys.executable, "-m", "portero", "console", "passwd"]
            + ["--config", gw.config],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            check=False,
        )
        if done.returncode != 0:
            said = (done.stderr or done.stdout)[-300:]
            return f"`portero console passwd` failed ({done.returncode}): {said}"
        origin = f"http://127.0.0.1:{gw.port}"
        with httpx.Client(base_url=origin, timeout=30, follow_redirects=False) as client:
            form = client.get("/console/login")
            if form.status_code != 200:
                return f"GET /console/login answered {form.status_code}"
            parser = _Csrf()
            parser.feed(form.text)
            if parser.token is None:
                return "no csrf input in the login form"
            login = client.post(
                "/console/login",
                data={"password": PASSWORD, "csrf": parser.token},
                headers={"Origin": origin},
            )
            if login.status_code != 303 or not client.cookies:
                raise BenchError(f"login failed: {login.status_code} {login.text[:300]}")
            out: dict[str, Any] = {}

            def timed(label: str, path: str, params: dict[str, str], check: Callable[[str], int]) -> None:
                lat = []
                shown = 0
                for _ in range(requests):
                    t = now()
                    r = client.get(path, params=params)
                    lat.append(now() - t)
                    if r.status_code != 200:
                        raise BenchError(f"GET {path} {params}: {r.status_code} {r.text[:300]}")
                    shown = check(r.text)
                out[label] = {**summary(lat), "rows": shown, "bytes": len(r.content)}

            def audit_rows(text: str) -> int:
                if 'id="audit"' not in text:
                    raise BenchError("the audit page has no table#audit")
                return text.count("audit-row")

            for label, _kwargs, query in cases(t_end, 1):
                timed(label, "/console/audit", query, audit_rows)
            timed("GET /console/ (overview)", "/console/", {}, lambda text: text.count('class="server'))
            return out
    finally:
        stop(gw.proc)


# ------------------------------------------------------------------------------- report
def table(title: str, sizes: list[int], results: dict[int, dict[str, Any]], what: str) -> list[str]:
    labels = list(results[sizes[0]])
    for size in sizes[1:]:
        labels += [label for label in results[size] if label not in labels]
    cols = " | ".join(f"{s:,} rows p50 / p95 / max ms" for s in sizes)
    head = f"| {what} | {cols} | rows shown ({sizes[0]:,}) |"
    lines = [f"**{title}**", "", head, "|---" * (len(sizes) + 2) + "|"]
    for label in labels:
        cells = []
        for size in sizes:
            r = results[size].get(label)
            cells.append("–" if r is None else f"{r['p50']:.2f} / {r['p95']:.2f} / {r['max']:.2f}")
        big = results[sizes[0]].get(label)
        shown = "–" if big is None else f"{big['rows']}{' (more)' if big.get('more') else ''}"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {shown} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="audit rows of the big table (default 100,000)")
    ap.add_argument("--small-rows", type=int, default=1000, help="rows of the small table (default 1,000)")
    ap.add_argument("--repeat", type=int, default=30, help="store queries per filter (default 30)")
    ap.add_argument("--requests", type=int, default=30, help="HTTP requests per page (default 30)")
    ap.add_argument("--no-http", dest="http", action="store_false", help="only the store queries")
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    args = ap.parse_args()
    bounded = 1 <= args.repeat <= 10_000 and 1 <= args.requests <= 10_000
    if args.rows < 1 or args.small_rows < 0 or not bounded:
        ap.error("--rows must be positive, --small-rows not negative, --repeat/--requests within 1..10000")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    started = time.time()
    sizes = [args.rows, args.small_rows, 0]
    store_out: dict[int, dict[str, Any]] = {}
    http_out: dict[int, dict[str, Any]] = {}
    skipped = ""
    try:
        with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
            t_end = time.time()
            bases = {}
            for size in sizes:
                base = os.path.join(tmp, f"rows-{size}")
                os.makedirs(os.path.join(base, "data"))
                t = now()
                build_db(os.path.join(base, "data", "gateway.db"), size, t_end)
                print(f"bench: {size:,} rows written in {now() - t:.1f} s", file=sys.stderr)
                bases[size] = base
            for size in sizes:
                db = os.path.join(bases[size], "data", "gateway.db")
                store_out[size] = bench_store(db, t_end, args.repeat)
                if size == args.rows:
                    store_out[size].update(bench_references(db, t_end, args.repeat))
            if not args.http:
                skipped = "--no-http"
            elif not console_committed():
                skipped = "the console is not committed yet (no 'console:' commit in git log)"
            else:
                for size in sizes:
                    got = bench_http(bases[size], t_end, args.requests)
                    if isinstance(got, str):
                        skipped = got
                        break
                    http_out[size] = got
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    took = time.time() - started
    lines = [
        "Command: `.venv/bin/python bench/bench_console.py"
        f" --rows {args.rows} --small-rows {args.small_rows}"
        f" --repeat {args.repeat} --requests {args.requests}`, run "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, took {took:.0f} s, "
        f"load average {os.getloadavg()[0]:.1f} at the end.",
        "",
    ]
    lines += table("Store.audit_page (50 rows a page)", sizes, store_out, "filter")
    lines.append("")
    if http_out:
        title = "HTTP page loads (httpx, one keep-alive connection, logged in)"
        lines += table(title, sizes, http_out, "page")
    else:
        lines.append(f"HTTP page loads: skipped ({skipped}).")
    print("\n".join(lines))
    for size, res in store_out.items():
        for label, r in res.items():
            if "plan" in r:
                print(f"\n{label} [{size:,} rows]: plan {r['plan']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"store": store_out, "http": http_out, "skipped": skipped}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
