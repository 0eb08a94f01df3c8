"""Tests for portero.core.anonymize: examples, properties, and a differential test against a naive one."""

from __future__ import annotations

import copy
import itertools
import json
import re
import sys
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from portero.core.anonymize import _CASED_BOUND, Anonymizer, Rule

# ------------------------------------------------------------------------------------------------ examples


def test_longest_match_first_ann_anna() -> None:
    a = Anonymizer([Rule("Ann", "Alice"), Rule("Anna", "Beatrice")])
    assert a.to_real_text("Ann and Anna, Annabel") == "Alice and Beatrice, Beatricebel"
    assert a.to_fake_text("Alice and Beatrice") == "Ann and Anna"


def test_rules_never_chain() -> None:
    a = Anonymizer([Rule("A", "B"), Rule("B", "C")])
    assert a.to_real_text("A B") == "B C"
    assert a.to_fake_text("B C") == "A B"


def test_swapped_pairs() -> None:
    a = Anonymizer([Rule("Alice", "Bob"), Rule("Bob", "Alice")])
    assert a.to_real_text("Alice met Bob") == "Bob met Alice"
    assert a.to_fake_text("Bob met Alice") == "Alice met Bob"


def test_real_containing_fake() -> None:
    a = Anonymizer([Rule("Ann", "Ann Smith")])
    assert a.to_real_text("Ann") == "Ann Smith"
    assert a.to_fake_text("Ann Smith and Ann") == "Ann and Ann"


def test_case_insensitive_writes_configured_value() -> None:
    a = Anonymizer([Rule("acme", "Globex Corp", case_sensitive=False)])
    assert a.to_real_text("ACME, Acme, acme") == "Globex Corp, Globex Corp, Globex Corp"
    assert a.to_fake_text("GLOBEX CORP and globex corp") == "acme and acme"


def test_case_sensitive_is_exact() -> None:
    a = Anonymizer([Rule("acme", "Globex")])
    assert a.to_real_text("ACME acme") == "ACME Globex"


def test_mixed_case_modes_leftmost_longest() -> None:
    a = Anonymizer([Rule("ab", "1"), Rule("ABC", "2", case_sensitive=False), Rule("b", "3")])
    assert a.to_real_text("abc") == "2"
    assert a.to_real_text("abd") == "1d"
    assert a.to_real_text("xbabC") == "x32"


def test_unicode() -> None:
    a = Anonymizer(
        [
            Rule("Zoë", "Jürgen Müller"),
            Rule("東京", "大阪"),
            Rule("straße", "Weg", case_sensitive=False),
            Rule("🙂", "🙃"),
        ]
    )
    out = a.to_real_text("Zoë in 東京 🙂 STRASSE STRAßE")
    assert out == "Jürgen Müller in 大阪 🙃 STRASSE Weg"
    assert a.to_fake_text("Jürgen Müller in 大阪 🙃") == "Zoë in 東京 🙂"


def test_case_insensitive_chars_whose_lowercase_changes_length() -> None:
    # "İ".lower() is two characters; matching must not shift positions in the text.
    a = Anonymizer([Rule("İx", "R", case_sensitive=False), Rule("y", "Y")])
    assert a.to_real_text("İx y ix y") == "R Y R Y"
    b = Anonymizer([Rule("ſa", "1", case_sensitive=False), Rule("sab", "2", case_sensitive=False)])
    assert b.to_real_text("sab ſa SA ſAB") == "2 1 1 2"


def test_one_way_rules() -> None:
    a = Anonymizer(
        [
            Rule("client-x", "Acme Ltd", bidirectional=False),
            Rule("KEY-1", "secret", bidirectional=False, response_replacement="***"),
        ]
    )
    assert a.to_real_text("ask client-x, key KEY-1") == "ask Acme Ltd, key secret"
    assert a.to_fake_text("Acme Ltd uses secret") == "[REDACTED] uses ***"


