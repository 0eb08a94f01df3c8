"""`portero tools` against the real `portero serve`: the table, the --json lines, a grant from the store,
the deny rules that hide whole servers, and the gateway that is not running."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from .harness import ROOT, TOKEN, GatewayProcess, child_toml, server_toml

POLICIES = """
[policies]
default = "allow"

[policies.rules]
"alpha/echo" = "allow"
"alpha/delete_*" = "require-approval"
"alpha/add" = "require-approval"
"beta/*" = "deny"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_text(tmp: Path, port: int, token: str = TOKEN) -> str:
    text = server_toml(tmp).replace("port = 0", f"port = {port}").replace(TOKEN, token)
    return text + POLICIES + child_toml("alpha") + child_toml("beta")


def run_tools(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portero", "tools", "--config", str(config), *extra],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_grant(db: Path, pattern: str, seconds: float) -> None:
    conn = sqlite3.connect(db, timeout=10)
    try:
        now = time.time()
        conn.execute(
            "INSERT INTO grants (pattern, created_at, expires_at, created_by) VALUES (?, ?, ?, ?)",
            (pattern, now, now + seconds, "test"),
        )
        conn.commit()
    finally:
        conn.close()


def test_tools_lists_policies_grants_and_denied_servers(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, config_text(tmp_path, free_port()))
    try:
        gw.wait_ready(expect=2)
        add_grant(tmp_path / "data" / "gateway.db", "alpha/add", 3600)

        r = run_tools(gw.config_path, "--json")
        assert r.returncode == 0, r.stderr
        objs = [json.loads(line) for line in r.stdout.splitlines()]
        rows = {o["canonical"]: o for o in objs if "canonical" in o}
        echo, delete, add, whoami = (
            rows["alpha/echo"],
            rows["alpha/delete_thing"],
            rows["alpha/add"],
            rows["alpha/whoami"],
        )
        assert echo["name"] == "alpha__echo" and echo["server"] == "alpha"
        assert (echo["action"], echo["source"]) == ("allow", "rule:alpha/echo")
        assert (delete["action"], delete["source"]) == ("require-approval", "rule:alpha/delete_*")
        assert (add["action"], add["source"]) == ("allow", "grant:alpha/add")
        assert (add["rule_action"], add["rule_source"]) == ("require-approval", "rule:alpha/add")
        assert add["grant_expires"].endswith("Z")
        assert (whoami["action"], whoami["source"]) == ("allow", "default")
        assert not any(c.startswith("beta/") for c in rows)  # denied: the gateway does not list them
        assert {"deny": "rule:beta/*", "servers": ["beta"]} in objs

        r = run_tools(gw.config_path)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["TOOL", "CANONICAL", "ACTION", "WHY"]
        by_name = {line.split()[0]: line for line in lines[1:] if line.startswith("alpha__")}
        assert by_name["alpha__echo"].split() == ["alpha__echo", "alpha/echo", "allow", "rule:alpha/echo"]
        assert by_name["alpha__delete_thing"].split()[2:] == ["require-approval", "rule:alpha/delete_*"]
        assert by_name["alpha__add"].split()[2:4] == ["allow", "grant:alpha/add"]
        assert "(else rule:alpha/add: require-approval)" in by_name["alpha__add"]
        # Aligned: every row's CANONICAL column starts where the header's does.
        column = lines[0].index("CANONICAL")
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in by_name.values())
        assert "  rule beta/* = deny: all of beta" in lines

        # A token the gateway does not use: one line, exit 2.
        wrong = tmp_path / "wrong.toml"
        port = gw.config_path.read_text().split("port = ", 1)[1].split("\n", 1)[0]
        wrong.write_text(config_text(tmp_path, int(port), token="not-the-token-0123456789abcdef"))
        r = run_tools(wrong)
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1 and "(401)" in r.stderr and "bearer_token" in r.stderr
    finally:
        gw.stop()


def test_tools_when_the_gateway_is_not_running(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "portero.toml"
    config.write_text(config_text(tmp_path, port))
    r = run_tools(config)
    assert r.returncode == 2 and r.stdout == ""
    url = f"http://127.0.0.1:{port}"
    assert r.stderr.splitlines() == [
        f"cannot reach the gateway at {url}: connection refused — is `portero serve` running?"
    ]


def test_a_clients_own_view_with_its_token_in_portero_token(tmp_path: Path) -> None:
    import hashlib
    import os

    port = free_port()
    laptop = "laptop-token-0123456789abcdefghij"
    clients = (
        '[[client]]\nname = "laptop"\n'
        f'token_sha256 = "{hashlib.sha256(laptop.encode()).hexdigest()}"\ntools = ["alpha/echo"]\n'
    )
    cfg = tmp_path / "portero.toml"
    gw = GatewayProcess(tmp_path, config_text(tmp_path, port) + clients)
    try:
        gw.wait_ready()
        env = {**os.environ, "PORTERO_TOKEN": laptop}
        out = subprocess.run(
            [sys.executable, "-m", "portero", "tools", "--config", str(cfg), "--json"],
            cwd=str(ROOT), capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        names = [
            json.loads(line).get("canonical") for line in out.stdout.splitlines() if '"canonical"' in line
        ]
        assert names == ["alpha/echo"]  # the laptop sees only its tool; the bearer token sees them all
        everything = run_tools(cfg, "--json")
        assert everything.returncode == 0 and everything.stdout.count('"canonical"') > 1
    finally:
        gw.stop()
