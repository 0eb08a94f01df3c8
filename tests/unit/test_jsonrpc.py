from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portero.core import jsonrpc
from portero.core.jsonrpc import LineBuffer, MessageTooLarge, ParseError


def test_lines_split_across_chunks() -> None:
    buf = LineBuffer(1024)
    assert buf.feed(b'{"a":') == []
    assert buf.feed(b"1}\n{") == [b'{"a":1}']
    assert buf.feed(b'"b":2}\r\n\n\n') == [b'{"b":2}']
    assert buf.pending == 0


def test_cap_on_unterminated_line() -> None:
    buf = LineBuffer(10)
    buf.feed(b"12345")
    with pytest.raises(MessageTooLarge):
        buf.feed(b"678901")


def test_cap_on_complete_line_in_one_chunk() -> None:
    buf = LineBuffer(10)
    with pytest.raises(MessageTooLarge):
        buf.feed(b"x" * 50 + b"\n")


def test_line_exactly_at_the_cap_is_fine() -> None:
    buf = LineBuffer(10)
    assert buf.feed(b"x" * 10 + b"\n") == [b"x" * 10]


def test_scan_position_is_remembered() -> None:
    # Feeding a long line byte by byte must not rescan what was already searched.
    buf = LineBuffer(1 << 20)
    for _ in range(1000):
        assert buf.feed(b"y") == []
    assert buf._scanned == 1000
    assert buf.feed(b"\n") == [b"y" * 1000]


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), min_size=1
        ),
        max_size=20,
    ),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
)
def test_any_chunking_gives_the_same_lines(lines: list[str], cuts: list[int]) -> None:
    data = b"".join(line.encode() + b"\n" for line in lines)
    expected = [line.encode() for line in lines if line.encode().strip()]
    buf = LineBuffer(1 << 20)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out.extend(buf.feed(data[pos : pos + step]))
        pos += step
        i += 1
    assert out == expected


def test_decode_and_kind() -> None:
    assert jsonrpc.kind(jsonrpc.decode(b'{"jsonrpc":"2.0","id":1,"method":"x"}')) == "request"
    assert jsonrpc.kind(jsonrpc.decode('{"jsonrpc":"2.0","method":"x"}')) == "notification"
    assert jsonrpc.kind({"jsonrpc": "2.0", "id": 1, "result": {}}) == "response"
    assert jsonrpc.kind({"jsonrpc": "2.0", "id": 1, "error": {"code": 1, "message": "m"}}) == "response"
    assert jsonrpc.kind({"jsonrpc": "2.0", "id": 1}) == "invalid"
    assert jsonrpc.kind({"method": 3}) == "invalid"
    with pytest.raises(ParseError, match="not JSON"):
        jsonrpc.decode(b"garbage {{")
    with pytest.raises(ParseError, match="not a JSON-RPC object"):
        jsonrpc.decode(b"[1, 2]")
    with pytest.raises(ParseError):
        jsonrpc.decode(b"\xff\xfe")


def test_encode_is_one_line() -> None:
    line = jsonrpc.encode({"text": "a\nb", "name": "Zoë"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"text": "a\nb", "name": "Zoë"}


def test_error_from_exception_never_leaks_internals() -> None:
    err = jsonrpc.error_from_exception(RuntimeError("secret path /etc/x"))
    assert err == {"code": jsonrpc.INTERNAL_ERROR, "message": "Internal error: RuntimeError"}
    err = jsonrpc.error_from_exception(jsonrpc.RpcError(-32602, "bad", {"k": 1}))
    assert err == {"code": -32602, "message": "bad", "data": {"k": 1}}


def test_valid_id() -> None:
    assert jsonrpc.valid_id(1) and jsonrpc.valid_id("a")
    assert not jsonrpc.valid_id(True) and not jsonrpc.valid_id(None) and not jsonrpc.valid_id(1.5)


@pytest.mark.parametrize(
    "text", ['{"x": NaN}', '{"x": Infinity}', '{"x": -Infinity}', '{"x": 1e400}', "[-1e999]"]
)
def test_non_standard_numbers_are_parse_errors(text: str) -> None:
    with pytest.raises(jsonrpc.ParseError):
        jsonrpc.decode('{"jsonrpc": "2.0", "method": "m", "params": ' + text + "}")


@pytest.mark.parametrize(
    "value",
    [
        {"text": "José Müller", "n": 1, "f": 1.5, "nested": [None, True, {"k": "v"}]},
        {"lone": "\ud800x"},  # parses from "\\ud800"; written escaped, still valid UTF-8
        {"big": 2**70},  # beyond 64 bits: exact, through the standard library
    ],
)
def test_dumps_always_writes_valid_utf8_json_that_reads_back(value: object) -> None:
    data = jsonrpc.dumps(value)
    data.decode("utf-8")  # valid UTF-8
    assert json.loads(data) == value
    assert b" " not in data.replace(b"Jos\xc3\xa9 M", b"")  # compact
