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
        for _ in range(100):
            self.assertIsNone(self.book.learn(A, now=0.1))
        self.assertEqual(self.book.due(0.5, set()), [])
        self.assertEqual(self.book.due(1.0, set()), [entry])

    def test_backoff_grows_to_ceiling(self):
        entry = self.book.learn(A, now=0.0)
        delays = []
        now = 0.0
        for _ in range(10):
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

    def test_handshake_resets_backoff(self):
        """
        Issue 11 point 4: a completed handshake resets the address's
        backoff, and when that connection ends, however short it was, the
        address is redialled after the first step (INITIAL_DELAY).
        """
        entry = self.book.learn(A, now=0.0)
        for _ in range(6):
            self.book.dial_started(entry)
            self.book.dial_failed(entry, now=0.0)
        self.book.dial_started(entry)
        self.book.connected(entry, "n1")
        self.assertEqual(entry.failures, 0)
        self.book.disconnected(entry, now=100.0)
        self.assertEqual(entry.next_attempt, 100.0 + peers.INITIAL_DELAY)

    def test_short_connections_redialled_promptly_every_time(self):
        """
        A peer restarted ten times, or a link that drops every few seconds:
        each time, the address is due again INITIAL_DELAY after the drop
        (jitter at most adds a quarter), not after a growing backoff.
        """
        book = PeerBook(jitter=lambda: 1.0)
        entry = book.learn(A, now=0.0)
        now = 0.0
        for _ in range(10):
            book.dial_started(entry)
            book.connected(entry, "n1")
            now += 2.0
            book.disconnected(entry, now)
            self.assertEqual(entry.next_attempt - now, peers.INITIAL_DELAY * 1.25)
            now = entry.next_attempt
        # A dial that then fails backs off from the first step again.
        book.dial_started(entry)
        book.dial_failed(entry, now)
        self.assertEqual(entry.next_attempt - now, peers.INITIAL_DELAY * 1.25)

    def test_peer_we_drop_waits_longer_each_time(self):
        """
        A connection this node ended (a peer that sent bad copies or does
        not read) is not redialled a second later: each such end in a row
        doubles the wait, up to the ceiling; a connection the peer ended
        starts over at the first step.
        """
        book = PeerBook(jitter=lambda: 0.0)
        entry = book.learn(A, now=0.0)
        waits = []
        for _ in range(8):
            book.dial_started(entry)
            book.connected(entry, "n1")
            book.disconnected(entry, 100.0, dropped=True)
            waits.append(entry.next_attempt - 100.0)
        self.assertEqual(waits, [2.0, 4.0, 8.0, 16.0, 32.0, peers.MAX_DELAY, peers.MAX_DELAY,
                                 peers.MAX_DELAY])
        book.dial_started(entry)
        book.connected(entry, "n1")
        book.disconnected(entry, 100.0)
        self.assertEqual(entry.next_attempt - 100.0, peers.INITIAL_DELAY)

    def test_unanswered_learned_address_forgotten(self):
        """
        Issue 11 point 7: a learned address that never answered is
        forgotten after MAX_UNANSWERED failed dials, and gossip repeating
        it is ignored for FORGET_FOR seconds -- unless a node there
        completes a handshake with us.
        """
        entry = self.book.learn(A, now=0.0)
        now = 0.0
        for n in range(peers.MAX_UNANSWERED):
            self.assertEqual(self.book.due(now, set()), [entry])
            self.book.dial_started(entry)
            forgotten = self.book.dial_failed(entry, now)
            self.assertEqual(forgotten, n == peers.MAX_UNANSWERED - 1)
            now = entry.next_attempt
        self.assertIsNone(self.book.get(str(A)))
        self.assertEqual(self.book.due(1e6, set()), [])
        self.assertIsNone(self.book.learn(A, now=now))
        self.assertIsNone(self.book.get(str(A)))
        again = self.book.learn(A, now=now + peers.FORGET_FOR)
        self.assertIsNotNone(again)
        # Seen in a handshake, it is back at once.
        self.book.learn(B, now=0.0)
        b = self.book.get(str(B))
        for _ in range(peers.MAX_UNANSWERED):
            self.book.dial_started(b)
            self.book.dial_failed(b, 0.0)
        self.assertIsNone(self.book.get(str(B)))
        self.assertIsNotNone(self.book.learn(B, now=1.0, node_id="n2"))

    def test_answered_and_bootstrap_addresses_kept(self):
        """
        An address where a handshake once completed, one the operator
        gave, or one a node announces on the LAN keeps backing off but is
        never forgotten.
        """
        heard = self.book.learn(PeerAddress("10.0.0.3", 1), now=0.0)
        heard.discovered = True
        for _ in range(3 * peers.MAX_UNANSWERED):
            self.book.dial_started(heard)
            self.assertFalse(self.book.dial_failed(heard, 2.0))
        self.assertIs(self.book.get(heard.key), heard)
        answered = self.book.learn(A, now=0.0)
        self.book.dial_started(answered)
        self.book.connected(answered, "n1")
        self.book.disconnected(answered, 1.0)
        boot = self.book.add_bootstrap(str(B), address=B)
        for _ in range(3 * peers.MAX_UNANSWERED):
            for entry in (answered, boot):
                self.book.dial_started(entry)
                self.assertFalse(self.book.dial_failed(entry, 2.0))
        self.assertIs(self.book.get(str(A)), answered)
        self.assertIs(self.book.get(str(B)), boot)

    def test_claimed_id_keeps_connected_node_from_being_dialled(self):
        """
        Issue 11 point 5: gossip says which node is at an address; while we
        are connected to that node, the address is not dialled.  A claim
        never overrides the id a handshake there proved.
        """
        entry = self.book.learn(A, now=0.0, claimed_id="n1")
        self.assertEqual(self.book.due(0.0, {"n1"}), [])
        self.assertEqual(self.book.due(0.0, set()), [entry])
        self.book.dial_started(entry)
        self.book.connected(entry, "n2")
        self.book.learn(A, now=1.0, claimed_id="n3")
        self.assertEqual(self.book.due(10.0, {"n3"}), [entry])

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
