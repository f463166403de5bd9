# -*- test-case-name: tests.test_scanner -*-
"""
Disk to index: walk the share and report what differs from the index.

Blocking (it walks directories and hashes files), so the node runs it in
a thread; everything it decides is decided by the pure
L{p2ptwisted.core.scan.classify}.  It reads the index but never writes it:
the node feeds what it returns to L{p2ptwisted.core.engine.SyncEngine.local_changed}
on the reactor thread.

What it walks: regular files and directories reached without following a
link, under names that can travel (L{wire.check_path}) and are not ours
(names starting with L{wire.RESERVED_PREFIX}, the state directory),
minus what C{.p2pignore} ignores.  Links, FIFOs, sockets and devices are
not synced.  A path that is ignored or unreadable is neither reported
changed nor gone: a peer's version of it stays where it is.
"""

from __future__ import annotations

import os
import stat as stat_module
import unicodedata
from typing import Any, Callable, FrozenSet, List, Optional, Set, Tuple, Union

import attrs

from p2ptwisted import wire
from p2ptwisted.core.ignore import IGNORE_FILE, MAX_IGNORE_BYTES, IgnoreError, IgnoreRules
from p2ptwisted.core.index import DIR, FILE, IndexStore, Observed
from p2ptwisted.core.scan import (
    DEFAULT_QUIET_NS, HASH, META, WAIT, Stat, classify, look_again_at,
)
from p2ptwisted.hashing import ScanStopped, ShareError, hash_file, open_regular

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@attrs.define
class ScanReport:
    """
    @ivar changed: paths whose disk state is new to the index.
    @ivar gone: paths the index holds live that are no longer on disk.
    @ivar recheck_at: when to look again at files still being written
        (ns since the epoch), or C{None}.
    @ivar skipped: names that cannot be synced, for one log line.
    @ivar hashed: files read in full (0 when nothing changed).
    @ivar ignore_error: why C{.p2pignore} could not be used, if it could
        not (the rules before it stay in force).
    """

    changed: List[Observed] = attrs.field(factory=list)
    gone: List[str] = attrs.field(factory=list)
    recheck_at: Optional[int] = None
    skipped: List[str] = attrs.field(factory=list)
    hashed: int = 0
    ignore_error: Optional[str] = None


