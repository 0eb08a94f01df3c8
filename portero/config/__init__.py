"""The configuration: typed sections (:mod:`.model`), reading TOML with ``${VAR}`` (:mod:`.load`),
and the checks shared by ``check`` and ``serve`` (:mod:`.validate`)."""

from .load import *  # noqa: F403
from .load import __all__  # noqa: F401
