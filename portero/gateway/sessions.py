"""Client sessions: their state, their streams, their expiry, and the nursery their calls run in.

A :class:`ClientSession` is one MCP client session (HTTP ``Mcp-Session-Id``). Everything the
HTTP front and the router know about a session lives here and changes through its methods:

- the standalone GET stream: every message for the session outside a request gets an SSE event
  id and stays in a bounded replay buffer, also while no stream is open, so a client that
  reconnects with ``Last-Event-ID`` gets what it missed (as long as it is still in the buffer);
  a new GET stream replaces the older one, so each message travels on one stream only;
- POST answers streamed as SSE (:class:`PostStream`), kept so a client that lost the connection
  can resume one with ``GET`` + ``Last-Event-ID: <stream>/<n>``;
- the calls in flight (for ``notifications/cancelled`` and ``DELETE``) and the server→client
  requests waiting for the client's answer.

:class:`Sessions` is the registry: it creates (bounded: at :data:`MAX_SESSIONS` the longest-idle
session makes room), finds, ends and expires sessions, and owns the nursery that client calls run
in, so a call outlives neither the gateway nor its session.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..core import jsonrpc

log = logging.getLogger("portero.sessions")

LATEST_PROTOCOL = "2025-11-25"
SUPPORTED_PROTOCOLS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
REPLAY_EVENTS = 256  # per session, for `Last-Event-ID` on the GET stream
MAX_SESSIONS = 1000  # bounded state: one client can't grow the gateway without limit
STREAM_KEEP = 300.0  # seconds a finished, undelivered POST stream waits for its client to resume it
# What abandoned POST streams may hold: a client that drops 30 answers of 8 MiB each must not
# hold 240 MiB. Past a bound the oldest kept streams are dropped (their client can't resume them).
KEPT_STREAMS_PER_SESSION = 16
KEPT_BYTES_PER_SESSION = 32 * 1024 * 1024
KEPT_BYTES_TOTAL = 128 * 1024 * 1024
JANITOR_MAX_PERIOD = 60.0

Message = dict[str, Any]
Emit = Callable[[Message], Awaitable[None]]


def _wake(event: trio.Event) -> trio.Event:
    event.set()
    return trio.Event()


@attrs.define(eq=False)
class PostStream:
    """The events of one POST answer sent as SSE; ids are ``<stream>/<n>``, the answer is last.

    Events are kept encoded (each is written once, resumed or not) and their bytes counted, so
    the streams a client abandons are bounded in count and bytes (:meth:`Sessions.trim_kept`)."""

    id: int
    events: collections.deque[tuple[int, bytes]] = attrs.Factory(collections.deque)
    seq: int = 0
    size: int = 0
    done: bool = False
    finished_at: float | None = None
    new_event: trio.Event = attrs.Factory(trio.Event)

    def push(self, msg: Message) -> None:
        data = jsonrpc.dumps(msg)
        self.seq += 1
        if len(self.events) >= REPLAY_EVENTS:
            self.size -= len(self.events.popleft()[1])
        self.events.append((self.seq, data))
        self.size += len(data)
        self.new_event = _wake(self.new_event)

    def finish(self, now: float) -> None:
        self.done = True
        self.finished_at = now
        self.new_event = _wake(self.new_event)

    def events_after(self, n: int) -> list[tuple[int, bytes]]:
        return [(i, m) for i, m in self.events if i > n]


@attrs.define(eq=False)
class AnswerSlot:
    """A server→client request waiting for the client's answer."""

    event: trio.Event = attrs.Factory(trio.Event)
    message: Message | None = None
    withdrawn: bool = False  # the server cancelled its request: it gets no answer at all

    def withdraw(self) -> None:
        self.withdrawn = True
        self.resolve(None)

    def resolve(self, message: Message | None) -> None:
        if not self.event.is_set():
            self.message = message
            self.event.set()


