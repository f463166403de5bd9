# -*- test-case-name: tests.test_twistd -*-
"""
End-to-end tests: real C{twistd -n p2pshare} processes on 127.0.0.1.

Every test starts its nodes with C{reactor.spawnProcess} and follows them
through their log lines: a L{NodeProcess} collects each child's output and
hands out Deferreds that fire when a line matching a pattern appears.
Nothing here sleeps; every wait is bounded by a timeout, and every process
a test starts is stopped (SIGTERM, then SIGKILL) and reaped in its clean-up.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import sys
from typing import Dict, List, Optional, Pattern, Sequence, Union

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
)
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

#: Seconds a node has to start and report its listening port.
START_TIMEOUT = 15.0

#: Seconds for any other awaited event (a handshake, a drop, a log line).
EVENT_TIMEOUT = 10.0

#: Seconds a node has to exit after a signal, or on its own.
EXIT_TIMEOUT = 10.0

#: The largest frame a node accepts (p2ptwisted.wire.MAX_FRAME); duplicated
#: on purpose so this black-box test does not import the code it tests.
MAX_FRAME = 256 * 1024

LOCALHOST = "127.0.0.1"

# Log lines, as written by p2ptwisted (see node.py, listener.py, protocol.py
# and tap.py).
STARTING = re.compile(r"node (?P<name>.*) \((?P<id>[0-9a-f]{64})\) starting;")
LISTENING = re.compile(r"listening for peers on (?P<host>[^ :]+):(?P<port>\d+)$")
CONNECTED = (
    r"connected to {name} \((?P<id>{id})\) at (?P<host>[^ ]+)"
    r" \((?P<direction>inbound|outbound)\)$"
)
# A connection that ended: "X left: why", or, when this node ended it, the
# one line that said so ("dropping X: why", "closing X: why").
LEFT = r"(?:{name} \({id}\) at [^ ]+ left|(?:dropping|closing) {name} \({id}\) at [^ ]+): "
DROPPING = re.compile(r"dropping (?P<peer>\S+): (?P<reason>.*)$")


def twistd_command() -> List[str]:
    """
    The command that runs twistd with the Python running these tests.

    The console script next to C{sys.executable} is run by that very
    interpreter rather than through its C{#!} line.  C{python -m
    twisted.scripts.twistd} is no fallback: that module has no C{__main__}
    block and exits 0 without doing anything, so call its C{run} instead.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago: bind port 0, read
    the port the kernel chose, and release it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


class WaitTimeout(unittest.FailTest):
    """
    An awaited event did not happen in time.
    """


class NodeExited(unittest.FailTest):
    """
    A node exited while a test was still waiting for one of its log lines.
    """


