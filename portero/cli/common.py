"""Helpers shared by the ``portero`` commands: :func:`build_env`, :func:`load_for_command` and
:func:`data_dir_for_command`.

Environment for ``${VAR}`` interpolation: the values of ``--env-file`` are loaded first (it may be given
more than once; a later file wins over an earlier one) and the process environment is laid over them, so
a variable that is really set wins over the files. This is what
docker compose and python-dotenv do, and it lets a one-off ``GITHUB_TOKEN=... portero serve --env-file ...``
override the file. (Under systemd the unit's ``EnvironmentFile=`` already ends up in the process
environment, so both ways give the same result there.)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import TextIO

from portero.config import (
    Config,
    ConfigError,
    default_config_path,
    load_config,
    load_data_dir,
    read_env_file,
)


def build_env(env_file: str | Sequence[str] | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The mapping used for interpolation: the ``env_file`` values (one path or several, later ones
    winning), overridden by ``base`` (os.environ)."""
    files = [env_file] if isinstance(env_file, str) else list(env_file or ())
    merged: dict[str, str] = {}
    for name in files:
        if name:
            merged.update(read_env_file(name))
    merged.update(os.environ if base is None else base)
    return merged


def load_for_command(
    args: argparse.Namespace, err: TextIO, *, preflight: bool = False
) -> tuple[Config, dict[str, str]] | None:
    """Load env and config for a command; print problems and return None when anything is wrong.

    ``preflight=True`` adds the filesystem checks (``portero check``), in the same pass.
    """
    try:
        env = build_env(args.env_file)
        path = args.config or default_config_path(env)
        return load_config(path, env, preflight=preflight), env
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return None


def data_dir_for_command(args: argparse.Namespace, err: TextIO) -> str | None:
    """Only the config's data directory (``portero audit``): the rest of the file is neither validated
    nor interpolated, so unset secrets that only serving needs don't matter. None (printed) on error."""
    try:
        env = build_env(args.env_file)
        path = args.config or default_config_path(env)
        return load_data_dir(path, env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return None


__all__ = ["build_env", "data_dir_for_command", "load_for_command"]


def create_private(path: str) -> int:
    """A new file, mode 0600 whatever the umask; FileExistsError if anything (a file, a symlink) is
    there — never overwritten, even if it appears between a check and the write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def create_private_or_say(path: str, err: TextIO, shown: str | None = None) -> int | None:
    """:func:`create_private`, or None after one line on ``err`` saying why not (naming ``shown``)."""
    try:
        return create_private(path)
    except FileExistsError:
        print(f"{shown or path}: already exists; not overwriting it", file=err)
    except OSError as exc:
        print(f"{shown or path}: cannot create: {exc.strerror or exc}", file=err)
    return None
