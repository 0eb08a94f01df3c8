"""The configuration: typed sections (:mod:`.model`), reading TOML with ``${VAR}`` (:mod:`.load`),
the checks shared by ``check`` and ``serve`` (:mod:`.validate`), and the filesystem checks both run
before anything starts (:mod:`.preflight`: programs on the children's PATH, ``cwd``, TLS files)."""

from ..core.net import is_loopback_host
from ..durations import parse_duration
from . import load, model
from .load import *  # noqa: F403
from .model import *  # noqa: F403

__all__ = ["is_loopback_host", "parse_duration"]
__all__ += model.__all__
__all__ += load.__all__
