"""
Twisted's own chatter, kept out of the operator's log.

twistd shows every event at every level, and Twisted's ports announce
themselves with C{log.msg}, whatever the factory's C{noisy} flag says:
C{PeerFactory (TLS) starting on 12345}, C{_Receiver starting on 21027},
C{(TCP Port 12345 Closed)}.  The node says the same in its own words
("listening for peers on ..."), so these lines are only noise.  Twisted
has no switch for them, so L{quiet_twisted} puts a filter in front of
the observers twistd registered; it drops those lines and nothing else.
"""

from __future__ import annotations

import re
from typing import Callable, List, Tuple

from zope.interface import implementer

from twisted.logger import (
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogPublisher,
    PredicateResult,
    globalLogPublisher,
)

#: What Twisted's TCP and UDP ports log for our factories and protocols.
CHATTER = re.compile(
    r"(?:PeerFactory(?: \(TLS\))?|_Receiver|QuietSite) starting on \d+"
    r"|\((?:TCP|UDP) Port \d+ Closed\)"
)


def is_chatter(event: dict) -> bool:
    """
    Whether C{event} is one of the port announcements in L{CHATTER}
    (they come through Twisted's legacy C{log.msg}).
    """
    text = event.get("log_text")
    return (event.get("log_namespace") == "log_legacy" and isinstance(text, str)
            and CHATTER.fullmatch(text) is not None)


@implementer(ILogFilterPredicate)
class _NoChatter:
    def __call__(self, event: dict) -> PredicateResult:
        return PredicateResult.no if is_chatter(event) else PredicateResult.maybe


_predicate = _NoChatter()


class _Quieted(FilteringLogObserver):
    """
    An observer with the chatter filtered out; a second L{quiet_twisted}
    leaves it as it is rather than wrapping it again.
    """


def quiet_twisted(publisher: LogPublisher = globalLogPublisher) -> Callable[[], None]:
    """
    Filter the chatter out for every observer C{publisher} has now (twistd's
    log file, once twistd has begun logging).

    @return: a function that puts the observers back as they were.
    """
    wrapped: List[Tuple[ILogObserver, ILogObserver]] = []
    for observer in list(getattr(publisher, "_observers", ())):
        if isinstance(observer, _Quieted):
            continue
        filtered = _Quieted(observer, [_predicate])
        publisher.removeObserver(observer)
        publisher.addObserver(filtered)
        wrapped.append((observer, filtered))

    def undo() -> None:
        for observer, filtered in wrapped:
            publisher.removeObserver(filtered)
            publisher.addObserver(observer)

    return undo
