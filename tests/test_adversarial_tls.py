"""
Adversarial suite, family "Control surfaces" of threats.md, its TLS half:
"Peer authentication and encryption, when enabled, fail closed."

Each attack is made on a TLS node (L{tests.adversary.Target}) and followed
by the invariant check: a client with no certificate, a certificate not on
the allow list, a HELLO claiming another id than the certificate proves,
plaintext and garbage on the TLS port, a corrupted TLS record after the
handshake, a dial that finds another node than the one it expects -- and,
as positive controls, an id listed in a --trust file is admitted.

The last cases run real C{twistd -n p2pshare} processes (the machinery of
L{tests.test_twistd}): the certificate C{openssl s_client} sees is the one
whose SHA-256 is the id the node logged at start-up, and a node started
with --allow admits the listed node and refuses the other.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
from typing import Callable, List, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from p2ptwisted import wire
from p2ptwisted.identity import format_id, load_or_create_identity

# The module, not its classes: trial would collect and run them again here.
from . import test_twistd as base
from .adversary import REFUSAL, WAIT, Attacker, Target

#: A 64-hex-digit id that no node here has.
NOBODY = "ab" * 32

OPENSSL = shutil.which("openssl")


@implementer(IOpenSSLClientConnectionCreator)
class NoCertificate:
    """
    A TLS client context with no certificate at all (and that accepts any
    server certificate): what a stranger without an identity offers.
    """

    def __init__(self):
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self._context, None)


@implementer(IOpenSSLClientConnectionCreator)
class OddCertificate:
    """
    A client that presents a certificate OpenSSL accepts but stricter
    parsers (cryptography's) refuse: its notBefore time is not digits.
    """

    def __init__(self):
        import datetime
        import hashlib

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        from OpenSSL import crypto

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
        now = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
        der = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(7)
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=9))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
        before = b"\x17\x0d" + now.strftime("%y%m%d%H%M%SZ").encode()
        assert der.count(before) == 1
        der = der.replace(before, b"\x17\x0d99XX01000000Z")
        self.certificate = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
        try:
            _ = x509.load_der_x509_certificate(der).not_valid_before_utc
        except ValueError:
            pass
        else:
            raise AssertionError("cryptography accepted the odd certificate")
        self.node_id = hashlib.sha256(der).hexdigest()
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.use_certificate(self.certificate)
        context.use_privatekey(key)
        context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol):
        return SSL.Connection(self._context, None)


async def connect(testcase, target: Target, creator=None) -> Attacker:
    """
    A raw connection to C{target}, behind TLS made by C{creator} if given;
    does not wait for any handshake.  Aborted at clean-up if still open.
    """
    attacker = Attacker()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", target.port)
    if creator is not None:
        endpoint = wrapClientTLS(creator, endpoint)
    await connectProtocol(endpoint, attacker)
    # The handshake may fail, as these cases intend: nobody must wait on it.
    attacker.handshake.addErrback(lambda failure: None)
    testcase.addCleanup(
        lambda: attacker.transport.connected and attacker.transport.abortConnection()
    )
    return attacker


def logged(pattern: str, timeout: float = WAIT) -> Deferred:
    """
    Fires with the first log line (from now on) that matches C{pattern}.
    """
    regex = re.compile(pattern)
    d = Deferred()

    def observe(event):
        line = formatEvent(event)
        if not d.called and regex.search(line):
            globalLogPublisher.removeObserver(observe)
            d.callback(line)

    globalLogPublisher.addObserver(observe)

    def timed_out(result, timeout):
        globalLogPublisher.removeObserver(observe)
        raise AssertionError(f"no log line matching {pattern!r} within {timeout}s")

    return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


def next_lost(node) -> Deferred:
    """
    Fires once C{node} has been told that a connection (open or still
    opening) has closed.
    """
    d = Deferred()
    original = node.connection_lost

    def connection_lost(proto, reason):
        original(proto, reason)
        del node.connection_lost
        d.callback(proto)

    node.connection_lost = connection_lost
    return d.addTimeout(WAIT, reactor)


def frames_arrived(attacker: Attacker, count: int = 1) -> Deferred:
    """
    Fires with the attacker's decoded frames once at least C{count} have
    arrived.
    """
    d = Deferred()
    if len(attacker.frames()) >= count:
        d.callback(attacker.frames())
        return d
    original = attacker.dataReceived

    def dataReceived(data):
        original(data)
        if not d.called and len(attacker.frames()) >= count:
            del attacker.dataReceived
            d.callback(attacker.frames())

    attacker.dataReceived = dataReceived
    return d.addTimeout(WAIT, reactor)


def prepare_honest(testcase) -> Tuple[str, Callable[[], None]]:
    """
    Make, ahead of time, the identity the harness's honest node will load
    (L{Target.honest_fetch} puts its state under the next C{mktemp()}), so
    an allow list can name it; return its id.  Call C{arm()} on the result
    just before C{target.check}.
    """
    base_dir = os.path.abspath(testcase.mktemp())
    identity = load_or_create_identity(os.path.join(base_dir, "state"))

    def arm():
        def once():
            del testcase.mktemp
            return base_dir

        testcase.mktemp = once

    return identity.node_id, arm


def about(target: Target, address: str, mark: int) -> List[str]:
    """
    The refusal or drop lines logged since C{mark} that name C{address}.
    """
    return [line for line in target.lines_since(mark)
            if address in line and REFUSAL.search(line)]


class TLSFailureTests(TestCase):
    """
    Peer authentication fails closed: every one of these connections is
    refused with one line, and the node goes on serving.
    """

    timeout = 60

    async def test_client_without_certificate(self):
        """
        A TLS client that presents no certificate never gets past the
        handshake: the node drops it with one "TLS with ... failed" line,
        and sends it no HELLO.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await connect(self, target, NoCertificate())
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual(attacker.frames(), [])
        await target.check(self, before, attacker, lines=1,
                           pattern=r"TLS with 127\.0\.0\.1:\d+ failed: .*certificate")

    async def test_certificate_strict_parsers_refuse(self):
        """
        A certificate OpenSSL accepts but a strict parser refuses (a
        notBefore that is not digits) is just a certificate to us: its id
        is the hash of its bytes, the peer may say HELLO with that id, and
        nothing logs a traceback.
        """
        target = await Target.start(self)
        before = target.baseline()
        odd = OddCertificate()
        attacker = await connect(self, target, odd)
        await attacker.handshake.addTimeout(WAIT, reactor)
        attacker.hello(node_id=odd.node_id)
        await target.node.wait_for(lambda n: odd.node_id in n.connections).addTimeout(
            WAIT, reactor)
        attacker.transport.abortConnection()
        await target.check(self, before, attacker, lines=None)

    async def test_certificate_not_allowed(self):
        """
        With --allow naming another node, a client whose certificate proves
        an id not on the list is refused right after the TLS handshake,
        before HELLO, with one line naming its id; it receives not one byte
        of the protocol (no HELLO).
        """
        honest_id, arm = prepare_honest(self)
        target = await Target.start(self, args=["--allow", honest_id])
        before = target.baseline()
        attacker = await target.attack()
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual(bytes(attacker.received), b"", "the node said something to a stranger")
        self.assertNotIn(attacker.identity.node_id, target.node.connections)
        arm()
        await target.check(
            self, before, attacker, lines=1,
            pattern=rf"dropping {re.escape(attacker.address)}: node"
                    rf" {format_id(attacker.identity.node_id)} is not in the allowed ids",
        )

    async def test_hello_claims_other_id(self):
        """
        A client that proves id X with its certificate but says HELLO with
        id Y (here: the target's own id, then a stranger's) is dropped with
        one line naming both; it never becomes a connection.
        """
        target = await Target.start(self)
        for claimed in (target.node.node_id, NOBODY):
            before = target.baseline()
            attacker = await target.attack()
            attacker.hello(node_id=claimed)
            await attacker.lost.addTimeout(WAIT, reactor)
            self.assertEqual(target.node.connections, {})
            proven = attacker.identity.node_id
            await target.check(
                self, before, attacker, lines=1,
                pattern=rf"HELLO claims id {claimed[:12]} but the TLS certificate proves"
                        rf" {proven[:12]}",
            )

    async def test_plaintext_hello_to_tls_port(self):
        """
        A plaintext HELLO frame sent to a TLS node is not a TLS handshake:
        one "TLS with ... failed" line, which hints at --no-tls.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await connect(self, target)
        attacker.hello(node_id=NOBODY)
        await attacker.lost.addTimeout(WAIT, reactor)
        self.assertEqual(bytes(attacker.received), b"")
        await target.check(self, before, attacker, lines=1,
                           pattern=r"TLS with 127\.0\.0\.1:\d+ failed: .*--no-tls")

    async def test_random_garbage_to_tls_port(self):
        """
        4 KiB of random bytes to a TLS port: the handshake fails, one line,
        the connection is closed.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await connect(self, target)
        attacker.send(random.Random(0xBAD7).randbytes(4096))
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=1,
                           pattern=r"TLS with 127\.0\.0\.1:\d+ failed: ")

    async def test_corrupted_record_before_hello(self):
        """
        A client completes the TLS handshake, then writes a TLS application
        data record whose ciphertext is garbage straight onto the TCP
        socket: decryption fails, and the node drops it with one line.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        body = random.Random(0x7EC0).randbytes(64)
        attacker.transport.transport.write(b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body)
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=1,
                           pattern=r"TLS with 127\.0\.0\.1:\d+ failed: ")

    async def test_corrupted_record_after_hello(self):
        """
        The same corrupted record from a peer that has said a valid HELLO
        and been admitted: the connection ends with one line naming the
        peer and the TLS error, no traceback.
        """
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        attacker.hello()
        await target.node.wait_for(
            lambda n: attacker.identity.node_id in n.connections).addTimeout(WAIT, reactor)
        mark = target.mark()
        body = random.Random(0x7EC1).randbytes(64)
        attacker.transport.transport.write(b"\x17\x03\x03" + len(body).to_bytes(2, "big") + body)
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=None)
        lines = [line for line in target.lines_since(mark) if attacker.address in line]
        self.assertEqual(len(lines), 1, "\n".join(target.lines_since(mark)))
        self.assertRegex(lines[0], rf"mallory \({attacker.identity.node_id[:12]}\) at"
                                   rf" {re.escape(attacker.address)} left: .*"
                                   r"(decrypt|bad record mac|SSL)")

    async def test_dial_finds_wrong_id(self):
        """
        A node told to dial C{WRONGID@127.0.0.1:PORT} reaches a node with
        another id there: it aborts that connection right after the TLS
        handshake with one line naming both ids, and neither side counts
        it as a connection.
        """
        target = await Target.start(self)
        dialler = await Target.start(self)
        before = target.baseline()
        where = f"127.0.0.1:{target.port}"
        refused = logged(rf"dropping {re.escape(where)}: expected node")
        closed = next_lost(dialler.node)
        target_closed = next_lost(target.node)
        mark = dialler.mark()
        dialler.node.add_bootstrap(f"{NOBODY}@{where}")
        dialler.node.dial_due()
        line = await refused
        self.assertIn(NOBODY[:12], line)
        self.assertIn(target.node.node_id[:12], line)
        self.assertRegex(line, rf"expected node {NOBODY[:12]} at {re.escape(where)} but"
                               rf" {target.node.node_id[:12]} answered")
        await closed
        await target_closed
        self.assertEqual(dialler.node.pending, [])
        self.assertEqual(dialler.node.connections, {})
        self.assertEqual(about(dialler, where, mark), [line])
        self.assertFalse([line for line in dialler.lines_since(mark) if "connected to" in line],
                         "\n".join(dialler.lines_since(mark)))
        # The dialled node is untouched: no connection, no traceback, serving.
        await target.check(self, before, None, lines=None)
        self.assertNotIn(dialler.node.node_id, target.node.connections)

    async def test_trusted_id_admitted(self):
        """
        Positive control: with --trust FILE listing the attacker's id (with
        a label and a comment, as the file format allows), its connection
        is admitted -- it receives the node's HELLO and becomes a peer --
        while the allow list stays closed to others.
        """
        honest_id, arm = prepare_honest(self)
        identity_dir = os.path.abspath(self.mktemp())
        mine = load_or_create_identity(identity_dir)
        trust = os.path.abspath(self.mktemp())
        with open(trust, "w") as f:
            f.write(f"# who may join\n{format_id(mine.node_id)} mallory  # the attacker\n\n"
                    f"{honest_id} honest\n")
        target = await Target.start(self, args=["--trust", trust])
        before = target.baseline()
        attacker = await target.attack(identity_dir=identity_dir)
        self.assertEqual(attacker.identity.node_id, mine.node_id)
        attacker.hello()
        await target.node.wait_for(
            lambda n: mine.node_id in n.connections).addTimeout(WAIT, reactor)
        hello = (await frames_arrived(attacker))[0]
        self.assertIsInstance(hello, wire.Hello)
        self.assertEqual(hello.node_id, target.node.node_id)
        attacker.transport.loseConnection()
        await attacker.lost.addTimeout(WAIT, reactor)
        arm()
        await target.check(self, before, attacker, lines=0)


class OpenSSLProcess(ProcessProtocol):
    """
    A child (openssl) with its stdin closed at once; collects its output.
    """

    def __init__(self):
        self.out = b""
        self.err = b""
        self.reason = None
        self.ended: Deferred = Deferred()

    def connectionMade(self):
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.reason = reason.value
        self.ended.callback(reason.value)

    def stop(self):
        if self.reason is None:
            try:
                self.transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            return self.ended


def handshakes(port: int, state_dir: str, version) -> List[Tuple[bool, bool]]:
    """
    Two TLS connections to 127.0.0.1:C{port} with the stdlib C{ssl} client
    (a client that caches sessions, as most do), the second offering the
    session of the first.  Each reads the node's HELLO (so any session
    ticket, which TLS 1.3 sends after the handshake, has come).  Blocking:
    run it in a thread.

    @return: for each connection, (whether it resumed a session, whether
        the server gave it a ticket).
    """
    import socket
    import ssl

    load_or_create_identity(state_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = version
    context.load_cert_chain(os.path.join(state_dir, "node.crt"),
                            os.path.join(state_dir, "node.key"))
    found, session = [], None
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
            with context.wrap_socket(raw, session=session) as tls:
                tls.recv(4)  # the length of the node's HELLO
                session = tls.session
                found.append((tls.session_reused, bool(session and session.has_ticket)))
                # A clean TLS close: OpenSSL forgets a session whose
                # connection ended without one, which would make the
                # resumption fail for a reason other than the node's.
                with contextlib.suppress(OSError):
                    tls.unwrap()
    return found


class SessionTests(TestCase):
    timeout = 60

    async def test_no_session_tickets_and_no_resumption(self):
        """
        The node resumes no session, over TLS 1.3 or 1.2, and gives TLS 1.2
        clients no ticket (as tls.py promises): a resumed session would
        skip the certificate exchange, and with it the proof of the peer's
        id.  (Issue 15: a planted bug allowing tickets and the session cache
        survived the whole suite.)  Over TLS 1.3 OpenSSL still sends a
        stateful ticket, which names a session the server never kept.
        """
        import ssl

        from twisted.internet.threads import deferToThread

        target = await Target.start(self)
        found = await deferToThread(handshakes, target.port, self.mktemp(),
                                    ssl.TLSVersion.TLSv1_3)
        self.assertEqual([resumed for resumed, _ in found], [False, False])
        found = await deferToThread(handshakes, target.port, self.mktemp(),
                                    ssl.TLSVersion.TLSv1_2)
        self.assertEqual(found, [(False, False), (False, False)])


class TwistdTLSTests(TestCase):
    """
    Real C{twistd -n p2pshare} processes on 127.0.0.1.
    """

    timeout = 60

    start_node = base.TwistdTests.start_node
    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    connected_to = base.TwistdTests.connected_to

    async def test_s_client_sees_node_certificate(self):
        """
        DONE-WHEN: C{openssl s_client -showcerts} against a node shows one
        certificate, whose SHA-256 fingerprint is the node id the node
        logged at start-up; s_client has no certificate of its own, so the
        node refuses it with one "TLS with ... failed" line and keeps
        running.
        """
        node = await self.started(self.start_node("A"))
        mark = node.mark()
        child = OpenSSLProcess()
        argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{node.port}", "-showcerts"]
        reactor.spawnProcess(child, OPENSSL, argv, env=dict(os.environ))
        self.addCleanup(child.stop)
        await child.ended.addTimeout(base.EVENT_TIMEOUT, reactor)
        text = child.out.decode("latin-1")
        pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text,
                          re.S)
        self.assertEqual(len(pems), 1, text + child.err.decode("latin-1"))
        certificate = x509.load_pem_x509_certificate(pems[0].encode())
        self.assertEqual(certificate.fingerprint(hashes.SHA256()).hex(), node.node_id)
        # The node says why it let s_client go: one line, no traceback.
        await node.wait_for(r"TLS with 127\.0\.0\.1:\d+ failed: ", mark)
        self.assertEqual(len(node.matching(r"TLS with 127\.0\.0\.1:\d+ failed", mark)), 1,
                         node.output(mark))
        self.assertEqual(node.matching(r"Traceback|Unhandled", 0), [], node.output())
        self.assertTrue(node.running)

    if OPENSSL is None:
        test_s_client_sees_node_certificate.skip = "needs the openssl command"

    async def test_allow_admits_one_refuses_other(self):
        """
        A and B (default options, TLS) connect.  C, started with --allow
        naming only A and told to dial both, connects to A and refuses B:
        each connection between B and C ends with exactly one line at C,
        naming B's id, and B and C never become peers.
        """
        a = await self.started(self.start_node("A"))
        b = await self.started(self.start_node("B", peers=[a.port]))
        await self.connected_to(b, a)
        await self.connected_to(a, b)
        c = await self.started(self.start_node("C", peers=[a.port, b.port],
                                               options=["--allow", a.node_id]))
        await self.connected_to(c, a)
        refused = rf"dropping 127\.0\.0\.1:(?P<port>\d+): node {format_id(b.node_id)} is not" \
                  r" in the allowed ids$"
        first = await c.wait_for(refused)
        self.assertEqual(int(first.group("port")), b.port, c.output())
        # Every refused connection has exactly one line (B may also dial C,
        # having heard of it from A: that is a connection of its own).
        drops = c.matching(r"dropping (\S+): (.*)$")
        by_peer = {}
        for m in drops:
            by_peer.setdefault(m.group(1), []).append(m.group(2))
        for reasons in by_peer.values():
            self.assertEqual(len(reasons), 1, c.output())
            self.assertIn(format_id(b.node_id), reasons[0], c.output())
        self.assertEqual(c.matching(rf"connected to B \({b.node_id[:12]}\)"), [], c.output())
        self.assertEqual(b.matching(rf"connected to C \({c.node_id[:12]}\)"), [], b.output())
        for node in (a, b, c):
            self.assertEqual(node.matching(r"Traceback|Unhandled"), [], node.output())
            self.assertTrue(node.running)
