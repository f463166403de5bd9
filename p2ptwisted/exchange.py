# -*- test-case-name: tests.test_exchange -*-
"""
Index exchange over the peer connections: the network's half of
L{p2ptwisted.core.engine.SyncEngine}'s bookkeeping.

On each new connection both ends send INDEX_HELLO (our index id, and how
much of the peer's index we already hold); on the peer's, we send INDEX
frames with every entry of ours after the sequence it holds -- nothing at
all if it is up to date, so a reconnect costs two frames whatever the
share's size.  Afterwards each change of our index is streamed to every
connected peer as it happens (L{IndexExchange.announce}).

Sending is paced: at most L{ENTRIES_PER_TURN} entries per peer per reactor
turn, and none while the connection's output is backed up (its producer
paused), so a slow peer never makes us buffer our whole index for it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Set

from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.core.engine import Hello, SyncEngine
from p2ptwisted.wire_index import Index, IndexHello, encode_index_hello, pack_index

#: Entries of one peer's index we keep at most: a peer must not fill our
#: disk with made-up paths.  (Ten times the largest share measured.)
MAX_PEER_ENTRIES = 1_000_000

#: Seconds between two INDEX_HELLOs on one connection (the second one
#: only when the peer's index id changed).
HELLO_SPACING = 60.0

#: Seconds between two new index ids because a peer held more of ours.
WENT_BACK_SPACING = 3600.0

#: Entries sent to one peer per reactor turn.
ENTRIES_PER_TURN = 2000

#: Seconds to wait before trying again to send to a peer whose output is
#: backed up.
BACKED_UP_RETRY = 0.05


class IndexExchange:
    """
    @param changed: called after entries from a peer were stored (the
        shell plans again).
    """

    log = Logger()

    def __init__(self, engine: SyncEngine, clock, connections: Callable[[], Dict[str, Any]],
                 changed: Callable[[], None]):
        self.engine = engine
        self.clock = clock
        self.connections = connections
        self.changed = changed
        self._calls: Dict[str, Any] = {}  # IDelayedCall
        #: Per connected peer: the sequence its INDEX_HELLO announced, until
        #: we hold its index up to there (then logged once).
        self._catching_up: Dict[str, int] = {}
        #: Per peer: about how many entries of its index we hold (counted
        #: afresh whenever the estimate nears the limit).
        self._held: Dict[str, int] = {}
        #: Per connected peer: the index id and time of its last INDEX_HELLO.
        self._hellos: Dict[str, tuple] = {}
        self._went_back_at = float("-inf")
        #: Per peer: the last C{through} we sent it.
        self._through: Dict[str, int] = {}
        #: Connected peers whose index we hold up to date.
        self.up_to_date: Set[str] = set()
        self.entries_sent = 0
        self.entries_received = 0

    def peer_ready(self, proto) -> None:
        """
        A handshaken connection: tell the peer what we hold of its index.
        """
        self._through.pop(proto.remote_id, None)
        self._hellos.pop(proto.remote_id, None)
        self._send_hello(proto, self.engine.peer_connected(proto.remote_id))

    def _send_hello(self, proto, hello: Hello) -> None:
        proto.send_frame(encode_index_hello(IndexHello(
            index_id=hello.index_id, have_index_id=hello.have_index_id,
            have_sequence=hello.have_sequence, sequence=self.engine.index.sequence)))

    def hello_received(self, proto, message: IndexHello) -> None:
        refusal = self._refuse_hello(proto, message)
        if refusal is not None:
            proto.drop(refusal)
            return
        went_back = self.engine.hello_received(proto.remote_id, Hello(
            index_id=message.index_id, have_index_id=message.have_index_id,
            have_sequence=message.have_sequence))
        state = self.engine.peers.get(proto.remote_id)
        self._through[proto.remote_id] = state.sent if state is not None else 0
        self._catching_up[proto.remote_id] = message.sequence
        self.up_to_date.discard(proto.remote_id)
        self._caught_up(proto)
        if went_back:
            proto.log_limited(self.log.warn,
                              "{peer} holds more of our index than we do (a restored backup,"
                              " or a crash lost its end): starting a new index id")
            for other in self.connections().values():
                self._send_hello(other, self.engine.hello_for(other.remote_id))
        self.announce()

    def _refuse_hello(self, proto, message: IndexHello):
        """
        Why an INDEX_HELLO is not to be acted on, if it is not.  Each one
        makes us forget what the peer told us before (a new index id) or,
        if it claims more of our index than we hold, start a new index
        that every peer then fetches again: a peer may send one per
        connection, another only when its index id changed (its index
        went back) and not within L{HELLO_SPACING}; and the claim is
        honoured once per L{WENT_BACK_SPACING} in all.
        """
        now = self.clock.seconds()
        peer = proto.remote_id
        before = self._hellos.get(peer)
        if before is not None:
            if before[0] == message.index_id:
                return "second INDEX_HELLO for the same index"
            if now - before[1] < HELLO_SPACING:
                return f"INDEX_HELLO again within {HELLO_SPACING:g} seconds"
        self._hellos[peer] = (message.index_id, now)
        index = self.engine.index
        if message.have_index_id == index.index_id and message.have_sequence > index.sequence:
            if now - self._went_back_at < WENT_BACK_SPACING:
                return "claims to hold more of our index than we do, again"
            self._went_back_at = now
        return None

    def index_received(self, proto, message: Index) -> None:
        state = self.engine.peers.get(proto.remote_id)
        if state is None or not state.ready:
            # Without its INDEX_HELLO we do not know which index these
            # entries belong to: they would be dropped with it.
            proto.drop("INDEX before INDEX_HELLO")
            return
        if message.rejected:
            proto.log_limited(self.log.warn, "ignored {n} invalid index entries from {peer}",
                              n=message.rejected)
        self.entries_received += len(message.entries)
        peer = proto.remote_id
        held = self._held.get(peer)
        if held is None or held + len(message.entries) > MAX_PEER_ENTRIES:
            # Counted afresh (entries that update paths already held add
            # none): a peer at the limit may still change what it has.
            held = self.engine.store.remote_count(peer)
            if held >= MAX_PEER_ENTRIES:
                proto.drop(f"its index is larger than {MAX_PEER_ENTRIES} entries")
                return
        self._held[peer] = held + len(message.entries)
        received = self.engine.entries_received(proto.remote_id, message.entries,
                                                int(self.clock.seconds()), message.through)
        if received.rejected:
            proto.log_limited(self.log.warn,
                              "ignored {n} index entries from {peer}: {why}",
                              n=len(received.rejected),
                              why=wire.safe_text(received.rejected[0], 120))
        self._caught_up(proto)
        self.changed()

    def _caught_up(self, proto) -> None:
        """
        Log once per connection when we hold the peer's index up to the
        sequence it announced: its files are known from then on.
        """
        peer = proto.remote_id
        wanted = self._catching_up.get(peer)
        store = self.engine.store
        if wanted is None or int(store.meta(f"peer-sequence:{peer}") or 0) < wanted:
            return
        del self._catching_up[peer]
        self.up_to_date.add(peer)
        files, size = store.totals(peer) if hasattr(store, "totals") else (0, 0)
        self.log.info("{peer} shares {files} files ({size} bytes); its index is up to date here",
                      peer=proto.describe(), files=files, size=size)

    def peer_lost(self, proto) -> None:
        self._hellos.pop(proto.remote_id, None)
        self._held.pop(proto.remote_id, None)
        self._through.pop(proto.remote_id, None)
        self._catching_up.pop(proto.remote_id, None)
        self.up_to_date.discard(proto.remote_id)
        call = self._calls.pop(proto.remote_id, None)
        if call is not None and call.active():
            call.cancel()
        self.engine.peer_lost(proto.remote_id)

    def announce(self) -> None:
        """
        Our index has entries some peers have not had: send them (paced).
        """
        for peer in list(self.connections()):
            self._schedule(peer, 0)

    def _schedule(self, peer: str, delay: float) -> None:
        call = self._calls.get(peer)
        if call is None or not call.active():
            self._calls[peer] = self.clock.callLater(delay, self._send, peer)

    def _send(self, peer: str) -> None:
        self._calls.pop(peer, None)
        proto = self.connections().get(peer)
        if proto is None:
            return
        if proto.scheduler is not None and proto.scheduler.paused:
            self._schedule(peer, BACKED_UP_RETRY)
            return
        entries = self.engine.outgoing(peer, limit=ENTRIES_PER_TURN)
        state = self.engine.peers.get(peer)
        through = state.sent if state is not None else 0
        if not entries and through <= self._through.get(peer, 0):
            return
        # Each batch says how far it completes the peer's copy, so the
        # peer knows when it has caught up even past forgotten deletions.
        self._through[peer] = through
        for frame in pack_index(entries, through, blocks=(proto.version or 0) >= 3):
            proto.send_frame(frame)
        self.entries_sent += len(entries)
        if entries:
            self._schedule(peer, 0)
