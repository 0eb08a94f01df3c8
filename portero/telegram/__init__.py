"""The admin's Telegram bot: Bot API client, long polling, commands, and message rendering."""

from .api import *  # noqa: F403
from .api import __all__ as _api_all
from .bot import *  # noqa: F403
from .bot import __all__ as _bot_all

__all__ = sorted([*_api_all, *_bot_all])
