"""``portero pins``: list, diff, approve, block and export the pinned tool definitions; ``check --lock``.

The store is read read-only (:func:`portero.store.read_pins`); ``approve`` and ``block`` write one row
(:meth:`portero.store.Store.decide_pin_in_file`, ``decided_by = "cli"``), and a running gateway picks the
decision up within a second (it polls the pins' stamp) and tells its sessions the tool list changed. Only
``[server].data_dir`` of the config is read, like ``portero audit``.

``export`` prints the lock file (:func:`portero.core.pins.export_lock`: deterministic JSON of the approved
definitions and their hashes); ``portero check --lock FILE`` (:func:`check_lock`) exits 1 naming each
tool whose current definition is not the locked one.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from collections.abc import Callable, Sequence
from typing import TextIO

from portero.cli.common import data_dir_for_command
from portero.core import pins
from portero.core.descriptions import check_tool, render_flags
from portero.core.pins import Pin
from portero.core.policy import glob_match
from portero.store import Store, StoreError, read_pins

ACTIONS = ("list", "diff", "approve", "block", "export")


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``pins``; ``config_options`` adds ``--config`` and ``--env-file``."""
    p = sub.add_parser(
        "pins",
        help="list, diff, approve, block or export the pinned tool definitions",
        description="portero pins [list] | diff|approve|block SERVER/TOOL | export",
    )
    config_options(p)
    p.add_argument("action", nargs="?", default="list", choices=ACTIONS, help="what to do (default: list)")
    p.add_argument(
        "tool",
        nargs="?",
        metavar="SERVER/TOOL",
        help="the tool, for diff, approve and block (approve and block take a pattern too: 'everything/*')",
    )
    p.add_argument("--json", action="store_true", help="list: one JSON object per line")
    p.set_defaults(func=cmd_pins)


def _db_path(args: argparse.Namespace, err: TextIO) -> str | None:
    data_dir = data_dir_for_command(args, err)
    return None if data_dir is None else os.path.join(data_dir, "gateway.db")


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def flags_of(pin: Pin, every: Sequence[Pin]) -> list[str]:
    """The description checks of ``pin``'s current definition, against the other servers' tool names."""
    others = {p.tool: p.server for p in every if p.server != pin.server}
    return render_flags(check_tool(pin.definition, server=pin.server, others=others))


