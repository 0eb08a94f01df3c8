"""Anonymization through the gateway: a 1 MB tool result with 1,000 rules versus none, in one run.

Run by hand from the repository root:

    .venv/bin/python bench/bench_anonymize_gateway.py [--rounds R] [--calls N] [--small-calls M]

It starts three ``python -m portero serve`` gateways, each fronting its own copy of the bench echo child
(bench/echo_server.py), identical except for their ``[[replacements]]``:

  A. no rules;
  B. 1,000 rules, fake ``Fake Person 0001`` .. ``Fake Person 1000``, real ``Peter Berg-0001`` .. (40 first
     names and 25 surnames, many also found alone in the filler text, so the scan meets near misses);
  C. 5 rules (the first five of B), the typical case.

The measured tool is the child's ``doc``: about 1 MB of prose-like text with the 1,000 real values
sprinkled in once each, evenly spaced (so B rewrites 1,000 matches, C 5, A none). Per round, the N calls
are interleaved A, B, C, A, B, C... (the order rotating each round) so that noise on a shared machine
hits all three; figures are the median over rounds of each round's p50 / p99. Also measured: small calls
(``echo`` of a 100-byte text holding one fake name; B and C turn it into the real value for the child
and back), the 1 MB document with no real values in it (B's no-match path), and, in this process, what
``Anonymizer.to_fake`` itself costs on the same 1 MB result, for comparison with the added time.

Before timing, B's result is checked to hold every fake and no real value (C: 5 fakes, 995 reals;
A: untouched); the run aborts if not. Only 127.0.0.1 is used; every process started here is stopped at
the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gateway  # noqa: E402
from bench_gateway import REPO, BenchError, HttpConn, now, pct, stop_all  # noqa: E402

sys.path.insert(0, REPO)
from portero.core.anonymize import Anonymizer, Rule  # noqa: E402

N_RULES = 1000
KB = 1024
FAKES = [f"Fake Person {i:04d}" for i in range(1, N_RULES + 1)]
# Real values: "Firstname Surname-0001" with 40 first names and 25 surnames, many of which also occur
# alone in the child's filler text (near misses); the number keeps every value unique and none a
# substring of another.
FIRST = (
    "Anna Peter Maria Marco Laura David Sofia Elena Jonas Tomas Lucia Pablo Irene Oscar Nina Hugo "
    "Clara Felix Greta Ivan Julia Karl Lena Mateo Olga Quentin Rosa Simon Ute Victor Wanda Xavier Yara "
    "Zoe Bruno Carmen Dora Emil Hanna Igor"
).split()
LAST = (
    "Berg Novak Rossi Keller Weber Garcia Silva Moreau Jensen Kowalski Horvat Dubois Fischer Costa Larsen "
    "Nagy Popescu Santos Vogel Lindqvist Meyer Ortega Petrov Russo Schmidt"
).split()
REALS = [
    f"{FIRST[(i - 1) % len(FIRST)]} {LAST[(i - 1) // len(FIRST)]}-{i:04d}" for i in range(1, N_RULES + 1)
]
REAL_RE = re.compile(r"\b[A-Z][a-z]+ [A-Z][a-z]+-\d{4}\b")
SMALL_FAKE = FAKES[2]  # in the 5-rule set too
SMALL_TEXT = f"Please send the quarterly figures to {SMALL_FAKE} before Friday; reference "
SMALL_TEXT = (SMALL_TEXT + "x" * 100)[:100]
VARIANTS = {"A": 0, "B": N_RULES, "C": 5}  # name -> number of rules


def doc_params(with_names: bool = True) -> dict[str, Any]:
    args = {"kb": KB, "names": REALS, "count": N_RULES} if with_names else {"kb": KB, "names": [], "count": 0}
    return {"name": "echo__doc", "arguments": args}


# ------------------------------------------------------------------------------- the gateways
class Gateway(bench_gateway.Gateway):
    """One gateway of the comparison: bench_gateway's, with `n_rules` replacements and a session."""

    def __init__(self, tmp: str, label: str, n_rules: int) -> None:
        base = os.path.join(tmp, label)
        os.makedirs(base)
        self.label = label
        rules = "".join(
            f"[[replacements]]\nfake = {json.dumps(fake)}\nreal = {json.dumps(real)}\n"
            for fake, real in zip(FAKES[:n_rules], REALS[:n_rules], strict=True)
        )
        super().__init__(base, [sys.executable, os.path.join(REPO, "bench", "echo_server.py")], rules)
        self.conn = HttpConn(self.port)
        self.conn.initialize()


