# -*- test-case-name: tests.test_swarm -*-
"""
The fetcher's side of block downloads: which wants go block by block, how
one ends, HAVEs from peers, and blocks of our downloads served to peers.
A part of L{p2ptwisted.fetcher.Fetcher}, in a module of its own so that
class stays readable; it uses the fetcher's C{store}, C{active}, C{recent},
C{holders}, C{clock}, C{log} and the helpers named below.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.logger import Logger

from p2ptwisted import wire, wire_index
from p2ptwisted.downloads import TransferFailed, Want


class FetcherBlocks:
    # (set by Fetcher, the class this is a part of)
    store: Any
    active: list
    recent: Any
    holders: Any
    clock: Any
    completed: int
    log: Logger

    def _pump_soon(self) -> None:
        raise NotImplementedError

    def _fail(self, want: Want, why: TransferFailed, logged: bool = True) -> None:
        raise NotImplementedError

    def _holds(self, peer: str, path: str, content_hash: str) -> bool:
        entry = self.store.remote_for(path).get(peer) if self.store is not None else None
        return entry is not None and entry.live and entry.hash == content_hash

    def have_received(self, proto, have) -> None:
        if (proto.version or 0) < 3:
            # A type version 3 adds: on a version 2 connection it is an
            # unknown type (docs/protocol.md, section 2.2).
            proto.drop(f"unknown frame type 0x{wire_index.HAVE:02x}")
            return
        self.holders.received(proto, have)

    def partial_block(self, path: str, content_hash: str, digest: bytes,
                      length: int) -> Optional[Tuple[int, int]]:
        """
        A block a download of ours in progress has verified (see
        L{BlockDownload.serve}), the named version's first.
        """
        swarms = sorted((w.swarm for w in self.active if w.swarm is not None),
                        key=lambda s: s.want.version != (path, content_hash))
        for swarm in swarms:
            found = swarm.serve(digest, length)
            if found is not None:
                return found
        return None

    def _blockwise(self, want: Want, connections: dict) -> bool:
        """
        Whether to fetch C{want} block by block: it has a block list, we
        can look for its blocks locally, and a source speaks version 3.
        """
        return bool(want.entry.blocks) and self.store is not None and any(
            (getattr(p, "version", None) or 0) >= 3 for p in connections.values())

    def _swarm_finished(self, want: Want, result) -> None:
        """
        A block download ended: C{result} is the verified file's name or a
        L{TransferFailed} (or a Failure of one).
        """
        if want in self.active:
            self.active.remove(want)
        want.finished_at = self.clock.seconds()
        self.recent.append(want)
        self._pump_soon()
        why = getattr(result, "value", result)
        if isinstance(why, BaseException):
            if not isinstance(why, TransferFailed):
                why = TransferFailed("local", str(why))
            if why.code != "cancelled":
                self.log.warn("fetching {path} failed: {why}", path=wire.safe_text(want.path),
                              why=str(why))
            self._fail(want, why, logged=why.code != "cancelled")
            return
        want.state = "done"
        self.completed += 1
        want.done.callback(result)
