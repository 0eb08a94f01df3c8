"""A server's prompts, resources and completions obey its policy, like its tools (real gateway).

With `"evil/*" = "deny"`, the server `evil` shows none of its prompts, resources or templates, and
prompt gets, resource reads and completions for it are refused before they reach it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from .harness import GatewayProcess, McpHttpClient, child_toml, server_toml

POLICIES = """
[policies]
default = "allow"
[policies.rules]
"evil/*" = "deny"
"""


@pytest.fixture
def setup(tmp_path: Path):
    record = tmp_path / "evil-record.jsonl"
    cfg = server_toml(tmp_path) + POLICIES + child_toml("evil", "--record", str(record)) + child_toml("ok")
    g = GatewayProcess(tmp_path, cfg)
    g.wait_ready()
    yield g, record
    g.stop()


def test_a_denied_server_lists_and_serves_nothing(setup: tuple[GatewayProcess, Path]) -> None:
    g, record = setup
    c = McpHttpClient(g.url)
    prompts = [p["name"] for p in c.request("prompts/list")["result"]["prompts"]]
    assert "ok__greet" in prompts and "evil__greet" not in prompts
    # evil's resources come first in the catalog (and hide ok's of the same URI): none is listed.
    assert c.request("resources/list")["result"]["resources"] == []
    templates = c.request("resources/templates/list")["result"]["resourceTemplates"]
    assert len(templates) == 1  # ok's template only

    for method, params in [
        ("prompts/get", {"name": "evil__greet", "arguments": {"who": "x"}}),
        ("resources/read", {"uri": "test://static/hello"}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "evil__greet"},
                                 "argument": {"name": "who", "value": "a"}}),
        ("completion/complete", {"ref": {"type": "ref/resource", "uri": "test://static/hello"},
                                 "argument": {"name": "x", "value": "a"}}),
    ]:  # fmt: skip
        err = c.request(method, params)["error"]
        assert "denied" in err["message"], (method, err)
    assert not record.exists() or record.read_text() == ""  # nothing reached the denied server

    got = c.request("prompts/get", {"name": "ok__greet", "arguments": {"who": "Ann"}})["result"]
    assert "Hello, Ann! (ok)" in got["messages"][0]["content"]["text"]
    got = c.request("resources/read", {"uri": "test://item/7"})["result"]  # ok's template
    assert got["contents"][0]["text"] == "item 7"

    # What reached a server is audited like a tool call; what was refused before it did is not.
    conn = sqlite3.connect(g.config_path.parent / "data" / "gateway.db")
    try:
        rows = conn.execute("SELECT tool, arguments, decision, outcome FROM audit ORDER BY id").fetchall()
    finally:
        conn.close()
    assert [(tool, outcome) for tool, _, _, outcome in rows] == [
        ("ok/greet", "ok"),
        ("ok/test://item/7", "ok"),
    ]
    assert json.loads(rows[0][1]) == {
        "method": "prompts/get",
        "name": "ok__greet",
        "arguments": {"who": "Ann"},
    }
