"""``portero client add|list|revoke``: the ``[[client]]`` entries of the config file, each with its own token.

``add`` makes a fresh token (``secrets.token_urlsafe(32)``), prints it once and appends a ``[[client]]``
block holding only its SHA-256 to the file; ``revoke`` removes the block of that name; ``list`` shows
names, tool globs and how many rules of their own (never a whole hash). Both edits are text edits --
the rest of the file, comments included, stays byte for byte -- checked by parsing the result: the
edit must leave valid TOML whose ``[[client]]`` entries are exactly the old ones plus (or minus) that
one, or the file is left alone. The file is replaced atomically with its mode kept.

The running gateway takes the change on its next reload (``systemctl reload portero`` or
``kill -HUP <pid>``): a new token works, a revoked one gets 401, without a restart.

The text functions (:func:`append_client`, :func:`remove_client`, :func:`client_entries`) are pure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import tempfile
import tomllib
from typing import Any, TextIO

from portero.config import DEFAULT_CLIENT, default_config_path
from portero.core.policy import validate_pattern

from .common import build_env

__all__ = ["ClientEditError", "add_parsers", "append_client", "client_entries", "remove_client"]

_NAME_RE = re.compile(r"^[A-Za-z0-9-]+$")  # as [[mcp]] names (config.validate)
_HEADER_RE = re.compile(r"^\s*\[")  # a table or array-of-tables header line
_CLIENT_HEADER_RE = re.compile(r"^\s*\[\[\s*client\s*\]\]\s*(#.*)?$")
_CLIENT_SUBTABLE_RE = re.compile(r"^\s*\[\s*client\s*\.")  # [client.policy] belongs to the block above


class ClientEditError(ValueError):
    """The edit cannot be made (a duplicate or unknown name, a file that is not valid TOML...)."""


def client_entries(text: str) -> list[dict[str, Any]]:
    """The ``[[client]]`` tables of a config text, as TOML gives them. Raises ClientEditError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClientEditError(f"not valid TOML: {exc}") from None
    entries = raw.get("client", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ClientEditError("client: expected an array of tables ([[client]])")
    return entries


def _has_bearer_token(text: str) -> bool:
    server = tomllib.loads(text).get("server", {})
    return isinstance(server, dict) and bool(server.get("bearer_token"))


def append_client(text: str, name: str, token_sha256: str, tools: list[str]) -> str:
    """``text`` with a ``[[client]]`` block for ``name`` appended. Raises ClientEditError."""
    if not _NAME_RE.match(name):
        raise ClientEditError(f"client name {name!r}: use only letters, digits and '-'")
    entries = client_entries(text)
    if any(e.get("name") == name for e in entries):
        raise ClientEditError(f"a client named {name!r} already exists")
    if name == DEFAULT_CLIENT and _has_bearer_token(text):
        raise ClientEditError(f'"{DEFAULT_CLIENT}" is the client of server.bearer_token; pick another name')
    for pattern in tools:
        error = validate_pattern(pattern)
        if error is not None:
            raise ClientEditError(f"--tools {pattern!r}: {error}")
    lines = [
        "[[client]]",
        f"name = {json.dumps(name)}",
        f'token_sha256 = "{token_sha256}"  # the token is not kept: revoke and add to replace it',
    ]
    if tools:
        lines.append(f"tools = [{', '.join(json.dumps(t) for t in tools)}]")
    prefix = text
    if prefix and not prefix.endswith("\n"):
        prefix += "\n"
    if prefix and not prefix.endswith("\n\n"):
        prefix += "\n"  # one blank line before the block
    new = prefix + "\n".join(lines) + "\n"
    after = client_entries(new)
    if [e.get("name") for e in after] != [*(e.get("name") for e in entries), name]:
        raise ClientEditError("appending the block would change other entries; add it by hand")
    return new


def remove_client(text: str, name: str) -> str:
    """``text`` without the ``[[client]]`` block of ``name`` (its header to the next table that is not
    one of its own subtables, trailing blank lines with it). Raises ClientEditError."""
    before = client_entries(text)
    if not any(e.get("name") == name for e in before):
        raise ClientEditError(f"no client named {name!r}")
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _CLIENT_HEADER_RE.match(line)]
    for start in starts:
        end = start + 1
        while end < len(lines) and not (
            _HEADER_RE.match(lines[end]) and not _CLIENT_SUBTABLE_RE.match(lines[end])
        ):
            end += 1
        block = "".join(lines[start:end])
        try:
            (entry,) = tomllib.loads(block).get("client", [None])
        except (tomllib.TOMLDecodeError, ValueError):
            continue  # not a block we can read on its own: the check below decides
        if not isinstance(entry, dict) or entry.get("name") != name:
            continue
        # Comments right before the next table belong to it, not to this block.
        while end - 1 > start and lines[end - 1].lstrip().startswith("#"):
            end -= 1
        new = "".join(lines[:start] + lines[end:])
        after = client_entries(new)
        expected = [e for e in before if e.get("name") != name]
        if after != expected:
            break
        return new
    raise ClientEditError(f"could not find the [[client]] block of {name!r} on its own; remove it by hand")


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or default_config_path(build_env(args.env_file)))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ClientEditError(f"cannot read: {exc.strerror or exc}") from None


