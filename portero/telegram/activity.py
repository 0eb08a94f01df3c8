"""The activity feed: what the agent did, told to the admin without a message per call.

Pure and synchronous: the router hands each finished call to :meth:`ActivityFeed.record` (on its hot
path: no await, no I/O, O(1), bounded memory), and the bot's feed loop calls :meth:`ActivityFeed.take` for
the texts to send. Modes (``[telegram] activity``):

- ``off``: nothing is kept;
- ``batched``: calls are counted per tool and kind; :meth:`~ActivityFeed.take` returns at most one summary
  ("12 calls: github/list_issues ×9, filesystem/read_text_file ×3; refused: github/delete_repo ×1"), and
  nothing when there was no activity. The loop takes once per ``activity_interval``;
- ``all``: one short line per call; when more than ``max_lines`` wait, they are folded into one summary.

A call that asked the admin (its approval message is already in the chat) is counted in a summary but gets
no line of its own.
"""

from __future__ import annotations

import collections

__all__ = ["ActivityFeed", "classify", "summary_text", "line_text", "OTHER_TOOLS"]

# The kinds of a finished call, in the order a summary lists them.
KINDS = ("call", "denied", "refused")
_LABELS = {"denied": "denied", "refused": "refused"}
# An approval's end that was announced in the chat (the approval message shows it); the others
# ("no-approver", "unreachable") never reached the admin.
_UNANNOUNCED_SOURCES = frozenset({"no-approver", "unreachable"})
_ASKED_DECISIONS = frozenset({"approved", "rejected", "expired"})
OTHER_TOOLS = "(other tools)"  # the bucket past ``max_tools`` distinct tools
MAX_LISTED = 15  # tools named per kind in a summary; the rest are "… N more"


def classify(decision: str, source: str, outcome: str) -> tuple[str, bool]:
    """``(kind, asked)`` of a finished call from its audit fields: kind is ``call`` (it ran, whatever its
    result), ``denied`` (a deny rule, an invalid call, a blocked definition, the admin's Deny) or
    ``refused`` (no answer in time, Telegram unreachable, no audit); ``asked`` is True when an approval
    message was sent for it."""
    asked = decision in _ASKED_DECISIONS and source not in _UNANNOUNCED_SOURCES
    if outcome != "refused":
        return "call", asked
    denied = decision == "deny" or (decision == "rejected" and source == "admin")
    return ("denied" if denied else "refused"), asked


def line_text(tool: str, kind: str) -> str:
    """One call in ``all`` mode: ``github/list_issues``, ``github/delete_repo: denied``."""
    return tool if kind == "call" else f"{tool}: {_LABELS.get(kind, kind)}"


def summary_text(counts: dict[str, dict[str, int]], asked: int = 0) -> str:
    """``{kind: {tool: n}}`` as one line; empty when there is nothing to tell."""
    parts: list[str] = []
    for kind in KINDS:
        tools = counts.get(kind) or {}
        total = sum(tools.values())
        if not total:
            continue
        ranked = sorted(tools.items(), key=lambda kv: (-kv[1], kv[0]))
        listed = [f"{tool} ×{n}" for tool, n in ranked[:MAX_LISTED]]
        if len(ranked) > MAX_LISTED:
            listed.append(f"… {len(ranked) - MAX_LISTED} more ×{sum(n for _, n in ranked[MAX_LISTED:])}")
        if kind == "call":
            parts.append(f"{total} call{'s' if total != 1 else ''}: {', '.join(listed)}")
        else:
            parts.append(f"{_LABELS[kind]}: {', '.join(listed)}")
    if not parts:
        return ""
    text = "; ".join(parts)
    if asked:
        text += f" ({asked} asked for approval)"
    return text


class ActivityFeed:
    """The calls not yet told to the admin. See the module docstring.

    Memory is bounded: at most ``max_tools`` distinct tool names per kind (the rest count as
    :data:`OTHER_TOOLS`) and ``max_lines`` lines waiting in ``all`` mode.
    """

    def __init__(self, mode: str = "off", *, max_lines: int = 10, max_tools: int = 200) -> None:
        self.mode = mode
        self.max_lines = max_lines
        self.max_tools = max_tools
        self._counts: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}
        self._asked = 0
        self._lines: collections.deque[tuple[str, str]] = collections.deque()
        self._folded = False  # ``all`` mode: lines overflowed into the counts, so the next take summarizes

    def __len__(self) -> int:
        """How many calls are waiting to be told."""
        return sum(sum(tools.values()) for tools in self._counts.values()) + len(self._lines)

    def record(self, tool: str, decision: str, source: str, outcome: str) -> bool:
        """A finished call. Returns True when something new waits to be told (the loop may wake)."""
        if self.mode not in ("batched", "all"):
            return False
        kind, asked = classify(decision, source, outcome)
        if self.mode == "batched" or asked or self._folded:
            self._count(tool, kind, asked)
            return True
        self._lines.append((tool, kind))
        if len(self._lines) > self.max_lines:  # too many waiting: fold them into one summary
            while self._lines:
                self._count(*self._lines.popleft(), False)
            self._folded = True
        return True

    def take(self) -> list[str]:
        """The texts to send now, oldest first, and forget them: in ``batched`` mode one summary (or
        nothing); in ``all`` mode a line per call, or one summary of everything if lines were folded or
        only approval-asking calls wait."""
        if self.mode == "all" and not self._folded:
            texts = [line_text(tool, kind) for tool, kind in self._lines]
            self._lines.clear()
            # Calls that asked the admin were counted, not lined: they have their approval message.
            self._counts = {kind: {} for kind in KINDS}
            self._asked = 0
            return texts
        while self._lines:
            self._count(*self._lines.popleft(), False)
        text = summary_text(self._counts, self._asked)
        self._counts = {kind: {} for kind in KINDS}
        self._asked = 0
        self._folded = False
        return [text] if text else []

    def _count(self, tool: str, kind: str, asked: bool) -> None:
        tools = self._counts[kind]
        if tool not in tools and len(tools) >= self.max_tools:
            tool = OTHER_TOOLS
        tools[tool] = tools.get(tool, 0) + 1
        if asked:
            self._asked += 1
