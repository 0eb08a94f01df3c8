"""The console's audit queries (Store.audit_page, Store.audit_entry) against real database files in tmp_path.

Rows are written as the gateway writes them: record_audit with outcome ``pending`` before the call, then
finish_audit with its outcome; a refused call is recorded at once with its final outcome.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from portero.core.policy import glob_match
from portero.store import Store

T0 = 1_700_000_000.0

# (tool, client, decision, outcome); row i has ts T0 + 10 * i.
ROWS: list[tuple[str, str | None, str, str]] = [
    ("files/read", None, "allow", "ok"),  # recorded before clients existed
    ("files/write", None, "deny", "refused"),
    ("github/create_issue", "default", "allow", "ok"),
    ("github/list_issues", "laptop", "allow", "error"),
    ("github/create_pr", "laptop", "approved", "ok"),
    ("files/read", "ci", "rejected", "refused"),
    ("slack/post_message", "ci", "allow", "ok"),
    ("files/read", "default", "expired", "refused"),
    ("github/search_code", "laptop", "allow", "ok"),
    ("slack/post_message", "default", "approved", "error"),
    ("files/list", "ci", "allow", "ok"),
    ("github/create_issue", "ci", "allow", "ok"),
]


async def write(store: Store, i: int, tool: str, client: str | None, decision: str, outcome: str) -> int:
    rec: dict[str, Any] = {
        "ts": T0 + 10 * i,
        "session": f"s{i % 3}",
        "tool": tool,
        "arguments": {"n": i},
        "decision": decision,
        "source": "admin" if decision in ("approved", "rejected") else "default",
        "client": client,
    }
    if outcome == "refused":
        return await store.record_audit({**rec, "outcome": "refused", "duration_ms": 0.0, "error": "no"})
    row_id = await store.record_audit({**rec, "outcome": "pending"})
    error = "boom" if outcome == "error" else None
    await store.finish_audit(row_id, outcome=outcome, duration_ms=float(i), error=error)
    return row_id


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "gateway.db"))
    for i, row in enumerate(ROWS):
        assert await write(store, i, *row) == i + 1
    try:
        yield store
    finally:
        await store.aclose()


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


def expected(pred: Any) -> list[int]:
    """The ids of ROWS matching ``pred(i, tool, client, decision, outcome)``, newest first."""
    return [i + 1 for i in reversed(range(len(ROWS))) if pred(i, *ROWS[i])]


async def test_unfiltered_is_newest_first_with_ids(store: Store) -> None:
    rows, next_before = await store.audit_page()
    assert ids(rows) == list(range(len(ROWS), 0, -1))
    assert next_before is None
    newest = rows[0]
    assert newest == {"id": 12, **(await store.recent_audit(1))[0]}
    assert newest["ts"] == T0 + 110 and newest["arguments"] == {"n": 11}
    assert newest["outcome"] == "ok" and newest["duration_ms"] == 11.0 and newest["client"] == "ci"


async def test_each_filter(store: Store) -> None:
    rows, _ = await store.audit_page(tool="files/read")
    assert ids(rows) == expected(lambda i, t, c, d, o: t == "files/read")
    rows, _ = await store.audit_page(tool="github/*")
    assert ids(rows) == expected(lambda i, t, c, d, o: t.startswith("github/"))
    rows, _ = await store.audit_page(tool="*post*")
    assert ids(rows) == expected(lambda i, t, c, d, o: "post" in t)
    rows, _ = await store.audit_page(tool="github/create_*")
    assert ids(rows) == [12, 5, 3]
    rows, _ = await store.audit_page(tool="nobody/*")
    assert rows == []
    rows, _ = await store.audit_page(client="laptop")
    assert ids(rows) == expected(lambda i, t, c, d, o: c == "laptop")
    rows, _ = await store.audit_page(decision="approved")
    assert ids(rows) == expected(lambda i, t, c, d, o: d == "approved")
    rows, _ = await store.audit_page(outcome="refused")
    assert ids(rows) == expected(lambda i, t, c, d, o: o == "refused")
    assert all(r["outcome"] == "refused" for r in rows)
    rows, _ = await store.audit_page(outcome="error")
    assert [r["error"] for r in rows] == ["boom", "boom"]


async def test_default_client_matches_null(store: Store) -> None:
    rows, _ = await store.audit_page(client="default")
    assert ids(rows) == expected(lambda i, t, c, d, o: c in (None, "default"))
    assert {r["client"] for r in rows} == {None, "default"}
    rows, _ = await store.audit_page(client="ci")
    assert None not in {r["client"] for r in rows}


async def test_combined_filters(store: Store) -> None:
    rows, _ = await store.audit_page(tool="files/*", client="ci")
    assert ids(rows) == [11, 6]
    rows, _ = await store.audit_page(tool="files/*", client="default", outcome="refused")
    assert ids(rows) == [8, 2]
    rows, _ = await store.audit_page(tool="github/*", decision="allow", since=T0 + 30, until=T0 + 110)
    assert ids(rows) == [9, 4]
    rows, _ = await store.audit_page(client="laptop", decision="allow", outcome="ok", before=9)
    assert rows == []


async def test_since_until_boundaries(store: Store) -> None:
    # since is inclusive, until exclusive.
    rows, _ = await store.audit_page(since=T0 + 50)
    assert ids(rows) == list(range(12, 5, -1))
    rows, _ = await store.audit_page(since=T0 + 50.001)
    assert ids(rows) == list(range(12, 6, -1))
    rows, _ = await store.audit_page(until=T0 + 50)
    assert ids(rows) == [5, 4, 3, 2, 1]
    rows, _ = await store.audit_page(until=T0 + 50.001)
    assert ids(rows) == [6, 5, 4, 3, 2, 1]
    rows, _ = await store.audit_page(since=T0 + 20, until=T0 + 40)
    assert ids(rows) == [4, 3]
    rows, _ = await store.audit_page(since=T0 + 40, until=T0 + 40)
    assert rows == []
    rows, _ = await store.audit_page(since=T0 + 60, until=T0 + 20)
    assert rows == []


async def test_wide_time_range_takes_the_other_path_with_the_same_rows(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases: list[dict[str, Any]] = [
        {"since": T0 + 20},
        {"until": T0 + 90},
        {"since": T0 + 20, "until": T0 + 90},
        {"since": T0 + 20, "until": T0 + 90, "before": 7, "limit": 2},
        {"since": T0, "client": "default", "tool": "files/*"},
    ]
    narrow = [await store.audit_page(**case) for case in cases]
    monkeypatch.setattr(store, "_AUDIT_TS_INDEX_ROWS", 2)  # every range above now counts as wide
    wide = [await store.audit_page(**case) for case in cases]
    assert wide == narrow
    assert ids(narrow[2][0]) == list(range(9, 2, -1))
    assert narrow[3] == (narrow[3][0], 5) and ids(narrow[3][0]) == [6, 5]


@pytest.mark.parametrize("limit", [1, 2, 5, 12, 50])
async def test_paging_visits_every_row_once(store: Store, limit: int) -> None:
    seen: list[int] = []
    before: int | None = None
    for _ in range(len(ROWS) + 1):  # bounded: more pages than rows would be a bug
        rows, next_before = await store.audit_page(before=before, limit=limit)
        assert 1 <= len(rows) <= limit
        seen += ids(rows)
        if next_before is None:
            break
        assert len(rows) == limit and next_before == rows[-1]["id"]
        before = next_before
    assert seen == list(range(len(ROWS), 0, -1))


async def test_paging_with_filters(store: Store) -> None:
    seen: list[int] = []
    before: int | None = None
    for _ in range(len(ROWS) + 1):
        rows, before = await store.audit_page(client="default", before=before, limit=2)
        seen += ids(rows)
        if before is None:
            break
    assert seen == expected(lambda i, t, c, d, o: c in (None, "default"))
    rows, next_before = await store.audit_page(tool="files/*", limit=2)
    assert ids(rows) == [11, 8] and next_before == 8
    rows, next_before = await store.audit_page(tool="files/*", limit=2, before=next_before)
    assert ids(rows) == [6, 2] and next_before == 2
    rows, next_before = await store.audit_page(tool="files/*", limit=2, before=next_before)
    assert ids(rows) == [1] and next_before is None


async def test_a_full_last_page_has_no_next(store: Store) -> None:
    rows, next_before = await store.audit_page(tool="slack/*", limit=2)
    assert ids(rows) == [10, 7] and next_before is None
    rows, next_before = await store.audit_page(before=1)
    assert rows == [] and next_before is None
    rows, next_before = await store.audit_page(before=10_000, limit=len(ROWS))
    assert len(rows) == len(ROWS) and next_before is None


async def test_limit_must_be_positive(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.audit_page(limit=0)


async def test_audit_entry(store: Store) -> None:
    page, _ = await store.audit_page()
    for row in page:
        assert await store.audit_entry(row["id"]) == row
    assert await store.audit_entry(0) is None
    assert await store.audit_entry(len(ROWS) + 1) is None
    entry = await store.audit_entry(2)
    assert entry is not None
    assert entry["tool"] == "files/write" and entry["decision"] == "deny" and entry["client"] is None


async def test_pending_row_has_no_duration(store: Store) -> None:
    row_id = await store.record_audit(
        {"ts": T0 + 500, "tool": "files/read", "decision": "allow", "source": "default", "outcome": "pending"}
    )
    entry = await store.audit_entry(row_id)
    assert entry is not None and entry["outcome"] == "pending" and entry["duration_ms"] is None
    rows, _ = await store.audit_page(outcome="pending")
    assert rows == [entry]


async def test_tool_glob_is_glob_match(tmp_path: Path) -> None:
    """SQLite's GLOB with [ and ? escaped agrees with glob_match, wildcard-looking names included."""
    names = [
        "a[b]/c?d",
        "a[b]/cxd",
        "x*y/z",
        "xay/z",
        "files/read",
        "Files/Read",
        "é/ü",
        "é/üü",
        "s/[",
        "s/]",
        "s/?",
        "s/\\",
        "s/a\\b",
        "s/^$.+(|)",
    ]
    store = await Store.open(str(tmp_path / "gateway.db"))
    try:
        for i, name in enumerate(names):
            await write(store, i, name, None, "allow", "ok")
        rnd = random.Random(16)
        alphabet = ["*", "?", "[", "]", "\\", "a", "b", "/", "x", "y", "z", "é", "ü", "s", "^", "."]
        patterns = ["*", "", "a[b]/*", "a[b]/c?d", "x*y/*", "s/?", "s/[", "s/]", "s/\\", "*\\*", "files/*"]
        patterns += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 6))) for _ in range(200)]
        for _ in range(300):  # names with a piece cut out for a `*`: patterns that match something
            name = rnd.choice(names)
            a = rnd.randint(0, len(name))
            b = rnd.randint(a, len(name))
            patterns.append(name[:a] + "*" + name[b:])
        matched = sum(1 for p in patterns if any(glob_match(p, n) for n in names))
        assert matched > 300
        for pattern in patterns:
            rows, _ = await store.audit_page(tool=pattern, limit=100)
            got = sorted(r["tool"] for r in rows)
            assert got == sorted(n for n in names if glob_match(pattern, n)), pattern
    finally:
        await store.aclose()
