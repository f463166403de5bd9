"""
Tests for L{p2ptwisted.peers}: the dialling policy, without a reactor.
"""

from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import peers
from p2ptwisted.peers import PeerBook, parse_dial_target
from p2ptwisted.wire import PeerAddress

A = PeerAddress("10.0.0.1", 12345)
B = PeerAddress("10.0.0.2", 12345)


class BookTests(SynchronousTestCase):
    def setUp(self):
        self.book = PeerBook(jitter=lambda: 0.0)

    def test_learned_address_is_due_at_once(self):
        entry = self.book.learn(A, now=5.0)
        self.assertEqual(self.book.due(5.0, set()), [entry])

    def test_relearning_does_not_reset_backoff(self):
        """
        However many peers repeat an address, it is dialled at most once per
        backoff interval: re-learning it changes nothing.
        """
        entry = self.book.learn(A, now=0.0)
        self.book.dial_started(entry)
        self.book.dial_failed(entry, now=0.0)
        for i in range(100):
            self.assertIsNone(self.book.learn(A, now=0.1))
        self.assertEqual(self.book.due(0.5, set()), [])
        self.assertEqual(self.book.due(1.0, set()), [entry])

    def test_backoff_grows_to_ceiling(self):
        entry = self.book.learn(A, now=0.0)
        delays = []
        now = 0.0
        for i in range(10):
            self.book.dial_started(entry)
            self.book.dial_failed(entry, now)
            delays.append(entry.next_attempt - now)
            now = entry.next_attempt
        self.assertEqual(delays[:4], [1.0, 2.0, 4.0, 8.0])
        self.assertEqual(delays[-1], peers.MAX_DELAY)

    def test_jitter_bounded(self):
        book = PeerBook(jitter=lambda: 1.0)
        self.assertEqual(book.delay(1), 1.25)

    def test_dialing_entry_not_due(self):
        entry = self.book.learn(A, now=0.0)
        self.book.dial_started(entry)
        self.assertEqual(self.book.due(10.0, set()), [])

    def test_connected_node_not_redialled(self):
        entry = self.book.learn(A, now=0.0)
        self.book.dial_started(entry)
        self.book.connected(entry, "n1")
        self.assertEqual(self.book.due(10.0, {"n1"}), [])
        self.assertEqual(self.book.due(10.0, set()), [entry])

    def test_self_never_due(self):
        entry = self.book.learn(A, now=0.0)
        self.book.mark_self(entry)
        self.assertEqual(self.book.due(1e9, set()), [])
        # Learning it again does not bring it back.
        self.assertIsNone(self.book.learn(A, now=1.0, node_id="x"))
        self.assertTrue(entry.is_self)
        self.assertEqual(self.book.due(1e9, set()), [])

    def test_bootstrap_first(self):
        learned = self.book.learn(A, now=0.0)
        boot = self.book.add_bootstrap(str(B), address=B)
        self.assertEqual(self.book.due(0.0, set()), [boot, learned])

    def test_healthy_connection_resets_backoff(self):
        entry = self.book.learn(A, now=0.0)
        entry.failures = 6
        self.book.disconnected(entry, now=100.0, lasted=peers.HEALTHY_AFTER)
        self.assertEqual(entry.next_attempt, 101.0)

    def test_flapping_connection_keeps_backing_off(self):
        entry = self.book.learn(A, now=0.0)
        entry.failures = 3
        self.book.disconnected(entry, now=100.0, lasted=0.5)
        self.assertEqual(entry.next_attempt, 108.0)

    def test_limit(self):
        """
        A full book keeps its healthy entries and drops new learned ones, but
        evicts a failing learned entry to make room; bootstrap entries
        always fit.
        """
        book = PeerBook(limit=3, jitter=lambda: 0.0)
        entries = [book.learn(PeerAddress(f"10.0.1.{i}", 1), now=0.0) for i in range(3)]
        self.assertIsNone(book.learn(PeerAddress("10.0.2.1", 1), now=0.0))
        self.assertEqual(len(book), 3)
        book.dial_started(entries[1])
        book.dial_failed(entries[1], now=0.0)
        new = book.learn(PeerAddress("10.0.2.1", 1), now=0.0)
        self.assertIsNotNone(new)
        self.assertIsNone(book.get(entries[1].key))
        self.assertEqual(len(book), 3)
        book.add_bootstrap("10.0.3.1:1", address=PeerAddress("10.0.3.1", 1))
        self.assertEqual(len(book), 4)


class DialTargetTests(SynchronousTestCase):
    def test_host_port(self):
        self.assertEqual(
            parse_dial_target("10.0.0.1:12345"),
            ("10.0.0.1:12345", PeerAddress("10.0.0.1", 12345), None),
        )
        self.assertEqual(
            parse_dial_target("peer.lan:12345"),
            ("peer.lan:12345", PeerAddress("peer.lan", 12345), None),
        )
        self.assertEqual(
            parse_dial_target("[::1]:12345"),
            ("[::1]:12345", PeerAddress("::1", 12345), None),
        )

    def test_endpoint_string(self):
        for text in ["tcp:host=10.0.0.1:port=12345", "tcp:10.0.0.1:12345", "unix:/tmp/x"]:
            self.assertEqual(parse_dial_target(text), (text, None, text))
