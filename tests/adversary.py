"""
The adversarial suite's shared harness: a target node built the way twistd
builds it, attackers that speak raw bytes (over TLS or not), and one check
of the invariants in threats.md after each attack.

A case is:

    target = await Target.start(self)            # TLS on, unless tls=False
    before = target.baseline()
    attacker = await target.attack(tls=True)      # a raw connection
    attacker.send_frame(...) / attacker.send(b"...")
    await attacker.lost                           # if the node must drop it
    await target.check(self, before, attacker, lines=1)

C{check} asserts: the node runs; an honest node can connect and fetch a
file with the right hash; nothing outside the share changed and nothing
appeared in the share (unless the case says what may); exactly C{lines}
log lines about the attacker's address, with no traceback; connections,
open files and the node's timers back where they were; no partial file
left under a final name.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Dict, List, Optional, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from p2ptwisted import wire
from p2ptwisted.identity import load_or_create_identity
from p2ptwisted.tls import PeerTLS

from .helpers import first_scan

#: Bound on every wait in the suite; things take milliseconds.
WAIT = 20

#: The lines that report a refusal or a drop (as opposed to the ordinary
#: "connected to" and "left" lines of a peer that got past HELLO).
REFUSAL = re.compile(r"dropping|failed|refus|ignor|closing|suppressed")

#: Lines that must never appear after an attack.
FORBIDDEN = re.compile(r"Traceback|Unhandled|CRITICAL", re.I)

#: The file every target shares, and its content.
SHARED_NAME = "shared/hello.txt"
SHARED_BYTES = b"the honest peer must always get this file\n" * 1000


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tree(root: str) -> Dict[str, tuple]:
    """
    Every path under C{root} with its kind, size and content hash (for
    regular files): a snapshot to compare after an attack.
    """
    result = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                result[rel] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    result[rel] = ("file", st.st_size, hashlib.sha256(f.read()).hexdigest())
            elif os.path.isdir(path):
                result[rel] = ("dir",)
            else:
                result[rel] = ("special",)
    return result


class Attacker(Protocol):
    """
    A raw connection to the target: sends whatever bytes a case wants and
    records what comes back.  C{lost} fires when the connection closes.
    """

    def __init__(self):
        self.received = bytearray()
        self.lost: Deferred = Deferred()
        self.handshake: Deferred = Deferred()
        self.identity = None

    def connectionMade(self):
        self.port = self.transport.getHost().port
        if not isinstance(self.transport, TLSMemoryBIOFactory.protocol):
            self.handshake.callback(None)

    def handshakeCompleted(self):
        if not self.handshake.called:
            self.handshake.callback(None)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.reason = reason
        if not self.handshake.called:
            self.handshake.errback(reason)
        self.lost.callback(None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def send_frame(self, message) -> None:
        body = wire.encode_frame(message)
        self.send(len(body).to_bytes(4, "big") + body)

    def hello(self, node_id: Optional[str] = None, name: str = "mallory") -> None:
        """
        Say a valid HELLO, by default with the id our certificate proves.
        """
        if node_id is None:
            node_id = self.identity.node_id
        self.send_frame(wire.Hello(versions=(1,), node_id=node_id, listen_ports=(),
                                   name=name))

    def frames(self) -> List[object]:
        """
        The frames received so far, decoded (DATA as raw tuples).
        """
        out, data, pos = [], bytes(self.received), 0
        while len(data) - pos >= 4:
            n = int.from_bytes(data[pos:pos + 4], "big")
            if len(data) - pos - 4 < n:
                break
            out.append(wire.decode_frame(data[pos + 4:pos + 4 + n]))
            pos += 4 + n
        return out


from zope.interface import implementer  # noqa: E402
from twisted.internet.interfaces import IHandshakeListener  # noqa: E402

implementer(IHandshakeListener)(Attacker)


class Target:
    """
    A node built by C{tap.makeService} on the real reactor, listening on
    127.0.0.1, sharing L{SHARED_NAME}; its log lines are collected.
    """

    def __init__(self, testcase, base, service, node, options):
        self.testcase = testcase
        self.base = base
        self.service = service
        self.node = node
        self.options = options
        self.port = node.listen_ports[0]
        self.share = node.share_dir

    @classmethod
    async def start(cls, testcase, tls: bool = True, args: Sequence[str] = (),
                    files: Optional[Dict[str, bytes]] = None) -> "Target":
        from p2ptwisted.tap import Options, makeService

        base = os.path.abspath(testcase.mktemp())
        share = os.path.join(base, "share")
        os.makedirs(os.path.join(share, os.path.dirname(SHARED_NAME)))
        with open(os.path.join(share, SHARED_NAME), "wb") as f:
            f.write(SHARED_BYTES)
        for name, data in (files or {}).items():
            path = os.path.join(share, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        options = Options()
        options.parseOptions(
            ["--port", "tcp:0:interface=127.0.0.1", "--share", share,
             "--state", os.path.join(base, "state"), "--name", "target", "--no-discover"]
            + ([] if tls else ["--no-tls"]) + list(args)
        )
        target_lines: List[str] = []

        def observe(event):
            target_lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, observe)
        service = makeService(options, reactor=reactor)
        node = service.getServiceNamed("node")
        scanned = first_scan(node, SHARED_NAME)
        service.startService()
        testcase.addCleanup(lambda: service.running and service.stopService())
        await scanned.addTimeout(WAIT, reactor)
        target = cls(testcase, base, service, node, options)
        target.lines = target_lines
        target.tls = tls
        return target

    def mark(self) -> int:
        return len(self.lines)

    def lines_since(self, mark: int) -> List[str]:
        return self.lines[mark:]

    def baseline(self) -> dict:
        """
        What must be the same again once an attack is over.
        """
        node = self.node
        return {
            "connections": sorted(node.connections),
            "pending": len(node.pending),
            "fds": open_fds(),
            "outside": tree(self.base),
            "mark": self.mark(),
        }

    async def attack(self, tls: Optional[bool] = None, handshake: bool = True,
                     identity_dir: Optional[str] = None) -> Attacker:
        """
        Open a raw connection to the target, over TLS with a fresh identity
        of its own by default (as the target speaks), and wait for the TLS
        handshake unless C{handshake} is false.
        """
        tls = self.tls if tls is None else tls
        attacker = Attacker()
        factory_proto = attacker
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        if tls:
            identity = load_or_create_identity(identity_dir or self.testcase.mktemp())
            attacker.identity = identity
            from twisted.internet.endpoints import wrapClientTLS

            endpoint = wrapClientTLS(PeerTLS(identity), endpoint)
        await connectProtocol(endpoint, factory_proto)
        self.testcase.addCleanup(
            lambda: attacker.transport.connected and attacker.transport.abortConnection()
        )
        if handshake:
            await attacker.handshake.addTimeout(WAIT, reactor)
        return attacker

    async def honest_fetch(self) -> str:
        """
        Invariant 2: a fresh honest node (same TLS setting) connects, and
        fetches the shared file with the right content, in normal time.
        Returns the honest node's id; it has stopped when this returns.
        """
        from p2ptwisted.control import Control
        from p2ptwisted.tap import Options, makeService

        base = os.path.abspath(self.testcase.mktemp())
        options = Options()
        options.parseOptions(
            ["--port", "tcp:0:interface=127.0.0.1", "--share", os.path.join(base, "share"),
             "--state", os.path.join(base, "state"), "--name", "honest", "--no-sync", "--no-discover",
             "--peer", f"127.0.0.1:{self.port}"] + ([] if self.tls else ["--no-tls"])
        )
        service = makeService(options, reactor=reactor)
        honest = service.getServiceNamed("node")
        target_id = self.node.node_id
        listed = Deferred()

        def hook(name):
            original = getattr(honest.files, name)

            def received(proto, message):
                original(proto, message)
                if not listed.called and SHARED_NAME in honest.files.remote.get(target_id, {}):
                    listed.callback(None)

            setattr(honest.files, name, received)

        hook("catalog_received")
        hook("have_received")
        service.startService()
        try:
            await listed.addTimeout(WAIT, reactor)
            dest = os.path.join(base, "fetched")
            transfer = Control(honest).fetch(SHARED_NAME, dest=dest)
            path = await transfer.done.addTimeout(WAIT, reactor)
            with open(path, "rb") as f:
                self.testcase.assertEqual(f.read(), SHARED_BYTES)
        finally:
            await service.stopService()
        return honest.node_id

    async def check(self, testcase, before: dict, attacker: Optional[Attacker] = None,
                    lines: Optional[int] = 1, pattern: Optional[str] = None,
                    share_may_gain: Sequence[str] = ()) -> None:
        """
        Assert the invariants of threats.md after an attack.

        @param lines: log lines expected about the attacker's address
            (C{None}: any number, for attacks that are not refusals).
        @param pattern: a regex one of those lines must match.
        @param share_may_gain: paths (relative to the share) the attack may
            legitimately have added.
        """
        # 1. alive
        testcase.assertTrue(self.service.running)
        testcase.assertTrue(self.node.running)
        # 5. back to baseline: the attacker's connection is gone.
        if attacker is not None:
            await attacker.lost.addTimeout(WAIT, reactor) if not attacker.lost.called else None
        await _until(lambda: len(self.node.pending) == before["pending"]
                     and sorted(self.node.connections) == before["connections"], self.node)
        # 4. one clear line about the attacker, no traceback anywhere.
        new = self.lines_since(before["mark"])
        for line in new:
            testcase.assertIsNone(FORBIDDEN.search(line), "\n".join(new))
        if attacker is not None and lines is not None:
            about = [line for line in new
                     if attacker.address in line and REFUSAL.search(line)]
            testcase.assertEqual(len(about), lines, "\n".join(new))
            if pattern is not None and about:
                testcase.assertRegex(about[0], pattern)
        # 3 and 6. nothing outside the share changed; nothing new inside it
        # but what the case allows (and never a partial file).
        after = tree(self.base)
        share_rel = os.path.relpath(self.share, self.base)
        state_rel = os.path.relpath(self.node.state_dir, self.base)

        def outside(snapshot):
            return {k: v for k, v in snapshot.items()
                    if not k.startswith(state_rel) and k != share_rel}

        def in_share(snapshot):
            prefix = share_rel + os.sep
            return {k[len(prefix):]: v for k, v in snapshot.items()
                    if k.startswith(prefix) and not k[len(prefix):].startswith(".p2pshare")}

        allowed_outside = {k: v for k, v in outside(after).items()
                           if not k.startswith(share_rel + os.sep)}
        testcase.assertEqual(
            allowed_outside,
            {k: v for k, v in outside(before["outside"]).items()
             if not k.startswith(share_rel + os.sep)},
        )
        gained = set(in_share(after)) - set(in_share(before["outside"]))
        testcase.assertLessEqual(gained, set(share_may_gain) | _parents(share_may_gain))
        for name in in_share(after):
            testcase.assertNotIn(".p2pshare-part", name)
        testcase.assertEqual(
            {k: v for k, v in in_share(before["outside"]).items()},
            {k: v for k, v in in_share(after).items() if k in in_share(before["outside"])},
            "the share was changed by the attack",
        )
        # 2. still serving
        honest_id = await self.honest_fetch()
        # 5. open files back to where they were, once the honest node has
        # gone (the target closes a socket before it forgets the connection).
        await _until(lambda: honest_id not in self.node.connections, self.node)
        testcase.assertLessEqual(open_fds(), before["fds"])


def _parents(paths):
    out = set()
    for path in paths:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            out.add(path)
    return out


async def _until(condition, node) -> None:
    """
    Wait until C{condition()} holds, re-checked whenever the node's
    connections change.
    """
    if not condition():
        await node.wait_for(lambda n: condition()).addTimeout(WAIT, reactor)
