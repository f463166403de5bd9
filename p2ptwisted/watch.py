# -*- test-case-name: tests.test_watch -*-
"""
Noticing changes to the share while the node runs.

With inotify, changes trigger a rescan within a moment; a periodic rescan
runs regardless (rarely with inotify, as a safety net; often without it, or
once inotify has failed us -- which is logged, loudly).

We keep one watch per directory ourselves, not Twisted's recursive/autoAdd
mode: that closes the whole inotify descriptor on IN_DELETE_SELF of I{any}
watched directory, so one C{rmdir} in the share silently left the node deaf
until the periodic rescan; it also reports renamed directories under their
old names, and never watches directories moved in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from p2ptwisted import wire

inotify: Any
try:
    from twisted.internet import inotify
except ImportError:  # not Linux: poll
    inotify = None

#: Seconds between periodic rescans with and without inotify.
RESCAN_WITH_INOTIFY = 300.0
RESCAN_WITHOUT_INOTIFY = 10.0

#: Changes are gathered this long before a rescan ...
SETTLE = 1.0

#: ... or only this long while every change seen is a finished one: a file
#: closed after writing or moved in, a deletion, a rename, a new directory.
#: A file dropped into the share then starts on its way at once (and the
#: files inotify saw closed or moved in are hashed however new their mtime:
#: see L{ShareWatcher.finished}).
SETTLE_DONE = 0.05

#: Changed paths remembered between rescans; past this, just rescan.
MAX_PATHS = 10000

if inotify is not None:
    # ONLYDIR, DONT_FOLLOW: a name that became a file or a link is not watched.
    _MASK = (inotify.IN_CREATE | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO
             | inotify.IN_MOVED_FROM | inotify.IN_DELETE | inotify.IN_ATTRIB
             | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
             | inotify.IN_ONLYDIR | inotify.IN_DONT_FOLLOW)
    # Our own libc handle, with errno: Twisted's add() says only "-1", and
    # we must tell "gone already" from "refused" (the watch limit).
    _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    # Events that leave a path finished: anything but a file created (it is
    # being written until its IN_CLOSE_WRITE).
    _UNFINISHED = inotify.IN_CREATE
    # Events after which a file is whole: written and closed, or moved in.
    _WHOLE = inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO


if TYPE_CHECKING or inotify is not None:
    from twisted.internet.inotify import INotify as _NotifierBase
else:  # not Linux
    _NotifierBase = object


class _Notifier(_NotifierBase):
    """
    Twisted's INotify for its descriptor and reactor plumbing only: every
    event goes, raw, to one handler, and nothing here drops a watch or the
    connection by itself (Twisted's own dispatch does both).
    """

    def __init__(self, reactor, handle, lost):
        super().__init__(reactor)
        self._handle, self._lost = handle, lost

    def add(self, path: str) -> int:
        """Watch directory C{path}; raise L{OSError} with the kernel's errno."""
        wd = _libc.inotify_add_watch(self._fd, os.fsencode(path), _MASK)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return wd

    def unwatch(self, wd: int) -> None:
        self._inotify.remove(self._fd, wd)  # a watch already gone is no error

    def _doRead(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 16:
            wd, mask, _cookie, size = struct.unpack("=iIII", self._buffer[:16])
            if len(self._buffer) < 16 + size:
                break
            name = self._buffer[16:16 + size].rstrip(b"\0")
            self._buffer = self._buffer[16 + size:]
            self._handle(wd, mask, name)

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self._lost(self, reason)


class ShareWatcher:
    """
    Asks for a rescan of the share soon after something in it changes.

    @ivar mode: C{"inotify"} while the kernel tells us of changes;
        C{"polling"} when it cannot (no inotify, the watch limit reached,
        the share directory moved or gone): only the periodic rescan then.
    @ivar interval: seconds between periodic rescans.
    @ivar changed: while C{rescan} runs, the relative paths whose changes
        brought it, or C{None} if anything may have changed.
    """

    log = Logger()

    def __init__(self, reactor, root: str, rescan: Callable[[], object],
                 known: Callable[[str], bool] = lambda path: False):
        """
        @param known: tells whether a changed path (relative to the share)
            is already in the catalog as it is on disk -- typically a file
            this node just wrote itself -- so it needs no rescan.
        """
        self.reactor, self.root, self.rescan, self.known = reactor, root, rescan, known
        self.mode, self.interval = "polling", RESCAN_WITHOUT_INOTIFY
        self.changed: Optional[frozenset] = None
        self._notifier: Optional[_Notifier] = None
        self._wds: Dict[int, str] = {}  # watch descriptor -> directory ("" is the root)
        self._tree: dict = {}  # the same as nested {name: {...}, "": wd}: see _label
        self._unreadable: set = set()  # directories we may not watch (nor scan)
        self._loop: Optional[LoopingCall] = None
        self._pending = None
        self._paths: set = set()
        self._unfinished: set = set()  # files created and not yet closed
        self._whole: set = set()  # files closed or moved in since the last rescan
        #: While C{rescan} runs: the files among C{changed} known to be whole
        #: (closed after writing, or moved in), which need not wait for their
        #: mtime to age (see L{p2ptwisted.scanner.Scanner.scan}).
        self.finished: frozenset = frozenset()

    def start(self) -> None:
        self._loop = LoopingCall(self._periodic)
        self._loop.clock = self.reactor
        if inotify is None:
            self.log.info("no inotify here; rescanning the share every {n:.0f}s", n=self.interval)
        else:
            try:
                self._notifier = _Notifier(self.reactor, self._event, self._lost)
            except Exception as e:
                self._fallback(f"cannot start inotify: {e}")
            else:
                self._notifier.startReading()
                self.mode, self.interval = "inotify", RESCAN_WITH_INOTIFY
                self._resync()
        self._loop.start(self.interval, now=False)

    def _event(self, wd: int, mask: int, name: bytes) -> None:
        """
        Note what one event says changed, and keep exactly one watch on
        every directory of the share as directories come, go and move.
        """
        if self._notifier is None:
            return  # we fell back earlier in this batch
        if mask & inotify.IN_Q_OVERFLOW:
            self._note(None)  # events were lost, directories made maybe
            self._resync()
            return
        base = self._wds.get(wd)
        if base is None:
            return  # the last words of a watch we dropped
        if not name:  # about the directory itself: its parent tells, by name
            if mask & inotify.IN_IGNORED:  # the kernel dropped the watch
                self._label(wd, None)
            if base == "" and mask & (inotify.IN_IGNORED | inotify.IN_DELETE_SELF
                                      | inotify.IN_MOVE_SELF):
                self._fallback("the share directory was moved, deleted or unmounted")
            return
        text = os.fsdecode(name)
        if text.startswith(wire.RESERVED_PREFIX):
            return  # our own partial downloads and state (never watched either)
        relative = os.path.join(base, text) if base else text
        if mask & inotify.IN_ISDIR:
            if mask & inotify.IN_MOVED_FROM:
                self._forget(relative)
            if mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO) or (
                    mask & inotify.IN_ATTRIB and relative in self._unreadable):
                self._unreadable.discard(relative)
                self._watch_tree(relative, report=True)
            self._note(relative)
            return
        if mask & _WHOLE and len(self._whole) < MAX_PATHS:
            self._whole.add(relative)
        else:
            self._whole.discard(relative)
        self._note(relative, finished=not mask & _UNFINISHED)

    def _watch_tree(self, relative: str, report: bool) -> None:
        """
        Watch directory C{relative} and every directory under it, now,
        before more events are read.  A new directory may have been filled
        (C{mkdir -p}, a tree moved in) before its watch existed, so with
        C{report} what is already in it is noted as changed too.
        """
        todo = [relative]
        while todo and self._notifier is not None:
            current = todo.pop()
            full = os.path.join(self.root, current) if current else self.root
            try:
                self._label(self._notifier.add(full), current)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone or replaced already: later events say so
            except PermissionError:
                self._unreadable.add(current)  # the scan cannot read it either
                continue
            except OSError as e:
                hint = (" (raise sysctl fs.inotify.max_user_watches)" if e.errno == errno.ENOSPC
                        else "")
                self._fallback(f"{e}{hint}")
                return
            try:
                entries = list(os.scandir(full))
            except OSError:
                continue  # gone again, or unreadable: the scan says so
            for entry in entries:
                if entry.name.startswith(wire.RESERVED_PREFIX):
                    continue
                child = os.path.join(current, entry.name) if current else entry.name
                if report:
                    self._note(child)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(child)
                except OSError:
                    pass

    def _label(self, wd: int, relative: Optional[str]) -> None:
        """
        Record that C{wd} watches directory C{relative} (C{None}: nothing).
        The kernel gives an inode already watched its old descriptor, so a
        directory moved within the share is relabelled as it is walked.
        C{_tree} holds the labels again as nested dicts, to find a moved
        directory's watches without looking at all the others.
        """
        old = self._wds.pop(wd, None)
        if old is not None:
            node: Any = self._tree
            chain: List[tuple] = []
            for part in old.split(os.sep) if old else ():
                chain.append((node, part))
                node = node.get(part)
                if node is None:
                    break  # its label was taken by a newer watch, since gone
            else:
                if node.get("") == wd:
                    del node[""]
                while chain and not node:
                    node, part = chain.pop()
                    del node[part]
        if relative is not None:
            self._wds[wd] = relative
            node = self._tree
            for part in relative.split(os.sep) if relative else ():
                node = node.setdefault(part, {})
            node[""] = wd

    def _forget(self, relative: str) -> None:
        """
        Drop the watches on directory C{relative} and under it: it was moved
        away, and if it is still in the share, its new name is watched anew.
        """
        node: Any = self._tree
        wds: List[int] = []
        for part in relative.split(os.sep):
            node = node.get(part, {})
        todo = [node]
        while todo:
            for name, value in todo.pop().items():
                (todo if name else wds).append(value)  # "" holds the wd
        for wd in wds:
            self._label(wd, None)
            if self._notifier is not None:
                self._notifier.unwatch(wd)

    def _resync(self) -> None:
        """Watch the whole share as it is now; drop watches left over."""
        old, self._wds, self._tree = self._wds, {}, {}
        self._unreadable.clear()
        self._watch_tree("", report=False)
        if self._notifier is not None and "" not in self._tree:
            self._fallback(f"{self.root} is missing or unreadable")
        if self._notifier is not None:
            for wd in old.keys() - self._wds.keys():
                self._notifier.unwatch(wd)

    def _lost(self, notifier: _Notifier, reason) -> None:
        if notifier is self._notifier:
            self._fallback(f"inotify stopped: {reason.getErrorMessage()}")

    def _fallback(self, reason: str) -> None:
        """
        Stop trusting inotify, and say so once, loudly: changes now take up
        to L{RESCAN_WITHOUT_INOTIFY} seconds to be noticed.  Events may have
        been missed, so rescan everything soon.
        """
        self._close()
        self.mode, self.interval = "polling", RESCAN_WITHOUT_INOTIFY
        self.log.warn("cannot watch the share for changes: {reason}; rescanning it every"
                      " {interval:.0f}s instead", reason=reason, interval=self.interval)
        if self._loop is not None and self._loop.running:
            self._loop.interval = self.interval
            self._loop.reset()
            self._note(None)

    def _note(self, relative: Optional[str], finished: bool = True) -> None:
        """
        Remember a changed path (C{None}: anything), and settle soon: in
        L{SETTLE_DONE} if every file created since the last rescan has been
        closed, else in L{SETTLE}.  A rescan already due is never put off.
        """
        self._paths.add(relative if len(self._paths) < MAX_PATHS else None)
        if finished:
            self._unfinished.discard(relative)
        elif len(self._unfinished) < MAX_PATHS:
            self._unfinished.add(relative)
        delay = SETTLE if self._unfinished or relative is None else SETTLE_DONE
        pending = self._pending
        if pending is None or not pending.active():
            self._pending = self.reactor.callLater(delay, self._settled)
        elif pending.getTime() > self.reactor.seconds() + delay:
            pending.reset(delay)

    def _settled(self) -> None:
        self._unfinished.clear()
        self.finished, self._whole = frozenset(self._whole), set()
        paths, self._paths = self._paths, set()
        if None not in paths and all(self.known(p) for p in paths):
            return
        self.changed = None if None in paths else frozenset(paths)
        self.rescan()

    def _periodic(self):
        self.changed, self.finished = None, frozenset()
        return self.rescan()  # the loop waits for a Deferred

    def stop(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending, self._paths = None, set()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._close()

    def _close(self) -> None:
        notifier, self._notifier = self._notifier, None
        self._wds, self._tree = {}, {}
        if notifier is not None and notifier.connected:
            notifier.loseConnection()  # calls _lost, which then ignores it
