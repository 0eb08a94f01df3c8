"""The checks that need the filesystem: will ``serve`` find every program, directory and file it opens?

:mod:`.validate` judges a configuration by its text alone. What it cannot see is here, and both commands
run it: ``portero check`` (through ``load_config(..., preflight=True)``, in the same pass as every other
problem) and ``portero serve`` (``portero.app.run_gateway`` calls :func:`preflight` once before it starts
anything, so a missing file is one clear error line and exit status 2, not a traceback or a child
restarted forever).

Checked, for every ``[[mcp]]`` server that will start (not ``enabled = false``, not skipped for an unset
``required_env``):

- ``command``: a bare name is looked up on the PATH *the child gets* -- its own ``env.PATH`` when it sets
  one, else the gateway's (the rule of :func:`portero.upstream.stdio.child_environment`, which this layer
  cannot import; ``tests/unit/test_preflight.py`` holds the two together). A name with a ``/`` must be an
  executable file, relative to the server's ``cwd`` (or the gateway's working directory) as the child is
  started.
- ``cwd``: an existing directory that can be entered.

And ``[server].tls_cert`` / ``tls_key``: readable regular files that load as a certificate and its
unencrypted key, as hypercorn loads them.

Each problem is one ``<key path>: <what>`` line; :func:`preflight` prefixes the config file's name.
"""

from __future__ import annotations

import os
import shutil
import ssl
import stat
from collections.abc import Iterable, Mapping

from .model import Config, McpServer, ServerSection
from .validate import _describe

__all__ = ["child_path", "check_files", "preflight", "resolve_command"]

# What to install when a well-known launcher is missing.
_HINTS = {
    "npx": "install Node.js (npx comes with npm)",
    "node": "install Node.js",
    "npm": "install Node.js",
    "uvx": "install uv (https://docs.astral.sh/uv/)",
    "uv": "install uv (https://docs.astral.sh/uv/)",
    "docker": "install Docker",
}


def child_path(m: McpServer, env: Mapping[str, str]) -> str | None:
    """The PATH a child of ``m`` gets: its own ``env.PATH`` if it sets one, else the gateway's (``env``).

    ``None`` when neither has one; then, like the gateway, :func:`shutil.which` falls back to the
    system's default path.
    """
    if "PATH" in m.env:
        return m.env["PATH"]
    return env.get("PATH")


def resolve_command(m: McpServer, env: Mapping[str, str]) -> str | None:
    """The program the gateway will execute for ``m``, or ``None`` when there is none to execute."""
    cmd = m.command
    if os.sep in cmd:
        target = os.path.normpath(os.path.join(m.cwd or os.getcwd(), cmd))
        return target if os.path.isfile(target) and os.access(target, os.X_OK) else None
    return shutil.which(cmd, path=child_path(m, env))


