# -*- test-case-name: tests.test_peers -*-
"""
The peer book: every address this node might dial, and when to dial it.

It is pure bookkeeping (no I/O, time passed in), so the dialling policy --
backoff, bounds, never hammering an address however often it is gossiped --
can be tested without a reactor.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Set, Tuple

import attrs

from p2ptwisted.wire import PeerAddress

#: How many addresses the book holds at most.  Bootstrap peers always fit;
#: learned addresses beyond the limit evict the least promising learned one
#: or are dropped.
MAX_BOOK = 256

#: First retry delay, growth factor and ceiling for redials (seconds).
INITIAL_DELAY = 1.0
FACTOR = 2.0
MAX_DELAY = 60.0

#: A learned address that has never answered (no handshake there) is
#: forgotten after this many failed dials in a row (a bootstrap address,
#: or one a node keeps announcing on the LAN, only backs off) ...
MAX_UNANSWERED = 4

#: ... and learning it again is ignored for this many seconds (so gossip
#: repeating a dead address cannot start its dials over), unless a node
#: there completes a handshake with us.
FORGET_FOR = 600.0

#: Forgotten addresses remembered at most (the oldest go first).
MAX_FORGOTTEN = 1024


@attrs.define(eq=False)
class BookEntry:
    """
    One dialable address and what we know about it.

    C{key} is how the address is named in logs and in the book: the
    C{host:port} text, or the endpoint description a user gave.
    C{node_id} is the node last seen there; C{expected_id} the node that
    must answer a dial there (the operator's C{ID@address}, or the first
    node a dial there reached), checked against its TLS certificate.
    C{claimed_id} is the node a gossiping peer says is there: only a hint,
    enough not to dial a node we are connected to, never a requirement.
    C{answered} says whether a handshake there ever completed.
    """

    key: str
    address: Optional[PeerAddress] = None
    endpoint: Optional[str] = None
    bootstrap: bool = False
    node_id: Optional[str] = None
    expected_id: Optional[str] = None
    is_self: bool = False
    failures: int = 0
    #: Connections in a row that this node ended (see L{PeerBook.disconnected}).
    drops: int = 0
    next_attempt: float = 0.0
    dialing: bool = False
    learned_at: float = 0.0
    last_error: Optional[str] = None
    discovered: bool = False
    claimed_id: Optional[str] = None
    answered: bool = False


@attrs.define
class PeerBook:
    """
    The addresses we know, with per-address backoff.

    Re-learning an address never resets its backoff, so a third party's
    address repeated by many gossiping peers is still dialled at most once
    per backoff interval; a learned address that never answers is
    forgotten after L{MAX_UNANSWERED} dials and not learned again for
    L{FORGET_FOR} seconds.  A handshake, on the other hand, resets the
    backoff: a peer that restarts, or a link that keeps dropping, is
    redialled within about L{INITIAL_DELAY} every time.
    """

    limit: int = MAX_BOOK
    jitter: Callable[[], float] = random.random
    _entries: Dict[str, BookEntry] = attrs.field(factory=dict)
    #: Forgotten keys and when they may be learned again.
    _forgotten: "OrderedDict[str, float]" = attrs.field(factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(list(self._entries.values()))

    def get(self, key: str) -> Optional[BookEntry]:
        return self._entries.get(key)

    def add_bootstrap(self, key: str, address: Optional[PeerAddress] = None,
                      endpoint: Optional[str] = None) -> BookEntry:
        """
        Add an address the operator named.  It is never evicted.
        """
        entry = self._entries.get(key)
        if entry is None:
            entry = BookEntry(key=key, address=address, endpoint=endpoint)
            self._entries[key] = entry
        entry.bootstrap = True
        return entry

    def learn(self, address: PeerAddress, now: float, node_id: Optional[str] = None,
              claimed_id: Optional[str] = None) -> Optional[BookEntry]:
        """
        Record an address heard from a peer (C{claimed_id}: the node it
        says is there) or seen in a handshake (C{node_id}: the node that
        completed it, which also brings back a forgotten address).

        @return: the new entry, or C{None} if the address was already known,
            was forgotten lately, or the book is full of entries that may
            not be evicted.
        """
        key = str(address)
        entry = self._entries.get(key)
        if entry is not None:
            if node_id is not None and not entry.is_self:
                entry.node_id = node_id
                entry.answered = True
            elif claimed_id is not None and entry.node_id is None:
                entry.claimed_id = claimed_id
            return None
        until = self._forgotten.get(key)
        if until is not None:
            if node_id is None and now < until:
                return None
            del self._forgotten[key]
        if len(self._entries) >= self.limit and not self._evict_one():
            return None
        entry = BookEntry(key=key, address=address, node_id=node_id,
                          next_attempt=now, learned_at=now, claimed_id=claimed_id,
                          answered=node_id is not None)
        self._entries[key] = entry
        return entry

    def _evict_one(self) -> bool:
        candidates = [e for e in self._entries.values()
                      if not e.bootstrap and not e.dialing and not e.is_self]
        if not candidates:
            return False
        worst = max(candidates, key=lambda e: (e.failures, -e.learned_at))
        if worst.failures == 0:
            # Every evictable entry is healthy: keep what we have.
            return False
        del self._entries[worst.key]
        return True

    def due(self, now: float, connected_ids: Set[str]) -> List[BookEntry]:
        """
        The entries to dial now, bootstrap peers first.
        """
        ready = [
            e for e in self._entries.values()
            if not e.is_self and not e.dialing and e.next_attempt <= now
            and (e.node_id or e.claimed_id) not in connected_ids
        ]
        ready.sort(key=lambda e: (not e.bootstrap, e.next_attempt))
        return ready

    def delay(self, failures: int) -> float:
        """
        How long to wait after C{failures} consecutive failed attempts.
        """
        base = min(MAX_DELAY, INITIAL_DELAY * FACTOR ** max(0, failures - 1))
        return base * (1.0 + 0.25 * self.jitter())

    def dial_started(self, entry: BookEntry) -> None:
        entry.dialing = True

    def dial_failed(self, entry: BookEntry, now: float, error: Optional[str] = None) -> bool:
        """
        A dial to C{entry} failed (or ended before the handshake).

        @return: C{True} if the address was forgotten: learned, never
            answered, and now failed L{MAX_UNANSWERED} times in a row.
        """
        entry.dialing = False
        entry.last_error = error
        entry.failures += 1
        entry.next_attempt = now + self.delay(entry.failures)
        if (entry.failures >= MAX_UNANSWERED and not entry.answered and not entry.bootstrap
                and not entry.discovered and self._entries.get(entry.key) is entry):
            del self._entries[entry.key]
            self._forgotten.pop(entry.key, None)
            self._forgotten[entry.key] = now + FORGET_FOR
            while len(self._forgotten) > MAX_FORGOTTEN:
                self._forgotten.popitem(last=False)
            return True
        return False

    def connected(self, entry: BookEntry, node_id: str) -> None:
        """
        A dial to C{entry} reached C{node_id} (the handshake completed):
        its backoff starts over, and from now on only that node may answer
        there (for as long as this node runs).
        """
        entry.dialing = False
        entry.node_id = node_id
        entry.expected_id = node_id
        entry.answered = True
        entry.last_error = None
        entry.failures = 0

    def disconnected(self, entry: BookEntry, now: float, dropped: bool = False) -> None:
        """
        A handshaken connection to this address ended: the handshake showed
        the node is there, so it is redialled after the first backoff step
        however short the connection was (a restarted peer is back at once;
        a link that keeps dropping keeps resuming).  If that dial fails the
        backoff grows from there.

        @param dropped: this node ended it (a peer that sent bad copies,
            did not read, did not answer): each such end in a row waits a
            step longer, so dropping a peer is not undone a second later.
        """
        entry.dialing = False
        entry.failures = 0
        entry.answered = True
        entry.drops = entry.drops + 1 if dropped else 0
        entry.next_attempt = now + self.delay(1 + entry.drops)

    def mark_self(self, entry: BookEntry) -> None:
        """
        This address reaches this very node: never dial it again.
        """
        entry.dialing = False
        entry.is_self = True

    def entries_for(self, node_id: str) -> List[BookEntry]:
        """
        The addresses at which we have reached the node C{node_id}.
        """
        return [e for e in self._entries.values() if e.node_id == node_id]


def split_expected_id(text: str) -> Tuple[Optional[str], str]:
    """
    Split an operator's C{ID@host:port} into the node id required there
    and the dial target; text without a valid id before an C{@} is all
    target.
    """
    from p2ptwisted.identity import parse_id

    prefix, sep, rest = text.partition("@")
    if sep:
        try:
            return parse_id(prefix), rest
        except ValueError:
            if len(prefix) >= 16 and all(c in "0123456789abcdefABCDEF-: " for c in prefix):
                raise  # meant as an id, mistyped: say so rather than dial "ID@host"
    return None, text


def parse_dial_target(text: str) -> Tuple[str, Optional[PeerAddress], Optional[str]]:
    """
    Read an operator-given peer: C{host:port}, C{[v6]:port}, or a Twisted
    client endpoint string such as C{tcp:host=10.0.0.2:port=12345}.

    Unlike gossiped addresses, C{host} may be a name: the operator chose it.

    @return: the book key, and either an address or an endpoint description.
    """
    host, sep, port = text.rpartition(":")
    if sep and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        if host.startswith("[") and host.endswith("]") and len(host) > 2:
            address = PeerAddress(host=host[1:-1], port=int(port))
            return str(address), address, None
        if host and ":" not in host and "=" not in host:
            address = PeerAddress(host=host, port=int(port))
            return str(address), address, None
    return text, None, text
