# -*- test-case-name: tests.test_files -*-
"""
Noticing changes to the share while the node runs.

Where the platform has inotify, changes trigger a rescan within a moment;
a periodic rescan runs regardless (rarely with inotify, as a safety net;
often without it).
"""

from __future__ import annotations

import os
from typing import Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.filepath import FilePath

from p2ptwisted import wire

#: Seconds between periodic rescans with and without inotify.
RESCAN_WITH_INOTIFY = 300.0
RESCAN_WITHOUT_INOTIFY = 10.0

#: Changes are gathered this long before a rescan.
SETTLE = 1.0

#: Changed paths remembered between rescans; past this, just rescan.
MAX_PATHS = 10000


class ShareWatcher:
    log = Logger()

    def __init__(self, reactor, root: str, rescan: Callable[[], object],
                 known: Callable[[str], bool] = lambda path: False):
        """
        @param known: tells whether a changed path (relative to the share)
            is already in the catalog as it is on disk -- typically a file
            this node just wrote itself -- so it needs no rescan.
        """
        self.reactor = reactor
        self.root = root
        self.rescan = rescan
        self.known = known
        self._notifier = None
        self._loop = None
        self._pending = None
        self._paths: set = set()

    def start(self) -> None:
        interval = RESCAN_WITHOUT_INOTIFY
        try:
            from twisted.internet import inotify

            notifier = inotify.INotify(self.reactor)
            notifier.startReading()
            mask = (inotify.IN_CREATE | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO
                    | inotify.IN_MOVED_FROM | inotify.IN_DELETE | inotify.IN_ATTRIB)
            notifier.watch(FilePath(self.root), mask=mask, autoAdd=True, recursive=True,
                           callbacks=[self._changed])
            self._notifier = notifier
            interval = RESCAN_WITH_INOTIFY
        except Exception as e:
            self.log.info("no inotify ({error}); rescanning the share every {n:.0f}s",
                          error=e, n=interval)
        self._loop = LoopingCall(self.rescan)
        self._loop.clock = self.reactor
        self._loop.start(interval, now=False)

    def _changed(self, watch, path: FilePath, mask: int) -> None:
        full = path.asTextMode().path
        relative = os.path.relpath(full, self.root)
        if any(part.startswith(wire.RESERVED_PREFIX) for part in relative.split(os.sep)):
            return  # our own partial downloads and state
        if len(self._paths) < MAX_PATHS:
            self._paths.add(relative)
        else:
            self._paths.add(None)  # too many to check one by one
        if self._pending is None or not self._pending.active():
            self._pending = self.reactor.callLater(SETTLE, self._settled)

    def _settled(self) -> None:
        paths, self._paths = self._paths, set()
        if None in paths or not all(self.known(p) for p in paths):
            self.rescan()

    def stop(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None
