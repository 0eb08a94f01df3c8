"""The session registry and its sessions, on trio's virtual clock (``autojump_clock``)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from portero.core import jsonrpc
from portero.gateway.sessions import (
    KEPT_BYTES_PER_SESSION,
    KEPT_BYTES_TOTAL,
    KEPT_STREAMS_PER_SESSION,
    REPLAY_EVENTS,
    STREAM_KEEP,
    AnswerSlot,
    ClientSession,
    PostStream,
    RequestContext,
    Sessions,
)


def virtual(idle_timeout: float = 60.0, max_sessions: int = 1000) -> Sessions:
    return Sessions(idle_timeout=idle_timeout, max_sessions=max_sessions, clock=trio.current_time)


def new(sessions: Sessions) -> ClientSession:
    s = sessions.new()
    assert s is not None
    return s


def note(n: int) -> dict[str, object]:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}}


# ------------------------------------------------------------------------------------- registry


async def test_new_sessions_have_distinct_ids_and_can_be_found() -> None:
    sessions = virtual()
    made = [new(sessions) for _ in range(50)]
    assert len({s.id for s in made}) == 50
    assert all(len(s.id) >= 20 for s in made)  # unguessable, not a counter
    assert len(sessions) == 50
    assert all(sessions.get(s.id) is s for s in made)
    assert sessions.get("nope") is None
    assert sessions.all() == made


async def test_at_the_limit_the_longest_idle_session_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sessions = virtual(max_sessions=3)
    ended: list[str] = []
    sessions.on_end.append(lambda s: ended.append(s.id))
    a = new(sessions)
    await trio.sleep(1)
    b = new(sessions)
    await trio.sleep(1)
    c = new(sessions)
    await trio.sleep(1)
    sessions.touch(a)  # a was seen last: b is now the longest idle

    d = new(sessions)
    assert ended == [b.id]
    assert b.closed and sessions.get(b.id) is None
    assert {s.id for s in sessions.all()} == {a.id, c.id, d.id}
    assert len(sessions) == 3


async def test_busy_sessions_are_never_ended_to_make_room(autojump_clock: trio.testing.MockClock) -> None:
    sessions = virtual(max_sessions=2)
    old_listening = new(sessions)
    old_listening.open_stream()
    await trio.sleep(10)
    calling = new(sessions)
    calling.inflight["r1"] = trio.CancelScope()
    await trio.sleep(10)

    # Both busy (one listening, one with a call in flight): no room, and nothing ended.
    assert sessions.new() is None
    assert len(sessions) == 2 and not old_listening.closed and not calling.closed

    # Once the longest-idle one stops listening it is the one to go.
    old_listening.close_stream()
    fresh = sessions.new()
    assert fresh is not None
    assert old_listening.closed and not calling.closed
    assert {s.id for s in sessions.all()} == {calling.id, fresh.id}


async def test_end_cancels_calls_wakes_waiters_and_streams_and_runs_hooks() -> None:
    sessions = virtual()
    s = new(sessions)
    hooked: list[ClientSession] = []
    sessions.on_end.append(hooked.append)
    slot = AnswerSlot()
    s.waiting["g1"] = slot
    stream_woken = s.new_event
    outcome: list[str] = []

    async def call(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        scope = trio.CancelScope()
        s.inflight["r1"] = scope
        with scope:
            task_status.started()
            await trio.sleep_forever()
        outcome.append("cancelled" if scope.cancelled_caught else "finished")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(call)
            assert sessions.end(s.id) is True
    assert outcome == ["cancelled"]
    assert slot.event.is_set() and slot.message is None
    assert stream_woken.is_set()
    assert s.closed
    assert hooked == [s]
    assert sessions.get(s.id) is None and len(sessions) == 0
    # Twice, or a session that never was: nothing happens.
    assert sessions.end(s.id) is False
    assert sessions.end("nope") is False
    assert hooked == [s]


async def test_answer_slot_keeps_the_first_answer() -> None:
    slot = AnswerSlot()
    slot.resolve({"id": "g1", "result": {"a": 1}})
    slot.resolve(None)
    slot.resolve({"id": "g1", "result": {"a": 2}})
    assert slot.event.is_set()
    assert slot.message == {"id": "g1", "result": {"a": 1}}


async def test_expire_ends_idle_sessions_but_not_busy_ones(autojump_clock: trio.testing.MockClock) -> None:
    sessions = virtual(idle_timeout=60)
    idle, active, listening, calling = (new(sessions) for _ in range(4))
    listening.open_stream()
    calling.inflight[7] = trio.CancelScope()
    await trio.sleep(59)
    sessions.touch(active)
    assert sessions.expire() == []  # 59 s is not more than 60 s
    await trio.sleep(2)
    assert sessions.expire() == [idle.id]
    assert idle.closed and sessions.get(idle.id) is None
    await trio.sleep(1000)
    # active was touched 1002 s ago; the busy ones stay however long they have been idle.
    assert sessions.expire() == [active.id]
    assert {s.id for s in sessions.all()} == {listening.id, calling.id}

    del calling.inflight[7]
    listening.close_stream()
    assert sorted(sessions.expire()) == sorted([listening.id, calling.id])
    assert len(sessions) == 0


async def test_expire_drops_finished_post_streams_after_stream_keep(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sessions = virtual(idle_timeout=10 * STREAM_KEEP)
    s = new(sessions)
    s.open_stream()  # busy: the session itself stays
    kept = s.new_post_stream(keep=True)
    finished = s.new_post_stream(keep=True)
    running = s.new_post_stream(keep=True)
    unkept = s.new_post_stream(keep=False)
    assert unkept.id == 0 and 0 not in s.post_streams
    assert [kept.id, finished.id, running.id] == [1, 2, 3]

    finished.finish(trio.current_time())
    await trio.sleep(STREAM_KEEP / 2)
    kept.finish(trio.current_time())
    await trio.sleep(STREAM_KEEP / 2)
    sessions.expire()
    assert set(s.post_streams) == {1, 2, 3}  # exactly STREAM_KEEP is not "older than"
    await trio.sleep(1)
    sessions.expire()
    assert set(s.post_streams) == {kept.id, running.id}
    await trio.sleep(STREAM_KEEP)
    sessions.expire()
    assert set(s.post_streams) == {running.id}  # not finished: never dropped
    s.drop_post_stream(running)
    assert s.post_streams == {}


async def test_run_expires_idle_sessions_on_its_own(autojump_clock: trio.testing.MockClock) -> None:
    sessions = virtual(idle_timeout=20)
    async with trio.open_nursery() as nursery:
        await nursery.start(sessions.run)
        s = new(sessions)
        await trio.sleep(19)
        assert sessions.get(s.id) is s
        await trio.sleep(10)  # the janitor runs every idle_timeout / 4
        assert sessions.get(s.id) is None and s.closed
        nursery.cancel_scope.cancel()


# -------------------------------------------------------------------------- GET stream, replay


async def test_broadcast_reaches_sessions_without_an_open_stream() -> None:
    sessions = virtual()
    listening, quiet = new(sessions), new(sessions)
    listening.open_stream()
    woken = quiet.new_event
    sessions.broadcast(note(1))
    sessions.broadcast(note(2))
    for s in (listening, quiet):
        assert s.events_after(0) == [(1, note(1)), (2, note(2))]
    assert woken.is_set()


async def test_replay_buffer_is_bounded_and_ids_keep_counting() -> None:
    sessions = virtual()
    s = new(sessions)
    for n in range(REPLAY_EVENTS + 10):
        sessions.broadcast(note(n))
    events = s.events_after(0)
    assert len(events) == REPLAY_EVENTS
    assert events[0] == (11, note(10))  # the 10 oldest are gone
    assert events[-1] == (REPLAY_EVENTS + 10, note(REPLAY_EVENTS + 9))


async def test_push_ids_and_events_after() -> None:
    sessions = virtual()
    s = new(sessions)
    first = s.new_event
    assert s.push(note(1)) == 1
    assert first.is_set() and not s.new_event.is_set()
    assert s.push(note(2)) == 2
    assert s.push(note(3)) == 3
    assert s.events_after(1) == [(2, note(2)), (3, note(3))]
    assert s.events_after(3) == []
    assert s.events_after(-5) == [(1, note(1)), (2, note(2)), (3, note(3))]


async def test_post_stream_ids_and_resume() -> None:
    stream = PostStream(id=4)
    woken = stream.new_event
    stream.push(note(1))
    assert woken.is_set()
    stream.push(note(2))
    woken = stream.new_event
    stream.finish(12.5)
    assert woken.is_set()
    assert stream.done and stream.finished_at == 12.5
    # Kept encoded: each event is written once, whether it is resumed or not.
    assert stream.events_after(0) == [(1, jsonrpc.dumps(note(1))), (2, jsonrpc.dumps(note(2)))]
    assert stream.events_after(1) == [(2, jsonrpc.dumps(note(2)))]
    assert stream.events_after(2) == []
    assert stream.size == len(jsonrpc.dumps(note(1))) + len(jsonrpc.dumps(note(2)))


def _abandon(s: ClientSession, answer_bytes: int, now: float) -> PostStream:
    """A resumable POST stream whose client went away before the answer of that size was sent."""
    stream = s.new_post_stream(keep=True)
    stream.push({"jsonrpc": "2.0", "id": 1, "result": {"text": "x" * answer_bytes}})
    stream.finish(now)
    return stream


async def test_abandoned_streams_are_bounded_in_bytes_per_session() -> None:
    sessions = virtual()
    s = new(sessions)
    mib = 1024 * 1024
    streams = [_abandon(s, 8 * mib, float(i)) for i in range(30)]  # 240 MiB abandoned
    sessions.trim_kept()
    assert s.kept_bytes() <= KEPT_BYTES_PER_SESSION
    assert len(s.post_streams) == KEPT_BYTES_PER_SESSION // (8 * mib + 100)
    # The newest survive: a client most likely resumes its latest answer.
    assert set(s.post_streams.values()) == set(streams[-len(s.post_streams) :])


async def test_abandoned_streams_are_bounded_in_count_and_in_all() -> None:
    sessions = virtual()
    s = new(sessions)
    for i in range(KEPT_STREAMS_PER_SESSION + 5):
        _abandon(s, 10, float(i))
    sessions.trim_kept()
    assert len(s.post_streams) == KEPT_STREAMS_PER_SESSION
    big = 20 * 1024 * 1024
    many = [new(sessions) for _ in range(KEPT_BYTES_TOTAL // big + 3)]
    for i, other in enumerate(many):
        _abandon(other, big, 100.0 + i)
    sessions.trim_kept()
    assert sum(x.kept_bytes() for x in sessions.all()) <= KEPT_BYTES_TOTAL
    assert many[-1].post_streams and not many[0].post_streams  # the oldest went first


async def test_a_new_get_stream_replaces_the_older_one() -> None:
    s = new(virtual())
    assert not s.listening and not s.busy
    first = s.open_stream()
    woken = s.new_event
    second = s.open_stream()
    assert second > first and s.stream_gen == second
    assert woken.is_set()  # the older stream wakes up, sees a newer generation and ends
    assert s.listening
    s.close_stream()  # the older one leaves
    assert s.listening  # the newer one is still open
    s.close_stream()
    assert not s.listening and not s.busy


async def test_request_context_send() -> None:
    s = new(virtual())
    sent: list[dict[str, object]] = []

    async def emit(msg: dict[str, object]) -> None:
        sent.append(msg)

    assert await RequestContext(session=s, emit=emit).send(note(1)) is True
    assert sent == [note(1)] and s.events_after(0) == []

    async def broken(msg: dict[str, object]) -> None:
        raise trio.BrokenResourceError

    assert await RequestContext(session=s, emit=broken).send(note(2)) is False
    # Without its own stream a message goes to the GET stream, when one is open.
    assert await RequestContext(session=s).send(note(3)) is False
    s.open_stream()
    assert await RequestContext(session=s).send(note(4)) is True
    assert s.events_after(0) == [(1, note(4))]
    assert await RequestContext(session=None).send(note(5)) is False


async def test_wants_needs_a_declared_capability_object() -> None:
    s = new(virtual())
    s.capabilities = {"sampling": {}, "roots": True, "elicitation": None}
    assert s.wants("sampling")
    assert not s.wants("roots") and not s.wants("elicitation") and not s.wants("other")


# ------------------------------------------------------------------------------ calls nursery


async def test_start_call_needs_run() -> None:
    sessions = virtual()

    async def call() -> None:
        pass

    with pytest.raises(RuntimeError, match="run"):
        sessions.start_call(call)


async def test_calls_run_in_the_nursery_and_are_cancelled_with_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sessions = virtual()
    log: list[str] = []

    async def quick() -> None:
        await trio.sleep(1)
        log.append("quick done")

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            log.append("forever cancelled")

    async with trio.open_nursery() as nursery:
        await nursery.start(sessions.run)
        sessions.start_call(quick)
        sessions.start_call(forever)
        await trio.sleep(5)
        assert log == ["quick done"]
        nursery.cancel_scope.cancel()
    assert log == ["quick done", "forever cancelled"]
