"""
Tests for L{p2ptwisted.logbudget}: a host cannot flood the log.
"""

import struct

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import logbudget
from p2ptwisted.logbudget import LogBudget

from .helpers import capture_logs, make_node


class BudgetTests(SynchronousTestCase):
    def test_burst_then_refill(self):
        clock = Clock()
        budget = LogBudget(clock=clock, burst=3, refill=2.0)
        self.assertEqual([budget.spend("h") for _ in range(5)], [0, 0, 0, None, None])
        clock.advance(2.0)
        # The next line that gets through says how many were held back.
        self.assertEqual(budget.spend("h"), 2)
        self.assertIsNone(budget.spend("h"))

    def test_hosts_are_separate(self):
        budget = LogBudget(clock=Clock(), burst=1)
        self.assertEqual(budget.spend("a"), 0)
        self.assertIsNone(budget.spend("a"))
        self.assertEqual(budget.spend("b"), 0)

    def test_memory_bounded(self):
        budget = LogBudget(clock=Clock())
        for i in range(logbudget.MAX_HOSTS * 2):
            budget.spend(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        self.assertEqual(len(budget._hosts), logbudget.MAX_HOSTS)


class FloodTests(SynchronousTestCase):
    def test_garbage_flood_from_one_host(self):
        """
        A host opening many connections that each send garbage gets at most
        a burst of "dropping" lines; later lines report how many were held
        back; another host's garbage is still logged.
        """
        logs = capture_logs(self)
        node = make_node(self, "me")

        def garbage_from(host, port):
            proto = node.factory.buildProtocol(None)
            proto.makeConnection(StringTransport(
                hostAddress=IPv4Address("TCP", "127.0.0.1", 12345),
                peerAddress=IPv4Address("TCP", host, port)))
            proto.dataReceived(struct.pack("!I", 0))  # an empty frame
            self.assertTrue(proto.transport.disconnecting)

        for port in range(1000, 1100):
            garbage_from("10.6.6.6", port)
        drops = [l for l in logs() if l.startswith("dropping 10.6.6.6")]
        self.assertEqual(len(drops), logbudget.BURST)
        garbage_from("10.7.7.7", 1)
        self.assertTrue(any(l.startswith("dropping 10.7.7.7") for l in logs()))
        node.clock.advance(logbudget.REFILL)
        garbage_from("10.6.6.6", 2000)
        [last] = [l for l in logs() if l.startswith("dropping 10.6.6.6")][-1:]
        self.assertIn(f"({100 - logbudget.BURST} similar lines about this host suppressed)", last)
