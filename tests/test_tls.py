"""
TLS between nodes, in memory: both ends prove their ids with certificates,
HELLO must agree with the certificate, and the node refuses strangers when
told to, before saying anything to them.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import wire
from p2ptwisted.identity import format_id
from p2ptwisted.limits import Limits

from .helpers import capture_logs, make_node

_ports = [45000]


def tls_link(dialer, listener, entry=None):
    """
    Join C{dialer} to C{listener} in memory through their TLS factories,
    as if C{dialer} had dialled C{entry}.  Returns (client, server, pump),
    the inner L{PeerProtocol}s.
    """
    port = listener.listen_ports[0]
    if entry is None:
        entry = dialer.book.add_bootstrap(f"127.0.0.1:{port}")
    dialer.book.dial_started(entry)
    _ports[0] += 1
    here = IPv4Address("TCP", "127.0.0.1", _ports[0])
    there = IPv4Address("TCP", "127.0.0.1", port)
    client = dialer.dial_factory.buildProtocol(there)
    server = listener.listen_factory.buildProtocol(here)
    client.wrappedProtocol.dialed = entry
    pump = iosim.connect(
        server, iosim.FakeTransport(server, isServer=True, hostAddress=there, peerAddress=here),
        client, iosim.FakeTransport(client, isServer=False, hostAddress=here, peerAddress=there),
        greet=False,
    )
    return client.wrappedProtocol, server.wrappedProtocol, pump


def settle(pump, *nodes):
    """
    Move bytes (and TLS's buffered writes, flushed on the next reactor
    turn) until nothing is left to move.
    """
    for _ in range(100):
        for node in nodes:
            node.reactor.advance(0)
        if not pump.pump():
            for node in nodes:
                node.reactor.advance(0)
            if not pump.pump():
                return
    raise AssertionError("the connection never went quiet")


class TLSTests(SynchronousTestCase):
    def nodes(self, **b_kwargs):
        a = make_node(self, "a", tls=True)
        b = make_node(self, "b", tls=True, **b_kwargs)
        return a, b

    def test_ids_are_proven(self):
        """
        Two TLS nodes connect; each end's view of the other's id is the one
        the other's certificate proves, and matches its HELLO.
        """
        a, b = self.nodes()
        client, server, pump = tls_link(a, b)
        settle(pump, a, b)
        self.assertIs(a.connections[b.node_id], client)
        self.assertIs(b.connections[a.node_id], server)
        self.assertEqual(client.certificate_id, b.node_id)
        self.assertEqual(server.certificate_id, a.node_id)
        self.assertTrue(client.tls and server.tls)

    def test_first_contact_logged_once(self):
        a, b = self.nodes()
        logs = capture_logs(self)
        for _ in range(2):
            client, server, pump = tls_link(a, b)
            settle(pump, a, b)
            client.transport.loseConnection()
            settle(pump, a, b)
        lines = [line for line in logs()
                 if "first contact" in line and format_id(a.node_id) in line]
        self.assertEqual(len(lines), 1, logs())

    def test_allow_refuses_stranger_before_hello(self):
        """
        A node with an allow list refuses a node not on it as soon as the
        TLS handshake shows who it is: one line, and the stranger never
        receives our HELLO.
        """
        stranger = make_node(self, "stranger", tls=True)
        friend = make_node(self, "friend", tls=True)
        b = make_node(self, "b", tls=True, allow={friend.node_id})
        logs = capture_logs(self)
        received = []
        client, server, pump = tls_link(stranger, b)
        original = client.stringReceived
        client.stringReceived = lambda frame: (received.append(frame), original(frame))
        settle(pump, stranger, b)
        self.assertEqual(received, [])
        self.assertEqual(b.connections, {})
        self.assertEqual(b.pending, [])
        refusals = [line for line in logs() if "not in the allowed ids" in line]
        self.assertEqual(len(refusals), 1, logs())
        self.assertIn(format_id(stranger.node_id), refusals[0])
        # The friend gets in.
        client, server, pump = tls_link(friend, b)
        settle(pump, friend, b)
        self.assertIn(friend.node_id, b.connections)

    def test_empty_allow_list_admits_nobody(self):
        """
        An empty allow list fails closed: nobody is admitted (it does not
        mean "no list").
        """
        a = make_node(self, "a", tls=True)
        b = make_node(self, "b", tls=True, allow=set())
        client, server, pump = tls_link(a, b)
        settle(pump, a, b)
        self.assertEqual(b.connections, {})
        self.assertEqual(a.connections, {})

    def test_dial_to_wrong_node_aborted(self):
        """
        A dial to an address where another node is expected is aborted once
        the certificate shows who answered, and counts as a failed dial.
        """
        a, b = self.nodes()
        elsewhere = make_node(self, "elsewhere", tls=True)
        entry = a.add_bootstrap(f"{elsewhere.node_id}@127.0.0.1:{b.listen_ports[0]}")
        self.assertEqual(entry.expected_id, elsewhere.node_id)
        logs = capture_logs(self)
        client, server, pump = tls_link(a, b, entry)
        settle(pump, a, b)
        self.assertEqual(a.connections, {})
        self.assertEqual(entry.failures, 1)
        self.assertFalse(entry.dialing)
        lines = [line for line in logs() if "but" in line and "answered" in line]
        self.assertEqual(len(lines), 1, logs())
        self.assertIn(elsewhere.node_id[:12], lines[0])
        self.assertIn(b.node_id[:12], lines[0])

    def test_first_dial_pins_the_id(self):
        """
        After a dial reached node B, that address expects B: a dial there
        answered by another node is aborted.
        """
        a, b = self.nodes()
        c = make_node(self, "c", tls=True, port=b.listen_ports[0] + 1000)
        entry = a.add_bootstrap(f"127.0.0.1:{b.listen_ports[0]}")
        client, server, pump = tls_link(a, b, entry)
        settle(pump, a, b)
        self.assertEqual(entry.expected_id, b.node_id)
        client.transport.loseConnection()
        settle(pump, a, b)
        client, server, pump = tls_link(a, c, entry)
        settle(pump, a, c)
        self.assertNotIn(c.node_id, a.connections)

    def test_hello_must_match_certificate(self):
        """
        A peer whose HELLO claims an id other than its certificate's is
        dropped with one line.
        """
        a, b = self.nodes()
        impostor_id = "ab" * 32
        a.make_hello = lambda: wire.Hello((2,), impostor_id, (1,), "a")
        logs = capture_logs(self)
        client, server, pump = tls_link(a, b)
        settle(pump, a, b)
        self.assertEqual(b.connections, {})
        lines = [line for line in logs() if "HELLO claims id" in line]
        self.assertEqual(len(lines), 1, logs())

    def test_deadline_covers_tls_handshake(self):
        """
        A peer that opens TCP but never finishes the TLS handshake is
        dropped when the handshake deadline (here configured to 3 s) passes.
        """
        node = make_node(self, "b", tls=True, limits=Limits(handshake_timeout=3))
        logs = capture_logs(self)
        here = IPv4Address("TCP", "127.0.0.1", node.listen_ports[0])
        there = IPv4Address("TCP", "10.1.1.1", 5555)
        server = node.listen_factory.buildProtocol(there)
        transport = StringTransport(hostAddress=here, peerAddress=there)
        server.makeConnection(transport)
        self.assertEqual(len(node.pending), 1)
        node.reactor.advance(2.9)
        self.assertFalse(transport.disconnecting)
        node.reactor.advance(0.2)
        self.assertTrue(transport.disconnecting)
        server.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(node.pending, [])
        lines = [line for line in logs() if "10.1.1.1:5555" in line]
        self.assertEqual(len(lines), 1, logs())
        self.assertIn("no TLS handshake and HELLO within 3 seconds", lines[0])

    def test_plaintext_node_meets_tls_node(self):
        """
        A --no-tls node dialling a TLS node: the plaintext side says the
        peer speaks TLS, instead of a baffling frame-size complaint.
        """
        plain = make_node(self, "plain", tls=False)
        secure = make_node(self, "secure", tls=True)
        logs = capture_logs(self)
        port = plain.listen_ports[0]
        here = IPv4Address("TCP", "127.0.0.1", port)
        there = IPv4Address("TCP", "127.0.0.1", 9)
        server = plain.listen_factory.buildProtocol(here)
        client = secure.dial_factory.buildProtocol(there)
        pump = iosim.connect(
            server, iosim.FakeTransport(server, isServer=True, hostAddress=here, peerAddress=there),
            client,
            iosim.FakeTransport(client, isServer=False, hostAddress=there, peerAddress=here),
            greet=False,
        )
        settle(pump, plain, secure)
        self.assertEqual(plain.connections, {})
        self.assertEqual(secure.connections, {})
        self.assertTrue(any("speaks TLS" in line for line in logs()), logs())