def cmd_pins(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    db = _db_path(args, err)
    if db is None:
        return 2
    if args.action in ("diff", "approve", "block") and not args.tool:
        print(f"pins {args.action}: name the tool as SERVER/TOOL", file=err)
        return 2
    if args.action in ("list", "export") and args.tool:
        print(f"pins {args.action}: takes no tool", file=err)
        return 2
    every = read_pins(db)
    if args.action == "export":
        out.write(pins.export_lock(every))
        return 0
    if args.action == "list":
        return _list(every, out, as_json=args.json)
    if "*" in str(args.tool) and args.action in ("approve", "block"):
        return _decide_many(db, every, str(args.tool), args.action, out, err)
    server, _, tool = str(args.tool).partition("/")
    found = next((p for p in every if p.server == server and p.tool == tool), None)
    if found is None:
        print(f"no pinned tool {args.tool} (portero pins lists them)", file=err)
        return 1
    if args.action == "diff":
        _diff(found, every, out)
        return 0
    state = "approved" if args.action == "approve" else "blocked"
    try:
        result, pin = Store.decide_pin_in_file(db, server, tool, state, by="cli")
    except (StoreError, OSError) as exc:
        print(f"pins {args.action}: {exc}", file=err)
        return 1
    if result == "already":
        print(f"{found.canonical} is {state} already", file=out)
        return 0
    if result != "ok" or pin is None:
        print(f"no pinned tool {args.tool}", file=err)
        return 1
    tail = "listed again" if state == "approved" else "hidden and refused"
    print(
        f"{pin.canonical} {state} (definition {pin.hash[:12]}); a running gateway has it {tail} "
        "within a second",
        file=out,
    )
    return 0


def _decide_many(db: str, every: Sequence[Pin], pattern: str, action: str, out: TextIO, err: TextIO) -> int:
    """``approve 'everything/*'``: every pinned tool whose canonical name matches, not already so."""
    state = "approved" if action == "approve" else "blocked"
    matching = [p for p in every if glob_match(pattern, p.canonical)]
    if not matching:
        print(f"no pinned tool matches {pattern} (portero pins lists them)", file=err)
        return 1
    done = 0
    for pin in matching:
        if pin.state == state:
            continue
        try:
            result, _ = Store.decide_pin_in_file(db, pin.server, pin.tool, state, by="cli")
        except (StoreError, OSError) as exc:
            print(f"pins {action}: {pin.canonical}: {exc}", file=err)
            return 1
        done += result == "ok"
    tail = "listed again" if state == "approved" else "hidden and refused"
    print(f"{done} of {len(matching)} tools matching {pattern} {state}; a running gateway has them {tail} "
          "within a second", file=out)  # fmt: skip
    return 0


def _list(every: Sequence[Pin], out: TextIO, *, as_json: bool) -> int:
    if as_json:
        for p in every:
            row = {
                "server": p.server,
                "tool": p.tool,
                "state": p.state,
                "hash": p.hash,
                "approved_hash": p.approved_hash,
                "first_seen": _iso(p.first_seen),
                "updated_at": _iso(p.updated_at),
                "decided_by": p.decided_by,
                "flags": flags_of(p, every),
            }
            print(json.dumps(row, ensure_ascii=False), file=out)
        return 0
    if not every:
        print("no pinned tools", file=out)
        return 0
    columns = ("server", "tool", "state", "hash", "first seen", "decided by", "checks")
    rows = []
    for p in every:
        codes = sorted({line.partition(":")[0] for line in flags_of(p, every)})
        state = p.state if p.state != "quarantined" or p.approved_hash is None else "quarantined (changed)"
        rows.append(
            (
                p.server,
                p.tool,
                state,
                p.hash[:12],
                _iso(p.first_seen),
                p.decided_by or "-",
                ",".join(codes) or "-",
            )
        )
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    for cells in (columns, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip(), file=out)
    return 0


def _diff(pin: Pin, every: Sequence[Pin], out: TextIO) -> None:
    print(f"{pin.canonical}: {pin.state}, definition {pin.hash[:12]}", file=out)
    if pin.approved_definition is None:
        print("never approved; its definition:", file=out)
        print(pins.summary(pin.definition, budget=1_000_000), file=out)
    elif pin.approved_hash == pin.hash:
        print("no change since it was approved; its definition:", file=out)
        print(pins.summary(pin.definition, budget=1_000_000), file=out)
    else:
        print(f"changes since the approved definition {str(pin.approved_hash)[:12]}:", file=out)
        print(pins.diff(pin.approved_definition, pin.definition, budget=1_000_000), file=out)
    flags = flags_of(pin, every)
    print("description checks: " + ("nothing flagged" if not flags else f"{len(flags)}"), file=out)
    for line in flags:
        print(f"  - {line}", file=out)


def check_lock(lock_path: str, db_path: str, out: TextIO, err: TextIO) -> int:
    """``portero check --lock``: 0 when every current definition is the locked one, 1 naming each drift,
    2 when the lock file cannot be read."""
    try:
        with open(lock_path, encoding="utf-8") as f:
            locked = pins.parse_lock(f.read())
    except (OSError, ValueError) as exc:
        print(f"{lock_path}: {exc}", file=err)
        return 2
    drift = pins.lock_drift(locked, read_pins(db_path))
    if drift:
        print(f"{lock_path}: {len(drift)} tool definition(s) drifted from the lock:", file=err)
        for line in drift:
            print(f"  - {line}", file=err)
        return 1
    print(f"  lock:         {lock_path}: {len(locked)} definitions, no drift", file=out)
    return 0
