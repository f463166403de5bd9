# -*- test-case-name: tests.test_share -*-
"""
The shared directory: its catalog, and the only ways this node opens files
inside it.

A peer names files by relative path; every such name reaches the disk
through the functions here, which walk one component at a time from the
share's root with C{O_NOFOLLOW}, so no symlink, C{..} or planted link can
lead outside the share, and only regular files are ever read.  Serving is
further limited to files in our own catalog.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import unicodedata
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

import attrs
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.wire import FileEntry, ProtocolError

try:
    from blake3 import blake3 as _blake3
except ImportError:  # pragma: no cover - blake3 is a declared dependency
    _blake3 = None

#: The hash cache, in the state directory.
CACHE_FILE = "catalog-cache.json"

#: Name prefix of partial downloads, beside their destination.
PARTIAL_PREFIX = wire.RESERVED_PREFIX + "-part-"

#: Bytes read at a time while hashing a file.
HASH_READ = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The root itself was chosen by the operator and may be a symlink.
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

log = Logger()


def new_hasher():
    """
    A fresh content hasher: BLAKE3, which runs about 2.5 times as fast as
    SHA-256 here (see docs/protocol.md, "Content hashes").
    """
    return _blake3()


class ShareError(Exception):
    """
    A file in the share cannot be used as asked.

    C{code} is the ERROR code a peer is answered with.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@attrs.frozen
class LocalFile:
    """
    A catalogued file: its entry as peers see it, and the name it has on
    disk (which differs only if the disk name is not NFC-normalised).
    """

    entry: FileEntry
    disk_path: str
    inode: int