class NodeProcess(ProcessProtocol):
    """
    One C{twistd -n p2pshare} child: its output, line by line, and
    Deferreds for the lines and the exit a test waits for.

    @ivar share: the node's --share directory, which holds its identity.
    @ivar lines: every complete line the child wrote (stdout and stderr).
    @ivar node_id: the node's id, from its "starting" line.
    @ivar port: the port it listens on, from its "listening" line.
    @ivar reason: the exception C{processEnded} reported, once it exited.
    """

    def __init__(self, name: str, argv: Sequence[str], share: str):
        self.name = name
        self.argv = list(argv)
        self.share = share
        self.lines: List[str] = []
        self.node_id: Optional[str] = None
        self.port: Optional[int] = None
        self.reason: Optional[BaseException] = None
        self._partial: Dict[int, bytes] = {}
        self._waiters: list = []
        self._exit_waiters: List[Deferred] = []

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name} port={self.port}>"

    # -- ProcessProtocol -----------------------------------------------------

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *complete, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for raw in complete:
            self._line_received(raw)

    def processEnded(self, reason: Failure) -> None:
        partial, self._partial = self._partial, {}
        for rest in partial.values():
            if rest:
                self._line_received(rest)
        self.reason = reason.value
        waiters, self._waiters = self._waiters, []
        for _, pattern, d in waiters:
            d.errback(NodeExited(
                f"node {self.name} exited ({self.reason}) before logging a line"
                f" matching {pattern.pattern!r}\n{self.output()}"
            ))
        exit_waiters, self._exit_waiters = self._exit_waiters, []
        for d in exit_waiters:
            d.callback(self.reason)

    def _line_received(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.lines.append(line)
        index = len(self.lines) - 1
        for waiter in list(self._waiters):
            since, pattern, d = waiter
            if index < since:
                continue
            match = pattern.search(line)
            if match is not None:
                self._waiters.remove(waiter)
                d.callback(match)

    # -- for tests -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.reason is None

    @property
    def exit_code(self) -> Optional[int]:
        return getattr(self.reason, "exitCode", None)

    def mark(self) -> int:
        """
        The index of the next line: pass it as C{since} to wait only for
        lines logged from now on.
        """
        return len(self.lines)

    def output(self, since: int = 0) -> str:
        return "\n".join(f"  {self.name}| {line}" for line in self.lines[since:])

    def matching(self, pattern: Union[str, Pattern], since: int = 0) -> List[re.Match]:
        """
        The matches of C{pattern} in the lines logged since C{since}.
        """
        pattern = re.compile(pattern)
        found = (pattern.search(line) for line in self.lines[since:])
        return [m for m in found if m is not None]

    def wait_for(self, pattern: Union[str, Pattern], since: int = 0,
                 timeout: float = EVENT_TIMEOUT) -> Deferred:
        """
        A Deferred that fires with the match of the first line at index
        C{since} or later that matches C{pattern}, failing with
        L{WaitTimeout} after C{timeout} seconds and with L{NodeExited} if
        the node exits first.
        """
        pattern = re.compile(pattern)
        for line in self.lines[since:]:
            match = pattern.search(line)
            if match is not None:
                return succeed(match)
        if not self.running:
            return fail(NodeExited(
                f"node {self.name} has exited ({self.reason}); no line matches"
                f" {pattern.pattern!r}\n{self.output()}"
            ))

        def cancel(d: Deferred) -> None:
            self._waiters[:] = [w for w in self._waiters if w[2] is not d]

        d = Deferred(cancel)
        self._waiters.append((since, pattern, d))

        def timed_out(result, timeout):
            raise WaitTimeout(
                f"node {self.name} logged no line matching {pattern.pattern!r}"
                f" within {timeout:g}s\n{self.output()}"
            )

        return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> Deferred:
        """
        A Deferred that fires with the exception C{processEnded} reported
        (L{ProcessDone} or L{ProcessTerminated}) once the node has exited and
        its pipes are closed, failing with L{WaitTimeout} after C{timeout}.
        """
        if not self.running:
            return succeed(self.reason)

        def cancel(d: Deferred) -> None:
            if d in self._exit_waiters:
                self._exit_waiters.remove(d)

        d = Deferred(cancel)
        self._exit_waiters.append(d)

        def timed_out(result, timeout):
            raise WaitTimeout(
                f"node {self.name} did not exit within {timeout:g}s\n{self.output()}"
            )

        return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)

    def send_signal(self, name: str) -> bool:
        """
        Send signal C{name} to this child (and only it); C{False} if it has
        already exited.
        """
        if not self.running:
            return False
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            return False
        return True


class RawClient(Protocol):
    """
    A plain TCP client: writes C{payload} once connected, collects what it
    receives, and fires C{lost} with the reason when the connection closes.
    """

    def __init__(self, payload: bytes):
        self.payload = payload
        self.received = b""
        self.lost: Deferred = Deferred()
        self.closed = False

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.closed = True
        self.lost.callback(reason.value)