def _replace(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then rename), keeping its mode."""
    mode = os.stat(path).st_mode & 0o7777
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".portero-", suffix=".toml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, os.path.realpath(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


RELOAD_HINT = "The running gateway takes it on reload: systemctl reload portero (or kill -HUP <pid>)."


def cmd_client_add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = _config_path(args)
    tools = [t.strip() for t in (args.tools or "").split(",") if t.strip()]
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    try:
        _replace(path, append_client(_read(path), args.name, digest, tools))
    except (ClientEditError, OSError) as exc:
        print(f"{path}: {exc}", file=err)
        return 2
    print(
        f"Added client {args.name!r} to {path}. Its token, shown this once (only its SHA-256 is kept):",
        file=err,
    )
    print(token, file=out, flush=True)
    print(f"Use it as: Authorization: Bearer <token>. {RELOAD_HINT}", file=err)
    return 0


def cmd_client_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = _config_path(args)
    try:
        text = _read(path)
        entries = client_entries(text)
    except ClientEditError as exc:
        print(f"{path}: {exc}", file=err)
        return 2
    rows = [("name", "tools", "rules", "token")]
    if _has_bearer_token(text):
        rows.append((DEFAULT_CLIENT, "*", "0", "server.bearer_token"))
    for e in entries:
        tools = e.get("tools", ["*"])
        policy = e.get("policy", {})
        digest = str(e.get("token_sha256", ""))
        rows.append(
            (
                str(e.get("name", "?")),
                ",".join(str(t) for t in tools) if isinstance(tools, list) else "?",
                str(len(policy)) if isinstance(policy, dict) else "?",
                f"sha256:{digest[:8]}…" if digest else "-",
            )
        )
    if len(rows) == 1:
        print("no clients (add one with: portero client add NAME)", file=out)
        return 0
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)
    return 0


def cmd_client_revoke(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = _config_path(args)
    try:
        _replace(path, remove_client(_read(path), args.name))
    except (ClientEditError, OSError) as exc:
        print(f"{path}: {exc}", file=err)
        return 2
    print(f"Removed client {args.name!r} from {path}. {RELOAD_HINT}", file=out)
    return 0


def add_parsers(sub: Any, config_options: Any) -> None:
    """``portero client add|list|revoke`` on the ``portero`` parser's subcommands."""
    p = sub.add_parser("client", help="manage the clients' tokens ([[client]] entries): add, list, revoke")
    inner = p.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    q = inner.add_parser("add", help="add a client with a fresh token (printed once)")
    config_options(q)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--tools", metavar="GLOBS", help="comma-separated tool globs it may see, e.g. 'github/*'")
    q.set_defaults(func=cmd_client_add)
    q = inner.add_parser("list", help="list the clients (names, tool globs, rule counts)")
    config_options(q)
    q.set_defaults(func=cmd_client_list)
    q = inner.add_parser("revoke", help="remove a client; its token stops working on the next reload")
    config_options(q)
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_client_revoke)