def test_json_values_and_keys_nested() -> None:
    a = Anonymizer([Rule("Ann", "Alice")])
    obj = {"Ann": [{"name": "Ann", "n": 1, "ok": True, "x": None, "f": 1.5}, "Ann's"], "other": {"k": "v"}}
    before = copy.deepcopy(obj)
    out = a.to_real(obj)
    assert out == {
        "Alice": [{"name": "Alice", "n": 1, "ok": True, "x": None, "f": 1.5}, "Alice's"],
        "other": {"k": "v"},
    }
    assert obj == before  # never mutated
    assert out["other"] is obj["other"]  # unchanged branches are shared, not copied
    assert a.to_fake(out) == obj


def test_identity_when_nothing_changes() -> None:
    a = Anonymizer([Rule("Ann", "Alice")])
    obj = {"content": [{"type": "text", "text": "nobody here"}], "isError": False, "n": [1, 2.5, None]}
    assert a.to_real(obj) is obj
    assert a.to_fake(obj) is obj
    assert a.to_real("plain") == "plain"
    assert a.to_real(5) == 5


def test_replacement_equal_to_original_counts_as_unchanged() -> None:
    a = Anonymizer([Rule("same", "same")])
    obj = {"a": ["same"]}
    assert a.to_real(obj) is obj


def test_base64_fields_left_alone() -> None:
    a = Anonymizer([Rule("QUJD", "REAL")])
    image = {"type": "image", "data": "QUJDQUJD", "mimeType": "image/png"}
    audio = {"type": "audio", "data": "QUJD"}
    blob = {"uri": "file:///QUJD", "blob": "QUJD"}
    typed = {"data": "QUJD", "mimeType": "application/octet-stream"}
    msg = {"content": [image, audio, {"type": "resource", "resource": blob}, typed]}
    out = a.to_real(msg)
    assert out["content"][0] is image
    assert out["content"][1] is audio
    assert out["content"][2]["resource"] == {"uri": "file:///REAL", "blob": "QUJD"}
    assert out["content"][3] is typed
    # Outside such dicts, "data" is ordinary text.
    assert a.to_real({"type": "text", "data": "QUJD"}) == {"type": "text", "data": "REAL"}
    assert a.to_real({"data": "QUJD"}) == {"data": "REAL"}
    # Non-string values under those keys are still walked.
    assert a.to_real({"mimeType": "x", "data": ["QUJD"]}) == {"mimeType": "x", "data": ["REAL"]}


def test_empty() -> None:
    assert Anonymizer([]).empty
    assert not Anonymizer([Rule("a", "b")]).empty
    obj = {"a": "b"}
    assert Anonymizer([]).to_real(obj) is obj


def test_invalid_rules() -> None:
    with pytest.raises(ValueError, match="empty"):
        Anonymizer([Rule("", "x")])
    with pytest.raises(ValueError, match="empty"):
        Anonymizer([Rule("x", "")])
    with pytest.raises(ValueError, match="'Ann'"):
        Anonymizer([Rule("Ann", "x"), Rule("Ann", "y")])
    with pytest.raises(ValueError, match="ignoring case"):
        Anonymizer([Rule("ann", "x", case_sensitive=False), Rule("ANN", "y", case_sensitive=False)])
    with pytest.raises(ValueError, match="ignoring case"):
        Anonymizer([Rule("Ann", "x"), Rule("aNN", "y", case_sensitive=False)])


def test_duplicate_real_error_does_not_leak_real() -> None:
    with pytest.raises(ValueError) as info:
        Anonymizer([Rule("f1", "top-secret"), Rule("f2", "top-secret")])
    assert "top-secret" not in str(info.value)
    assert "'f1'" in str(info.value) and "'f2'" in str(info.value)
    with pytest.raises(ValueError) as info:
        Anonymizer([Rule("f1", "top-secret"), Rule("f2", "TOP-SECRET", case_sensitive=False)])
    assert "secret" not in str(info.value).lower()


def test_repr_hides_real() -> None:
    r = Rule("Ann", "hunter2-real")
    assert "hunter2-real" not in repr(r)
    assert "hunter2-real" not in repr(Anonymizer([r]))


def test_from_config_duck_typed() -> None:
    @attrs.frozen
    class Replacement:
        fake: str
        real: str
        bidirectional: bool = True
        case_sensitive: bool = True
        response_replacement: str = "[REDACTED]"

    a = Anonymizer.from_config([Replacement("Ann", "Alice"), Replacement("K", "key", bidirectional=False)])
    assert a.to_real_text("Ann K") == "Alice key"
    assert a.to_fake_text("Alice key") == "Ann [REDACTED]"