@attrs.define(eq=False)
class ClientSession:
    """One MCP client session; see the module docstring."""

    id: str
    created: float
    last_seen: float
    protocol_version: str = LATEST_PROTOCOL
    client_info: dict[str, Any] = attrs.Factory(dict)
    capabilities: dict[str, Any] = attrs.Factory(dict)
    log_level: str | None = None
    subscriptions: set[str] = attrs.Factory(set)
    streams_open: int = 0
    stream_gen: int = 0
    event_seq: int = 0
    replay: collections.deque[tuple[int, Message]] = attrs.Factory(
        lambda: collections.deque(maxlen=REPLAY_EVENTS)
    )
    new_event: trio.Event = attrs.Factory(trio.Event)
    post_streams: dict[int, PostStream] = attrs.Factory(dict)
    stream_counter: int = 0
    # Client request id -> cancel scope of the call, for notifications/cancelled and DELETE.
    inflight: dict[Any, trio.CancelScope] = attrs.Factory(dict)
    # Server→client requests awaiting the client's answer: our id -> slot.
    waiting: dict[str, AnswerSlot] = attrs.Factory(dict)
    closed: bool = False
    legacy: bool = False  # a session of the deprecated HTTP+SSE transport (its stream is the session)
    # One request of the stateless era (2026-07-28): not registered, gone with its request. Such a
    # client cannot be sent a request in the middle of a call, and gets logs only when it asked.
    modern: bool = False
    # The client whose token opened the session ([[client]] name; "default" for server.bearer_token):
    # what it may see and do, what it owns (tasks), and the only token its later requests are served with.
    client: str = "default"

    @property
    def listening(self) -> bool:
        return self.streams_open > 0

    @property
    def busy(self) -> bool:
        return bool(self.inflight) or self.listening

    def wants(self, capability: str) -> bool:
        """True when the client declared ``capability`` (sampling, elicitation, roots) at initialize."""
        return isinstance(self.capabilities.get(capability), dict)

    def push(self, msg: Message) -> int:
        """Queue a message for the GET stream (never blocks; the replay buffer is bounded)."""
        self.event_seq += 1
        self.replay.append((self.event_seq, msg))
        self.new_event = _wake(self.new_event)
        return self.event_seq

    def events_after(self, last_id: int) -> list[tuple[int, Message]]:
        return [(i, m) for i, m in self.replay if i > last_id]

    def open_stream(self) -> int:
        """A new GET stream; returns its generation. An older stream sees a newer generation and ends."""
        self.stream_gen += 1
        self.streams_open += 1
        self.new_event = _wake(self.new_event)
        return self.stream_gen

    def close_stream(self) -> None:
        self.streams_open -= 1

    def new_post_stream(self, *, keep: bool) -> PostStream:
        """A stream for one POST answer; ``keep`` ones stay in the session for a later resume."""
        if not keep:
            return PostStream(id=0)
        self.stream_counter += 1
        stream = PostStream(id=self.stream_counter)
        self.post_streams[stream.id] = stream
        return stream

    def drop_post_stream(self, stream: PostStream) -> None:
        self.post_streams.pop(stream.id, None)

    def kept_bytes(self) -> int:
        return sum(p.size for p in self.post_streams.values())

    def close(self) -> None:
        """End the session: cancel its calls, wake its waiters and its GET stream."""
        self.closed = True
        for scope in list(self.inflight.values()):
            scope.cancel()
        for ans in self.waiting.values():
            ans.resolve(None)
        self.new_event = _wake(self.new_event)


LISTEN_KINDS = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}
LISTEN_BACKLOG = 64  # events a listen stream holds for a client that is not reading; then it ends
MAX_LISTENERS = 256
MAX_LISTEN_URIS = 256


@attrs.define(eq=False)
class Listener:
    """One ``subscriptions/listen`` stream (2026-07-28): the notifications it asked for, queued until
    its request sends them. A stream whose client stops reading is ended (``overflowed``): each
    event only says "this changed, fetch again", so the client re-listens and loses nothing."""

    methods: frozenset[str]
    uris: frozenset[str]
    queue: collections.deque[Message] = attrs.Factory(collections.deque)
    new_event: trio.Event = attrs.Factory(trio.Event)
    overflowed: bool = False

    @classmethod
    def from_filter(cls, wanted: Any) -> Listener:
        """The part of a client's ``notifications`` filter the gateway honours."""
        wanted = wanted if isinstance(wanted, dict) else {}
        uris = wanted.get("resourceSubscriptions")
        uris = [u for u in uris if isinstance(u, str)][:MAX_LISTEN_URIS] if isinstance(uris, list) else []
        methods = frozenset(m for key, m in LISTEN_KINDS.items() if wanted.get(key) is True)
        return cls(methods=methods, uris=frozenset(uris))

    def honoured(self) -> dict[str, Any]:
        """The filter as the acknowledgement echoes it."""
        out: dict[str, Any] = {key: True for key, m in LISTEN_KINDS.items() if m in self.methods}
        if self.uris:
            out["resourceSubscriptions"] = sorted(self.uris)
        return out

    def offer(self, msg: Message) -> None:
        method = msg.get("method")
        if method != "notifications/resources/updated" and method not in self.methods:
            return
        if len(self.queue) >= LISTEN_BACKLOG:
            self.overflowed = True
        else:
            self.queue.append(msg)
        self.new_event = _wake(self.new_event)


