"""The command line, driven through main([...]) with captured output."""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from pathlib import Path

import pytest

import portero
from portero.cli.common import build_env
from portero.cli.main import identity_lines, main, render_starter_config
from portero.config import parse_config

TOKEN = "tok-" + "x" * 28
PYTHON = json.dumps(sys.executable)  # a program that surely exists, as a TOML string

GOOD = f"""
[server]
host = "0.0.0.0"
port = 9000
bearer_token = "${{TOKEN:-{TOKEN}}}"

[telegram]
bot_token = "bot-secret-value"
admin_chat_id = 42

[policies]
default = "require-approval"
[policies.rules]
"one/read_*" = "allow"

[[replacements]]
fake = "John Doe"
real = "Real Person Name"

[[replacements]]
fake = "john@example.com"
real = "real@person.org"

[[replacements]]
fake = "ACME Corp"
real = "Real Corp"

[[mcp]]
name = "one"
command = {PYTHON}
args = ["-m", "server", "--key", "${{API_KEY:-api-secret-123}}"]

[[mcp]]
name = "gh"
command = {PYTHON}
required_env = ["GITHUB_TOKEN"]
env = {{ GITHUB_PERSONAL_ACCESS_TOKEN = "${{GITHUB_TOKEN}}" }}
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEN", "API_KEY", "GITHUB_TOKEN", "PORTERO_CONFIG", "PORTERO_BEARER_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def good_config(tmp_path: Path) -> Path:
    path = tmp_path / "portero.toml"
    path.write_text(GOOD)
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"portero {portero.__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: portero" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2


# -------------------------------------------------------------------------------------------- check


def test_check_valid(
    good_config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEY", "api-secret-from-env")
    assert main(["check", "--config", str(good_config)]) == 0
    out = capsys.readouterr().out
    assert f"{good_config}: OK" in out
    assert "http://127.0.0.1:9000/mcp" in out
    assert "0.0.0.0:9000" in out
    assert "auth:         bearer" in out
    assert "telegram:     on" in out
    assert "default require-approval, 1 rule" in out
    assert "replacements: 3" in out
    assert "[runs]" in out
    assert "[skipped: GITHUB_TOKEN is not set]" in out
    assert "warnings:" in out
    assert "without TLS" in out
    assert "--key ***" in out
    for secret in (TOKEN, "bot-secret-value", "Real Person Name", "api-secret-from-env"):
        assert secret not in out


def test_check_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nport = "abc"\nbearer_token = "short"\n[[mcp]]\nname = "a b"\ncommand = "x"\n')
    assert main(["check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert f'{path}: server.port: expected an integer, got "abc"' in lines
    assert f"{path}: mcp[0].name: use only letters, digits and '-', got \"a b\"" in lines
    assert captured.out == ""


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: no such file" in capsys.readouterr().err


def test_check_uses_portero_config_env(
    good_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORTERO_CONFIG", str(good_config))
    assert main(["check"]) == 0
    assert f"{good_config}: OK" in capsys.readouterr().out


def test_check_env_file(good_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = tmp_path / "p.env"
    env_file.write_text("GITHUB_TOKEN=ghp_from_file\n")
    assert main(["check", "--config", str(good_config), "--env-file", str(env_file)]) == 0
    out = capsys.readouterr().out
    assert "[skipped" not in out
    assert "ghp_from_file" not in out


def test_check_bad_env_file(good_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(good_config), "--env-file", str(tmp_path / "nope.env")]) == 2
    assert "nope.env" in capsys.readouterr().err


def test_build_env_real_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / "p.env"
    env_file.write_text("A=from-file\nB=from-file\n")
    assert build_env(str(env_file), {"A": "real"}) == {"A": "real", "B": "from-file"}
    assert build_env(None, {"X": "1"}) == {"X": "1"}


def test_serve_invalid_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nbogus = 1\n")
    assert main(["serve", "--config", str(path)]) == 2
    assert "server.bogus: unknown key" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- init


def test_init_writes_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The starter config runs npx: give check one to find, whatever this machine has.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "npx").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "npx").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    path = tmp_path / "portero.toml"
    assert main(["init", str(path)]) == 0
    text = path.read_text()
    config = parse_config(text, path=str(path), env={})
    assert len(config.server.bearer_token) >= 40
    assert config.server.bearer_token in text
    assert {m.name for m in config.mcp} == {"everything", "filesystem"}
    assert all(m.runnable for m in config.mcp)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "wrote" in capsys.readouterr().out
    # And `check` agrees.
    assert main(["check", "--config", str(path)]) == 0


def test_init_fresh_token_each_time(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "a.toml")]) == 0
    assert main(["init", str(tmp_path / "b.toml")]) == 0
    a = tomllib.loads((tmp_path / "a.toml").read_text())["server"]["bearer_token"]
    b = tomllib.loads((tmp_path / "b.toml").read_text())["server"]["bearer_token"]
    assert a != b


def test_init_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "portero.toml"
    path.write_text("mine")
    assert main(["init", str(path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert path.read_text() == "mine"


def test_init_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    assert (tmp_path / "portero.toml").exists()


def test_starter_template_is_valid_toml() -> None:
    text = render_starter_config("t" * 43)
    assert tomllib.loads(text)["server"]["bearer_token"] == "t" * 43


# ------------------------------------------------------------------------------------ client-config


def test_client_config(good_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["client-config", "--config", str(good_config)]) == 0
    out = capsys.readouterr().out
    assert (
        "claude mcp add --transport http portero http://127.0.0.1:9000/mcp "
        f'--header "Authorization: Bearer {TOKEN}"' in out
    )
    start = out.index("{")
    end = out.index("\n}\n") + 2
    entry = json.loads(out[start:end])["mcpServers"]["portero"]
    assert entry == {
        "type": "http",
        "url": "http://127.0.0.1:9000/mcp",
        "headers": {"Authorization": f"Bearer {TOKEN}"},
    }
    assert "Name: John Doe" in out
    assert "Email: john@example.com" in out
    assert "Identity: ACME Corp" in out
    assert "Real Person Name" not in out
    assert "real@person.org" not in out


def test_client_config_https_and_no_auth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[server]\nhost = "localhost"\nport = 8443\nauth = "none"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
    )
    assert main(["client-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "claude mcp add --transport http portero https://localhost:8443/mcp\n" in out
    assert "Authorization" not in out
    assert "system prompt" not in out


def test_identity_lines() -> None:
    assert identity_lines(["John Doe", "john@example.com", "Other"]) == [
        "Name: John Doe",
        "Email: john@example.com",
        "Identity: Other",
    ]
    assert identity_lines([]) == []


# ------------------------------------------------------------------------------------------ migrate


def make_install(root: Path) -> Path:
    (root / "config").mkdir(parents=True)
    (root / ".env").write_text(
        "PORT=3055\nBEARER_TOKEN=old-install-token-0123456789\nTELEGRAM_BOT_TOKEN=123:abc\n"
        "TELEGRAM_ADMIN_CHAT_ID=987654\nAPPROVAL_TIMEOUT_SECONDS=300\nGITHUB_TOKEN=\nREAL_NAME=Jane Real\n"
    )
    (root / "config" / "mcps.json").write_text(
        json.dumps(
            {
                "mcps": [
                    {"name": "filesystem", "command": "npx", "args": ["-y", "fs", "/workspace"], "env": {}},
                    {
                        "name": "github",
                        "command": "npx",
                        "args": ["-y", "@modelcontextprotocol/server-github"],
                        "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"},
                    },
                    {"name": "my_tool", "command": "uvx", "args": ["t"], "pinnedTools": ["a"]},
                    {"name": "remote", "url": "https://example.com/mcp"},
                ]
            }
        )
    )
    (root / "config" / "policies.json").write_text(
        json.dumps(
            {
                "policies": {
                    "filesystem/read_file": "allow",
                    "filesystem/delete_file": "deny",
                    "github/create_pull_request": "require_approval",
                    "my_tool/x": "require-approval",
                    "odd/thing": "sometimes",
                },
                "defaultPolicy": "require-approval",
            }
        )
    )
    (root / "config" / "replacements.json").write_text(
        json.dumps(
            {
                "replacements": [
                    {"fake": "John Doe", "real": "${REAL_NAME}", "bidirectional": True},
                    {
                        "fake": "fake-key",
                        "real": "real-key-value",
                        "bidirectional": False,
                        "caseSensitive": False,
                        "responseReplacement": "***",
                    },
                ]
            }
        )
    )
    return root


def test_migrate_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install = make_install(tmp_path / "old")
    assert main(["migrate", str(install)]) == 0
    captured = capsys.readouterr()
    doc = tomllib.loads(captured.out)
    assert doc["server"]["port"] == 3055
    assert doc["server"]["bearer_token"] == "${BEARER_TOKEN}"
    assert doc["telegram"] == {
        "bot_token": "${TELEGRAM_BOT_TOKEN}",
        "admin_chat_id": 987654,
        "approval_timeout": "5m",
    }
    assert doc["policies"]["default"] == "require-approval"
    assert doc["policies"]["rules"] == {
        "filesystem/read_file": "allow",
        "filesystem/delete_file": "deny",
        "github/create_pull_request": "require-approval",
        "my-tool/x": "require-approval",
    }
    names = [m["name"] for m in doc["mcp"]]
    assert names == ["filesystem", "github", "my-tool"]
    github = doc["mcp"][1]
    assert github["required_env"] == ["GITHUB_TOKEN"]
    assert doc["replacements"][1] == {
        "fake": "fake-key",
        "real": "real-key-value",
        "bidirectional": False,
        "case_sensitive": False,
        "response_replacement": "***",
    }
    # Notes explain what was dropped or guessed.
    assert "pinnedTools" in captured.err
    assert "remote" in captured.err
    assert "sometimes" in captured.err
    # Secrets from .env are referenced, not copied.
    assert "old-install-token" not in captured.out
    assert "123:abc" not in captured.out

    # The result is a valid config when run with the install's .env.
    env = build_env(str(install / ".env"), {})
    config = parse_config(captured.out, path=str(tmp_path / "portero.toml"), env=env)
    assert config.server.bearer_token == "old-install-token-0123456789"
    assert config.telegram is not None and config.telegram.approval_timeout == 300
    by_name = {m.name: m for m in config.mcp}
    assert by_name["github"].skip_reason == "GITHUB_TOKEN is not set"
    assert config.replacements[0].real == "Jane Real"


def test_migrate_to_file_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    install = make_install(tmp_path / "old")
    out = tmp_path / "new.toml"
    assert main(["migrate", str(install), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert tomllib.loads(out.read_text())["server"]["port"] == 3055
    before = out.read_text()
    assert main(["migrate", str(install), "-o", str(out)]) == 1
    assert out.read_text() == before


def test_migrate_lenient_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "old"
    (root / "config").mkdir(parents=True)
    (root / "config" / "mcps.json").write_text(
        json.dumps({"mcpServers": {"files": {"command": "npx", "args": ["fs"], "disabled": True}}})
    )
    (root / "config" / "policies.json").write_text(
        json.dumps({"default": "DENY", "rules": {"files/*": "allow"}})
    )
    (root / "config" / "replacements.json").write_text(json.dumps({"Jo": "Joanna"}))
    assert main(["migrate", str(root)]) == 0
    captured = capsys.readouterr()
    doc = tomllib.loads(captured.out)
    assert doc["mcp"] == [{"name": "files", "command": "npx", "args": ["fs"], "enabled": False}]
    assert doc["policies"] == {"default": "deny", "rules": {"files/*": "allow"}}
    assert doc["replacements"] == [{"fake": "Jo", "real": "Joanna"}]
    assert doc["server"]["bearer_token"] == "${PORTERO_BEARER_TOKEN}"
    assert "PORTERO_BEARER_TOKEN" in captured.err


def test_migrate_not_an_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", str(tmp_path)]) == 2
    assert "Portero install" in capsys.readouterr().err
    assert main(["migrate", str(tmp_path / "missing")]) == 2


def test_migrate_bad_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mcps.json").write_text("{nope")
    assert main(["migrate", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- audit


def test_audit_no_database(good_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--config", str(good_config)]) == 0
    assert capsys.readouterr().out.strip() == "no records"


def test_audit_bad_since(good_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--config", str(good_config), "--since", "soon"]) == 2
    assert "--since" in capsys.readouterr().err


def test_audit_reads_records(good_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = pytest.importorskip("portero.store")
    import time

    import trio

    db_path = str(good_config.parent / "data" / "gateway.db")
    now = time.time()

    async def fill() -> None:
        s = await store.Store.open(db_path)
        try:
            for ts, tool, decision in (
                (now - 7200, "one/read_file", "allow"),
                (now - 60, "one/write_file", "approved"),
                (now - 30, "gh/create_issue", "deny"),
            ):
                await s.record_audit(
                    {
                        "ts": ts,
                        "session": "sess-123456789",
                        "tool": tool,
                        "arguments": {"path": "/x"},
                        "decision": decision,
                        "source": "default",
                        "outcome": "ok" if decision != "deny" else "refused",
                        "duration_ms": 12.5,
                    }
                )
        finally:
            await s.aclose()

    trio.run(fill)

    assert main(["audit", "--config", str(good_config), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tool"] for r in rows] == ["one/read_file", "one/write_file", "gh/create_issue"]
    assert rows[0]["arguments"] == {"path": "/x"}
    assert {"ts", "session", "tool", "arguments", "decision", "source", "outcome", "duration_ms"} <= set(
        rows[0]
    )

    assert main(["audit", "--config", str(good_config), "--json", "--since", "1h", "--tool", "one/*"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["tool"] for r in rows] == ["one/write_file"]

    assert main(["audit", "--config", str(good_config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ts",
        "client",
        "tool",
        "decision",
        "source",
        "outcome",
        "duration_ms",
        "session",
        "arguments",
    ]
    assert len(lines) == 4
    assert "gh/create_issue" in lines[3] and "refused" in lines[3]


# ---------------------------------------------------------------- check says what serve will do


def test_check_reports_every_problem_serve_would_hit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of these passed `check` before, and then made serve crash or restart a child forever.
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    path = tmp_path / "p.toml"
    path.write_text(
        f'[server]\nbearer_token = "{TOKEN}"\nport = "8443"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
        '[policies.rules]\n"one/create issue" = "deny"\n'
        '[[replacements]]\nfake = "A"\nreal = "Real Secret Name"\n'
        '[[replacements]]\nfake = "B"\nreal = "Real Secret Name"\n'
        '[[mcp]]\nname = "one"\ncommand = "portero-not-installed"\ncwd = "gone"\n'
    )
    assert main(["check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f'{path}: server.port: expected an integer, got "8443" (write 8443 without quotes)',
        f'{path}: policies.rules."one/create issue": a pattern must not contain whitespace',
        f"{path}: replacements[1].real: the same real value as replacements[0].real: "
        "a response holding it could not be turned back into one fake",
        f"{path}: server.tls_cert: no such file: {tmp_path / 'c.pem'}",
        f"{path}: server.tls_key: no such file: {tmp_path / 'k.pem'}",
        f"{path}: mcp[0].cwd: no such directory: {tmp_path / 'gone'}",
        f'{path}: mcp[0].command: "portero-not-installed" is not found on the gateway\'s PATH '
        f"({tmp_path / 'bin'})",
    ]
    assert "Real Secret Name" not in captured.err


def test_check_says_when_npx_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["check", "--config", str(Path(__file__).resolve().parents[2] / "portero.toml")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines and all('.command: "npx" is not found' in line for line in lines)
    assert all(line.endswith("install Node.js (npx comes with npm)") for line in lines)


def test_check_shows_where_each_program_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srv").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "srv").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    path = tmp_path / "p.toml"
    path.write_text(f'[server]\nbearer_token = "{TOKEN}"\n[[mcp]]\nname = "one"\ncommand = "srv"\n')
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"one  [runs]  srv (found at {tmp_path / 'bin' / 'srv'})" in out


def test_serve_refuses_a_missing_program_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: serve started and restarted the child forever. Now: one line naming file and key, exit 2.
    monkeypatch.setenv("PATH", str(tmp_path))
    path = tmp_path / "p.toml"
    path.write_text(
        f'[server]\nbearer_token = "{TOKEN}"\nport = 0\n'
        '[[mcp]]\nname = "one"\ncommand = "portero-not-installed"\n'
    )
    assert main(["serve", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f'{path}: mcp[0].command: "portero-not-installed" is not found on the gateway\'s PATH ({tmp_path})'
    ]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "data").exists()  # nothing was started


def test_env_file_may_be_given_twice(
    good_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    first.write_text("GITHUB_TOKEN=\nTOKEN=from-first-file-0123456789\n")
    second.write_text("GITHUB_TOKEN=ghp_second\n")
    assert (
        main(["check", "--config", str(good_config), "--env-file", str(first), "--env-file", str(second)])
        == 0
    )
    assert "[skipped" not in capsys.readouterr().out  # the later file's GITHUB_TOKEN won
    assert build_env([str(first), str(second)], {})["GITHUB_TOKEN"] == "ghp_second"
    assert build_env([str(first), str(second)], {"GITHUB_TOKEN": "real"})["GITHUB_TOKEN"] == "real"


# ---------------------------------------------------------------- audit needs only data_dir


def test_audit_runs_without_the_secrets_serving_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: audit refused to run unless every ${VAR} of the config was set.
    path = tmp_path / "p.toml"
    path.write_text(
        '[server]\nbearer_token = "${PORTERO_BEARER_TOKEN}"\ndata_dir = "state"\n'
        '[telegram]\nbot_token = "${TELEGRAM_BOT_TOKEN}"\nadmin_chat_id = 1\n'
        '[[mcp]]\nname = "gh"\ncommand = "portero-not-installed"\nenv = { T = "${GITHUB_TOKEN}" }\n'
    )
    assert main(["audit", "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "no records"


def test_audit_names_an_unusable_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[server]\ndata_dir = "${PORTERO_DATA_UNSET}"\n')
    assert main(["audit", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"{path}: server.data_dir: ${{PORTERO_DATA_UNSET}} is not set"


def test_portero_tools_names_the_servers_that_are_not_ready_as_status_does() -> None:
    from portero.cli.tools import not_ready_servers

    health_children = [
        {"name": "alpha", "state": "ready", "tools": 3, "restarts": 0},
        {"name": "linear", "state": "needs-login", "tools": 0, "restarts": 0, "remote": True},
        {
            "name": "sentry",
            "state": "restarting",
            "tools": 0,
            "restarts": 2,
            "error": "cannot reach x",
            "remote": True,
        },
        {"name": "beta", "state": "restarting", "tools": 0, "restarts": 1, "error": "exit status 1"},
    ]
    assert not_ready_servers(health_children) == [
        {"server": "linear", "state": "needs-login"},
        {"server": "sentry", "state": "failed: cannot reach x"},
        {"server": "beta", "state": "restarting"},
    ]


def test_a_reader_that_goes_away_is_no_traceback(good_config: Path) -> None:
    """`portero client-config | head -1`: the pipe closes before the output is written; the command stops
    quietly with 141 (128 + SIGPIPE) instead of printing BrokenPipeError twice."""
    import subprocess

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    try:
        done = subprocess.run(
            [sys.executable, "-m", "portero", "client-config", "--config", str(good_config)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141