def open_dir(root_fd: int, parts: Iterable[str], create: bool = False) -> int:
    """
    Open the directory C{root/parts...} without following any link.

    @param create: make missing directories on the way.
    @raise ShareError: if a component is missing (and not created), is a
        link, or is not a directory.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise ShareError("not_found", "no such directory") from None
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ShareError("not_regular", "a path component is a link or a file") from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_regular(dir_fd: int, name: str) -> Tuple[int, os.stat_result]:
    """
    Open C{name} in C{dir_fd} for reading, only if it is a regular file.

    C{O_NONBLOCK} makes opening a FIFO return at once instead of blocking
    the reactor; the C{fstat} check then refuses it.
    """
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise ShareError("not_found", "no such file") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
            raise ShareError("not_regular", "not a regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ShareError("not_regular", "not a regular file")
    return fd, st


class ScanStopped(Exception):
    """
    The node is stopping: a scan in progress gives up.
    """


def hash_fd(fd: int, stopped: Callable[[], bool] = lambda: False) -> str:
    hasher = new_hasher()
    while True:
        if stopped():
            raise ScanStopped()
        chunk = os.read(fd, HASH_READ)
        if not chunk:
            return hasher.hexdigest()
        hasher.update(chunk)


def conflict_name(path: str, content_hash: str, n: int = 0) -> str:
    """
    Where a losing version of C{path} is kept: the hash's first 8 digits
    before the extension, so every node picks the same name for the same
    content (``notes.txt`` -> ``notes.conflict-1a2b3c4d.txt``).  C{n} > 0
    numbers further candidates (``notes.conflict-1a2b3c4d-2.txt``) for when
    that name is taken by something else.  The stem is shortened if needed
    so the name stays within the length limit of a path component.
    """
    head, sep, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a dot file such as ".bashrc"
        stem, dot, ext = name, "", ""
    suffix = f".conflict-{content_hash[:8]}" + (f"-{n}" if n else "") + dot + ext
    room = wire.MAX_COMPONENT_BYTES - len(suffix.encode("utf-8"))
    if room < 1:  # an absurdly long extension: drop it
        suffix = f".conflict-{content_hash[:8]}" + (f"-{n}" if n else "")
        room = wire.MAX_COMPONENT_BYTES - len(suffix)
    stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f"{head}{sep}{stem}{suffix}"


@attrs.define
class ScanResult:
    files: Dict[str, LocalFile]
    skipped: List[str]
    generation: int


@attrs.define
class Share:
    """
    The shared directory and its catalog.

    L{scan} does the blocking work (walking and hashing) and may run in a
    thread; everything else runs in the reactor thread.

    @ivar files: the catalog, by NFC path.
    @ivar generation: bumped whenever this node itself changes the share
        (a published download), so a scan that started earlier does not
        undo the change when applied.
    """

    root: str
    state_dir: str
    files: Dict[str, LocalFile] = attrs.field(factory=dict)
    generation: int = 0
    _touched: Dict[str, int] = attrs.field(factory=dict)
    _cache: Dict[str, list] = attrs.field(factory=dict)
    _cache_loaded: bool = False
    _root_fd: Optional[int] = None
    _stopping: bool = False
    _made_dirs: Set[str] = attrs.field(factory=set)

    # -- the catalog -------------------------------------------------------

    def entries(self) -> List[FileEntry]:
        return [f.entry for f in self.files.values()]

    def lookup(self, path: str) -> Optional[LocalFile]:
        return self.files.get(path)

    def _load_cache(self) -> None:
        if self._cache_loaded:
            return
        self._cache_loaded = True
        try:
            with open(os.path.join(self.state_dir, CACHE_FILE), encoding="utf-8") as f:
                cache = json.load(f)
            if isinstance(cache, dict):
                self._cache = cache
        except (OSError, ValueError):
            self._cache = {}

    def _save_cache(self) -> None:
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.state_dir, CACHE_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self._cache, f, separators=(",", ":"))
        os.replace(tmp, path)

    def scan(self) -> ScanResult:
        """
        Walk the share and hash what changed.  Blocking: run it in a thread.

        Only regular files reached without following links are listed;
        names starting with L{wire.RESERVED_PREFIX} (our state, our partial
        downloads) and the state directory itself are skipped, as are names
        that could not travel on the wire.
        """
        self._load_cache()
        generation = self.generation
        cache = dict(self._cache)
        files: Dict[str, LocalFile] = {}
        skipped: List[str] = []
        excluded = self._excluded_dirs()
        root_fd = os.open(self.root, _ROOT_FLAGS)
        try:
            self._walk(root_fd, "", "", files, skipped, excluded, cache)
        finally:
            os.close(root_fd)
        new_cache = {
            f.disk_path: [f.entry.size, f.entry.mtime_ns, f.inode, f.entry.hash]
            for f in files.values()
        }
        if new_cache != self._cache:
            self._cache = new_cache
            try:
                self._save_cache()
            except OSError as e:
                log.warn("cannot save hash cache: {error}", error=e)
        return ScanResult(files=files, skipped=skipped, generation=generation)

    def _excluded_dirs(self) -> Set[Tuple[int, int]]:
        try:
            st = os.stat(self.state_dir)
        except OSError:
            return set()
        return {(st.st_dev, st.st_ino)}

    def _walk(self, dir_fd, disk_prefix, nfc_prefix, files, skipped, excluded, cache):
        try:
            entries = list(os.scandir(dir_fd))
        except OSError as e:
            skipped.append(f"{disk_prefix or '.'}: {e.strerror}")
            return
        for item in entries:
            if self._stopping:
                raise ScanStopped()
            name = item.name
            if name.startswith(wire.RESERVED_PREFIX):
                continue
            disk_path = disk_prefix + name
            nfc_path = nfc_prefix + unicodedata.normalize("NFC", name)
            try:
                if item.is_dir(follow_symlinks=False):
                    try:
                        sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                    except OSError:
                        continue
                    try:
                        st = os.fstat(sub)
                        if (st.st_dev, st.st_ino) not in excluded:
                            self._walk(sub, disk_path + "/", nfc_path + "/",
                                       files, skipped, excluded, cache)
                    finally:
                        os.close(sub)
                    continue
                if not item.is_file(follow_symlinks=False):
                    continue  # links, FIFOs, sockets, devices
                wire.check_path(nfc_path)
            except ProtocolError:
                skipped.append(wire.safe_text(disk_path))
                continue
            except OSError:
                continue
            if nfc_path in files:
                skipped.append(wire.safe_text(disk_path) + " (same name as another once normalised)")
                continue
            local = self._catalogue(dir_fd, name, disk_path, nfc_path, cache)
            if local is not None:
                files[nfc_path] = local

    def _catalogue(self, dir_fd, name, disk_path, nfc_path, cache) -> Optional[LocalFile]:
        try:
            fd, st = open_regular(dir_fd, name)
        except (ShareError, OSError):
            return None
        try:
            cached = cache.get(disk_path)
            if (
                isinstance(cached, list) and len(cached) == 4
                and cached[:3] == [st.st_size, st.st_mtime_ns, st.st_ino]
                and isinstance(cached[3], str) and len(cached[3]) == 64
            ):
                digest = cached[3]
            else:
                digest = hash_fd(fd, lambda: self._stopping)
                after = os.fstat(fd)
                if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                    return None  # changing under us: catalogue it next time
        except OSError:
            return None
        finally:
            os.close(fd)
        entry = FileEntry(path=nfc_path, size=st.st_size, mtime_ns=st.st_mtime_ns, hash=digest)
        return LocalFile(entry=entry, disk_path=disk_path, inode=st.st_ino)

    def apply(self, result: ScanResult) -> Tuple[List[FileEntry], List[str]]:
        """
        Make a scan's findings the catalog.

        Files this node published after the scan began are kept as they
        are.  Returns the entries that are new or changed, and the paths
        that went away.
        """
        files = dict(result.files)
        for path, generation in list(self._touched.items()):
            if generation > result.generation:
                if path in self.files:
                    files[path] = self.files[path]
                else:
                    files.pop(path, None)
            else:
                del self._touched[path]
        changed = [
            f.entry for path, f in files.items()
            if path not in self.files or self.files[path].entry != f.entry
        ]
        gone = [path for path in self.files if path not in files]
        self.files = files
        return changed, gone

    def record(self, entry: FileEntry, disk_path: str, inode: int) -> None:
        """
        Add a file this node itself just put in the share.
        """
        self.generation += 1
        self._touched[entry.path] = self.generation
        self.files[entry.path] = LocalFile(entry=entry, disk_path=disk_path, inode=inode)
        self._cache[disk_path] = [entry.size, entry.mtime_ns, inode, entry.hash]

    def forget(self, path: str) -> None:
        """
        Drop a path this node itself moved away.
        """
        self.generation += 1
        self._touched[path] = self.generation
        local = self.files.pop(path, None)
        if local is not None:
            self._cache.pop(local.disk_path, None)

    # -- reading and writing -------------------------------------------------

    def open_for_reading(self, path: str, content_hash: str) -> Tuple[int, LocalFile]:
        """
        Open a catalogued file for serving, if it still has the content the
        peer asked for.

        @raise ShareError: C{not_found} if we do not list C{path} with that
            hash, C{changed} if the file on disk no longer matches the
            catalog, C{not_regular} if something planted a link or special
            file there.
        """
        local = self.files.get(path)
        if local is None or local.entry.hash != content_hash:
            raise ShareError("not_found", "not in this node's catalog")
        *dirs, name = local.disk_path.split("/")
        root_fd = os.open(self.root, _ROOT_FLAGS)
        try:
            dir_fd = open_dir(root_fd, dirs)
        finally:
            os.close(root_fd)
        try:
            fd, st = open_regular(dir_fd, name)
        finally:
            os.close(dir_fd)
        if (st.st_size, st.st_mtime_ns) != (local.entry.size, local.entry.mtime_ns):
            os.close(fd)
            raise ShareError("changed", "the file changed since it was catalogued")
        return fd, local

    def open_parent(self, path: str) -> int:
        """
        Open (creating as needed) the directory that will hold C{path},
        without following links.
        """
        if self._root_fd is None:
            self._root_fd = os.open(self.root, _ROOT_FLAGS)
        parts = path.split("/")[:-1]
        if parts:
            self._made_dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return open_dir(self._root_fd, parts, create=True)

    def is_current(self, relative: str) -> bool:
        """
        Whether the file or directory at C{relative} (a path on disk,
        relative to the root) is already catalogued exactly as it is now:
        then a change notification for it needs no rescan.
        """
        try:
            st = os.lstat(os.path.join(self.root, relative))
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode):
            return relative in self._made_dirs
        local = self.files.get(unicodedata.normalize("NFC", relative.replace(os.sep, "/")))
        return local is not None and (local.entry.size, local.entry.mtime_ns, local.inode) == (
            st.st_size, st.st_mtime_ns, st.st_ino)

    def stop_scanning(self) -> None:
        """
        Make a scan running in a thread give up soon (at the next file or
        megabyte), so stopping the node does not wait for a big share to
        be hashed.
        """
        self._stopping = True

    def close(self) -> None:
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize
