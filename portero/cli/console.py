"""``portero console passwd``: set the web console's password.

The password is read from standard input when that is not a terminal (its first line: scripts and tests),
otherwise asked for twice without echo. It must have at least ten characters and must not be one of the
config's MCP tokens (the bearer token never logs into the console). Only its scrypt hash
(:func:`portero.front.console.auth.hash_password`) is stored, in the database's ``settings``; a running
gateway takes it within two seconds, and the sessions logged in with the old one end.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import TextIO

from portero.front.console.auth import PASSWORD_KEY, hash_password, password_problem
from portero.front.security import Guard
from portero.store import Store, StoreError

from .common import load_for_command


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``console``; ``config_options`` adds ``--config`` and ``--env-file``."""
    p = sub.add_parser(
        "console",
        help="the web console: set its password",
        description="portero console passwd: set the password of the web console at /console",
    )
    config_options(p)
    p.add_argument("action", choices=("passwd",), help="passwd: set the console's password")
    p.set_defaults(func=cmd_console)


def _read_password(stdin: TextIO, err: TextIO) -> str | None:
    if not stdin.isatty():
        line = stdin.readline()
        return line.rstrip("\r\n")
    first = getpass.getpass("New console password: ")
    second = getpass.getpass("Again: ")
    if first != second:
        print("the two passwords differ; nothing changed", file=err)
        return None
    return first


def cmd_console(
    args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr, stdin: TextIO = sys.stdin
) -> int:
    loaded = load_for_command(args, err)
    if loaded is None:
        return 2
    config, _env = loaded
    password = _read_password(stdin, err)
    if password is None:
        return 1
    guard = Guard(config.server, config.clients)
    problem = password_problem(password, [config.server.bearer_token])
    if problem is None and guard.is_token(password):
        problem = "the console password must not be an MCP bearer token"
    if problem is not None:
        print(f"{problem}; nothing changed", file=err)
        return 1
    db_path = os.path.join(config.server.data_dir, "gateway.db")
    try:
        Store.set_setting_in_file(db_path, PASSWORD_KEY, hash_password(password))
    except (OSError, StoreError) as exc:
        print(f"{db_path}: cannot store the password: {exc}", file=err)
        return 1
    print("console password set", file=out)
    if not config.console.enabled:
        print("note: [console] is not enabled in the config; add `[console]` with `enabled = true`", file=out)
    return 0