# ------------------------------------------------------------------------------- checks
def text_of(result: dict[str, Any]) -> str:
    if result.get("isError"):
        raise BenchError(f"tool error: {str(result)[:300]}")
    return result["content"][0]["text"]


def check_doc(label: str, text: str) -> None:
    n = VARIANTS[label]
    fakes = text.count("Fake Person ")
    reals = len(REAL_RE.findall(text))
    if fakes != n or reals != N_RULES - n:
        raise BenchError(
            f"{label}: {fakes} fakes and {reals} reals in the 1 MB result, expected {n} and {N_RULES - n}"
        )
    missing = [f for f in FAKES[:n] if f not in text]
    if missing:
        raise BenchError(f"{label}: {len(missing)} fakes missing from the result, e.g. {missing[0]!r}")
    leaked = [r for r in REALS[:n] if r in text]
    if leaked:
        raise BenchError(f"{label}: {len(leaked)} real values leaked through the gateway")


def check_small(label: str, text: str) -> None:
    if text != SMALL_TEXT:
        raise BenchError(f"{label}: echo came back as {text!r}")


def correctness(gws: dict[str, Gateway]) -> dict[str, int]:
    sizes = {}
    for label, gw in gws.items():
        text = text_of(gw.conn.call(doc_params()))
        check_doc(label, text)
        sizes[label] = len(text.encode())
        check_small(label, text_of(gw.conn.call({"name": "echo__echo", "arguments": {"text": SMALL_TEXT}})))
        # A real value sent by the client must come back as its fake where a rule covers it.
        real = REALS[2]
        back = text_of(gw.conn.call({"name": "echo__echo", "arguments": {"text": f"to {real}."}}))
        want = f"to {SMALL_FAKE}." if VARIANTS[label] else f"to {real}."
        if back != want:
            raise BenchError(f"{label}: echo of a real value came back as {back!r}")
    return sizes


# ------------------------------------------------------------------------------- timing
def interleaved(
    gws: dict[str, Gateway], order: list[str], n: int, params: dict[str, Any]
) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {k: [] for k in order}
    deadline = now() + 120
    for _ in range(n):
        for label in order:
            conn = gws[label].conn
            t = now()
            r = conn.call(params)
            lat[label].append(now() - t)
            if r.get("isError"):
                raise BenchError(f"{label}: tool error during timing")
        if now() > deadline:
            raise BenchError("a timing phase overran its deadline")
    return lat