def test_long_literals_and_many_rules() -> None:
    rules = [Rule(f"fake{i:04d}", f"real{i:04d}") for i in range(2000)] + [Rule("x" * 5000, "long")]
    a = Anonymizer(rules)
    assert a.to_real_text("fake0001 fake1999 " + "x" * 5000) == "real0001 real1999 long"


def test_special_regex_characters() -> None:
    a = Anonymizer(
        [
            Rule("a.b", "1"),
            Rule("[x]", "2"),
            Rule("\\", "3"),
            Rule("-^", "4"),
            Rule("]", "5"),
            Rule("(?i)", "6", case_sensitive=False),
        ]
    )
    assert a.to_real_text("a.b axb [x] \\ -^ ] (?I)") == "1 axb 2 3 4 5 6"


def test_cased_bound_covers_this_pythons_unicode() -> None:
    # _ci_closure only scans characters below _CASED_BOUND. That is exact if nothing at or above the bound
    # has a case mapping (re.IGNORECASE relates characters through their lowercase) and nothing below it
    # is case-insensitively equal to a character above it.
    high = "".join(map(chr, range(_CASED_BOUND, sys.maxunicode + 1)))
    assert high.lower() == high and high.upper() == high
    low = "".join(map(chr, itertools.chain(range(0xD800), range(0xE000, _CASED_BOUND))))
    above = re.compile(f"[{re.escape(chr(_CASED_BOUND))}-{re.escape(chr(sys.maxunicode))}]", re.IGNORECASE)
    assert above.search(low) is None


def test_case_insensitive_first_characters_with_odd_variants() -> None:
    a = Anonymizer(
        [
            Rule("kelvin", "1", case_sensitive=False),
            Rule("sun", "2", case_sensitive=False),
            Rule("ion", "3", case_sensitive=False),
        ]
    )
    assert a.to_real_text("\u212aELVIN \u017fUN \u0130ON \u0131on Kelvin") == "1 2 3 3 1"


# --------------------------------------------------------------------------------------- naive reference


def _reference_sub(text: str, pairs: list[tuple[str, str, bool]]) -> str:
    """Scan position by position; at each, try every literal, longest first (exact before ignore-case)."""
    ordered = sorted(pairs, key=lambda p: (-len(p[0]), not p[2]))
    out: list[str] = []
    i = 0
    while i < len(text):
        for literal, replacement, case_sensitive in ordered:
            chunk = text[i : i + len(literal)]
            if len(chunk) != len(literal):
                continue
            if chunk == literal if case_sensitive else re.fullmatch(re.escape(literal), chunk, re.IGNORECASE):
                out.append(replacement)
                i += len(literal)
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _reference_ambiguous(literals: list[tuple[str, bool]]) -> bool:
    for i, (a, a_cs) in enumerate(literals):
        for b, b_cs in literals[i + 1 :]:
            if a == b:
                return True
            if (not a_cs or not b_cs) and re.fullmatch(re.escape(a), b, re.IGNORECASE):
                return True
    return False


_ASCII = "abAB."
_TRICKY = "aAiIİısSſkKK."  # characters whose case folding is irregular


def _rules(alphabet: str) -> st.SearchStrategy[list[Rule]]:
    lit = st.text(alphabet, min_size=1, max_size=4)
    rule = st.builds(
        Rule,
        fake=lit,
        real=lit,
        bidirectional=st.booleans(),
        case_sensitive=st.booleans(),
        response_replacement=st.sampled_from(["[REDACTED]", "", "#"]),
    )
    return st.lists(rule, max_size=8)


