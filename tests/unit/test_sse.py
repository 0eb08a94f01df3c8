"""The SSE parser (portero.core.sse): plain bytes in, events out, as the HTML standard reads a stream."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portero.core.sse import BadEndpoint, Event, EventTooLarge, SseParser, resolve_endpoint


def parse(data: bytes, max_size: int = 1 << 20) -> list[Event]:
    return SseParser(max_size).feed(data)


def test_one_event_per_blank_line() -> None:
    assert parse(b'data: {"a":1}\n\ndata: {"b":2}\n\n') == [Event('{"a":1}'), Event('{"b":2}')]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert parse(b"data: one\ndata:two\ndata:  three\n\n") == [Event("one\ntwo\n three")]


def test_an_unfinished_event_is_not_dispatched() -> None:
    p = SseParser(1024)
    assert p.feed(b"data: x\n") == []
    assert p.feed(b"\n") == [Event("x")]


def test_comments_and_unknown_fields_are_ignored() -> None:
    assert parse(b": keep-alive\n\n:\nfoo: bar\ndata: x\nnofield\n\n") == [Event("x")]


def test_event_type_and_ids() -> None:
    p = SseParser(1024)
    events = p.feed(b"event: endpoint\nid: 7\ndata: /messages?s=1\n\ndata: next\n\n")
    assert events == [Event("/messages?s=1", "endpoint", "7"), Event("next", "message", "7")]
    assert p.last_event_id == "7"


def test_an_id_without_data_is_remembered_but_not_dispatched() -> None:
    # The 2025-11-25 priming event: an id and an empty data field, then the server may close.
    p = SseParser(1024)
    assert p.feed(b"id: prime-1\n\n") == []
    assert p.last_event_id == "prime-1"
    assert p.feed(b"id: prime-2\ndata:\n\n") == [Event("", "message", "prime-2")]


def test_an_id_with_nul_is_ignored_and_an_empty_id_resets() -> None:
    p = SseParser(1024)
    p.feed(b"id: a\n\nid: b\0c\n\n")
    assert p.last_event_id == "a"
    p.feed(b"id\n\n")
    assert p.last_event_id == ""


def test_retry_only_when_all_digits() -> None:
    p = SseParser(1024)
    p.feed(b"retry: 1500\n\n")
    assert p.retry == 1500
    p.feed(b"retry: 2s\n\nretry: -1\n\n")
    assert p.retry == 1500


@pytest.mark.parametrize("end", [b"\r\n", b"\r", b"\n"])
def test_every_line_ending(end: bytes) -> None:
    data = b"event: e" + end + b"data: a" + end + b"data: b" + end + end + b"data: c" + end + end
    assert parse(data) == [Event("a\nb", "e"), Event("c")]


def test_cr_and_lf_in_different_chunks_are_one_line_end() -> None:
    p = SseParser(1024)
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"") == []
    assert p.feed(b"\n") == []  # the LF completes "data: a"'s CRLF, it is not a blank line
    assert p.feed(b"\r") == [Event("a")]
    assert p.feed(b"\ndata: b\n\n") == [Event("b")]


def test_leading_byte_order_mark_is_dropped_even_split() -> None:
    p = SseParser(1024)
    assert p.feed(b"\xef\xbb") == []
    assert p.feed(b"\xbfdata: x\n\n") == [Event("x")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: \xff\n\n") == [Event("\ufffd")]


def test_an_endless_line_is_refused() -> None:
    p = SseParser(100)
    p.feed(b"data: " + b"x" * 50)
    with pytest.raises(EventTooLarge):
        p.feed(b"x" * 60)


def test_an_endless_event_is_refused_even_in_short_lines() -> None:
    p = SseParser(100)
    with pytest.raises(EventTooLarge):
        p.feed(b"data: xxxxxxxxxx\n" * 20)


def test_a_long_complete_line_in_one_chunk_is_refused() -> None:
    with pytest.raises(EventTooLarge):
        parse(b": " + b"x" * 200 + b"\n", max_size=100)


def test_the_cap_is_per_event() -> None:
    p = SseParser(100)
    for _ in range(50):
        assert p.feed(b"data: " + b"x" * 40 + b"\n\n") == [Event("x" * 40)]


def test_scan_position_is_remembered() -> None:
    p = SseParser(1 << 20)
    for _ in range(1000):
        assert p.feed(b"y") == []
    assert p._scanned == 1000


_texts = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=30
)


@given(
    st.lists(
        st.tuples(st.lists(_texts, min_size=1, max_size=3), st.sampled_from(["\n", "\r\n", "\r"])), max_size=8
    ),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12),
)
def test_any_chunking_gives_the_same_events(events: list[tuple[list[str], str]], cuts: list[int]) -> None:
    data = b"".join(
        b"".join(f"data: {line}{end}".encode() for line in lines) + end.encode() for lines, end in events
    )
    whole = SseParser(1 << 20).feed(data)
    assert [e.data for e in whole] == ["\n".join(lines) for lines, _ in events]
    p = SseParser(1 << 20)
    got: list[Event] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = cuts[i % len(cuts)]
        got += p.feed(data[pos : pos + n])
        pos += n
        i += 1
    assert got == whole


def test_endpoint_relative_and_absolute_on_the_same_origin() -> None:
    base = "http://127.0.0.1:3001/sse"
    assert resolve_endpoint(base, "/message?sessionId=abc") == "http://127.0.0.1:3001/message?sessionId=abc"
    assert resolve_endpoint(base, "messages/?s=1") == "http://127.0.0.1:3001/messages/?s=1"
    assert resolve_endpoint(base, " http://127.0.0.1:3001/m ") == "http://127.0.0.1:3001/m"
    assert (
        resolve_endpoint("https://Example.com/sse", "https://example.com:443/m")
        == "https://example.com:443/m"
    )


@pytest.mark.parametrize(
    "data",
    [
        "http://evil.example/message",
        "//evil.example/message",
        "https://127.0.0.1:3001/message",  # another scheme is another origin
        "http://127.0.0.1:3002/message",
        "javascript:alert(1)",
        "",
        "/a\r\nX-Injected: 1",
    ],
)
def test_endpoint_on_another_origin_is_refused(data: str) -> None:
    with pytest.raises(BadEndpoint):
        resolve_endpoint("http://127.0.0.1:3001/sse", data)
