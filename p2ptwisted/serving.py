# -*- test-case-name: tests.test_exchange -*-
"""
Serving file versions to peers: GET answered from our own index.

A peer asks for a path and a content hash.  We serve only what our index
holds as a live file with that hash -- at that path, or, when the path
holds something else now, at any path with the same content (a version
is its bytes, wherever they are) -- and only if the file on disk still
has the size and mtime the index recorded, so a file the user is editing
is refused with C{changed} rather than sent half-written.  Paths reach the
disk only through L{p2ptwisted.apply.Disk}, link-proof.
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Tuple

from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.core.blocks import block_span
from p2ptwisted.core.index import FILE, Entry, IndexStore
from p2ptwisted.fsops import ApplyError, closing
from p2ptwisted.hashing import ShareError, open_regular
from p2ptwisted.uploads import Upload


#: Disk error codes as a peer is told them (docs/protocol.md, GET).
_REFUSAL_CODES = {"not_found": "changed", "not_dir": "not_regular"}


class Server:
    log = Logger()

    def __init__(self, store: IndexStore, disk, uploads_per_peer: int):
        self.store = store
        self.disk = disk
        self.uploads_per_peer = uploads_per_peer
        #: C{(path, hash, digest, length) -> (fd, offset) or None}: a block
        #: a download of ours in progress has verified (set by the folder).
        self.partial_block: Callable[[str, str, bytes, int],
                                     Optional[Tuple[int, int]]] = lambda *a: None

    def find(self, path: str, content_hash: str) -> Optional[Entry]:
        """
        Our live file at C{path} with C{content_hash}, else any of ours
        with that content.
        """
        entry = self.store.get(path)
        if entry is not None and entry.live and entry.kind == FILE and entry.hash == content_hash:
            return entry
        for other in self.store.with_hash(content_hash):
            if other.live and other.kind == FILE:
                return other
        return None

    def get_received(self, proto, get: wire.Get) -> None:
        proto.gets_received += 1

        def refuse(code: str, message: str) -> None:
            proto.log_limited(self.log.info, "refused {path} to {peer}: {why}",
                              path=wire.safe_text(get.path), why=message)
            proto.send(wire.Error(code=code, message=message, transfer=get.transfer))

        scheduler = proto.scheduler
        if get.transfer in scheduler.by_id:
            proto.drop(f"GET reuses transfer id {get.transfer} still in flight")
            return
        if len(scheduler.by_id) >= self.uploads_per_peer:
            refuse("busy", f"more than {self.uploads_per_peer} transfers in flight")
            return
        if get.length:
            self._block(proto, get, refuse)
            return
        entry = self.find(get.path, get.hash)
        if entry is None:
            refuse("not_found", "no file with that content here")
            return
        if get.offset > entry.size:
            refuse("bad_offset", f"offset {get.offset} is past the end ({entry.size})")
            return
        try:
            fd = self._open(entry)
        except (ApplyError, ShareError) as e:
            # Our index said a file is there: gone is "changed"; a link
            # or file where a directory was is "not_regular".
            refuse(_REFUSAL_CODES.get(e.code, e.code), str(e))
            return
        except OSError as e:
            refuse("unavailable", e.strerror or "cannot open the file")
            return
        scheduler.add(Upload(transfer=get.transfer, fd=fd, entry=entry, position=get.offset))

    def _block(self, proto, get: wire.Get, refuse) -> None:
        """
        A block request: the bytes at C{offset} of the version named, or
        the block with that digest from wherever we have it -- any of our
        files, or a partial download of ours that has verified it.  The
        requester checks the digest; END names the block.
        """
        digest = bytes.fromhex(get.block)
        places: List[Tuple[Entry, int]] = []
        entry = self.find(get.path, get.hash)
        if entry is not None and get.offset + get.length <= entry.size:
            places.append((entry, get.offset))
        places += [(e, block_span(e.size, i)[0]) for e, i in self.store.with_block(digest, 2)
                   if block_span(e.size, i)[1] == get.length]
        places += [(e, 0) for e in self.store.with_hash(get.block)[:1] if e.size == get.length]
        for entry, offset in places:
            try:
                fd = self._open(entry)
            except (ApplyError, ShareError, OSError):
                continue
            self._send_block(proto, get, fd, entry, offset)
            return
        partial = self.partial_block(get.path, get.hash, digest, get.length)
        if partial is not None:
            self._send_block(proto, get, partial[0], None, partial[1])
            return
        refuse("not_found", "no block with that digest here")

    @staticmethod
    def _send_block(proto, get: wire.Get, fd: int, entry: Optional[Entry], offset: int) -> None:
        proto.scheduler.add(Upload(transfer=get.transfer, fd=fd, entry=entry, position=offset,
                                   end=offset + get.length, block=get.block))

    def _open(self, entry: Entry) -> int:
        dir_fd, name = self.disk.parent(entry.path)
        with closing(dir_fd):
            fd, st = open_regular(dir_fd, name)
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            os.close(fd)
            raise ShareError("changed", "the file changed since it was indexed")
        return fd

    def cancel_received(self, proto, cancel: wire.Cancel) -> None:
        proto.scheduler.cancel(cancel.transfer)
