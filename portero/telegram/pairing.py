"""Pairing: the first chat that sends ``/pair <code>`` becomes the admin chat.

Pure and synchronous (the caller passes ``now``). :func:`code_matches` compares in constant time;
:class:`PairingLimiter` limits wrong codes per chat and overall, so the code cannot be guessed by trying.
The bot keeps the paired chat in the store's ``settings`` under :data:`SETTING_KEY`.
"""

from __future__ import annotations

import collections
import hmac

__all__ = ["GLOBAL_FAILURES", "PER_CHAT_FAILURES", "WINDOW", "PairingLimiter", "SETTING_KEY", "code_matches"]

SETTING_KEY = "telegram.admin_chat_id"
WINDOW = 600.0  # seconds a wrong code counts against its chat and against everyone
PER_CHAT_FAILURES = 5  # wrong codes a chat may send per WINDOW
GLOBAL_FAILURES = 20  # wrong codes all chats together may send per WINDOW
MAX_CHATS = 1024  # chats whose failures are remembered; the oldest are forgotten first


def code_matches(given: str, expected: str) -> bool:
    """True when ``given`` is the pairing code; the time taken does not depend on where they differ."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class PairingLimiter:
    """Sliding windows of wrong codes: ``allowed(chat, now)`` before checking a code, ``failed(chat, now)``
    after a wrong one. Memory is bounded by ``max_chats`` and the limits."""

    def __init__(
        self,
        *,
        per_chat: int = PER_CHAT_FAILURES,
        overall: int = GLOBAL_FAILURES,
        window: float = WINDOW,
        max_chats: int = MAX_CHATS,
    ) -> None:
        self.per_chat = per_chat
        self.overall = overall
        self.window = window
        self.max_chats = max_chats
        self._chats: collections.OrderedDict[object, collections.deque[float]] = collections.OrderedDict()
        self._all: collections.deque[float] = collections.deque()

    def allowed(self, chat: object, now: float) -> bool:
        """May ``chat`` try a code now?"""
        self._expire(self._all, now)
        times = self._chats.get(chat)
        if times is not None:
            self._expire(times, now)
            if not times:
                del self._chats[chat]
                times = None
        return len(self._all) < self.overall and (times is None or len(times) < self.per_chat)

    def failed(self, chat: object, now: float) -> None:
        """``chat`` sent a wrong code at ``now``."""
        times = self._chats.pop(chat, None) or collections.deque()
        times.append(now)
        while len(times) > self.per_chat:
            times.popleft()
        self._chats[chat] = times  # most recent last
        while len(self._chats) > self.max_chats:
            self._chats.popitem(last=False)
        self._all.append(now)
        while len(self._all) > self.overall:
            self._all.popleft()

    def _expire(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()


# --------------------------------------------------------------------------------------------- texts

PAIRED = "Paired: this chat is now Portero's admin chat. /unpair releases it."
ALREADY_PAIRED = "This chat is already the admin chat."
WRONG_CODE = "Wrong pairing code."
TOO_MANY = "Too many wrong pairing codes; try again later."
PAIR_USAGE = "Usage: /pair <code> (the pairing_code in the gateway's [telegram] section)."
UNPAIRED = "Unpaired: this chat is no longer the admin chat. Approvals are denied until a chat pairs again."
UNPAIR_CONFIGURED = "This chat is the admin_chat_id of the config: /unpair changes nothing (edit the config)."


def whoami_text(chat_id: object) -> str:
    """The answer to /whoami: the chat's id and nothing else."""
    return f"Your chat id: {chat_id}"