@attrs.define(eq=False)
class RequestContext:
    """One client request being served: where its own notifications and requests go."""

    session: ClientSession | None
    request_id: Any = None
    emit: Emit | None = None  # sends a message on this request's response stream (SSE), if any
    failure: Exception | None = None  # set when the gateway ends the call on purpose: its error

    async def send(self, msg: Message) -> bool:
        if self.emit is not None:
            try:
                await self.emit(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True
        if self.session is not None and self.session.listening:
            self.session.push(msg)
            return True
        return False


class Sessions:
    """The session registry, and the nursery client calls run in. Run :meth:`run` in a nursery."""

    def __init__(
        self,
        *,
        idle_timeout: float,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.clock = clock
        self.by_id: dict[str, ClientSession] = {}
        self.on_end: list[Callable[[ClientSession], None]] = []
        self.closing = trio.Event()  # set at shutdown: GET streams end so HTTP can drain
        self.listeners: set[Listener] = set()  # the open `subscriptions/listen` streams (2026-07-28)
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, session_id: str) -> ClientSession | None:
        return self.by_id.get(session_id)

    def all(self) -> list[ClientSession]:
        return list(self.by_id.values())

    # -- life --------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the calls nursery and expire idle sessions, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            period = min(JANITOR_MAX_PERIOD, max(self.idle_timeout / 4, 0.5))
            while True:
                await trio.sleep(period)
                self.expire()

    def start_call(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run one client call in the calls nursery (it outlives the HTTP request that started it)."""
        if self._nursery is None:
            raise RuntimeError("Sessions.run is not running")
        self._nursery.start_soon(fn)

    # -- registry ----------------------------------------------------------------------------
    def new(self, client: str = "default") -> ClientSession | None:
        """A new session of ``client`` (whose token opened it: only that token may use it); at the
        limit the longest-idle one without work is ended to make room, and None is returned if every
        session is busy (the caller answers 503)."""
        if len(self.by_id) >= self.max_sessions:
            idle = [s for s in self.by_id.values() if not s.busy]
            if not idle:
                return None
            oldest = min(idle, key=lambda s: s.last_seen)
            log.warning("session limit (%d) reached: ending the longest-idle session", self.max_sessions)
            self.end(oldest.id)
        now = self.clock()
        s = ClientSession(id=secrets.token_urlsafe(24), created=now, last_seen=now, client=client)
        self.by_id[s.id] = s
        log.debug("session %s… opened", s.id[:6])
        return s

    def transient(
        self,
        protocol_version: str,
        capabilities: dict[str, Any],
        client_info: dict[str, Any],
        log_level: str | None,
        client: str = "default",
    ) -> ClientSession:
        """The session of one stateless-era request: what its ``_meta`` says, for as long as it runs.
        Not registered: nothing finds it by id, and it ends with its request."""
        now = self.clock()
        return ClientSession(
            id="req-" + secrets.token_urlsafe(12),
            created=now,
            last_seen=now,
            protocol_version=protocol_version,
            client_info=client_info,
            capabilities=capabilities,
            log_level=log_level,
            modern=True,
            client=client,
        )

    def touch(self, session: ClientSession) -> None:
        session.last_seen = self.clock()

    def end(self, session_id: str) -> bool:
        s = self.by_id.pop(session_id, None)
        if s is None:
            return False
        s.close()
        for hook in self.on_end:
            hook(s)
        log.debug("session %s… closed", session_id[:6])
        return True

    def expire(self) -> list[str]:
        """Drop finished POST streams nobody resumed, and end idle sessions; returns the ended ids."""
        now = self.clock()
        ended = []
        for sid, s in list(self.by_id.items()):
            for key, stream in list(s.post_streams.items()):
                if stream.done and stream.finished_at is not None and now - stream.finished_at > STREAM_KEEP:
                    del s.post_streams[key]
            if not s.busy and now - s.last_seen > self.idle_timeout:
                self.end(sid)
                ended.append(sid)
                log.info("session %s… expired after %.0fs idle", sid[:6], self.idle_timeout)
        return ended

    def trim_kept(self) -> int:
        """Drop the oldest kept POST streams (finished ones first) past the bounds; returns how many."""
        dropped = 0

        def age(item: tuple[ClientSession, PostStream]) -> tuple[bool, float, int]:
            stream = item[1]
            return (not stream.done, stream.finished_at or 0.0, stream.id)

        kept = [(s, p) for s in self.by_id.values() for p in s.post_streams.values()]
        total = sum(p.size for _, p in kept)
        per_session: dict[str, tuple[int, int]] = {}
        for s, p in kept:
            count, size = per_session.get(s.id, (0, 0))
            per_session[s.id] = (count + 1, size + p.size)
        for s, p in sorted(kept, key=age):
            count, size = per_session[s.id]
            if (
                total <= KEPT_BYTES_TOTAL
                and count <= KEPT_STREAMS_PER_SESSION
                and size <= KEPT_BYTES_PER_SESSION
            ):
                continue
            s.drop_post_stream(p)
            total -= p.size
            per_session[s.id] = (count - 1, size - p.size)
            dropped += 1
        if dropped:
            log.warning("dropped %d unclaimed streamed answer(s) to stay within memory bounds", dropped)
        return dropped

    def broadcast(self, msg: Message) -> None:
        """Queue a message for every session's GET stream (kept for replay while none is open), and
        for every ``subscriptions/listen`` stream that asked for it."""
        for s in self.by_id.values():
            s.push(msg)
        for listener in list(self.listeners):
            listener.offer(msg)

    def resource_updated(self, msg: Message, uri: str) -> None:
        """``notifications/resources/updated`` for ``uri``: to the sessions and listen streams subscribed."""
        for s in self.by_id.values():
            if uri in s.subscriptions:
                s.push(msg)
        for listener in list(self.listeners):
            if uri in listener.uris:
                listener.offer(msg)
