"""``portero audit``: print the audit records of the gateway's database, as a table or JSON lines."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from typing import Any, TextIO

from portero.cli.common import data_dir_for_command
from portero.durations import parse_duration


def _format_rows(rows: list[dict[str, Any]]) -> list[str]:
    columns = ("ts", "client", "tool", "decision", "source", "outcome", "duration_ms", "session", "arguments")
    table = []
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            if col == "arguments":
                text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                text = text if len(text) <= 80 else text[:77] + "..."
            elif col == "session":
                text = str(value or "")[:8]
            elif value is None:
                text = "-"
            else:
                text = str(value)
            cells.append(text)
        table.append(cells)
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    for cells in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    return lines


def cmd_audit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    since: float | None = None  # seconds back from now, as read_audit takes it
    if args.since:
        try:
            since = parse_duration(args.since)
        except ValueError as exc:
            print(f"--since: {exc}", file=err)
            return 2
    # Only [server].data_dir matters here: no need for the tokens and credentials serving needs.
    data_dir = data_dir_for_command(args, err)
    if data_dir is None:
        return 2
    db_path = os.path.join(data_dir, "gateway.db")
    if not os.path.exists(db_path):
        print("no records", file=out)
        return 0
    try:
        from portero.store import read_audit
    except ImportError:
        print("audit: this build has no record store (portero.store)", file=err)
        return 2
    try:
        rows = read_audit(
            db_path, since=since, tool=args.tool, limit=args.limit, client=getattr(args, "client", None)
        )
    except (OSError, sqlite3.Error) as exc:
        print(f"{db_path}: cannot read audit records: {exc}", file=err)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, separators=(",", ":")), file=out)
    elif not rows:
        print("no records", file=out)
    else:
        for line in _format_rows(rows):
            print(line, file=out)
    return 0


__all__ = ["cmd_audit"]
