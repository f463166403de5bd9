# -*- test-case-name: tests.test_sync -*-
"""
What one sync action does to the disk: the blocking half of
L{p2ptwisted.sync.FolderSync}, run in the node's disk threads.

L{DiskActions.apply} carries out an action whose bytes are at hand (or
says it needs a peer's), and L{DiskActions.place} publishes the files
fetched for FETCH actions, a batch at a time (L{p2ptwisted.placing}).
Each returns an outcome (L{DONE}, L{RESCAN}, ...) for the reactor side to
act on; nothing here touches the index, the reactor or the clock.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from twisted.python.failure import Failure

from p2ptwisted.apply import Disk
from p2ptwisted.batching import Outcome
from p2ptwisted.core.index import DIR, Entry
from p2ptwisted.core.planner import (ADOPT, DELETE, FETCH, MKDIR, MOVE, RECEIVE_ONLY, SET_META,
                                     Action)
from p2ptwisted.core.versions import Vector
from p2ptwisted.placing import place_files

DONE = "done"
RESCAN = "rescan"
BLOCKED = "blocked"      # a directory in the way still holds something
NEED_BYTES = "need-bytes"
FAILED = "failed"


class DiskActions:
    """
    The disk work of a folder's sync actions (blocking).

    @param mode: the folder's mode; a receive-only folder replaces local
        changes without checking first (the trash can keeps them).
    """

    def __init__(self, disk: Disk, mode: str):
        self.disk = disk
        self.mode = mode

    def apply(self, action: Action, local_copies: List[str], now_ns: int) -> str:
        """
        Apply C{action}, taking its bytes from C{local_copies} (paths of
        ours with its content) if it needs bytes; the outcome (blocking).
        """
        disk = self.disk
        # Check before replace; a receive-only folder replaces local
        # changes anyway (the trash can keeps them).
        checked = self.mode != RECEIVE_ONLY
        if action.kind == MKDIR and disk.check(action.entry):
            # Already a directory (we made it for its files): just give
            # it the version's permission bits and mtime.
            disk.set_meta(action.entry)
            return DONE
        if checked and not disk.check(action.local or _nothing(action.path)):
            return RESCAN  # changed, or appeared, since we last scanned it
        # (a MOVE's source is the DELETE of a file we hold: it has a local entry)
        moved = action.source.local if action.source is not None else None
        if action.kind == MOVE and (moved is None or not disk.check(moved)):
            return RESCAN
        kind, entry = action.kind, action.entry
        if kind == ADOPT:
            return DONE
        if kind == SET_META:
            disk.set_meta(entry)
            return DONE
        if kind == DELETE:
            if action.local is not None and action.local.kind == DIR:
                return DONE if disk.rmdir(action.path) else BLOCKED
            disk.trash(action.path, now_ns)
            return DONE
        if kind == FETCH and not local_copies:
            return NEED_BYTES  # what is in the way is dealt with on arrival
        if kind != MKDIR and not self._dir_out_of_the_way(action):
            return BLOCKED
        if action.conflict_copy and not disk.conflict_copy(action.path, action.conflict_copy):
            return FAILED
        if kind == MKDIR:
            disk.mkdir(entry, now_ns)
            return DONE
        if kind == MOVE and moved is not None:
            return DONE if disk.move_local(moved, entry, now_ns) else FAILED
        for path in local_copies:
            if disk.copy_local(path, entry, now_ns):
                return DONE
        return NEED_BYTES

    def place(self, items: List[Tuple[Action, str, int]]) -> List[Outcome]:
        """
        Place fetched files (C{(action, temporary file, now_ns)}), all in
        one go (L{place_files}); what is not placed is discarded (blocking).
        """
        outcomes: List[Optional[Outcome]] = [None] * len(items)
        to_place = []
        for i, (action, _, _) in enumerate(items):
            try:
                early = self._before_placing(action)
            except Exception:
                outcomes[i] = (False, Failure())
                continue
            if early is None:
                to_place.append(i)
            else:
                outcomes[i] = (True, early)
        placed = place_files(self.disk, [(items[i][1], items[i][0].entry, items[i][2])
                                         for i in to_place])
        for i, (ok, value) in zip(to_place, placed):
            outcomes[i] = (True, DONE) if ok else (False, value)
        done: List[Outcome] = []
        for (action, tmp, _), outcome in zip(items, outcomes):
            assert outcome is not None
            if outcome != (True, DONE):
                try:
                    self.disk.discard(action.path, tmp)
                except Exception:
                    outcome = (False, Failure())
            done.append(outcome)
        return done

    def _before_placing(self, action: Action) -> Optional[str]:
        """
        What stops a fetched file being placed, if anything (blocking).
        """
        disk = self.disk
        if self.mode != RECEIVE_ONLY and not disk.check(action.local or _nothing(action.path)):
            # Edited (or, where we had nothing, created) while we fetched:
            # the scan records the user's version, and planning decides
            # again (a conflict, if both are new).
            return RESCAN
        if action.conflict_copy and not disk.conflict_copy(action.path, action.conflict_copy):
            return FAILED
        if not self._dir_out_of_the_way(action):
            return BLOCKED
        return None

    def _dir_out_of_the_way(self, action: Action) -> bool:
        """
        A file is to replace the directory our index holds there: remove
        it if it is empty (L{BLOCKED} otherwise).
        """
        local = action.local
        return not (local is not None and local.live and local.kind == DIR
                    and not self.disk.rmdir(action.path))


def _nothing(path: str) -> Entry:
    """
    A tombstone for C{path}: L{Disk.check} of it asks "is nothing there?".
    """
    return Entry(path=path, kind="file", size=0, mtime_ns=0, perms=0, hash="", deleted=True,
                 version=Vector(), modified_by="")

