"""
Twisted's port chatter is dropped from the operator's log, and nothing
else is.
"""

from __future__ import annotations

from twisted.logger import LogPublisher, globalLogPublisher
from twisted.python import log as legacy
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.quiet import is_chatter, quiet_twisted


def legacy_event(text: str) -> dict:
    """
    The event Twisted's legacy C{log.msg(text)} makes (what a port emits).
    """
    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        legacy.msg(text)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    return seen[-1]


class QuietTests(SynchronousTestCase):
    def test_chatter_is_dropped_and_the_rest_kept(self):
        publisher = LogPublisher()
        seen = []
        publisher.addObserver(seen.append)
        undo = quiet_twisted(publisher)
        chatter = ["PeerFactory (TLS) starting on 43193", "PeerFactory starting on 1",
                   "_Receiver starting on 21027", "(TCP Port 43193 Closed)",
                   "(UDP Port 21027 Closed)"]
        kept = ["Site starting on 8080", "PeerFactory (TLS) starting on 1 and more",
                "listening for peers on 127.0.0.1:43193", "(TCP Port 1 Closed) later"]
        for text in chatter + kept:
            publisher({"log_namespace": "log_legacy", "log_text": text})
        publisher({"log_namespace": "p2ptwisted.node", "log_text": chatter[0]})
        self.assertEqual([e["log_text"] for e in seen], kept + [chatter[0]])
        undo()
        publisher({"log_namespace": "log_legacy", "log_text": chatter[0]})
        self.assertEqual(seen[-1]["log_text"], chatter[0])

    def test_the_events_twisted_makes_are_recognised(self):
        """
        The event shape is Twisted's own, as C{log.msg} makes it.
        """
        self.assertTrue(is_chatter(legacy_event("PeerFactory (TLS) starting on 43193")))
        self.assertFalse(is_chatter(legacy_event("PeerFactory (TLS) stopped")))
