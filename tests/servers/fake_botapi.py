"""A fake Telegram Bot API server for tests, on 127.0.0.1, running in the test's trio nursery.

It speaks plain HTTP/1.1 (h11, keep-alive) and behaves like the real Bot API where Portero depends on it:

- routes ``/bot<token>/<method>``; a wrong token gets ``401 {"ok":false,"error_code":401,...}``, an unknown
  method ``404``;
- parameters as JSON body, form body or query string; the ``{ok, result | error_code, description,
  parameters}`` envelope;
- ``getUpdates`` long-polls: it waits (on a ``trio.Event``, no sleep-polling) until an update is injected or
  ``timeout`` passes; updates below ``offset`` are confirmed and dropped;
- ``sendMessage`` / ``editMessageText`` / ``editMessageReplyMarkup`` keep the chat's messages, check the
  4096-unit text limit after entity parsing, HTML entities (known tags only, balanced, ``&`` must start an
  entity), the 64-byte ``callback_data`` limit, and "message is not modified";
- ``sendDocument`` takes a ``multipart/form-data`` upload (``document``, with ``caption`` at most 1024 units
  after entity parsing) and keeps it in :attr:`FakeBotAPI.documents`;
- ``answerCallbackQuery`` accepts each injected query id once;
- fault injection: :meth:`FakeBotAPI.fail_next` makes the next N calls of a method fail with 409, 429
  (``retry_after``), 5xx, or a dropped connection.

Every call is recorded in :attr:`FakeBotAPI.calls`; :meth:`FakeBotAPI.wait_for_call` waits for a matching one.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

TOKEN = "123456:TEST-token-ABCdef_ghiJKL"

_ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "tg-emoji",
    "code", "pre", "blockquote",
}  # fmt: skip
_ENTITY_RE = re.compile(r"&(lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")
_TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:=\"[^\"<>]*\"|='[^'<>]*')?)*)\s*>")


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


class _Drop(Exception):
    """Close the connection without answering (a network error for the client)."""


def parse_html(text: str) -> str:
    """The visible text of a Telegram HTML message; ApiError 400 if Telegram would refuse to parse it."""
    out: list[str] = []
    stack: list[str] = []
    i = 0
    bad = ApiError(400, "Bad Request: can't parse entities: unsupported start tag or unmatched end tag")
    while i < len(text):
        ch = text[i]
        if ch == "<":
            m = _TAG_RE.match(text, i)
            if not m:
                raise bad
            closing, name = m.group(1), m.group(2).lower()
            if name not in _ALLOWED_TAGS:
                raise bad
            if closing:
                if not stack or stack.pop() != name:
                    raise bad
            else:
                stack.append(name)
            i = m.end()
        elif ch == "&":
            m = _ENTITY_RE.match(text, i)
            if not m:
                raise ApiError(400, "Bad Request: can't parse entities: character '&' is reserved")
            out.append(html.unescape(m.group(0)))
            i = m.end()
        elif ch == ">":
            raise ApiError(400, "Bad Request: can't parse entities: character '>' is reserved")
        else:
            out.append(ch)
            i += 1
    if stack:
        raise ApiError(400, f"Bad Request: can't parse entities: can't find end tag for {stack[-1]}")
    return "".join(out)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    status: int | None = None  # None while in flight; 0 when the connection was dropped
    response: dict[str, Any] | None = None
    at: float = 0.0  # trio.current_time() when the call arrived

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Message:
    message_id: int
    chat_id: int
    text: str
    reply_markup: dict[str, Any] | None = None
    parse_mode: str | None = None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        if not self.reply_markup:
            return []
        return [b for row in self.reply_markup.get("inline_keyboard", []) for b in row]

    @property
    def visible_text(self) -> str:
        return parse_html(self.text) if self.parse_mode == "HTML" else self.text


@dataclass
class Document:
    """A file sent with ``sendDocument``."""

    message_id: int
    chat_id: int
    file_name: str
    content: bytes
    media_type: str
    caption: str = ""
    parse_mode: str | None = None

    @property
    def visible_caption(self) -> str:
        return parse_html(self.caption) if self.parse_mode == "HTML" else self.caption


@dataclass
class _Fault:
    code: int  # 0 = drop the connection
    count: int
    retry_after: float | None = None
    description: str | None = None


@dataclass
class FakeBotAPI:
    token: str = TOKEN
    bot_username: str = "portero_test_bot"
    bot_id: int = 123456
    calls: list[Call] = field(default_factory=list)
    messages: dict[int, Message] = field(default_factory=dict)
    documents: list[Document] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    wait_timeout: float = 5.0

    def __post_init__(self) -> None:
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1000
        self._next_message_id = 1
        self._open_queries: set[str] = set()
        self._next_query = 1
        self._faults: dict[str, _Fault] = {}
        self._new_update = trio.Event()
        self._new_call = trio.Event()
        self.confirmed_offset = 0

    # ------------------------------------------------------------------------------ test helpers

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(
        self,
        method: str,
        count: int = 1,
        *,
        code: int = 500,
        retry_after: float | None = None,
        description: str | None = None,
    ) -> None:
        """Make the next ``count`` calls of ``method`` fail with ``code`` (0: drop the connection)."""
        self._faults[method] = _Fault(code, count, retry_after, description)

    def _push_update(self, update: dict[str, Any]) -> dict[str, Any]:
        self._next_update_id += 1
        update = {"update_id": self._next_update_id, **update}
        self._updates.append(update)
        self._new_update.set()
        self._new_update = trio.Event()
        return update

    def inject_message(
        self, chat_id: int, text: str, *, user_id: int | None = None, reply_to: int | None = None
    ) -> dict[str, Any]:
        """A text message from ``user_id`` (default: the chat's id, i.e. a private chat) in ``chat_id``;
        with ``reply_to``, a reply to that message (``reply_to_message``, as Telegram sends it)."""
        uid = chat_id if user_id is None else user_id
        self._next_message_id += 1
        msg = {
            "message_id": self._next_message_id,
            "from": {"id": uid, "is_bot": False, "first_name": "User"},
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": 0,
            "text": text,
        }
        if text.startswith("/"):
            cmd_len = len(text.split()[0])
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": cmd_len}]
        if reply_to is not None:
            stored = self.messages.get(reply_to)
            msg["reply_to_message"] = {
                "message_id": reply_to,
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "date": 0,
                "text": stored.visible_text if stored else "",
            }
            if stored is not None and stored.reply_markup:
                msg["reply_to_message"]["reply_markup"] = stored.reply_markup  # as Telegram sends it
        return self._push_update({"message": msg})

    def inject_callback(self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None) -> str:
        """A button press with ``data`` on ``message_id`` in ``chat_id``; returns the callback query id."""
        uid = chat_id if user_id is None else user_id
        qid = f"q{self._next_query}"
        self._next_query += 1
        self._open_queries.add(qid)
        stored = self.messages.get(message_id)
        message = {
            "message_id": message_id,
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
            "date": 0,
            "text": stored.visible_text if stored else "",
        }
        self._push_update(
            {
                "callback_query": {
                    "id": qid,
                    "from": {"id": uid, "is_bot": False, "first_name": "User"},
                    "message": message,
                    "chat_instance": "ci",
                    "data": data,
                }
            }
        )
        return qid

    def press(self, message: Message, text_prefix: str, *, user_id: int | None = None) -> str:
        """Press the button of ``message`` whose label starts with ``text_prefix``."""
        for b in message.buttons:
            if b["text"].startswith(text_prefix):
                return self.inject_callback(
                    message.chat_id, message.message_id, b["callback_data"], user_id=user_id
                )
        raise AssertionError(f"no button {text_prefix!r} in {message.buttons}")

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[Call], bool] = lambda c: True,
        *,
        since: int = 0,
        ok: bool | None = True,
    ) -> Call:
        """The first recorded call (from index ``since``) of ``method`` that matches; waits for it
        (``wait_timeout`` seconds at most). ``ok=None`` also matches calls in flight or failed."""
        with trio.fail_after(self.wait_timeout):
            i = since
            while True:
                while i < len(self.calls):
                    c = self.calls[i]
                    i += 1
                    if c.method == method and (ok is None or c.ok == ok) and predicate(c):
                        return c
                await self._new_call.wait()

    async def wait_for_message(self, predicate: Callable[[Message], bool], *, since: int = 0) -> Message:
        """Wait for a successful sendMessage whose stored message matches ``predicate``."""

        def match(c: Call) -> bool:
            assert c.response is not None
            return predicate(self.messages[c.response["result"]["message_id"]])

        call = await self.wait_for_call("sendMessage", match, since=since)
        assert call.response is not None
        return self.messages[call.response["result"]["message_id"]]

    def count(self, method: str, *, ok: bool | None = True) -> int:
        return sum(1 for c in self.calls if c.method == method and (ok is None or c.ok == ok))

    # ---------------------------------------------------------------------------------- serving

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._connection, listeners)
            task_status.started(self.port)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                try:
                    status, payload = await self._dispatch(request, body)
                except _Drop:
                    return
                data = json.dumps(payload).encode()
                headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=data)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return
        finally:
            await stream.aclose()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None, b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            else:  # ConnectionClosed and friends
                return None, b""

    async def _dispatch(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, Any]]:
        target = request.target.decode()
        path, _, query = target.partition("?")
        m = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        if not m:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        token, method = m.groups()
        params: dict[str, Any] = {k: v for k, v in urllib.parse.parse_qsl(query)}
        ctype = dict(request.headers).get(b"content-type", b"").decode()
        if body:
            if ctype.startswith("application/json"):
                params.update(json.loads(body))
            elif ctype.startswith("multipart/form-data"):
                params.update(_parse_multipart(ctype, body))
            else:
                params.update(urllib.parse.parse_qsl(body.decode()))
        call = Call(method, params, at=trio.current_time())
        self.calls.append(call)
        self._notify()
        try:
            if token != self.token:
                raise ApiError(401, "Unauthorized")
            fault = self._faults.get(method)
            if fault and fault.count > 0:
                fault.count -= 1
                if fault.code == 0:
                    raise _Drop()
                raise ApiError(
                    fault.code,
                    fault.description or _default_description(fault),
                    {"retry_after": fault.retry_after} if fault.retry_after is not None else None,
                )
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = await handler(params)
            call.status, call.response = 200, {"ok": True, "result": result}
        except ApiError as e:
            envelope: dict[str, Any] = {"ok": False, "error_code": e.code, "description": e.description}
            if e.parameters:
                envelope["parameters"] = e.parameters
            call.status, call.response = e.code, envelope
        except _Drop:
            call.status = 0
            self._notify()
            raise
        self._notify()
        return call.status, call.response

    def _notify(self) -> None:
        self._new_call.set()
        self._new_call = trio.Event()

    # ------------------------------------------------------------------------------------- methods

    async def _api_getMe(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": "Portero", "username": self.bot_username}

    async def _api_deleteWebhook(self, p: dict[str, Any]) -> bool:
        return True

    async def _api_setMyCommands(self, p: dict[str, Any]) -> bool:
        cmds = _json_param(p, "commands")
        if not isinstance(cmds, list):
            raise ApiError(400, "Bad Request: commands must be an array")
        self.commands = cmds
        return True

    async def _api_getUpdates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(p.get("offset", 0))
        timeout = float(p.get("timeout", 0))
        limit = int(p.get("limit", 100))
        if offset:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        if not self._updates and timeout > 0:
            with trio.move_on_after(timeout):
                await self._new_update.wait()
        return self._updates[:limit]

    def _check_text(self, p: dict[str, Any]) -> tuple[str, str | None]:
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        mode = p.get("parse_mode")
        visible = parse_html(text) if mode == "HTML" else text
        if utf16_len(visible) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        return text, mode

    def _check_markup(self, p: dict[str, Any]) -> dict[str, Any] | None:
        markup = _json_param(p, "reply_markup")
        if markup is None:
            return None
        for row in markup.get("inline_keyboard", []):
            for b in row:
                data = b.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        return markup

    def _message(self, p: dict[str, Any]) -> Message:
        mid = int(p.get("message_id", 0))
        msg = self.messages.get(mid)
        if msg is None or msg.chat_id != int(p.get("chat_id", 0)):
            raise ApiError(400, "Bad Request: message to edit not found")
        return msg

    async def _api_sendMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(p.get("chat_id", 0))
        text, mode = self._check_text(p)
        markup = self._check_markup(p)
        self._next_message_id += 1
        msg = Message(self._next_message_id, chat_id, text, markup, mode)
        self.messages[msg.message_id] = msg
        return {"message_id": msg.message_id, "chat": {"id": chat_id}, "date": 0, "text": msg.visible_text}

    async def _api_editMessageText(self, p: dict[str, Any]) -> dict[str, Any]:
        msg = self._message(p)
        text, mode = self._check_text(p)
        markup = self._check_markup(p)
        if markup == {"inline_keyboard": []}:
            markup = None
        if text == msg.text and markup == msg.reply_markup:
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message",
            )
        msg.text, msg.parse_mode, msg.reply_markup = text, mode, markup
        return {"message_id": msg.message_id, "chat": {"id": msg.chat_id}, "text": msg.visible_text}

    async def _api_editMessageReplyMarkup(self, p: dict[str, Any]) -> dict[str, Any]:
        msg = self._message(p)
        markup = self._check_markup(p)
        if markup == {"inline_keyboard": []}:
            markup = None
        if markup == msg.reply_markup:
            raise ApiError(400, "Bad Request: message is not modified")
        msg.reply_markup = markup
        return {"message_id": msg.message_id, "chat": {"id": msg.chat_id}, "date": 0}

    async def _api_sendDocument(self, p: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(p.get("chat_id", 0))
        upload = p.get("document")
        if not isinstance(upload, _Upload):
            raise ApiError(400, "Bad Request: there is no document in the request")
        if len(upload.content) > 50 * 1024 * 1024:
            raise ApiError(400, "Bad Request: file is too big")
        caption = str(p.get("caption", ""))
        mode = p.get("parse_mode")
        if utf16_len(parse_html(caption) if mode == "HTML" else caption) > 1024:
            raise ApiError(400, "Bad Request: message caption is too long")
        self._next_message_id += 1
        doc = Document(
            self._next_message_id, chat_id, upload.file_name, upload.content, upload.media_type, caption, mode
        )
        self.documents.append(doc)
        return {
            "message_id": doc.message_id,
            "chat": {"id": chat_id},
            "date": 0,
            "document": {
                "file_name": doc.file_name,
                "mime_type": doc.media_type,
                "file_size": len(doc.content),
            },
        }

    async def _api_answerCallbackQuery(self, p: dict[str, Any]) -> bool:
        qid = str(p.get("callback_query_id", ""))
        if qid not in self._open_queries:
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        self._open_queries.discard(qid)
        return True


@dataclass
class _Upload:
    file_name: str
    content: bytes
    media_type: str


def _parse_multipart(ctype: str, body: bytes) -> dict[str, Any]:
    """The fields of a ``multipart/form-data`` body: text fields as str, files as :class:`_Upload`."""
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ApiError(400, "Bad Request: can't parse the multipart body")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            raise ApiError(400, "Bad Request: can't parse the multipart body")
        file_name = part.get_filename()
        if file_name is None:
            fields[name] = payload.decode()
        else:
            fields[name] = _Upload(file_name, payload, part.get_content_type())
    return fields


def _json_param(p: dict[str, Any], key: str) -> Any:
    value = p.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
    return value


def _default_description(f: _Fault) -> str:
    if f.code == 429:
        return f"Too Many Requests: retry after {f.retry_after}"
    if f.code == 409:
        return (
            "Conflict: terminated by other getUpdates request; "
            "make sure that only one bot instance is running"
        )
    if f.code == 401:
        return "Unauthorized"
    if f.code >= 500:
        return "Internal Server Error"
    return "Bad Request"
