# -*- test-case-name: tests.test_console -*-
"""
Lists that print as tables: what the manhole's C{catalog()},
C{catalog_of()} and C{transfers()} return.

They are plain lists (index them, loop over them, take C{len}), whose
elements keep their own reprs; only the list as a whole prints as a
readable table, one line per element, instead of a screenful of reprs.
"""

from __future__ import annotations

import datetime
from typing import Iterable, List, Optional

from p2ptwisted import wire
from p2ptwisted.core.index import FILE

#: Rows a table prints at most; the rest are counted.
MAX_ROWS = 200


def human(n: float) -> str:
    """
    A byte count for people: C{"512 B"}, C{"1.5 MiB"}.
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _table(header: List[str], rows: List[List[str]], total: int, what: str) -> str:
    if not rows:
        return f"(no {what})"
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in [header] + rows]
    if total > len(rows):
        lines.append(f"... and {total - len(rows)} more (the list holds all {total})")
    return "\n".join(lines)


class EntryTable(list):
    """
    Index entries (L{p2ptwisted.core.index.Entry}), printed one per line:
    path, kind, size, modification time (UTC), who changed it last, hash.
    """

    def __repr__(self) -> str:
        rows = []
        for e in list(self)[:MAX_ROWS]:
            when = datetime.datetime.fromtimestamp(e.mtime_ns / 1e9, datetime.timezone.utc)
            rows.append([wire.safe_text(e.path, 80), e.kind,
                         human(e.size) if e.kind == FILE else "-",
                         when.strftime("%Y-%m-%d %H:%M:%S"), (e.modified_by or "")[:12],
                         (e.hash or "")[:12]])
        return _table(["path", "kind", "size", "modified (UTC)", "by", "hash"], rows,
                      len(self), "entries")


def transfer_cells(want, now: float) -> List[str]:
    """
    One fetch as table cells: path, state, bytes so far of the size, the
    peer, and how long ago it finished.
    """
    got = want.got
    size = want.entry.size
    percent = f" ({100 * got / size:.0f}%)" if size else ""
    finished = (f"{max(0.0, now - want.finished_at):.0f}s ago"
                if want.finished_at is not None else "")
    return [wire.safe_text(want.path, 60), want.state,
            f"{human(got)} of {human(size)}{percent}", (want.peer or "?")[:12], finished]


class TransferTable(list):
    """
    Fetches (L{p2ptwisted.fetcher.Want}: C{.path}, C{.state}, C{.done}, a
    Deferred), printed one per line.

    @ivar now: the time the list was made, for "finished 5s ago".
    """

    now: float = 0.0

    def __repr__(self) -> str:
        rows = [transfer_cells(w, self.now) for w in list(self)[:MAX_ROWS]]
        return _table(["path", "state", "bytes", "from", "finished"], rows, len(self),
                      "transfers")


def transfer_table(wants: Iterable, now: float) -> TransferTable:
    table = TransferTable(wants)
    table.now = now
    return table


def progress_line(want, rate: Optional[float]) -> str:
    """
    A running fetch in one line: path, bytes of size, percent, rate, time
    left, peer.
    """
    got = want.got
    size = want.entry.size
    line = f"{wire.safe_text(want.path, 60)}: {want.state}, {human(got)} of {human(size)}"
    if size:
        line += f" ({100 * got / size:.0f}%)"
    if rate:
        line += f", {human(rate)}/s"
        if size > got:
            line += f", {(size - got) / rate:.0f}s left"
    if want.peer:
        line += f", from {want.peer[:12]}"
    return line