class TwistdTests(unittest.TestCase):
    """
    Real nodes, run by twistd, talking over 127.0.0.1.
    """

    timeout = 60

    def start_node(self, name: str, port: Union[int, str] = 0,
                   peers: Sequence[Union[int, str]] = (),
                   share: Optional[str] = None,
                   options: Sequence[str] = (),
                   discover: bool = False,
                   web: Optional[str] = "tcp:0:interface=127.0.0.1") -> NodeProcess:
        """
        Spawn C{twistd -n p2pshare --name NAME} listening on 127.0.0.1:PORT,
        dialling C{peers} (ports on 127.0.0.1, or host:port text), with any
        further p2pshare C{options}; LAN discovery is off unless C{discover}.

        The node is stopped and reaped when the test ends.
        """
        if share is None:
            share = os.path.abspath(self.mktemp())
        rundir = os.path.abspath(self.mktemp())
        os.makedirs(rundir)
        args = twistd_command() + [
            "-n", "--pidfile=", "--logfile=-",
            "p2pshare",
            "--port", f"tcp:{port}:interface={LOCALHOST}",
            "--share", share,
            "--name", name,
        ]
        for peer in peers:
            args += ["--peer", f"{LOCALHOST}:{peer}" if isinstance(peer, int) else peer]
        if not discover:
            # Tests run side by side on one machine: nodes must not find
            # other tests' nodes by LAN discovery.
            args.append("--no-discover")
        if web is not None and not any(o in ("--web", "--no-web") for o in options):
            # Tests run side by side: the web server on a free port, not
            # 8384 (web=None: the node's default).
            args += ["--web", web]
        args += list(options)
        node = NodeProcess(name, args, share)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        reactor.spawnProcess(node, args[0], args, env=env, path=rundir)
        self.addCleanup(self.stop_node, node)
        return node

    async def started(self, node: NodeProcess) -> NodeProcess:
        """
        Wait until C{node} has logged its id and its listening port.
        """
        match = await node.wait_for(STARTING, timeout=START_TIMEOUT)
        self.assertEqual(match.group("name"), node.name)
        node.node_id = match.group("id")
        match = await node.wait_for(LISTENING, timeout=START_TIMEOUT)
        self.assertEqual(match.group("host"), LOCALHOST)
        node.port = int(match.group("port"))
        return node

    async def stop_node(self, node: NodeProcess) -> None:
        """
        Stop C{node} if it still runs: SIGTERM, then SIGKILL if it does not
        exit in time; either way wait for C{processEnded}.
        """
        if not node.running:
            return
        node.send_signal("TERM")
        try:
            await node.wait_exit()
            return
        except WaitTimeout:
            pass
        node.send_signal("KILL")
        await node.wait_exit()
        self.fail(f"node {node.name} ignored SIGTERM and had to be killed\n{node.output()}")

    async def terminate(self, node: NodeProcess) -> BaseException:
        """
        SIGTERM C{node}, wait for it to exit, and check it shut down cleanly.

        twistd stops the reactor on SIGTERM and then, once shut down,
        re-raises the signal so its parent sees how it ended: a clean stop
        is "ended by signal 15" after "Server Shut Down.", not exit code 0.
        """
        self.assertTrue(node.send_signal("TERM"), f"{node.name} exited early\n{node.output()}")
        reason = await node.wait_exit()
        clean = (isinstance(reason, ProcessDone)
                 or getattr(reason, "signal", None) == signal.SIGTERM)
        self.assertTrue(
            clean and node.matching(r"Server Shut Down\.$"),
            f"node {node.name} did not shut down cleanly on SIGTERM: {reason}\n{node.output()}",
        )
        return reason

    def connected_to(self, node: NodeProcess, other: NodeProcess, since: int = 0) -> Deferred:
        """
        Wait for C{node} to log a completed handshake with C{other}, named
        by its --name and the start of its node id.
        """
        return node.wait_for(
            CONNECTED.format(name=re.escape(other.name), id=other.node_id[:12]), since
        )

    def left(self, node: NodeProcess, other: NodeProcess, since: int = 0) -> Deferred:
        """
        Wait for C{node} to log that its connection to C{other} ended.
        """
        return node.wait_for(
            LEFT.format(name=re.escape(other.name), id=other.node_id[:12]), since
        )

    async def raw_connection(self, port: int, payload: bytes) -> RawClient:
        """
        Open a plain TCP connection to 127.0.0.1:PORT and send C{payload}.
        The connection is aborted and awaited at clean-up if still open.
        """
        endpoint = TCP4ClientEndpoint(reactor, LOCALHOST, port, timeout=5)
        client = await connectProtocol(endpoint, RawClient(payload))

        def close():
            if client.closed:
                return None
            client.transport.abortConnection()
            return client.lost

        self.addCleanup(close)
        return client

    # -- the tests ---------------------------------------------------------------

    async def test_two_nodes_connect(self) -> None:
        """
        B, started with --peer A, connects to A, and each logs the handshake
        naming the other: B an outbound connection, A an inbound one.
        """
        a = await self.started(self.start_node("A"))
        b = await self.started(self.start_node("B", peers=[a.port]))
        self.assertNotEqual(a.node_id, b.node_id)

        at_b = await self.connected_to(b, a)
        at_a = await self.connected_to(a, b)
        self.assertEqual(at_b.group("direction"), "outbound")
        self.assertEqual(at_b.group("host"), f"{LOCALHOST}:{a.port}")
        self.assertEqual(at_a.group("direction"), "inbound")

    async def test_chain_becomes_mesh_and_survives_restart(self) -> None:
        """
        A, B --peer A and C --peer B form a full mesh through gossip.  When B
        stops, A and C notice; B restarted on the same port with the same
        share has the same id and reconnects to both, and they to it.
        """
        a = await self.started(self.start_node("A"))
        b_port = free_port()
        b = await self.started(self.start_node("B", port=b_port, peers=[a.port]))
        self.assertEqual(b.port, b_port)
        c = await self.started(self.start_node("C", peers=[b.port]))
        nodes = [a, b, c]
        self.assertEqual(len({n.node_id for n in nodes}), 3)

        for node in nodes:
            for other in nodes:
                if other is not node:
                    await self.connected_to(node, other)

        marks = {a: a.mark(), c: c.mark()}
        await self.terminate(b)
        for node in (a, c):
            await self.left(node, b, since=marks[node])
            marks[node] = node.mark()

        b2 = await self.started(
            self.start_node("B", port=b_port, peers=[a.port], share=b.share)
        )
        self.assertEqual(b2.node_id, b.node_id, "a restarted node must keep its identity")
        self.assertEqual(b2.port, b_port)
        await self.connected_to(b2, a)
        await self.connected_to(b2, c)
        await self.connected_to(a, b2, since=marks[a])
        await self.connected_to(c, b2, since=marks[c])

    async def test_garbage_is_dropped(self) -> None:
        """
        A node aborts a connection that sends garbage, logging exactly one
        "dropping" line for it, and goes on serving real peers.

        Plaintext nodes, so the garbage reaches the framing layer; garbage
        to a TLS port is a case in tests.test_adversarial_tls.
        """
        a = await self.started(self.start_node("A", options=["--no-tls"]))
        # A fixed seed keeps the test deterministic: these bytes open with a
        # length prefix far above the frame limit.
        noise = random.Random(0x5EED).randbytes(4096)
        self.assertGreater(struct.unpack("!I", noise[:4])[0], MAX_FRAME)
        cases = [
            ("4 KiB of random bytes", noise, r"exceeds"),
            ("a 0xFFFFFFFF length prefix", b"\xff\xff\xff\xff" + b"abcdefgh",
             r"frame of 4294967295 bytes exceeds"),
            ("an empty frame", b"\x00\x00\x00\x00", r"^empty frame$"),
        ]
        peers = []
        for what, payload, reason in cases:
            mark = a.mark()
            client = await self.raw_connection(a.port, payload)
            peer = f"{LOCALHOST}:{client.transport.getHost().port}"
            peers.append(peer)
            lost = client.lost.addTimeout(
                EVENT_TIMEOUT, reactor,
                onTimeoutCancel=lambda r, t, what=what, mark=mark: self.fail(
                    f"node kept the connection open after {what}\n{a.output(mark)}"
                ),
            )
            await lost
            match = await a.wait_for(rf"dropping {re.escape(peer)}: (?P<reason>.*)$", mark)
            self.assertRegex(match.group("reason"), reason, what)
            drops = a.matching(DROPPING, mark)
            self.assertEqual(
                len(drops), 1,
                f"expected one 'dropping' line for {what}\n{a.output(mark)}",
            )

        b = await self.started(self.start_node("B", peers=[a.port], options=["--no-tls"]))
        await self.connected_to(b, a)
        await self.connected_to(a, b)

        # Checked again now that later lines have been logged: still exactly
        # one "dropping" line per garbage connection, and no others.
        drops = [m.group("peer") for m in a.matching(DROPPING)]
        self.assertEqual(sorted(drops), sorted(peers), a.output())

    async def test_port_in_use(self) -> None:
        """
        A second node on a port another node holds exits non-zero with one
        clear line, and the first node keeps running.
        """
        a = await self.started(self.start_node("A"))
        b = self.start_node("B", port=a.port)
        reason = await b.wait_exit()
        self.assertIsInstance(reason, ProcessTerminated, b.output())
        self.assertIsNotNone(b.exit_code, f"B was killed by a signal: {reason}\n{b.output()}")
        self.assertNotEqual(b.exit_code, 0, b.output())
        text = "\n".join(b.lines)
        self.assertIn("cannot start", text)
        self.assertIn("Address already in use", text)
        self.assertNotIn("Traceback", text)
        self.assertTrue(a.running, a.output())
