"""Secrets and real values stay on the server side (real gateway, real children).

- Children get a minimal environment: never the gateway's bearer token, bot token or other
  secrets (server-everything's `get-env` tool would hand them to the model); `inherit_env` passes
  named variables; a server's own `env` always arrives.
- A failing child's error text (in /health and in the log) and its stderr lines are redacted
  (configured secrets) and anonymized (real values → fakes).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from .harness import ROOT, TEST_SERVER, TOKEN, GatewayProcess, McpHttpClient, server_toml, text_of

EVERYTHING = ROOT / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-everything"
CHILD_TOKEN = "ghp_childsecret0123456789"
REPLACEMENT = '[[replacements]]\nfake = "John Doe"\nreal = "Jane Realname"\n'


@pytest.mark.skipif(not EVERYTHING.exists(), reason="needs npm install --prefix tests/node")
def test_children_get_none_of_the_gateways_secrets(tmp_path: Path) -> None:
    cfg = server_toml(tmp_path) + (
        f'[[mcp]]\nname = "everything"\ncommand = "{EVERYTHING}"\n'
        'env = { OWN_VAR = "own-value" }\ninherit_env = ["PASS_ME"]\n'
    )
    env = {
        "PORTERO_BEARER_TOKEN": TOKEN,
        "TELEGRAM_BOT_TOKEN": "123456:telegram-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "PASS_ME": "passed",
        "NOT_LISTED": "kept-back",
    }
    g = GatewayProcess(tmp_path, cfg, env=env)
    try:
        g.wait_ready()
        c = McpHttpClient(g.url)
        child_env = json.loads(text_of(c.call("everything__get-env", {})))
        assert child_env.get("OWN_VAR") == "own-value"
        assert child_env.get("PASS_ME") == "passed"
        assert "PATH" in child_env and "HOME" in child_env
        leaked = {k for k in env if k in child_env} - {"PASS_ME"}
        assert leaked == set(), f"the child saw {leaked}"
        assert TOKEN not in json.dumps(child_env)
    finally:
        g.stop()


def _sh(script: str) -> str:
    return f'[[mcp]]\nname = "evil"\ncommand = "/bin/sh"\nargs = ["-c", {json.dumps(script)}]\n'


def test_a_failing_childs_error_is_redacted_and_anonymized(tmp_path: Path) -> None:
    # Answers initialize with an error that quotes its credentials and a real name.
    reply = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000,
         "message": f"bad credentials for Jane Realname: token {CHILD_TOKEN}"}}
    )  # fmt: skip
    script = f"read line; echo {shlex.quote(reply)}; sleep 30"
    cfg = server_toml(tmp_path) + REPLACEMENT + _sh(script) + f'env = {{ GH_TOKEN = "{CHILD_TOKEN}" }}\n'
    g = GatewayProcess(tmp_path, cfg)
    try:
        g.wait_log("initialize failed")
        public = g.health(token=None).text
        full = g.health().json()
        assert "evil" not in public and "credentials" not in public  # without the token: counts only
        error = full["children"][0]["error"]
        assert CHILD_TOKEN not in error and "Jane Realname" not in error
        assert "John Doe" in error and "***" in error
        assert CHILD_TOKEN not in g.log_text() and "Jane Realname" not in g.log_text()
    finally:
        g.stop()


def test_a_childs_stderr_is_redacted_and_anonymized(tmp_path: Path) -> None:
    line = f"auth with token {CHILD_TOKEN} for user Jane Realname"
    script = (
        f"echo {shlex.quote(line)} >&2; exec {shlex.quote(sys.executable)} {shlex.quote(str(TEST_SERVER))}"
    )
    cfg = server_toml(tmp_path) + REPLACEMENT + _sh(script) + f'env = {{ GH_TOKEN = "{CHILD_TOKEN}" }}\n'
    g = GatewayProcess(tmp_path, cfg)
    try:
        g.wait_ready()
        logged = g.wait_log("auth with token")
        assert CHILD_TOKEN not in logged and "Jane Realname" not in logged
        assert "*** for user John Doe" in logged
    finally:
        g.stop()
