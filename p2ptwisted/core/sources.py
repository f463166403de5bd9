# -*- test-case-name: tests.test_sources -*-
"""
Which peer to fetch a file version from, and which not to ask again.

A peer whose copy of a version failed (bad bytes, an END that does not
match its own index entry, a transfer that stalled on a live connection)
is not asked for that version again for a while: a penalty that doubles
with each failure of the same pair, up to a ceiling, so a bad source costs
a few tries a day instead of one every few seconds.  Meanwhile any other
source is used.  A peer that sends bad copies again and again (bad bytes
or wrong ENDs: its offences, stalls aside) is to be dropped, every
L{DROP_AFTER} offences.

Sans I/O: no reactor, no connections; times are passed in, peers are ids
and versions are any hashable key (the fetcher uses path and hash).
"""

from __future__ import annotations

from typing import Dict, Hashable, Iterable, List, Optional, Sequence, Set, Tuple

import attrs

#: Seconds a pair (peer, version) is left alone after its first failure;
#: doubled with each failure after, up to L{MAX_PENALTY}.  (A first bad
#: copy may be a bit flipped on the way: the only source is soon asked
#: again.)
FIRST_PENALTY = 10.0
MAX_PENALTY = 6 * 3600.0

#: Offences (bad copies) from one peer after which it is dropped, and
#: every this many after.
DROP_AFTER = 3

#: Pairs and peers remembered at most (the oldest are forgotten first).
MAX_REMEMBERED = 10_000

#: What to do with a fetch next (L{Sources.next_step}).
START, WAIT, FAIL = "start", "wait", "fail"


@attrs.frozen
class Penalty:
    """
    What a failure costs its source.

    @ivar until: the time before which the peer is not asked for the
        version again, C{seconds} from the failure.
    @ivar offences: the peer's bad copies so far (of any version).
    @ivar drop: whether to drop the peer's connection now.
    """

    until: float
    seconds: float
    offences: int
    drop: bool


class Sources:
    """
    The node's record of failed sources: one per fetcher, for its life
    (bounded by L{MAX_REMEMBERED}).

    @ivar offences: per peer, the bad copies it sent.
    """

    def __init__(self, first_penalty: float = FIRST_PENALTY,
                 max_penalty: float = MAX_PENALTY, drop_after: int = DROP_AFTER):
        self.first_penalty = first_penalty
        self.max_penalty = max_penalty
        self.drop_after = drop_after
        #: (peer, version) -> (failures in a row, penalty ends at, whether
        #: an offence was among them)
        self._pairs: Dict[Tuple[str, Hashable], Tuple[int, float, bool]] = {}
        #: peer -> offences
        self.offences: Dict[str, int] = {}

    def failed(self, peer: str, version: Hashable, now: float,
               offence: bool = True) -> Penalty:
        """
        C{peer}'s copy of C{version} failed: an offence (bad bytes, a wrong
        END), or not (a stall, a refusal: the peer may be honest but slow,
        or its file changed).
        """
        failures, _, offended = self._pairs.pop((peer, version), (0, 0.0, False))
        failures += 1
        seconds = min(self.max_penalty, self.first_penalty * 2 ** (failures - 1))
        # most recent last
        self._pairs[(peer, version)] = (failures, now + seconds, offended or offence)
        offences = self.offences.pop(peer, 0) + offence
        self.offences[peer] = offences
        tables: Tuple[dict, dict] = (self._pairs, self.offences)
        for table in tables:
            while len(table) > MAX_REMEMBERED:
                del table[next(iter(table))]
        return Penalty(until=now + seconds, seconds=seconds, offences=offences,
                       drop=offence and offences % self.drop_after == 0)

    def succeeded(self, peer: str, version: Hashable) -> None:
        """
        A good copy: the pair is forgiven (the peer's offences are not).
        """
        self._pairs.pop((peer, version), None)

    def connection_lost(self, peer: str) -> None:
        """
        The peer's connection is gone: failures that were no offence (a
        stall, a refusal) are forgotten -- a new connection deserves a new
        try -- while bad copies are not.
        """
        for key in [k for k, v in self._pairs.items() if k[0] == peer and not v[2]]:
            del self._pairs[key]

    def benched(self, peer: str, version: Hashable, now: float) -> bool:
        """
        Whether C{peer} is not to be asked for C{version} now.
        """
        pair = self._pairs.get((peer, version))
        return pair is not None and now < pair[1]

    def choose(self, candidates: Iterable[Tuple[str, int]], version: Hashable,
               tried: Set[str], now: float) -> Optional[str]:
        """
        The peer to ask for C{version}, of C{candidates} (peer, transfers in
        flight from it; those with no room left are not passed): none that
        is benched; among the rest, one not yet tried for this fetch first,
        then the least busy.
        """
        usable = [(peer in tried, busy, peer) for peer, busy in candidates
                  if not self.benched(peer, version, now)]
        return min(usable)[2] if usable else None

    def usable(self, peers: Iterable[str], version: Hashable, now: float) -> List[str]:
        """
        Those of C{peers} not benched for C{version}.
        """
        return [peer for peer in peers if not self.benched(peer, version, now)]

    def next_step(self, connected: Sequence[Tuple[str, int]], max_busy: int,
                  version: Hashable, tried: Set[str], now: float,
                  lost_at: Optional[float], wait_for_source: float) -> Tuple[str, str]:
        """
        What to do with a fetch of C{version}, given its sources that are
        connected (peer, transfers in flight from it): L{START} with a
        peer (L{choose}, among those with fewer than C{max_busy} in
        flight); L{WAIT} if every usable one is busy, or if none is
        connected and the fetch lost its connection less than
        C{wait_for_source} seconds ago (C{lost_at}: a source may be
        connected again soon); else L{FAIL}, with why.
        """
        usable = [(peer, busy) for peer, busy in connected
                  if not self.benched(peer, version, now)]
        peer = self.choose([(p, busy) for p, busy in usable if busy < max_busy],
                           version, tried, now)
        if peer is not None:
            return START, peer
        if usable or (not connected and lost_at is not None
                      and now - lost_at < wait_for_source):
            return WAIT, ""
        if connected:
            return FAIL, "every connected peer that has this version failed to send it lately"
        return FAIL, "no connected peer has this version"
