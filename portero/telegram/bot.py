"""The Telegram bot: asks the admin about sensitive tool calls and answers admin commands.

It talks to the Bot API through :class:`~portero.telegram.api.BotAPI` (which also holds the error tree and
keeps the token out of messages and logs), long-polls ``getUpdates``, hands admin commands to
:class:`~portero.telegram.commands.AdminCommands`, and implements the approval broker's *Approver* protocol
(``available``, ``announce``, ``settle``).

Approval messages carry Approve / Deny / Approve 30m and "Full arguments", which sends the complete arguments
as the client sent them (the fake side) as messages or a JSON document, and decides nothing.

Structure (one :meth:`TelegramBot.run` component, started in the gateway's nursery, cancelled to stop)::

    run
    ├── sender task: the ONE outbound queue (sendMessage / editMessage*), one message per
    │   ``send_interval`` seconds, as Telegram allows about one message a second per chat
    └── poll loop: deleteWebhook, getMe, setMyCommands, then getUpdates forever; each update handled in turn

Only ``admin_chat_id`` is obeyed (and, when it is a private chat, only that user); everything else is ignored
and recorded with ``store.record_event("telegram_ignored", ...)``.

Errors: see :mod:`portero.telegram.api`. 401/404 (:class:`TelegramUnauthorized`) and an unusable
``api_base`` (:class:`TelegramFatal`) stop the bot, the gateway keeps serving; 409 and 429 are waited out;
transient errors are retried with back-off.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import httpx
import trio

from ..approvals import EDIT_MAX_CHARS, REASON_WINDOW
from ..durations import format_duration
from . import pairing, render
from .activity import ActivityFeed
from .api import (
    DEFAULT_API_BASE,
    BotAPI,
    Files,
    TelegramBadRequest,
    TelegramConflict,
    TelegramError,
    TelegramFatal,
    TelegramRetryAfter,
    TelegramTransient,
    TelegramUnavailable,
    _Backoff,
)
from .commands import AdminCommands, RuleBook, StatusProvider

if TYPE_CHECKING:
    from ..approvals import Approval, ApprovalBroker
    from ..config import TelegramSection
    from ..core.pins import Pin, Question
    from ..store import Store

__all__ = ["TelegramBot"]

log = logging.getLogger("portero.telegram")

_T = TypeVar("_T")


@attrs.define(eq=False)
class _Outbound:
    """One request in the outbound queue; ``done`` is set once ``result`` or ``error`` is."""

    method: str
    params: dict[str, Any]
    on_sent: Callable[[Any], None] | None = None
    files: Files | None = None
    abandoned: bool = False
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Any = None
    error: BaseException | None = None

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.result, self.error = result, error
            self.done.set()


@attrs.define(eq=False)
class _Tracked:
    """The messages showing one approval, and its final text once settled."""

    message_ids: list[int] = attrs.field(factory=list)
    final_text: str | None = None


class TelegramBot:
    """The admin's Telegram bot. See the module docstring for the structure and error handling.

    ``config`` gives ``bot_token``, ``admin_chat_id``, ``api_base`` and ``max_grant`` (seconds; 0 means the
    default, 24 h). ``status_provider()`` returns ``{"children": [{"name", "state", "tools", "restarts"}],
    "uptime_s": float, "pending": int}``. The bot decides approvals with ``broker``, records ignored messages
    with ``store.record_event``. ``http`` is an ``httpx.AsyncClient`` to use (the bot closes only a client it
    made itself).

    Tunables (attributes, so tests can shrink them): ``poll_timeout`` (long-poll seconds), ``send_interval``
    (seconds between outbound messages), ``backoff_base`` / ``backoff_cap`` (seconds), ``send_attempts``
    (tries per outbound message on transient errors), ``queue_size``, ``drain_timeout`` (seconds given at
    shutdown to send what is still queued, such as the "shut down" edits of pending approvals).
    """

    poll_timeout: float = 30.0
    send_interval: float = 1.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    send_attempts: int = 3
    queue_size: int = 64
    drain_timeout: float = 3.0
    max_tracked: int = 512

    def __init__(
        self,
        config: TelegramSection,
        broker: ApprovalBroker,
        status_provider: StatusProvider,
        store: Store,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._api = BotAPI(str(config.bot_token), str(config.api_base or DEFAULT_API_BASE).rstrip("/"), http)
        # The admin chat: the config's, or (without one) the chat paired with /pair, read from the store
        # when the bot starts. None: nobody is paired yet, and approvals are denied as unreachable.
        self._chat_id: int | None = config.admin_chat_id
        self._config_chat_id = config.admin_chat_id
        self._pairing_code = config.pairing_code
        self._pair_limiter = pairing.PairingLimiter()
        # The activity feed ([telegram] activity): the router's record_call fills it, _feed_loop sends it.
        self.feed = ActivityFeed(config.activity)
        self.feed_interval = float(config.activity_interval)
        self._feed_wake = trio.Event()
        self._broker = broker
        self._store = store
        self._commands = AdminCommands(
            broker,
            store,
            status_provider,
            telegram_state=lambda: self.state,
            max_grant=float(config.max_grant) if config.max_grant else 86400.0,
        )
        self._username: str | None = None
        self._started = False
        self._stopped = False
        self._unauthorized = False
        self._state = "starting"
        self._state_detail = ""
        self._offset = 0
        self._send_channel: trio.MemorySendChannel[_Outbound] | None = None
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._cancel_scope: trio.CancelScope | None = None
        # Decides a pinned definition from its buttons: (question key, approve?, by) -> (result, pin).
        self.pin_decider: Callable[[str, bool], Awaitable[tuple[str, Pin | None]]] | None = None

    @property
    def rules(self) -> RuleBook | None:
        """The rules from the chat (the router): /allow /deny /ask /unrule /rules and the Always allow /
        Always deny buttons, which are shown only once this is set."""
        return self._commands.rules

    @rules.setter
    def rules(self, rules: RuleBook | None) -> None:
        self._commands.rules = rules

    def apply_settings(self, config: TelegramSection) -> bool:
        """A reload's ``[telegram]``: the admin chat and the longest grant apply at once; False when
        the bot token or API base changed (those take a restart of the gateway)."""
        token, base = str(config.bot_token), str(config.api_base or DEFAULT_API_BASE).rstrip("/")
        if (token, base) != (self._api._token, self._api.api_base):
            return False
        self._config_chat_id, self._pairing_code = config.admin_chat_id, config.pairing_code
        if config.admin_chat_id is not None:
            self._chat_id = config.admin_chat_id  # else: the paired chat, if any, stays
        self.feed.mode, self.feed_interval = config.activity, float(config.activity_interval)
        self._commands.max_grant = float(config.max_grant) if config.max_grant else 86400.0
        return True

    def __repr__(self) -> str:
        return f"<TelegramBot chat={self._chat_id} state={self._state}>"

    # ------------------------------------------------------------------------- Approver protocol

    @property
    def available(self) -> bool:
        """True once the token was accepted (getMe), while there is an admin chat, until the bot stops."""
        return self._started and not self._stopped and self._chat_id is not None

    @property
    def state(self) -> str:
        """``starting`` | ``polling`` | ``backoff`` | ``conflict`` | ``stopped``, plus detail if any."""
        state = f"{self._state} ({self._state_detail})" if self._state_detail else self._state
        return state if self._chat_id is not None else f"{state}, unpaired (send /pair <code>)"

    async def announce(self, approval: Approval) -> None:
        """Send the approval message with its buttons; returns once Telegram accepted it.

        Raises :class:`TelegramError` if it could not be sent. If the caller is cancelled before the message
        left the queue, it is never sent.
        """
        if not self.available:
            raise TelegramUnavailable("the Telegram bot is not running")
        req = self._approval_request(approval, now=time.time())
        try:
            await self._enqueue(req)
            await req.done.wait()
        finally:
            req.abandoned = True
        if req.error is not None:
            raise req.error

    async def settle(self, approval: Approval) -> None:
        """Edit every message showing ``approval`` to its outcome, without buttons. Idempotent.

        Does not wait for Telegram: the edits go through the outbound queue. Never raises for Telegram
        trouble (a settled approval is already decided; the message is cosmetics).
        """
        text = render.settled_text(approval, state=str(approval.state), source=str(approval.source))
        await self._finalize(approval.id, text)

    def notify_admin(self, text: str) -> None:
        """Send the admin a plain-text message through the outbound queue, without waiting (a full
        queue or a stopped bot drops it, with a warning). For news the admin should act on, such as
        a remote server that needs ``portero login``."""
        if self._send_channel is None or self._stopped or self._chat_id is None:
            log.warning("Telegram: a message to the admin was dropped: the bot is not running or not paired")
            return
        try:
            self._send_channel.send_nowait(_Outbound("sendMessage", {"chat_id": self._chat_id, "text": text}))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("Telegram: a message to the admin was dropped: the outbound queue is full or closed")

    # ------------------------------------------------------------------------------------ run

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled, or until the Bot API rejects the token (then log it and return).

        Reports started at once: Telegram being slow or unreachable never delays the gateway.
        """
        async with self._api.session():
            send, receive = trio.open_memory_channel[_Outbound](self.queue_size)
            self._send_channel = send
            try:
                async with trio.open_nursery() as nursery:
                    self._cancel_scope = nursery.cancel_scope
                    nursery.start_soon(self._sender, receive)
                    nursery.start_soon(self._feed_loop)
                    task_status.started()
                    await self._load_paired_chat()
                    try:
                        await self._poll_forever()
                    except TelegramFatal as e:
                        self._stop(str(e))
            finally:
                self._stopped = True
                if self._state != "stopped":
                    self._state, self._state_detail = "stopped", ""
                send.close()
                if not self._unauthorized:
                    # Shutdown: the broker settled the pending approvals just before; let those edits out.
                    with trio.CancelScope(shield=True), trio.move_on_after(self.drain_timeout):
                        await self._drain(receive)
                _fail_queued(receive)

    def _stop(self, reason: str) -> None:
        self._unauthorized = True
        if not self._stopped:
            log.error(
                "Telegram bot stopped: %s. Approvals will be denied (Telegram unreachable) until this is "
                "fixed and the gateway restarted; the gateway keeps serving.",
                reason,
            )
        self._stopped = True
        self._state, self._state_detail = "stopped", reason
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    # ------------------------------------------------------------------------------ poll loop

    async def _poll_forever(self) -> None:
        backoff = _Backoff(self.backoff_base, self.backoff_cap)
        await self._with_retries(self._start_session, backoff)
        while True:
            updates = await self._with_retries(self._get_updates, backoff)
            for update in updates:
                update_id = update.get("update_id")
                if isinstance(update_id, int):
                    self._offset = max(self._offset, update_id + 1)
                try:
                    await self._handle_update(update)
                except TelegramFatal:
                    raise
                except Exception as e:  # one bad update must not take the bot down
                    what = self._api.redact(f"{type(e).__name__}: {e}")
                    log.warning("Telegram: handling an update failed: %s", what)

    async def _with_retries(self, fn: Callable[[], Awaitable[_T]], backoff: _Backoff) -> _T:
        """Call ``fn`` until it succeeds, waiting as Telegram asks; 401/404 propagate (the bot stops)."""
        while True:
            try:
                result = await fn()
            except TelegramRetryAfter as e:
                self._state, self._state_detail = "backoff", f"rate limited for {e.retry_after:g}s"
                log.warning("Telegram: rate limited, retrying in %gs", e.retry_after)
                await trio.sleep(e.retry_after)
            except TelegramConflict as e:
                delay = backoff.next()
                if self._state != "conflict":
                    log.warning(
                        "Telegram: %s. A webhook is set or another instance polls this bot; Portero does not "
                        "delete webhooks. Retrying in %.1fs.",
                        e,
                        delay,
                    )
                self._state, self._state_detail = "conflict", "409: webhook set or another instance polling"
                await trio.sleep(delay)
            except (TelegramTransient, TelegramBadRequest) as e:
                delay = backoff.next()
                log.warning("Telegram: %s; retrying in %.1fs", e, delay)
                self._state, self._state_detail = "backoff", str(e)
                await trio.sleep(delay)
            else:
                if self._state != "polling":
                    if self._state in ("conflict", "backoff"):
                        log.info("Telegram: polling again")
                    self._state, self._state_detail = "polling", ""
                backoff.reset()
                return result

    async def _start_session(self) -> None:
        # A webhook left by another tool would make every getUpdates fail with 409: remove it.
        # Pending updates are kept (drop_pending_updates false): a press made while we were down
        # still arrives, and is answered "unknown or expired" if its approval is gone.
        try:
            await self._api.call("deleteWebhook", {"drop_pending_updates": False})
        except TelegramFatal:
            raise
        except TelegramError as e:
            log.warning("Telegram: deleteWebhook failed: %s", e)
        me = await self._api.call("getMe")
        username = me.get("username") if isinstance(me, dict) else None
        self._username = username if isinstance(username, str) and username else None
        self._started = True
        log.info("Telegram: connected as @%s", self._username or "?")
        await self._set_commands()

    async def _set_commands(self) -> None:
        """The command menu, for the admin chat only (nothing while unpaired)."""
        if self._chat_id is None:
            return
        commands = [{"command": name, "description": desc[:256]} for name, desc in render.COMMANDS]
        try:
            await self._api.call(
                "setMyCommands",
                {"commands": commands, "scope": {"type": "chat", "chat_id": self._chat_id}},
            )
        except TelegramFatal:
            raise
        except TelegramError as e:  # cosmetics: the menu; commands work without it
            log.warning("Telegram: setMyCommands failed: %s", e)

    async def _get_updates(self) -> list[dict[str, Any]]:
        result = await self._api.call(
            "getUpdates",
            {
                "offset": self._offset,
                "timeout": int(math.ceil(self.poll_timeout)) if self.poll_timeout >= 1 else self.poll_timeout,
                "allowed_updates": ["message", "callback_query"],
            },
            http_timeout=self.poll_timeout + 10.0,
        )
        if not isinstance(result, list):
            raise TelegramTransient("getUpdates: the answer is not a list")
        return [u for u in result if isinstance(u, dict)]

    # ------------------------------------------------------------------------------- updates

    def _is_admin(self, chat_id: object, user_id: object) -> bool:
        if self._chat_id is None or chat_id != self._chat_id:
            return False
        # A positive chat id is a private chat: only that user. A group id: any member of the admin group.
        return self._chat_id < 0 or user_id == self._chat_id

    async def _ignored(self, kind: str, chat_id: object, user_id: object, content: object) -> None:
        detail = {"kind": kind, "chat_id": chat_id, "user_id": user_id, "content": str(content)[:200]}
        log.info("Telegram: ignored a %s from chat %s, user %s", kind, chat_id, user_id)
        try:
            await self._store.record_event("telegram_ignored", detail)
        except Exception as e:
            log.warning("Telegram: recording an ignored %s failed: %s", kind, type(e).__name__)

    async def _handle_update(self, update: dict[str, Any]) -> None:
        if isinstance(update.get("callback_query"), dict):
            await self._handle_callback(update["callback_query"])
        elif isinstance(update.get("message"), dict):
            await self._handle_message(update["message"])

    async def _handle_callback(self, query: dict[str, Any]) -> None:
        qid = str(query.get("id", ""))
        user_id = (query.get("from") or {}).get("id")
        message = query.get("message") or {}
        chat_id = (message.get("chat") or {}).get("id")
        message_id = message.get("message_id")
        data = query.get("data")
        if not self._is_admin(chat_id, user_id):
            await self._ignored("callback", chat_id, user_id, data)
            await self._answer(qid, "Not allowed")
            return
        pin_press = render.parse_pin_callback(data if isinstance(data, str) else None)
        if pin_press is not None:
            await self._pin_pressed(qid, message_id, *pin_press)
            return
        parsed = render.parse_callback(data if isinstance(data, str) else None)
        if parsed is None:
            await self._answer(qid, render.callback_answer("unknown", None))
            return
        action, approval_id = parsed
        approval = next((a for a in self._broker.pending() if a.id == approval_id), None)
        if action == "full":
            # Decides nothing: sends the complete arguments of a pending approval. Otherwise it is treated
            # like a press on a decided or unknown approval (its message is brought up to date below).
            if approval is not None:
                await self._answer(qid, render.callback_answer("ok", action))
                await self._send_full_arguments(approval)
                return
            result = "unknown"
        elif action in render.ALWAYS_ACTIONS:
            # The exact rule from the chat is stored first (the admin asked for it whatever becomes of this
            # call); only then is the call decided. A rule that cannot be stored decides nothing.
            result = "unknown"
            if approval is not None and self.rules is not None and "*" not in approval.tool:
                try:
                    await self.rules.add_chat_rule(approval.tool, render.ALWAYS_ACTIONS[action], "telegram")
                except Exception as e:
                    await self._answer(qid, "The rule could not be saved; nothing was decided")
                    log.warning("Telegram: saving a rule from the chat failed: %s", type(e).__name__)
                    return
                result = self._broker.decide(approval_id, action == "always-allow")
        # decide() is synchronous, so answering right after it is "at once", and lets the toast say what
        # happened (a second answer to the same query would be refused).
        elif action == "grant":
            result = self._broker.decide(approval_id, True, grant_seconds=render.GRANT_BUTTON_SECONDS)
        else:
            result = self._broker.decide(approval_id, action == "approve")
        to_edit: list[int] = []
        final_text = ""
        if result == "ok" and approval is not None:
            # Mark the outcome before any await, so a settle() from the broker meanwhile is a no-op and the
            # grant note is kept.
            tracked = self._track(approval_id)
            if isinstance(message_id, int) and message_id not in tracked.message_ids:
                tracked.message_ids.append(message_id)
            note = None
            if action == "grant":
                seconds = render.GRANT_BUTTON_SECONDS
                note = f"{approval.tool} allowed for {format_duration(seconds)} (this tool only)"
            elif action in render.ALWAYS_ACTIONS:
                done = "allowed" if action == "always-allow" else "denied"
                note = f"{approval.tool} always {done} from now on: a rule from the chat (/rules, /unrule)"
            state = "rejected" if action in ("deny", "always-deny") else "approved"
            final_text = render.settled_text(approval, state=state, source="admin", note=note)
            if state == "rejected":
                final_text += "\n" + render.reason_hint(REASON_WINDOW)
            to_edit = self._mark_final(approval_id, final_text)
        await self._answer(qid, render.callback_answer(str(result), action))
        known = self._tracked.get(approval_id)
        if result == "ok":
            for mid in to_edit:
                await self._edit(mid, final_text)
        elif not isinstance(message_id, int):
            return
        elif known is not None and known.final_text is not None and message_id in known.message_ids:
            # The outcome edit may have failed before: make sure this message shows it (idempotent).
            await self._edit(message_id, known.final_text)
        elif not self._shows_pending(message_id, other_than=approval_id):
            # A message of a decided or forgotten approval (from before a restart, say, or whose outcome
            # edit never happened) still showing buttons: remove them. A forged id pressed on the message of
            # another, pending approval leaves that message alone.
            await self._submit(
                "editMessageReplyMarkup",
                {"chat_id": self._chat_id, "message_id": message_id, "reply_markup": {"inline_keyboard": []}},
            )

    def _shows_pending(self, message_id: int, *, other_than: str) -> bool:
        return any(
            message_id in t.message_ids and t.final_text is None
            for aid, t in self._tracked.items()
            if aid != other_than
        )

    async def _answer(self, query_id: str, text: str) -> None:
        try:
            await self._api.call("answerCallbackQuery", {"callback_query_id": query_id, "text": text})
        except TelegramFatal:
            raise
        except TelegramError as e:
            log.warning("Telegram: answerCallbackQuery failed: %s", e)

    async def _handle_message(self, message: dict[str, Any]) -> None:
        chat_id = (message.get("chat") or {}).get("id")
        user_id = (message.get("from") or {}).get("id")
        text = message.get("text")
        if await self._pairing_command(chat_id, user_id, text):
            return
        if not self._is_admin(chat_id, user_id):
            await self._ignored("message", chat_id, user_id, text)
            return
        if not isinstance(text, str):
            return
        replied = message.get("reply_to_message")
        if isinstance(replied, dict) and not text.startswith("/"):
            await self._handle_reply(replied, text)
            return
        parsed = render.parse_command(text, self._username)
        if parsed is None:
            if text.startswith("/"):
                return  # addressed to another bot in a group
            await self._reply("Send /help for the commands.")
            return
        name, args = parsed
        reply = await self._commands.run(name, args)
        if reply is None:
            await self._reply(f"Unknown command /{render.escape(name)}. Send /help for the commands.")
            return
        if reply.text is not None:
            await self._reply(reply.text)
        now = time.time()
        for approval in reply.approvals:
            req = self._approval_request(approval, now=now)
            await self._submit(req.method, req.params, on_sent=req.on_sent)

    # ------------------------------------------------------------- pairing and /whoami

    async def _load_paired_chat(self) -> None:
        """Without ``admin_chat_id`` in the config: the chat paired before, if any (it survives restarts)."""
        if self._config_chat_id is not None:
            return
        try:
            stored = await self._store.get_setting(pairing.SETTING_KEY)
        except Exception as e:
            log.error("Telegram: could not read the paired admin chat: %s", type(e).__name__)
            stored = None
        if stored is not None and stored.lstrip("-").isdigit():
            self._chat_id = int(stored)
            log.info("Telegram: admin chat %s (paired with /pair)", self._chat_id)
        elif self._chat_id is None:
            log.warning(
                "Telegram: no admin chat yet: send /pair <code> to the bot; until then approvals are denied "
                "(as when Telegram is unreachable)"
            )

    async def _pairing_command(self, chat_id: object, user_id: object, text: object) -> bool:
        """/whoami (from anyone), /pair and /unpair; True when the message was one of them and is handled."""
        if not isinstance(text, str) or not isinstance(chat_id, int):
            return False
        parsed = render.parse_command(text, self._username)
        if parsed is None:
            return False
        name, args = parsed
        if name == "whoami":
            await self._reply_to(chat_id, pairing.whoami_text(chat_id))
            return True
        if name == "unpair" and self._is_admin(chat_id, user_id):
            if self._config_chat_id is not None:
                await self._reply_to(chat_id, pairing.UNPAIR_CONFIGURED)
                return True
            await self._store.delete_setting(pairing.SETTING_KEY)
            await self._reply_to(chat_id, pairing.UNPAIRED)
            self._chat_id = None
            log.warning("Telegram: chat %s unpaired; approvals are denied until a chat pairs again", chat_id)
            await self._record_pairing("telegram_unpaired", chat_id, user_id)
            return True
        if name != "pair" or self._config_chat_id is not None or not self._pairing_code:
            return False
        if self._chat_id is not None:
            if self._is_admin(chat_id, user_id):
                await self._reply_to(chat_id, pairing.ALREADY_PAIRED)
                return True
            return False  # paired with another chat: a stranger's message, ignored and recorded
        now = time.time()
        if not self._pair_limiter.allowed(chat_id, now):
            await self._record_pairing("telegram_pair_limited", chat_id, user_id)
            await self._reply_to(chat_id, pairing.TOO_MANY)
            return True
        if len(args) != 1:
            await self._reply_to(chat_id, pairing.PAIR_USAGE)
            return True
        if not pairing.code_matches(args[0], self._pairing_code):
            self._pair_limiter.failed(chat_id, now)
            # Never the code sent: a near miss would tell the log's readers most of the secret.
            await self._record_pairing("telegram_pair_failed", chat_id, user_id)
            log.warning("Telegram: a wrong pairing code from chat %s", chat_id)
            await self._reply_to(chat_id, pairing.WRONG_CODE)
            return True
        await self._store.set_setting(pairing.SETTING_KEY, str(chat_id))
        self._chat_id = chat_id
        log.info("Telegram: chat %s paired as the admin chat", chat_id)
        await self._record_pairing("telegram_paired", chat_id, user_id)
        await self._reply_to(chat_id, pairing.PAIRED)
        try:
            await self._set_commands()
        except TelegramFatal:
            raise
        except TelegramError as e:
            log.warning("Telegram: setMyCommands failed: %s", e)
        return True

    async def _record_pairing(self, kind: str, chat_id: object, user_id: object) -> None:
        try:
            await self._store.record_event(kind, {"chat_id": chat_id, "user_id": user_id})
        except Exception as e:
            log.warning("Telegram: recording %s failed: %s", kind, type(e).__name__)

    async def _reply_to(self, chat_id: int, text: str) -> None:
        await self._submit("sendMessage", {"chat_id": chat_id, "text": text})

    # ------------------------------------------------------------------------ activity feed

    def record_call(self, tool: str, decision: str, source: str, outcome: str) -> None:
        """The router's hook: one finished tool call. On the call's hot path: no await, no I/O."""
        if self.feed.record(tool, decision, source, outcome):
            self._feed_wake.set()

    async def _feed_loop(self) -> None:
        async def woken() -> None:
            await self._feed_wake.wait()
            self._feed_wake = trio.Event()

        await feed_loop(self.feed, self._send_feed, interval=lambda: self.feed_interval, woken=woken)

    async def _send_feed(self, text: str) -> None:
        """One feed message; returns once it is sent (or dropped), so the feed never fills the queue
        that approvals go through."""
        if self._chat_id is None:
            return
        req = _Outbound("sendMessage", {"chat_id": self._chat_id, "text": text})
        try:
            await self._enqueue(req)
        except TelegramUnavailable:
            return
        try:
            await req.done.wait()
        finally:
            req.abandoned = True

    # ------------------------------------------------- replies: deny reasons, edited arguments

    async def _handle_reply(self, replied: dict[str, Any], text: str) -> None:
        """The admin replied to a message. To a pending approval: a JSON object (the text starts with ``{``)
        approves the call with those arguments, once they fit the tool's schema; any other text denies it
        with that reason, which the model reads. To one denied with the button: the reason, for the record
        (see :mod:`portero.approvals`)."""
        message_id = replied.get("message_id")
        approval_id = next(
            (aid for aid, t in reversed(self._tracked.items()) if message_id in t.message_ids), None
        )
        if approval_id is None:
            # Telegram sends the replied-to message with its buttons: an approval's name its id. (A reply
            # can arrive before the answer to our sendMessage told us the message's id.)
            approval_id = _approval_of_buttons(replied.get("reply_markup"))
            if approval_id is not None and isinstance(message_id, int):
                self._track(approval_id).message_ids.append(message_id)
        if approval_id is None:
            await self._reply(render.NOT_AN_APPROVAL)
            return
        pending = self._broker.get(approval_id)
        if pending is None or pending.state != "pending":
            result = await self._broker.give_reason(approval_id, text)
            await self._reply(render.reason_answer(result, REASON_WINDOW))
            return
        if not text.lstrip().startswith("{"):
            result = self._broker.deny_with_reason(approval_id, text)
            if result == "ok":
                note = f"Reason (as the model reads it): {pending.reason}"
                final_text = render.settled_text(pending, state="rejected", source="admin", note=note)
                for mid in self._mark_final(approval_id, final_text):
                    await self._edit(mid, final_text)
                result = "denied"
            await self._reply(render.reason_answer(result, REASON_WINDOW))
            return
        try:
            edited = json.loads(text)
        except json.JSONDecodeError as e:
            await self._reply(render.edit_answer("json", [f"{e.msg} (line {e.lineno}, column {e.colno})"]))
            return
        except (ValueError, RecursionError):
            await self._reply(render.edit_answer("json", ["cannot be read"]))
            return
        if not isinstance(edited, dict):
            await self._reply(render.edit_answer("not-object"))
            return
        result, problems = self._broker.approve_edited(approval_id, edited)
        if result == "ok":
            note = "with the arguments the admin edited"
            final_text = render.settled_text(pending, state="approved", source="admin", note=note)
            for mid in self._mark_final(approval_id, final_text):
                await self._edit(mid, final_text)
        await self._reply(render.edit_answer(result, problems, max_chars=EDIT_MAX_CHARS))

    # ------------------------------------------------------------------- pinned definitions

    def ask_pin(self, question: Question) -> None:
        """Send the admin the question about a quarantined tool definition, with Approve / Keep blocked,
        through the outbound queue without waiting (like :meth:`notify_admin`; dropped with a warning when
        the bot is not running or the queue is full: ``portero pins`` still shows the tool)."""
        if self._send_channel is None or self._stopped or self._chat_id is None:
            log.warning(
                "Telegram: a question about a tool definition was dropped: the bot is not running or "
                "not paired"
            )
            return
        params = {
            "chat_id": self._chat_id,
            "text": render.pin_text(question),
            "parse_mode": "HTML",
            "reply_markup": render.pin_keyboard(question.key),
        }
        try:
            self._send_channel.send_nowait(_Outbound("sendMessage", params))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning(
                "Telegram: a question about a tool definition was dropped: the queue is full or closed"
            )

    async def _pin_pressed(self, query_id: str, message_id: object, action: str, key: str) -> None:
        """Approve or Keep blocked pressed (by the admin: checked before): decide, answer, then edit the
        message to what was decided (also when it was decided before, or the definition changed since)."""
        if self.pin_decider is None:
            await self._answer(query_id, render.pin_callback_answer("unknown", action))
            return
        result, pin = await self.pin_decider(key, action == "approve")
        await self._answer(query_id, render.pin_callback_answer(result, action))
        if not isinstance(message_id, int):
            return
        if pin is None:
            text = render.PIN_SUPERSEDED
        else:
            by = "admin" if pin.decided_by in (None, "telegram") else str(pin.decided_by)
            text = render.pin_decided_text(pin.server, pin.tool, pin.hash, pin.state, by)
        await self._edit(message_id, text)

    # ---------------------------------------------------------------------- approval messages

    async def _send_full_arguments(self, approval: Approval) -> None:
        """The complete arguments as the client sent them (the fake side, never the real values): as
        messages, or as a JSON document when they would take more than a few."""

        def build() -> list[str] | tuple[str, bytes, str]:
            messages = render.full_arguments_messages(approval)
            return messages if messages is not None else render.full_arguments_document(approval)

        # Up to max_body_bytes of JSON: rendered in a worker thread, off the event loop.
        built = await trio.to_thread.run_sync(build)
        if isinstance(built, list):
            for text in built:
                await self._reply(text)
            return
        name, content, caption = built
        await self._submit(
            "sendDocument",
            {"chat_id": self._chat_id, "caption": caption, "parse_mode": "HTML"},
            files={"document": (name, content, "application/json")},
        )

    def _approval_request(self, approval: Approval, *, now: float) -> _Outbound:
        """The message showing ``approval`` with its buttons; once sent, it is tracked for the outcome."""
        return _Outbound(
            "sendMessage",
            {
                "chat_id": self._chat_id,
                "text": render.approval_text(approval, now=now, replies=True),
                "parse_mode": "HTML",
                "reply_markup": render.approval_keyboard(
                    approval.id, always=self.rules is not None and "*" not in approval.tool
                ),
            },
            on_sent=functools.partial(self._message_sent, approval.id),
        )

    def _track(self, approval_id: str) -> _Tracked:
        tracked = self._tracked.get(approval_id)
        if tracked is None:
            tracked = self._tracked[approval_id] = _Tracked()
            while len(self._tracked) > self.max_tracked:
                self._tracked.popitem(last=False)
        return tracked

    def _message_sent(self, approval_id: str, result: Any) -> None:
        """A message showing ``approval_id`` went out; if it was settled meanwhile, edit it at once."""
        if not isinstance(result, dict) or not isinstance(result.get("message_id"), int):
            return
        tracked = self._track(approval_id)
        tracked.message_ids.append(result["message_id"])
        if tracked.final_text is not None and self._send_channel is not None:
            try:
                self._send_channel.send_nowait(self._edit_request(result["message_id"], tracked.final_text))
            except (trio.WouldBlock, trio.ClosedResourceError):
                log.warning("Telegram: could not queue the edit of a settled approval message")

    def _mark_final(self, approval_id: str, text: str) -> list[int]:
        """Record the outcome text once; returns the messages to edit ([] if it was already settled)."""
        tracked = self._track(approval_id)
        if tracked.final_text is not None:
            return []
        tracked.final_text = text
        return list(tracked.message_ids)

    async def _finalize(self, approval_id: str, text: str) -> None:
        for message_id in self._mark_final(approval_id, text):
            await self._edit(message_id, text)

    def _edit_request(self, message_id: int, text: str) -> _Outbound:
        return _Outbound(
            "editMessageText",
            {
                "chat_id": self._chat_id,
                "message_id": message_id,
                "text": text,
                "parse_mode": "HTML",
                "reply_markup": {"inline_keyboard": []},
            },
        )

    async def _edit(self, message_id: int, text: str) -> None:
        req = self._edit_request(message_id, text)
        await self._submit(req.method, req.params)

    # ------------------------------------------------------------------------ outbound queue

    async def _reply(self, text: str) -> None:
        await self._submit("sendMessage", {"chat_id": self._chat_id, "text": text, "parse_mode": "HTML"})

    async def _submit(
        self,
        method: str,
        params: dict[str, Any],
        *,
        on_sent: Callable[[Any], None] | None = None,
        files: Files | None = None,
    ) -> None:
        """Queue a message without waiting for it (errors are logged by the sender)."""
        try:
            await self._enqueue(_Outbound(method, params, on_sent=on_sent, files=files))
        except TelegramUnavailable as e:
            log.warning("Telegram: %s dropped: %s", method, e)

    async def _enqueue(self, req: _Outbound) -> None:
        if self._send_channel is None or self._stopped:
            raise TelegramUnavailable("the Telegram bot is not running")
        try:
            await self._send_channel.send(req)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TelegramUnavailable("the Telegram bot is not running") from None

    async def _sender(self, receive: trio.MemoryReceiveChannel[_Outbound]) -> None:
        """The one task that sends messages: in order, one per ``send_interval``."""
        backoff = _Backoff(self.backoff_base, self.backoff_cap)
        async for req in receive:
            if req.abandoned:
                req.finish(error=TelegramUnavailable("abandoned"))
                continue
            try:
                result = await self._send_one(req, backoff)
            except TelegramFatal as e:
                req.finish(error=e)
                self._stop(str(e))
                return
            except TelegramError as e:
                if "message is not modified" in str(e):
                    req.finish(result=None)
                else:
                    log.warning("Telegram: %s", e)
                    req.finish(error=e)
            except Exception as e:  # a bug here must not take the gateway down with it
                log.exception("Telegram: sending %s failed", req.method)
                req.finish(error=TelegramError(self._api.redact(f"{req.method}: {type(e).__name__}")))
            else:
                req.finish(result=result)
                if req.on_sent is not None:
                    req.on_sent(result)
            finally:
                # Cancelled mid-send: whoever waits on it must not wait forever.
                req.finish(error=TelegramUnavailable("the Telegram bot stopped"))
            await trio.sleep(self.send_interval)

    async def _drain(self, receive: trio.MemoryReceiveChannel[_Outbound]) -> None:
        """Send what is still queued, one attempt each (used at shutdown, under a deadline)."""
        while True:
            try:
                req = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            if req.abandoned:
                req.finish(error=TelegramUnavailable("abandoned"))
                continue
            try:
                req.finish(
                    result=await self._api.call(
                        req.method, req.params, files=req.files, http_timeout=self.drain_timeout
                    )
                )
            except TelegramError as e:
                req.finish(error=e)
            await trio.sleep(self.send_interval)

    async def _send_one(self, req: _Outbound, backoff: _Backoff) -> Any:
        transient_failures = 0
        rate_limits = 0
        while True:
            try:
                result = await self._api.call(req.method, req.params, files=req.files)
            except TelegramRetryAfter as e:
                rate_limits += 1
                if rate_limits > 5:
                    raise
                await trio.sleep(e.retry_after)
            except (TelegramTransient, TelegramConflict):
                transient_failures += 1
                if transient_failures >= self.send_attempts:
                    raise
                await trio.sleep(backoff.next())
            else:
                backoff.reset()
                return result