def _stat_kind(value: str, key: str, directory: bool, problems: list[str]) -> bool:
    """Whether ``value`` exists and is a directory (or a regular file); else one problem for ``key``."""
    kind = "directory" if directory else "file"
    try:
        st = os.stat(value)
    except FileNotFoundError:
        problems.append(f"{key}: no such {kind}: {value}")
        return False
    except OSError as exc:
        problems.append(f"{key}: cannot {'use' if directory else 'read'} {value}: {exc.strerror or exc}")
        return False
    if not (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
        problems.append(f"{key}: not a {'directory' if directory else 'regular file'}: {value}")
        return False
    return True


def _check_cwd(m: McpServer, path: str, problems: list[str]) -> bool:
    if not m.cwd:
        return True
    if not _stat_kind(m.cwd, f"{path}.cwd", True, problems):
        return False
    if not os.access(m.cwd, os.X_OK):
        problems.append(f"{path}.cwd: cannot enter {m.cwd} (permission denied)")
        return False
    return True


def _check_command(
    m: McpServer, path: str, env: Mapping[str, str], cwd_ok: bool, problems: list[str]
) -> None:
    cmd = m.command
    if not cmd.strip():
        return  # validate says "must not be empty"
    if os.sep in cmd:
        if not os.path.isabs(cmd) and not cwd_ok:
            return  # relative to a cwd that is already reported
        target = os.path.normpath(os.path.join(m.cwd or os.getcwd(), cmd))
        if not os.path.exists(target):
            problems.append(f"{path}.command: no such file: {target}")
        elif os.path.isdir(target):
            problems.append(f"{path}.command: is a directory: {target}")
        elif not os.access(target, os.X_OK):
            problems.append(f"{path}.command: not executable: {target}")
        return
    if shutil.which(cmd, path=child_path(m, env)) is not None:
        return
    search = child_path(m, env)
    if "PATH" in m.env:
        where = f"the PATH its env sets ({search or 'empty'})"
    elif search is None:
        where = "the system's default PATH (the gateway has no PATH)"
    else:
        where = f"the gateway's PATH ({search})"
    hint = _HINTS.get(os.path.basename(cmd))
    tail = f"; {hint}" if hint else ""
    problems.append(f"{path}.command: {_describe(cmd)} is not found on {where}{tail}")


def _check_readable(value: str, key: str, problems: list[str]) -> bool:
    if not _stat_kind(value, key, False, problems):
        return False
    try:
        with open(value, "rb") as f:
            f.read(1)
    except OSError as exc:
        problems.append(f"{key}: cannot read {value}: {exc.strerror or exc}")
        return False
    return True


class _Encrypted(Exception):
    pass


def _no_passphrase() -> str:
    # Called by OpenSSL only for an encrypted key; hypercorn would ask on the terminal (or fail without one).
    raise _Encrypted


def _check_tls(server: ServerSection, problems: list[str]) -> None:
    if not (server.tls_cert and server.tls_key):
        return  # none, or only one (validate reports that)
    cert_ok = _check_readable(server.tls_cert, "server.tls_cert", problems)
    key_ok = _check_readable(server.tls_key, "server.tls_key", problems)
    if not (cert_ok and key_ok):
        return
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key, password=_no_passphrase)
    except _Encrypted:
        problems.append(
            f"server.tls_key: {server.tls_key} is encrypted with a passphrase, which the gateway cannot "
            "supply; store it unencrypted (readable only by the gateway's user)"
        )
    except ssl.SSLError as exc:
        reason = exc.reason or exc.strerror or str(exc)
        problems.append(
            f"server.tls_cert: cannot load {server.tls_cert} with the key {server.tls_key}: {reason}"
        )
    except OSError as exc:  # pragma: no cover - read just above
        problems.append(f"server.tls_cert: cannot load {server.tls_cert}: {exc.strerror or exc}")


def check_files(
    server: ServerSection | None, servers: Iterable[tuple[int, McpServer]], env: Mapping[str, str]
) -> list[str]:
    """The filesystem problems of ``server`` and of the ``(index, server)`` pairs in ``servers``.

    Paths must already be resolved against the config file's directory, as ``parse_config`` does. Callers
    pass only the ``[[mcp]]`` servers that will start. Returns ``<key path>: <what>`` lines.
    """
    problems: list[str] = []
    if server is not None:
        _check_tls(server, problems)
    for index, m in servers:
        path = f"mcp[{index}]"
        if m.remote:
            if m.ca_file:
                _check_readable(m.ca_file, f"{path}.ca_file", problems)
            continue
        cwd_ok = _check_cwd(m, path, problems)
        _check_command(m, path, env, cwd_ok, problems)
    return problems


def preflight(config: Config, env: Mapping[str, str]) -> list[str]:
    """What would stop ``serve`` from starting a valid ``config``, as ``<file>: <key path>: <what>`` lines.

    ``env`` is the gateway's environment (the children's PATH comes from it).
    """
    running = [(index, m) for index, m in enumerate(config.mcp) if m.runnable]
    return [f"{config.path}: {line}" for line in check_files(config.server, running, env)]
