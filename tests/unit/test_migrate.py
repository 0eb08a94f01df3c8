"""``portero migrate`` on crafted and untidy installs: what it writes must mean what the install meant,
no more (no injected servers, no secrets in the TOML, private files), and everything it skips is said."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from portero.cli.common import build_env
from portero.cli.main import main
from portero.cli.migrate import comment_safe, env_line, env_path_for
from portero.config import parse_config, parse_env_file

BEARER = "old-install-token-0123456789"


def install(root: Path, *, dotenv: str | None = None, **files: object) -> Path:
    """An install at ``root``: ``.env`` text and JSON files given as ``config__mcps_json=...`` (``__`` is a
    directory separator, the last ``_`` the dot)."""
    root.mkdir(parents=True, exist_ok=True)
    if dotenv is not None:
        (root / ".env").write_text(dotenv)
    for key, data in files.items():
        rel = key.replace("__", "/")
        rel = rel[: rel.rindex("_")] + "." + rel[rel.rindex("_") + 1 :]
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return root


def migrate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["migrate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------- a crafted directory name


EVIL_NAME = 'old\n[[mcp]]\nname = "evil"\ncommand = "sh"\nargs = ["-c", "id"]\n#'


def test_a_crafted_directory_name_cannot_add_a_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the directory name went raw into the header comment, and its second line was a [[mcp]].
    root = install(
        tmp_path / EVIL_NAME,
        dotenv=f"BEARER_TOKEN={BEARER}\n",
        config__mcps_json={"mcps": [{"name": "fs", "command": "npx", "args": ["fs"]}]},
    )
    out_path = tmp_path / "new.toml"
    for args in ([str(root)], [str(root), "-o", str(out_path)]):
        code, out, _err = migrate(capsys, *args)
        assert code == 0
        text = out if len(args) == 1 else out_path.read_text()
        doc = tomllib.loads(text)
        assert [m["name"] for m in doc["mcp"]] == ["fs"]
        header = text[: text.index("\n\n")]
        assert all(line.startswith("# ") for line in header.splitlines())
        config = parse_config(text, path=str(out_path), env={"BEARER_TOKEN": BEARER})
        assert [m.name for m in config.mcp] == ["fs"]


def test_comment_safe() -> None:
    assert comment_safe("a\nb\rc\x00d\x1be\u2028f\u2029g\x85h\u202ei\tj") == "a?b?c?d?e?f?g?h?i\tj"
    assert comment_safe("plain / path ü") == "plain / path ü"


def test_install_paths_are_not_read_as_variables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = install(
        tmp_path / "in${HOME}stall",
        dotenv=f"BEARER_TOKEN={BEARER}\nSSL_CERT_PATH=cert.pem\nSSL_KEY_PATH=key.pem\n",
        config__mcps_json={"mcps": [{"name": "a", "command": "x", "cwd": "work"}]},
    )
    code, out, _err = migrate(capsys, str(root))
    assert code == 0
    config = parse_config(out, path=str(tmp_path / "p.toml"), env={"BEARER_TOKEN": BEARER, "HOME": "/root"})
    assert config.server.tls_cert == str(root.resolve() / "cert.pem")
    assert config.mcp[0].cwd == str(root.resolve() / "work")


# ----------------------------------------------------------------------------------- file modes


def test_output_files_are_private_and_never_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: -o wrote 0644.
    root = install(
        tmp_path / "old",
        dotenv=f"BEARER_TOKEN={BEARER}\n",
        config__mcps_json={
            "mcps": [{"name": "a", "command": "x", "env": {"API_KEY": "sk-literal-0123456789"}}]
        },
    )
    out = tmp_path / "portero.toml"
    code, stdout, _err = migrate(capsys, str(root), "-o", str(out))
    assert code == 0
    env_out = tmp_path / "portero.env"
    for path in (out, env_out):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert f"wrote {out} (mode 0600)" in stdout
    before = (out.read_text(), env_out.read_text())
    # An existing output: refused, nothing changed.
    assert migrate(capsys, str(root), "-o", str(out))[0] == 1
    assert (out.read_text(), env_out.read_text()) == before
    # An existing env file beside a new output: refused, and the new output is not left behind.
    other = tmp_path / "other.toml"
    (tmp_path / "other.env").write_text("MINE=1\n")
    code, _out, err = migrate(capsys, str(root), "-o", str(other))
    assert code == 1 and "other.env: already exists" in err
    assert not other.exists()
    assert (tmp_path / "other.env").read_text() == "MINE=1\n"


def test_env_path_for() -> None:
    assert env_path_for("/etc/portero/portero.toml") == "/etc/portero/portero.env"
    assert env_path_for("config") == "config.env"
    assert env_path_for("x.env") == "x.env.env"


# ----------------------------------------------------------------------------- literal secrets


def test_literal_secrets_move_to_an_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: literal tokens of mcps.json were copied into the TOML, whose header said secrets stay in .env.
    secrets = {
        "env": "ghp_" + "a" * 36,
        "flag": "flag-secret-value-1",
        "inline": "inline-secret-value-2",
        "bare": "xoxb-" + "1" * 20,
        "url": "postgres://user:pa55word@db.example/x",
    }
    root = install(
        tmp_path / "old",
        dotenv=f"BEARER_TOKEN={BEARER}\nGITHUB_TOKEN=from-dotenv\n",
        config__mcps_json={
            "mcpServers": {
                "gh": {
                    "command": "npx",
                    "args": [
                        "-y",
                        "srv",
                        "--token",
                        secrets["flag"],
                        f"--api-key={secrets['inline']}",
                        secrets["bare"],
                    ],
                    "env": {
                        "GITHUB_TOKEN": secrets["env"],
                        "DATABASE_URL": secrets["url"],
                        "LOG_LEVEL": "debug",
                        "FROM_ENV": "${OTHER_VAR}",
                    },
                }
            }
        },
    )
    # To stdout there is nowhere private to put them: refused, and nothing secret printed.
    code, out, err = migrate(capsys, str(root))
    assert code == 2 and out == ""
    assert "Pass -o PATH" in err
    for value in secrets.values():
        assert value not in err

    toml_path = tmp_path / "new" / "portero.toml"
    toml_path.parent.mkdir()
    code, out, err = migrate(capsys, str(root), "-o", str(toml_path))
    assert code == 0
    text = toml_path.read_text()
    env_text = (tmp_path / "new" / "portero.env").read_text()
    for value in secrets.values():
        assert value not in text and value not in out and value not in err
        assert value in env_text
    moved = parse_env_file(env_text)
    assert sorted(moved.values()) == sorted(secrets.values())
    # The notes say which were moved, by name.
    assert "env GITHUB_TOKEN: literal secret moved to the env file as ${GH_GITHUB_TOKEN}" in err
    assert "args[3]: literal secret moved" in err
    gh = tomllib.loads(text)["mcp"][0]
    assert gh["env"]["LOG_LEVEL"] == "debug"
    assert gh["required_env"] == ["OTHER_VAR"]
    # Run with both env files, the result means what the install meant.
    env = build_env([str(root / ".env"), str(tmp_path / "new" / "portero.env")], {"OTHER_VAR": "1"})
    config = parse_config(text, path=str(toml_path), env=env)
    server = config.mcp[0]
    assert server.args == (
        "-y",
        "srv",
        "--token",
        secrets["flag"],
        f"--api-key={secrets['inline']}",
        secrets["bare"],
    )
    assert server.env == {
        "GITHUB_TOKEN": secrets["env"],  # not the .env's GITHUB_TOKEN: the name was taken, so it was renamed
        "DATABASE_URL": secrets["url"],
        "LOG_LEVEL": "debug",
        "FROM_ENV": "1",
    }
    assert f"--env-file {root / '.env'} --env-file {tmp_path / 'new' / 'portero.env'}" in out


@pytest.mark.parametrize(
    "value", ["plain", 'with "quotes" and \\back\\slashes', "multi\nline", "$dollar ${X} #h"]
)
def test_env_line_round_trips(value: str) -> None:
    assert parse_env_file(env_line("K", value)) == {"K": value}


# ------------------------------------------------------------------------------- where inputs are


def test_json_files_beside_dotenv_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Before: only config/ was read; these were ignored without a word.
    root = install(
        tmp_path / "old",
        dotenv=f"BEARER_TOKEN={BEARER}\n",
        mcps_json={"mcps": [{"name": "a", "command": "x"}]},
        policies_json={"defaultPolicy": "deny", "policies": {"a/*": "allow"}},
        replacements_json={"Jo": "Joanna"},
    )
    code, out, _err = migrate(capsys, str(root))
    assert code == 0
    doc = tomllib.loads(out)
    assert doc["mcp"] == [{"name": "a", "command": "x"}]
    assert doc["policies"] == {"default": "deny", "rules": {"a/*": "allow"}}
    assert doc["replacements"] == [{"fake": "Jo", "real": "Joanna"}]


def test_config_dir_wins_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = install(
        tmp_path / "old",
        policies_json={"defaultPolicy": "allow"},
        config__policies_json={"defaultPolicy": "deny"},
    )
    code, out, err = migrate(capsys, str(root))
    assert code == 0
    assert tomllib.loads(out)["policies"]["default"] == "deny"
    assert (
        "policies.json: both config/policies.json and policies.json (beside .env) exist; read config/" in err
    )


# ------------------------------------------------------------------------------------------- .env


def test_a_symlinked_dotenv_is_refused_and_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: a .env linked to another file was read, and its lines echoed in the parse errors.
    private = tmp_path / "private.txt"
    private.write_text("root:$6$very-secret-hash:19000:0:99999:7:::\n")
    root = install(tmp_path / "old", config__mcps_json={"mcps": []})
    (root / ".env").symlink_to(private)
    code, out, err = migrate(capsys, str(root))
    assert code == 2 and out == ""
    assert "is a symbolic link; migrate does not follow it" in err
    assert "very-secret-hash" not in err


def test_dotenv_errors_give_line_numbers_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = install(tmp_path / "old", dotenv=f"BEARER_TOKEN={BEARER}\nthis line holds hunter2\n")
    code, _out, err = migrate(capsys, str(root))
    assert code == 2
    assert ".env:2: expected KEY=VALUE" in err
    assert "hunter2" not in err


def test_bad_json_names_the_position_not_the_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = install(tmp_path / "old", config__replacements_json='{"fake": "x", "real": hunter2}')
    code, _out, err = migrate(capsys, str(root))
    assert code == 2
    assert "replacements.json: cannot read: not valid JSON" in err and "line 1" in err
    assert "hunter2" not in err


# ---------------------------------------------------------------------- every skipped input is named


def test_every_skipped_input_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = install(
        tmp_path / "old",
        dotenv=f"BEARER_TOKEN={BEARER}\nPORT=http\nNODE_ENV=production\nAPPROVAL_TIMEOUT_SECONDS=soon\n",
        config__mcps_json={
            "mcps": [
                "not an object",
                {"name": "a", "command": "x", "args": "not-a-list", "env": ["no"], "timeout": 5, "cwd": 3},
                {"name": "b", "command": "y", "args": ["ok", {"no": 1}], "env": {"K": {"no": 1}}},
            ],
            "version": 2,
        },
        config__policies_json={"policies": {"a/has space": "allow", "a/x": "sometimes"}, "extra": 1},
        config__replacements_json={
            "replacements": [
                {"fake": "F", "real": "Real Person", "reverse": True, "bidirectional": "yes"},
                {"fake": "only-fake"},
                "nope",
            ]
        },
        config__notes_txt="x",
    )
    code, out, err = migrate(capsys, str(root))
    assert code == 0
    for expected in (
        "config/notes.txt: not an input migrate knows; ignored",
        ".env: PORT is not a port number; ignored (port = 8443)",
        ".env: NODE_ENV is not used by the converted config; ignored",
        ".env: APPROVAL_TIMEOUT_SECONDS",
        "mcps.json: key 'version' has no equivalent; ignored",
        "mcps.json: entry 1 ('') is not an object; skipped",
        "mcp 'a': key 'timeout' has no equivalent; ignored",
        "mcp 'a': args is not an array; ignored",
        "mcp 'a': env is not an object; ignored",
        "mcp 'a': cwd is not a string; ignored",
        "mcp 'b': args[1] is not a string; dropped",
        "mcp 'b': env 'K' is not a string; dropped",
        "policies.json: key 'extra' has no equivalent; ignored",
        "policies rule 'a/has space': a pattern must not contain whitespace; dropped",
        "policies rule 'a/x': unknown action 'sometimes'; dropped",
        "replacements.json: entry 1: key 'reverse' has no equivalent; ignored",
        "replacements.json: entry 1: bidirectional is not true or false; ignored",
        "replacements.json: entry 2 has no fake/real; dropped",
        "replacements.json: entry 3 has no fake/real; dropped",
    ):
        assert f"note: {expected}" in err, expected
    assert "Real Person" not in err  # a dropped or noted entry is never shown
    doc = tomllib.loads(out)
    assert [m["name"] for m in doc["mcp"]] == ["a", "b"]
    assert doc["mcp"][1]["args"] == ["ok"]
    assert doc["policies"] == {}
    # The notes are in the file too, as comments.
    assert "# note: policies rule 'a/has space'" in out


def test_what_check_will_say_is_in_the_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = install(
        tmp_path / "old",
        dotenv=f"BEARER_TOKEN={BEARER}\n",
        config__replacements_json={"A": "same real", "B": "same real"},
    )
    code, _out, err = migrate(capsys, str(root))
    assert code == 0
    assert (
        "note: check: portero.toml: replacements[1].real: the same real value as replacements[0].real" in err
    )


def test_a_flag_after_a_secret_flag_is_not_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = install(
        tmp_path / "old",
        config__mcps_json={"mcps": [{"name": "a", "command": "x", "args": ["--token", "--stdio", "${T}"]}]},
    )
    code, out, _err = migrate(capsys, str(root))
    assert code == 0
    assert tomllib.loads(out)["mcp"][0]["args"] == ["--token", "--stdio", "${T}"]
