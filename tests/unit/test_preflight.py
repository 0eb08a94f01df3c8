"""The filesystem checks ``check`` and ``serve`` share (portero.config.preflight): programs on the PATH the
child gets, ``cwd`` directories, TLS files. Real files in tmp_path; no process is started."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from portero.config import ConfigError, McpServer, load_config, parse_config
from portero.config.preflight import check_files, child_path, preflight, resolve_command
from portero.upstream.stdio import child_environment

TOKEN = "x" * 32
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def program(directory: Path, name: str, *, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def write_config(tmp_path: Path, body: str, server: str = "") -> Path:
    path = tmp_path / "portero.toml"
    path.write_text(f'[server]\nbearer_token = "{TOKEN}"\n{server}\n{body}')
    return path


def problems_of(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env, preflight=True)
    return info.value.problems


# ------------------------------------------------------------------------ the PATH the child gets


@pytest.mark.parametrize(
    ("gateway", "own", "inherit"),
    [
        ({"PATH": "/gw/bin"}, {}, ()),
        ({"PATH": "/gw/bin"}, {"PATH": "/own/bin"}, ()),
        ({"PATH": "/gw/bin"}, {"PATH": ""}, ()),
        ({}, {}, ()),
        ({}, {"PATH": "/own/bin"}, ("PATH",)),
        ({"PATH": "/gw/bin", "OTHER": "1"}, {"X": "y"}, ("OTHER",)),
    ],
)
def test_child_path_is_the_path_stdio_gives_the_child(
    gateway: dict[str, str], own: dict[str, str], inherit: tuple[str, ...]
) -> None:
    m = McpServer(name="a", command="x", env=own, inherit_env=inherit)
    assert child_path(m, gateway) == child_environment(gateway, own, inherit).get("PATH")


def test_command_not_on_the_gateway_path(tmp_path: Path) -> None:
    # Before: `check` said OK, and serve restarted the child forever.
    path = write_config(tmp_path, '[[mcp]]\nname = "a"\ncommand = "portero-no-such-program"\n')
    assert problems_of(path, {"PATH": str(tmp_path / "bin")}) == [
        f'{path}: mcp[0].command: "portero-no-such-program" is not found on the gateway\'s PATH '
        f"({tmp_path / 'bin'})"
    ]


def test_command_found_on_the_childs_own_path_only(tmp_path: Path) -> None:
    program(tmp_path / "own", "tool")
    body = f'[[mcp]]\nname = "a"\ncommand = "tool"\nenv = {{ PATH = "{tmp_path / "own"}" }}\n'
    path = write_config(tmp_path, body)
    config = load_config(path, {"PATH": str(tmp_path / "gw")}, preflight=True)
    assert resolve_command(config.mcp[0], {"PATH": str(tmp_path / "gw")}) == str(tmp_path / "own" / "tool")


def test_command_on_the_gateway_path_but_not_the_childs(tmp_path: Path) -> None:
    program(tmp_path / "gw", "tool")
    body = f'[[mcp]]\nname = "a"\ncommand = "tool"\nenv = {{ PATH = "{tmp_path / "own"}" }}\n'
    path = write_config(tmp_path, body)
    assert problems_of(path, {"PATH": str(tmp_path / "gw")}) == [
        f'{path}: mcp[0].command: "tool" is not found on the PATH its env sets ({tmp_path / "own"})'
    ]


def test_npx_missing_says_what_to_install(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[[mcp]]\nname = "a"\ncommand = "npx"\nargs = ["-y", "x"]\n')
    problems = problems_of(path, {"PATH": str(tmp_path)})
    assert len(problems) == 1
    assert problems[0].endswith("; install Node.js (npx comes with npm)")


def test_command_with_a_slash(tmp_path: Path) -> None:
    program(tmp_path / "work" / "bin", "srv")
    program(tmp_path, "plain", executable=False)
    (tmp_path / "adir").mkdir()
    body = (
        '[[mcp]]\nname = "rel"\ncommand = "bin/srv"\ncwd = "work"\n'  # relative to its cwd: fine
        '[[mcp]]\nname = "gone"\ncommand = "/nonexistent/portero-binary"\n'
        f'[[mcp]]\nname = "noexec"\ncommand = "{tmp_path / "plain"}"\n'
        f'[[mcp]]\nname = "dir"\ncommand = "{tmp_path / "adir"}"\n'
    )
    path = write_config(tmp_path, body)
    assert problems_of(path, {"PATH": "/usr/bin"}) == [
        f"{path}: mcp[1].command: no such file: /nonexistent/portero-binary",
        f"{path}: mcp[2].command: not executable: {tmp_path / 'plain'}",
        f"{path}: mcp[3].command: is a directory: {tmp_path / 'adir'}",
    ]


def test_relative_command_without_cwd_is_relative_to_the_gateways_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program(tmp_path / "bin", "srv")
    m = McpServer(name="a", command="./bin/srv")
    monkeypatch.chdir(tmp_path)
    assert check_files(None, [(0, m)], {}) == []
    monkeypatch.chdir(tmp_path / "bin")
    assert check_files(None, [(0, m)], {}) == [
        f"mcp[0].command: no such file: {tmp_path / 'bin' / 'bin' / 'srv'}"
    ]


# ---------------------------------------------------------------------------------------------- cwd


def test_cwd_must_be_a_directory(tmp_path: Path) -> None:
    # Before: `check` said OK; serve could not start the child, forever.
    sh = shutil.which("sh")
    (tmp_path / "file").write_text("")
    body = (
        f'[[mcp]]\nname = "a"\ncommand = "{sh}"\ncwd = "missing"\n'
        f'[[mcp]]\nname = "b"\ncommand = "{sh}"\ncwd = "file"\n'
        f'[[mcp]]\nname = "c"\ncommand = "{sh}"\ncwd = "."\n'
    )
    path = write_config(tmp_path, body)
    assert problems_of(path, {}) == [
        f"{path}: mcp[0].cwd: no such directory: {tmp_path / 'missing'}",
        f"{path}: mcp[1].cwd: not a directory: {tmp_path / 'file'}",
    ]


def test_skipped_and_disabled_servers_are_not_checked(tmp_path: Path) -> None:
    body = (
        '[[mcp]]\nname = "gh"\ncommand = "portero-missing-1"\ncwd = "nowhere"\nrequired_env = ["GH_T"]\n'
        '[[mcp]]\nname = "off"\ncommand = "portero-missing-2"\nenabled = false\n'
    )
    path = write_config(tmp_path, body)
    config = load_config(path, {"PATH": str(tmp_path)}, preflight=True)
    assert [m.runnable for m in config.mcp] == [False, False]
    assert preflight(config, {"PATH": str(tmp_path)}) == []
    # Once the variable is set, the server will start: now its command counts.
    problems = problems_of(path, {"PATH": str(tmp_path), "GH_T": "t"})
    assert problems == [
        f"{path}: mcp[0].cwd: no such directory: {tmp_path / 'nowhere'}",
        f'{path}: mcp[0].command: "portero-missing-1" is not found on the gateway\'s PATH ({tmp_path})',
    ]


def test_config_and_filesystem_problems_in_one_pass(tmp_path: Path) -> None:
    body = '[[mcp]]\nname = "a"\ncommand = "portero-missing"\nbogus = 1\n[policies.rules]\n"a b" = "allow"\n'
    path = write_config(tmp_path, body, server='port = "1"\ntls_cert = "c.pem"\ntls_key = "k.pem"')
    problems = problems_of(path, {"PATH": str(tmp_path)})
    keys = [p.removeprefix(f"{path}: ").split(":")[0] for p in problems]
    assert sorted(keys) == sorted(
        [
            "server.port",
            "mcp[0].bogus",
            'policies.rules."a b"',
            "server.tls_cert",
            "server.tls_key",
            "mcp[0].command",
        ]
    )


def test_pure_parse_looks_at_nothing_on_disk(tmp_path: Path) -> None:
    text = f'[server]\nbearer_token = "{TOKEN}"\n'
    text += '[[mcp]]\nname = "a"\ncommand = "portero-missing"\ncwd = "nope"\n'
    config = parse_config(text, path=str(tmp_path / "p.toml"), env={})
    assert preflight(config, {"PATH": str(tmp_path)}) == [
        f"{config.path}: mcp[0].cwd: no such directory: {tmp_path / 'nope'}",
        f'{config.path}: mcp[0].command: "portero-missing" is not found on the gateway\'s PATH ({tmp_path})',
    ]


# ----------------------------------------------------------------------------------------------- TLS


def make_cert(tmp_path: Path, *, encrypted: bool = False) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    if encrypted:
        enc = tmp_path / "key.enc.pem"
        subprocess.run(
            ["openssl", "pkey", "-in", str(key), "-out", str(enc), "-aes256", "-passout", "pass:pw"],
            check=True,
            capture_output=True,
        )
        key = enc
    return cert, key


def test_tls_files_missing(tmp_path: Path) -> None:
    # Before: `check` said OK; serve failed at start-up.
    path = write_config(tmp_path, "", server='tls_cert = "c.pem"\ntls_key = "keys"')
    (tmp_path / "keys").mkdir()
    assert problems_of(path, {}) == [
        f"{path}: server.tls_cert: no such file: {tmp_path / 'c.pem'}",
        f"{path}: server.tls_key: not a regular file: {tmp_path / 'keys'}",
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_tls_key_unreadable(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("x")
    (tmp_path / "k.pem").write_text("x")
    (tmp_path / "k.pem").chmod(0)
    path = write_config(tmp_path, "", server='tls_cert = "c.pem"\ntls_key = "k.pem"')
    assert problems_of(path, {}) == [
        f"{path}: server.tls_key: cannot read {tmp_path / 'k.pem'}: Permission denied"
    ]


def test_tls_files_that_are_not_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    path = write_config(tmp_path, "", server='tls_cert = "c.pem"\ntls_key = "k.pem"')
    problems = problems_of(path, {})
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: server.tls_cert: cannot load {tmp_path / 'c.pem'} with the key")


@needs_openssl
def test_tls_good_pair_passes_and_a_mismatched_one_does_not(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    path = write_config(tmp_path, "", server=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    assert load_config(path, {}, preflight=True).server.tls
    other = tmp_path / "other"
    other.mkdir()
    _cert2, key2 = make_cert(other)
    path = write_config(tmp_path, "", server=f'tls_cert = "{cert}"\ntls_key = "{key2}"')
    problems = problems_of(path, {})
    assert len(problems) == 1 and "cannot load" in problems[0]


@needs_openssl
def test_tls_encrypted_key_is_named(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, encrypted=True)
    path = write_config(tmp_path, "", server=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    problems = problems_of(path, {})
    assert problems == [
        f"{path}: server.tls_key: {key} is encrypted with a passphrase, which the gateway cannot supply; "
        "store it unencrypted (readable only by the gateway's user)"
    ]


def test_run_gateway_refuses_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # serve's own guard, for callers that hand run_gateway a Config that was parsed without preflight.
    from portero.app import run_gateway

    text = f'[server]\nbearer_token = "{TOKEN}"\ndata_dir = "data"\n'
    text += '[[mcp]]\nname = "a"\ncommand = "portero-missing"\n'
    config = parse_config(text, path=str(tmp_path / "p.toml"), env={})
    assert run_gateway(config, {"PATH": str(tmp_path)}) == 2
    assert capsys.readouterr().err.splitlines() == [
        f'{config.path}: mcp[0].command: "portero-missing" is not found on the gateway\'s PATH ({tmp_path})'
    ]
    assert not (tmp_path / "data").exists()
