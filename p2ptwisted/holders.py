# -*- test-case-name: tests.test_swarm -*-
"""
Partial holders: which blocks of a version peers have verified before they
have the whole file, and telling them ours (HAVE, protocol version 3).

A new file on one node is wanted by every other node at once.  If each
took it only from the node that has it whole, that node would upload N-1
copies.  Instead every downloader tells the others, a few times a second,
which blocks it has verified (as Syncthing's DownloadProgress and
BitTorrent's HAVE do), and serves them: the others then ask it for blocks
the source is busy sending elsewhere, and the file spreads like a swarm.

A HAVE is a hint: a peer asked for a block it said it had may refuse, and
every block is verified whoever sent it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from p2ptwisted.wire_index import Have, encode_have

#: Least seconds between two HAVEs about one download.
HAVE_EVERY = 0.5

#: Versions whose partial holders are remembered at most (the oldest are
#: forgotten first): a peer cannot grow this without bound.
MAX_VERSIONS = 1000

Version = Tuple[str, str]  # (path, content hash)


class Holders:
    """
    @param connections: C{() -> {peer id: connection}}.
    @param holds: C{(peer, path, hash) -> bool}: whether our copy of a
        peer's index says it has that version (it needs no HAVE then).
    """

    def __init__(self, clock, connections: Callable[[], dict],
                 holds: Callable[[str, str, str], bool] = lambda *a: False):
        self.clock = clock
        self.connections = connections
        self.holds = holds
        self.known: "OrderedDict[Version, Dict[str, FrozenSet[int]]]" = OrderedDict()
        #: Downloads of ours to tell of a peer's HAVE, by version.
        self.listeners: Dict[Version, Callable[[str, FrozenSet[int]], None]] = {}
        self._pending: Dict[Version, Callable[[], FrozenSet[int]]] = {}
        self._sent_at: Dict[Version, float] = {}
        self._call = None

    # -- theirs -----------------------------------------------------------------------

    def received(self, proto, have: Have) -> None:
        version = (have.path, have.hash)
        held = self.known.setdefault(version, {})
        self.known.move_to_end(version)
        held[proto.remote_id] = have.blocks
        while len(self.known) > MAX_VERSIONS:
            self.known.popitem(last=False)
        listener = self.listeners.get(version)
        if listener is not None:
            listener(proto.remote_id, have.blocks)

    def of(self, version: Version) -> Dict[str, FrozenSet[int]]:
        return dict(self.known.get(version, {}))

    def peer_lost(self, peer: str) -> None:
        for held in self.known.values():
            held.pop(peer, None)

    # -- ours -------------------------------------------------------------------------

    def progress(self, version: Version, blocks: Callable[[], FrozenSet[int]]) -> None:
        """
        A download of ours verified more blocks: tell the peers that lack
        the version, at most every L{HAVE_EVERY} seconds.
        """
        self._pending[version] = blocks
        if self._call is None or not self._call.active():
            last = min((self._sent_at.get(v, 0.0) for v in self._pending), default=0.0)
            wait = max(0.0, last + HAVE_EVERY - self.clock.seconds())
            self._call = self.clock.callLater(wait, self._send)

    def _send(self) -> None:
        self._call = None
        pending, self._pending = self._pending, {}
        now = self.clock.seconds()
        for (path, content_hash), blocks in pending.items():
            self._sent_at[(path, content_hash)] = now
            frame: Optional[bytes] = None
            for peer, proto in self.connections().items():
                if (getattr(proto, "version", None) or 0) < 3 or self.holds(peer, path,
                                                                            content_hash):
                    continue
                if frame is None:
                    frame = encode_have(Have(path=path, hash=content_hash, blocks=blocks()))
                proto.send_frame(frame)

    def forget(self, version: Version) -> None:
        """Our download of C{version} ended."""
        self.listeners.pop(version, None)
        self._pending.pop(version, None)
        self._sent_at.pop(version, None)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