class Scanner:
    """
    One share's scanner.

    @param ignored: C{(path, is_dir) -> bool}, from the share's
        C{.p2pignore}.
    @param stopped: polled between files and while hashing, so stopping
        the node does not wait for a big file.
    """

    def __init__(self, root: str, state_dir: str, store: IndexStore,
                 ignored: Optional[Callable[[str, bool], bool]] = None,
                 stopped: Callable[[], bool] = lambda: False):
        self.root = root
        self.state_dir = state_dir
        self.store = store
        self.index: IndexStore = store
        self.rules = IgnoreRules.parse("")
        self._fixed = ignored
        self.stopped = stopped
        self.finished: FrozenSet[str] = frozenset()  # (see scan)

    def ignored(self, path: str, is_dir: bool = False) -> bool:
        """
        Whether C{path} is out of sync's reach: C{.p2pignore} as last read
        (or the rule given to the constructor).
        """
        if self._fixed is not None:
            return self._fixed(path, is_dir)
        return self.rules.ignored(path, is_dir)

    def load_ignores(self) -> Optional[str]:
        """
        Read C{.p2pignore} (without following a link).  On a bad file the
        rules in force stay, and the reason is returned for one log line.
        """
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd, _ = open_regular(root_fd, IGNORE_FILE)
            finally:
                os.close(root_fd)
        except ShareError as e:
            if e.code == "not_found":
                self.rules = IgnoreRules.parse("")
                return None
            return f"{IGNORE_FILE} is not a regular file"
        except OSError as e:
            return f"cannot read {IGNORE_FILE}: {e.strerror}"
        try:
            data = os.read(fd, MAX_IGNORE_BYTES + 1)
        finally:
            os.close(fd)
        try:
            self.rules = IgnoreRules.parse(data.decode("utf-8"))
        except UnicodeDecodeError:
            return f"{IGNORE_FILE} is not UTF-8 text"
        except IgnoreError as e:
            return str(e)
        return None

    def scan(self, now_ns: int, finished: FrozenSet[str] = frozenset()) -> ScanReport:
        """
        Walk the share.  Runs in a thread: the index is read through a
        connection of its own (L{p2ptwisted.store.SqliteStore.reader}).
        Files in C{finished} (closed after writing, or moved in, as inotify
        told) are hashed even if written less than a second ago.
        """
        self.finished = finished
        opened = getattr(self.store, "reader", None)
        reading: Any = opened() if opened is not None else self.store
        try:
            return self._scan(now_ns, reading)
        finally:
            if reading is not self.store:
                reading.close()

    def _scan(self, now_ns: int, index: IndexStore) -> ScanReport:
        self.index = index
        report = ScanReport()
        report.ignore_error = self.load_ignores()
        seen: Set[str] = set()
        excluded = self._excluded()
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._walk(root_fd, "", now_ns, report, seen, excluded)
        finally:
            os.close(root_fd)
        for path in self.index.local_paths():
            if path not in seen:
                entry = self.index.get(path)
                if entry is not None and entry.live and not self.ignored(path, entry.kind == DIR):
                    report.gone.append(path)
        return report

    def _excluded(self) -> Set[Tuple[int, int]]:
        try:
            st = os.stat(self.state_dir)
        except OSError:
            return set()
        return {(st.st_dev, st.st_ino)}

    def _walk(self, dir_fd: int, prefix: str, now_ns: int, report: ScanReport,
              seen: Set[str], excluded: Set[Tuple[int, int]]) -> None:
        try:
            names = sorted(os.listdir(dir_fd))
        except OSError as e:
            report.skipped.append(f"{prefix or '.'}: {e.strerror}")
            self._keep_under(prefix.rstrip("/"), seen)
            return
        for name in names:
            if self.stopped():
                raise ScanStopped()
            if name.startswith(wire.RESERVED_PREFIX):
                continue
            path = prefix + unicodedata.normalize("NFC", name)
            if not path.endswith(name):
                # Peers name files by their NFC form; the disk would not
                # find this one by that name, so it could never be served
                # or replaced.
                report.skipped.append(wire.safe_text(prefix + name)
                                      + " (not in Unicode NFC form: rename it to sync it)")
                continue
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                kind = DIR if stat_module.S_ISDIR(st.st_mode) else (
                    FILE if stat_module.S_ISREG(st.st_mode) else None)
                if kind is None:
                    continue  # links, FIFOs, sockets, devices
                wire.check_path(path)
            except wire.ProtocolError:
                report.skipped.append(wire.safe_text(prefix + name))
                continue
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in excluded or self.ignored(path, kind == DIR):
                continue
            seen.add(path)
            found = Stat(kind, st.st_size if kind == FILE else 0, st.st_mtime_ns, st.st_mode)
            if kind == DIR:
                self._directory(dir_fd, name, path, found, now_ns, report, seen, excluded)
            else:
                self._file(dir_fd, name, path, found, now_ns, report, seen)

    def _directory(self, dir_fd, name, path, found, now_ns, report, seen, excluded) -> None:
        if classify(found, self.index.get(path), now_ns) != "unchanged":
            report.changed.append(Observed(path, DIR, 0, found.mtime_ns, found.mode & 0o777))
        try:
            sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            self._keep_under(path, seen)
            return
        try:
            self._walk(sub, path + "/", now_ns, report, seen, excluded)
        finally:
            os.close(sub)

    def _file(self, dir_fd, name, path, found, now_ns, report, seen) -> None:
        entry = self.index.get(path)
        verdict = classify(found, entry, now_ns,
                           0 if path in self.finished else DEFAULT_QUIET_NS)
        perms = found.mode & 0o777
        if verdict == META:
            assert entry is not None  # (META: a known file whose bits changed)
            report.changed.append(Observed(path, FILE, found.size, found.mtime_ns, perms,
                                           entry.hash, entry.blocks))
        elif verdict == WAIT:
            self._wait(report, look_again_at(found))
            if entry is None or entry.deleted:
                seen.discard(path)  # not there yet, as far as peers know
        elif verdict == HASH:
            hashed = self._hash(dir_fd, name, found, report)
            if hashed == "":
                report.skipped.append(wire.safe_text(path) + " (cannot be read)")
            elif hashed is None:
                self._wait(report, now_ns + 1)  # changed while we read it
            else:
                report.changed.append(Observed(path, FILE, found.size, found.mtime_ns, perms,
                                               *hashed))

    def _hash(self, dir_fd: int, name: str, found: Stat,
              report: ScanReport) -> Union[None, str, Tuple[str, bytes]]:
        """
        The file's hash and block list; C{None} if it changed while we
        looked (look again soon), C{""} if it cannot be read at all.
        """
        try:
            fd, st = open_regular(dir_fd, name)
        except ShareError:
            return None  # replaced by something else since the stat
        except OSError:
            return ""
        try:
            if (st.st_size, st.st_mtime_ns) != (found.size, found.mtime_ns):
                return None
            digest = hash_file(fd, found.size, lambda: self.stopped())  # (stop() replaces it)
            after = os.fstat(fd)
            report.hashed += 1
            if (after.st_size, after.st_mtime_ns) != (found.size, found.mtime_ns):
                return None
            return digest
        finally:
            os.close(fd)

    @staticmethod
    def _wait(report: ScanReport, at: int) -> None:
        report.recheck_at = at if report.recheck_at is None else min(report.recheck_at, at)

    def _keep_under(self, path: str, seen: Set[str]) -> None:
        """
        A directory we cannot read: what the index holds under it is not
        gone, only out of sight.
        """
        if path:
            seen.update(e.path for e in self.index.live_under(path, 1_000_000))
