"""Helpers shared by the ``portero`` commands: :func:`build_env` and :func:`load_for_command`.

Environment for ``${VAR}`` interpolation: the values of ``--env-file`` are loaded first and the process
environment is laid over them, so a variable that is really set wins over the file. This is what
docker compose and python-dotenv do, and it lets a one-off ``GITHUB_TOKEN=... portero serve --env-file ...``
override the file. (Under systemd the unit's ``EnvironmentFile=`` already ends up in the process
environment, so both ways give the same result there.)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import TextIO

from portero.config import Config, ConfigError, default_config_path, load_config, read_env_file


def build_env(env_file: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The mapping used for interpolation: ``env_file`` values, overridden by ``base`` (os.environ)."""
    merged: dict[str, str] = {}
    if env_file:
        merged.update(read_env_file(env_file))
    merged.update(os.environ if base is None else base)
    return merged


def load_for_command(args: argparse.Namespace, err: TextIO) -> tuple[Config, dict[str, str]] | None:
    """Load env and config for a command; print problems and return None when anything is wrong."""
    try:
        env = build_env(args.env_file)
        path = args.config or default_config_path(env)
        return load_config(path, env), env
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=err)
        return None


__all__ = ["build_env", "load_for_command"]
