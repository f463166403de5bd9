# -*- test-case-name: tests.test_scan -*-
"""
The pure half of scanning: given what C{stat} says about a path and what
the index says, is the path unchanged, to be hashed, or still being
written?

A file is published only once it has been left alone for a quiet period
(its mtime at least C{quiet} old): a file written at 1 MiB/s for 10 s must
not appear half-written on the peers, nor leave versions of its partial
content behind.  A file still being written is looked at again when its
quiet period would end.  An mtime in the future (a clock set wrong, a
C{touch -d}) cannot be waited out, so it counts as settled.
"""

from __future__ import annotations

from typing import Optional

import attrs

from p2ptwisted.core.index import DIR, FILE, PERM_MASK, Entry

UNCHANGED = "unchanged"   # the index is right: no hashing
HASH = "hash"             # new or changed: hash it and record a version
META = "meta"             # same size and mtime, other permission bits
WAIT = "wait"             # still being written: look again later

#: Nanoseconds a file must be left alone before it is published.
DEFAULT_QUIET_NS = 1_000_000_000


@attrs.frozen
class Stat:
    """
    What the scanner read off the disk for one path.
    """

    kind: str
    size: int
    mtime_ns: int
    mode: int


def classify(stat: Stat, entry: Optional[Entry], now_ns: int,
             quiet_ns: int = DEFAULT_QUIET_NS) -> str:
    """
    Decide what a scan does with one path it found on disk.
    """
    perms = stat.mode & PERM_MASK
    if stat.kind == DIR:
        if entry is None or entry.deleted or entry.kind != DIR or entry.perms != perms:
            return HASH  # nothing to hash: a new version of the directory
        return UNCHANGED
    if (entry is not None and entry.live and entry.kind == FILE
            and (entry.size, entry.mtime_ns) == (stat.size, stat.mtime_ns)):
        return UNCHANGED if entry.perms == perms else META
    if 0 <= now_ns - stat.mtime_ns < quiet_ns:
        return WAIT
    return HASH


def look_again_at(stat: Stat, quiet_ns: int = DEFAULT_QUIET_NS) -> int:
    """
    When a file that was still being written may have settled.
    """
    return stat.mtime_ns + quiet_ns