def in_process(reps: int) -> dict[str, float]:
    """What the anonymizer itself costs on the same 1 MB result (median ms), and JSON for scale."""
    import echo_server  # bench/echo_server.py

    result = {
        "content": [{"type": "text", "text": echo_server.make_doc(KB, REALS, N_RULES)}],
        "isError": False,
    }
    out = {}
    for label, n in (("B", N_RULES), ("C", 5)):
        anon = Anonymizer([Rule(fake=f, real=r) for f, r in zip(FAKES[:n], REALS[:n], strict=True)])
        check_doc(label, anon.to_fake(result)["content"][0]["text"])
        times = []
        for _ in range(reps):
            t = now()
            anon.to_fake(result)
            times.append(now() - t)
        out[f"to_fake.{label}"] = statistics.median(times) * 1000
    times = []
    for _ in range(reps):
        t = now()
        json.loads(json.dumps(result))
        times.append(now() - t)
    out["json"] = statistics.median(times) * 1000
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)

    labels = list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="portero-bench-anon-") as tmp:
        t0 = now()
        gws = {label: Gateway(tmp, label, n) for label, n in VARIANTS.items()}
        sizes = correctness(gws)
        print(f"bench: 3 gateways up, results checked ({now() - t0:.1f} s)", file=sys.stderr)
        interleaved(gws, labels, 3, doc_params())  # warm-up (also fills the children's document caches)
        interleaved(gws, labels, 2, doc_params(with_names=False))
        interleaved(gws, labels, 20, {"name": "echo__echo", "arguments": {"text": SMALL_TEXT}})
        for rnd in range(args.rounds):
            order = labels[rnd % 3 :] + labels[: rnd % 3]
            big = interleaved(gws, order, args.calls, doc_params())
            nomatch = interleaved(gws, order, max(1, args.calls // 3), doc_params(with_names=False))
            small = interleaved(
                gws, order, args.small_calls, {"name": "echo__echo", "arguments": {"text": SMALL_TEXT}}
            )
            for label in labels:
                note(f"{label}.big.p50", pct(big[label], 50))
                note(f"{label}.big.p99", pct(big[label], 99))
                note(f"{label}.nomatch.p50", pct(nomatch[label], 50))
                note(f"{label}.small.p50", pct(small[label], 50))
                note(f"{label}.small.p99", pct(small[label], 99))
            # The result is still right after the load.
            for label in labels:
                check_doc(label, text_of(gws[label].conn.call(doc_params())))
            print(
                f"bench: round {rnd + 1}: 1 MB p50 "
                + ", ".join(f"{k} {res[f'{k}.big.p50'][-1]:.1f}" for k in labels)
                + " ms; small p50 "
                + ", ".join(f"{k} {res[f'{k}.small.p50'][-1]:.2f}" for k in labels)
                + " ms",
                file=sys.stderr,
            )
        for label, gw in gws.items():
            if gw.proc.poll() is not None:
                raise BenchError(f"gateway {label} exited during the run")
        ip = in_process(15)
        elapsed = now() - t0
    return {"res": res, "sizes": sizes, "in_process": ip, "elapsed": elapsed}


def report(out: dict[str, Any], args: argparse.Namespace) -> str:
    res = out["res"]

    def m(key: str) -> float:
        return statistics.median(res[key])

    lines = [
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {out['elapsed']:.0f} s, "
        f"load average {os.getloadavg()[0]:.1f}; rounds {args.rounds}, {args.calls} calls of 1 MB "
        f"per gateway per round, {args.small_calls} small calls. Result sizes (bytes of text): "
        + ", ".join(f"{k} {v:,}" for k, v in out["sizes"].items()),
        "",
        "| measure (median of rounds) | A: no rules | B: 1,000 rules | C: 5 rules "
        "| B/A | B−A ms | C/A | C−A ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, name, digits in (
        ("big.p50", "1 MB result, 1,000 real values in it: p50 ms", 1),
        ("big.p99", "1 MB result, 1,000 real values in it: p99 ms", 1),
        ("nomatch.p50", "1 MB result, no real value in it: p50 ms", 1),
        ("small.p50", "small call (100-byte echo, one fake name): p50 ms", 2),
        ("small.p99", "small call: p99 ms", 2),
    ):
        a, b, c = m(f"A.{key}"), m(f"B.{key}"), m(f"C.{key}")
        lines.append(
            f"| {name} | {a:.{digits}f} | {b:.{digits}f} | {c:.{digits}f} "
            f"| {b / a:.2f}× | {b - a:+.{digits}f} | {c / a:.2f}× | {c - a:+.{digits}f} |"
        )
    ip = out["in_process"]
    lines += [
        "",
        "In this process, on the same 1 MB result: "
        f"`Anonymizer.to_fake` {ip['to_fake.B']:.1f} ms with 1,000 rules, "
        f"{ip['to_fake.C']:.1f} ms with 5 rules; `json.loads(json.dumps(result))` {ip['json']:.1f} ms.",
        "",
        "Per round, 1 MB p50 ms: "
        + "; ".join(f"{k} " + " / ".join(f"{x:.1f}" for x in res[f"{k}.big.p50"]) for k in VARIANTS)
        + ". Small p50 ms: "
        + "; ".join(f"{k} " + " / ".join(f"{x:.2f}" for x in res[f"{k}.small.p50"]) for k in VARIANTS)
        + ".",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30, help="1 MB calls per gateway per round")
    ap.add_argument("--small-calls", type=int, default=200, help="small calls per gateway per round")
    ap.add_argument("--json", default="", help="also write the raw figures to this file")
    args = ap.parse_args()
    if args.calls < 1 or args.rounds < 1 or args.small_calls < 1:
        ap.error("--calls, --rounds and --small-calls must be positive")

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        out = run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all()
    print(report(out, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
