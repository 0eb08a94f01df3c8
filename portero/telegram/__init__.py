"""The admin's Telegram bot: Bot API client, long polling, commands, and message rendering."""

from .bot import *  # noqa: F403
from .bot import __all__  # noqa: F401