async def feed_loop(
    feed: ActivityFeed,
    send: Callable[[str], Awaitable[None]],
    *,
    interval: Callable[[], float],
    woken: Callable[[], Awaitable[None]],
) -> None:
    """Send what ``feed`` holds, forever: in ``all`` mode as soon as ``woken()`` returns (a call was
    recorded), otherwise once per ``interval()`` seconds -- at most one summary per interval, and
    nothing when there was no activity. ``send`` returns once its message is out, so calls that finish
    meanwhile wait in the feed (bounded: it folds them into a summary)."""
    while True:
        if feed.mode == "all":
            await woken()
        else:
            await trio.sleep(interval())
        for text in feed.take():
            await send(text)


def _fail_queued(receive: trio.MemoryReceiveChannel[_Outbound]) -> None:
    """Wake every request still queued with TelegramUnavailable, then close the channel."""
    while True:
        try:
            req = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
        req.finish(error=TelegramUnavailable("the Telegram bot stopped"))
    receive.close()


def _approval_of_buttons(markup: Any) -> str | None:
    """The approval an inline keyboard's buttons decide (``a:<id>``, ``d:<id>``...), if any."""
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    for row in rows if isinstance(rows, list) else []:
        for button in row if isinstance(row, list) else []:
            data = button.get("callback_data") if isinstance(button, dict) else None
            parsed = render.parse_callback(data) if isinstance(data, str) else None
            if parsed is not None:
                return parsed[1]
    return None