@pytest.mark.parametrize("alphabet", [_ASCII, _TRICKY])
@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_matches_reference(alphabet: str, data: st.DataObject) -> None:
    rules = data.draw(_rules(alphabet))
    text = data.draw(st.text(alphabet, max_size=40))
    ambiguous = _reference_ambiguous([(r.fake, r.case_sensitive) for r in rules]) or _reference_ambiguous(
        [(r.real, r.case_sensitive) for r in rules]
    )
    if ambiguous:
        with pytest.raises(ValueError):
            Anonymizer(rules)
        return
    a = Anonymizer(rules)
    to_real = [(r.fake, r.real, r.case_sensitive) for r in rules]
    to_fake = [
        (r.real, r.fake if r.bidirectional else r.response_replacement, r.case_sensitive) for r in rules
    ]
    assert a.to_real_text(text) == _reference_sub(text, to_real)
    assert a.to_fake_text(text) == _reference_sub(text, to_fake)


# ------------------------------------------------------------------------------------------- properties


def _substring_free(tokens: list[str]) -> bool:
    return all(x == y or x not in y for x in tokens for y in tokens)


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    fakes=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
    reals=st.lists(st.text("xyz", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
    pieces=st.lists(st.tuples(st.integers(0, 5), st.text(" .-_", min_size=1, max_size=3)), max_size=12),
)
def test_round_trip(fakes: list[str], reals: list[str], pieces: list[tuple[int, str]]) -> None:
    n = min(len(fakes), len(reals))
    fakes, reals = fakes[:n], reals[:n]
    assume(_substring_free(fakes) and _substring_free(reals))
    a = Anonymizer([Rule(f, r) for f, r in zip(fakes, reals, strict=True)])
    text = "".join(fakes[i % n] + filler for i, filler in pieces)
    assert a.to_fake_text(a.to_real_text(text)) == text
    obj = {text: [text, {"k": text}]}
    assert a.to_fake(a.to_real(obj)) == obj


@settings(max_examples=300)
@given(
    rules=st.lists(
        st.builds(
            Rule,
            fake=st.text("abcABC", min_size=1, max_size=4),
            real=st.text("xyz", min_size=1, max_size=4),
            case_sensitive=st.booleans(),
        ),
        max_size=6,
    ),
    text=st.text("abcABC xyz", max_size=60),
)
def test_to_real_leaves_no_fake(rules: list[Rule], text: str) -> None:
    try:
        a = Anonymizer(rules)
    except ValueError:
        assume(False)
        raise
    out = a.to_real_text(text)
    for r in rules:
        if r.case_sensitive:
            assert r.fake not in out
        else:
            assert re.search(re.escape(r.fake), out, re.IGNORECASE) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30,
)
_FIXED = Anonymizer(
    [
        Rule("a", "b"),
        Rule("b", "a"),
        Rule("ab", "X", bidirectional=False),
        Rule("é", "E", case_sensitive=False),
        Rule("data", "DATA"),
        Rule("image", "picture"),
    ]
)


def _reference_walk(obj: Any, sub: Any) -> Any:
    if isinstance(obj, str):
        return sub(obj)
    if isinstance(obj, list):
        return [_reference_walk(v, sub) for v in obj]
    if isinstance(obj, dict):
        binary = "mimeType" in obj or "uri" in obj or obj.get("type") in ("image", "audio")
        return {
            sub(k): v if binary and k in ("data", "blob") and isinstance(v, str) else _reference_walk(v, sub)
            for k, v in obj.items()
        }
    return obj


@settings(max_examples=300)
@given(obj=_json, text=st.text())
def test_json_walk_never_raises_and_never_mutates(obj: Any, text: str) -> None:
    _FIXED.to_real_text(text)
    _FIXED.to_fake_text(text)
    snapshot = json.dumps(obj)
    for walk, sub in ((_FIXED.to_real, _FIXED.to_real_text), (_FIXED.to_fake, _FIXED.to_fake_text)):
        out = walk(obj)
        assert json.dumps(obj) == snapshot
        assert out == _reference_walk(obj, sub)
        if out == obj:
            assert out is obj


@settings(max_examples=100)
@given(obj=_json)
def test_json_walk_binary_dicts(obj: Any) -> None:
    for extra in ({"type": "image"}, {"mimeType": "a"}, {"uri": "u"}):
        d = {**extra, "data": "ab data", "blob": "a", "nested": obj}
        out = _FIXED.to_real(d)
        assert out[_FIXED.to_real_text("data")] == "ab data" and out[_FIXED.to_real_text("blob")] == "a"
        assert out["nested"] == _reference_walk(obj, _FIXED.to_real_text)
