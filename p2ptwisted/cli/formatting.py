# -*- test-case-name: tests.test_cli -*-
"""
What C{p2pshare} prints for people: byte counts, rates, durations, and
tables of the API's lists.

Every string that came from the node is passed through L{clean} before it
reaches a terminal: file names and peer names are chosen by other people,
and a name holding escape sequences must not be able to repaint the screen
or hide the line before it.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Callable, Iterable, List, Sequence, Tuple, Union

#: C0 and C1 control characters, DEL, and the invisible Unicode marks that
#: reorder or hide text (bidirectional overrides and isolates).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

Column = Tuple[str, Union[str, Callable[[dict], str]]]


def clean(value: Any, limit: int = 120) -> str:
    """
    C{value} as one printable line: control characters escaped (C{\\x1b}),
    shortened to C{limit} characters with an ellipsis.
    """
    text = value if isinstance(value, str) else "" if value is None else str(value)
    text = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def number(value: Any) -> float:
    """
    A count or size from the node as a number: 0 if it is not one.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return 0


def human(n: Any) -> str:
    """
    A byte count for people: C{"512 B"}, C{"1.5 MiB"}; C{"-"} if unknown.
    """
    if not isinstance(n, (int, float)):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(n: Any) -> str:
    """
    A rate in bytes per second, C{"12.5 MiB/s"}; C{"-"} when nothing moves.
    """
    return f"{human(n)}/s" if isinstance(n, (int, float)) and n > 0 else "-"


def duration(seconds: Any) -> str:
    """
    A time left, as rsync prints it: C{"0:01:05"}; C{"-"} if unknown.
    """
    if not isinstance(seconds, (int, float)) or seconds < 0 or seconds != seconds:
        return "-"
    whole = int(seconds + 0.5)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def when(timestamp: Any) -> str:
    """
    A Unix time as local date and time, to the second.
    """
    if not isinstance(timestamp, (int, float)):
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def percent(value: Any) -> str:
    return f"{value:.0f}%" if isinstance(value, (int, float)) else "-"


def table(rows: Sequence[dict], columns: Sequence[Column], empty: str) -> str:
    """
    C{rows} as aligned columns under a header; C{empty} when there are none.

    A column is (header, key) or (header, function of the row).
    """
    if not rows:
        return empty
    cells: List[List[str]] = [[h for h, _ in columns]]
    for row in rows:
        cells.append([
            clean(get(row) if callable(get) else _cell(row.get(get)))
            for _, get in columns
        ])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in cells
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return str(value)


def generic(rows: Any, empty: str) -> str:
    """
    Any list the API returns, for lists whose shape the client does not
    know field by field: dicts as a table of their keys, anything else
    one per line.
    """
    if not isinstance(rows, list):
        return clean(rows, 10_000)
    dicts = [r for r in rows if isinstance(r, dict)]
    if rows and len(dicts) == len(rows):
        keys: List[str] = []
        for row in dicts:
            keys.extend(k for k in row if k not in keys)
        return table(dicts, [(k, k) for k in keys], empty)
    return "\n".join(clean(r) for r in rows) if rows else empty


def short_id(row: dict) -> str:
    """
    A peer's id as people compare it: the start of its readable form (as
    the node logs it), or the first 12 hex digits.
    """
    readable = row.get("id_readable")
    if isinstance(readable, str) and readable:
        return readable[:14]
    return str(row.get("id") or "")[:12]


def status_text(status: dict) -> str:
    """
    C{GET /api/status} for people.
    """
    folder = status.get("folder") or {}
    ident = status.get("id_readable") or status.get("id")
    lines = [f"node {clean(status.get('name'))} ({clean(ident)})"]
    addresses = status.get("addresses") or []
    lines.append("  listening  " + (", ".join(clean(a) for a in addresses) or "-"))
    security = "TLS" if status.get("tls") else "plaintext (--no-tls)"
    mode = clean(status.get("mode") or "-")
    lines.append(f"  mode       {mode}, {security}" + (", paused" if status.get("paused") else ""))
    lines.append("  folder     " + folder_text(folder))
    lines.append(f"  peers      {_cell(status.get('peers'))} connected")
    return "\n".join(lines)


def folder_text(folder: dict) -> str:
    """
    The folder's state in one line: in sync with totals, or what is left.
    """
    state = clean(folder.get("state") or "?")
    held = f"{files(folder.get('files'))}, {human(folder.get('bytes'))}"
    if folder.get("need_files") or folder.get("need_bytes"):
        left = f"{files(folder.get('need_files'))} ({human(folder.get('need_bytes'))}) left"
        if number(folder.get("rate")) > 0:
            left += f", {rate(folder.get('rate'))}, ETA {duration(folder.get('eta'))}"
        return f"{state}: {left}; holds {held}"
    return f"{state}: {held}"


def files(count: Any) -> str:
    return f"{_cell(count)} file" + ("" if count == 1 else "s")


PEER_COLUMNS: List[Column] = [
    ("name", "name"),
    ("id", short_id),
    ("address", "address"),
    ("dir", "direction"),
    ("since", lambda p: when(p.get("since"))),
    ("in", lambda p: rate(p.get("rate_in"))),
    ("out", lambda p: rate(p.get("rate_out"))),
    ("complete", lambda p: percent(p.get("completion"))),
]

LS_COLUMNS: List[Column] = [
    ("path", "path"),
    ("kind", "kind"),
    ("size", lambda e: human(e.get("size")) if e.get("kind", "file") == "file" else "-"),
    ("modified", lambda e: when(e.get("mtime"))),
    ("hash", lambda e: str(e.get("hash") or "-")[:12]),
]

CONFLICT_COLUMNS: List[Column] = [
    ("conflict copy", "path"),
    ("of", "original"),
    ("size", lambda e: human(e.get("size"))),
    ("modified", lambda e: when(e.get("mtime"))),
]

TRASH_COLUMNS: List[Column] = [
    ("trashed", "trashed"),
    ("original", "original"),
    ("size", lambda e: human(e.get("size"))),
    ("trashed at", lambda e: when(e.get("time"))),
]


def peer_name(row: dict) -> str:
    """
    The peer of a transfer: its name if the node knows it, else its id.
    """
    return str(row.get("peer_name") or str(row.get("peer") or "")[:12] or "-")


TRANSFER_COLUMNS: List[Column] = [
    ("path", "path"),
    ("peer", peer_name),
    ("state", "state"),
    ("done", lambda t: f"{human(t.get('done'))} of {human(t.get('size'))}"),
    ("rate", lambda t: rate(t.get("rate"))),
    ("eta", lambda t: duration(t.get("eta"))),
]


def lines_text(lines: Iterable[Any]) -> str:
    return "\n".join(clean(line, 10_000) for line in lines)
