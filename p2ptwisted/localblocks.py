# -*- test-case-name: tests.test_swarm -*-
"""
The blocks a download takes from disk rather than the network: from our own
files before it asks anyone (the old version of the same file, a copy
elsewhere), and, for peers, from its own partial file.  Blocking functions
(the shell runs them in a thread) but for L{local_plan}, which reads the
index.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

from p2ptwisted.blockfile import BlockFile, open_source
from p2ptwisted.core.blocks import block_lengths, block_span, digests
from p2ptwisted.core.index import Entry
from p2ptwisted.fsops import closing


def local_plan(store, entry: Entry) -> Dict[int, list]:
    """
    For each block, where our own files hold its digest: (entry, block
    index in it, or -1 for a whole one-block file).  Each file's entry
    is kept once, however many blocks it gives (an entry carries its
    whole block list: one per block would cost the list times the
    blocks in memory).
    """
    plan: Dict[int, list] = {}
    entries: Dict[str, Any] = {}
    lengths = block_lengths(entry.size)
    for i, digest in enumerate(digests(entry.blocks)):
        found = [(entries.setdefault(e.path, e), j)
                 for e, j in store.with_block(digest, limit=2)]
        found += [(entries.setdefault(e.path, e), -1)
                  for e in store.with_hash(digest.hex())[:1] if e.size == lengths[i]]
        if found:
            plan[i] = found
    return plan

def replaced(store, entry: Entry) -> bool:
    """
    Whether a peer has another version of C{entry}'s file with a block list
    (not a deletion): the download of C{entry}, gone from its sources, may
    leave its blocks to that one's (L{BlockFile.keep_leftover}).
    """
    return any(e.live and e.hash != entry.hash and e.blocks
               for e in store.remote_for(entry.path).values())


def reuse(file: BlockFile, plan: Dict[int, list], disk) -> int:
    """
    Blocking: copy the planned blocks from our files; the bytes copied.
    """
    opened: Dict[str, Optional[int]] = {}
    copied = 0
    try:
        for i, places in plan.items():
            for source, j in places:
                if i in file.have:
                    break
                if source.path not in opened:
                    opened[source.path] = _open_own(disk, source)
                fd = opened[source.path]
                offset = 0 if j < 0 else block_span(source.size, j)[0]
                if fd is not None and file.copy_in(i, fd, offset):
                    copied += file.span(i)[1]
    finally:
        for fd in opened.values():
            if fd is not None:
                os.close(fd)
    return copied

def _open_own(disk, entry: Entry) -> Optional[int]:
    try:
        dir_fd, name = disk.parent(entry.path)
    except Exception:
        return None
    with closing(dir_fd):
        return open_source(dir_fd, name, entry)


def serve(file: Optional[BlockFile], digest: bytes, length: int) -> Optional[Tuple[int, int]]:
    """
    A verified block of a download of ours with C{digest}, for a peer's
    block GET:
    (a descriptor of our partial file, the block's offset).
    """
    if file is None or file.fd < 0:
        return None
    start = 0
    blocks = file.entry.blocks
    while True:
        at = blocks.find(digest, start)
        if at < 0:
            return None
        if at % 32 == 0 and at // 32 in file.have and file.span(at // 32)[1] == length:
            return os.dup(file.fd), file.span(at // 32)[0]
        start = at + 1
