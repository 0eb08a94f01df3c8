"""Benchmark portero.core.anonymize. Run by hand: .venv/bin/python bench/bench_anonymize.py

Prints a Markdown table: ms per MB of input for each case, and the ratio to json.dumps + json.loads of the
same value measured in the same run (the machine is shared and noisy: compare ratios, not absolute times).
"""

from __future__ import annotations

import json
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portero.core.anonymize import Anonymizer, Rule  # noqa: E402

RNG = random.Random(20240601)
LOWER = "abcdefghijklmnopqrstuvwxyz"


def word(lo: int, hi: int) -> str:
    return "".join(RNG.choice(LOWER) for _ in range(RNG.randint(lo, hi)))


def make_rules(n: int, case_insensitive_share: float = 0.0) -> list[Rule]:
    reals: set[str] = set()
    while len(reals) < n:
        reals.add(word(2, 8).capitalize() + " " + word(3, 9).capitalize())
    return [
        Rule(fake=f"Person{i:04d}", real=real, case_sensitive=RNG.random() >= case_insensitive_share)
        for i, real in enumerate(sorted(reals))
    ]


def filler(n_bytes: int) -> str:
    """Prose-like filler: one word in five capitalized, so names' first letters occur everywhere."""
    out: list[str] = []
    size = 0
    while size < n_bytes:
        w = word(1, 9)
        if RNG.random() < 0.2:
            w = w.capitalize()
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def text_with(literals: list[str], n_bytes: int, every: int) -> str:
    """About n_bytes of lowercase filler with a random literal every `every` bytes."""
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        chunk = filler(every)
        lit = RNG.choice(literals) if literals else ""
        parts.append(chunk + " " + lit + " ")
        size += len(parts[-1])
    return "".join(parts)[:n_bytes]


def tool_result(literals: list[str], n_bytes: int, every: int) -> dict[str, Any]:
    """A nested MCP tool result of about n_bytes when encoded: many small rows plus one text block."""
    rows: list[dict[str, Any]] = []
    size = 0
    i = 0
    while size < n_bytes * 0.8:
        name = RNG.choice(literals) if literals and RNG.random() < 220 / every else word(4, 12)
        row = {
            "id": i,
            "name": name,
            "email": word(4, 10) + "@example.com",
            "active": RNG.random() < 0.5,
            "score": round(RNG.random() * 100, 3),
            "notes": text_with(literals, 120, every),
            "tags": [word(3, 8) for _ in range(3)],
            "address": {"street": word(5, 10) + " " + str(RNG.randint(1, 300)), "city": word(4, 10)},
        }
        rows.append(row)
        size += len(json.dumps(row))
        i += 1
    text = text_with(literals, int(n_bytes * 0.2), every)
    return {
        "content": [
            {"type": "text", "text": text},
            {"type": "image", "mimeType": "image/png", "data": "iVBORw0KGgo" * 10},
        ],
        "structuredContent": {"rows": rows, "total": len(rows)},
        "isError": False,
    }


def timed_ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    rows: list[tuple[str, float, float, str]] = []

    def case(name: str, fn: Callable[[], object], value: Any, repeat: int, note: str = "") -> None:
        mb = len(json.dumps(value)) / 1e6 if not isinstance(value, str) else len(value.encode()) / 1e6
        # Alternate the case and its baseline so that load from other processes hits both alike.
        pairs = [(timed_ms(fn), timed_ms(lambda: json.loads(json.dumps(value)))) for _ in range(repeat)]
        ms = statistics.median(p[0] for p in pairs)
        ratio = statistics.median(p[0] / p[1] for p in pairs)
        rows.append((name, ms / mb, ratio, note))
        print(f"  {name}: {ms / mb:.1f} ms/MB, {ratio:.1f}x json", file=sys.stderr)

    # 1,000 rules; results come back from the server full of real values -> to_fake.
    rules = make_rules(1000)
    t0 = time.perf_counter()
    anon = Anonymizer(rules)
    compile_ms = (time.perf_counter() - t0) * 1000
    reals = [r.real for r in rules]
    fakes = [r.fake for r in rules]

    text = text_with(reals, 1_000_000, 870)
    by_length = sorted(reals, key=len, reverse=True)
    matches = sum(1 for _ in re.finditer("|".join(map(re.escape, by_length)), text))
    case(f"1,000 rules, 1 MB text, to_fake ({matches:,} matches)", lambda: anon.to_fake_text(text), text, 9)
    text_in = anon.to_fake_text(text)
    case("1,000 rules, 1 MB text, to_real", lambda: anon.to_real_text(text_in), text_in, 9)

    result = tool_result(reals, 1_000_000, 870)
    case("1,000 rules, 1 MB nested JSON result, to_fake", lambda: anon.to_fake(result), result, 9)
    result_in = anon.to_fake(result)
    case("1,000 rules, 1 MB nested JSON, to_real", lambda: anon.to_real(result_in), result_in, 9)

    plain = text_with([], 1_000_000, 870)
    case("1,000 rules, 1 MB text, no match (fast path)", lambda: anon.to_fake_text(plain), plain, 9)
    plain_json = tool_result([], 1_000_000, 870)
    assert anon.to_fake(plain_json) is plain_json
    case(
        "1,000 rules, 1 MB nested JSON, no match (returns the same object)",
        lambda: anon.to_fake(plain_json),
        plain_json,
        5,
    )

    mixed = Anonymizer(make_rules(1000, case_insensitive_share=0.5))
    mixed_text = text_with([r.real.upper() for r in mixed.rules], 1_000_000, 870)
    case(
        "1,000 rules, half case-insensitive, 1 MB text, to_fake",
        lambda: mixed.to_fake_text(mixed_text),
        mixed_text,
        9,
    )

    # Typical: a handful of rules on a 10 KB result.
    few = make_rules(5)
    few_anon = Anonymizer(few)
    small = tool_result([r.real for r in few], 10_000, 300)
    case(
        "5 rules, 10 KB JSON result, to_fake",
        lambda: [few_anon.to_fake(small) for _ in range(100)],
        [small] * 100,
        7,
        "100 calls timed together",
    )
    small_plain = tool_result([], 10_000, 300)
    case(
        "5 rules, 10 KB JSON result, no match",
        lambda: [few_anon.to_fake(small_plain) for _ in range(100)],
        [small_plain] * 100,
        7,
        "100 calls timed together",
    )
    few_ci = Anonymizer([Rule(r.fake, r.real, case_sensitive=False) for r in few])
    case(
        "5 case-insensitive rules, 10 KB JSON result, to_fake",
        lambda: [few_ci.to_fake(small) for _ in range(100)],
        [small] * 100,
        7,
        "100 calls timed together",
    )

    # For comparison: one alternation of the escaped literals, longest first (no trie).
    alternation = re.compile("|".join(map(re.escape, sorted(reals, key=len, reverse=True))))
    table = dict(zip(reals, fakes, strict=True))
    out_alt = alternation.sub(lambda m: table[m.group()], text)
    assert out_alt == anon.to_fake_text(text)
    case(
        "(reference) 1,000 rules as one flat alternation, 1 MB text",
        lambda: alternation.sub(lambda m: table[m.group()], text),
        text,
        1,
    )

    print("| case | ms per MB | × json.dumps+loads |")
    print("|---|---|---|")
    for name, ms_per_mb, ratio, note in rows:
        print(f"| {name}{' (' + note + ')' if note else ''} | {ms_per_mb:,.1f} | {ratio:.1f} |")
    print(f"\nCompiling 1,000 rules (both directions): {compile_ms:.0f} ms.")


if __name__ == "__main__":
    main()
