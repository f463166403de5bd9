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

Protocol version 2 sync: the target takes what a peer's INDEX offers (a
version it lacks) by asking that peer with GET.  L{Conversation} plays such
a peer byte by byte -- HELLO, INDEX_HELLO, INDEX entries built with
L{Conversation.entry} or written by hand (L{Conversation.raw_entry}), DATA
and END -- so the cases can lie in every field; L{Conversation.landed}
waits for the target's own INDEX entry saying a file arrived.  The honest
node of C{check} speaks the same protocol as a real peer: it learns the
shared file (and its hash) from the target's INDEX and fetches it by GET.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from typing import Callable, Dict, List, Optional, Sequence

import attrs
import blake3
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory

from p2ptwisted import wire
from p2ptwisted.core.index import FILE, Entry
from p2ptwisted.core.versions import Vector, short_id
from p2ptwisted.hashing import PARTIAL_PREFIX
from p2ptwisted.identity import load_or_create_identity
from p2ptwisted.tls import PeerTLS
from p2ptwisted.wire_index import (
    INDEX, Index, IndexHello, decode_any_frame, encode_index_hello, entry_to_json, pack_index)

from .helpers import first_scan

#: Bound on every wait in the suite; things take milliseconds.
WAIT = 20

#: The lines that report a refusal or a drop (as opposed to the ordinary
#: "connected to" and "left" lines of a peer that got past HELLO).
REFUSAL = re.compile(r"dropping|failed|refus|ignor|closing|suppressed|bad copy")

#: Lines that must never appear after an attack.
FORBIDDEN = re.compile(r"Traceback|Unhandled|CRITICAL", re.I)

#: The file every target shares, and its content.
SHARED_NAME = "shared/hello.txt"
SHARED_BYTES = b"the honest peer must always get this file\n" * 1000


def content_hash(data: bytes) -> str:
    """
    A file's content hash as the wire carries it (BLAKE3, 64 hex digits).
    """
    return blake3.blake3(data).hexdigest()


SHARED_HASH = content_hash(SHARED_BYTES)


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
        self.send_raw(wire.encode_frame(message))

    def send_raw(self, frame: bytes) -> None:
        """
        Send one frame (type byte and body, as given) with its length
        prefix.
        """
        self.send(len(frame).to_bytes(4, "big") + frame)

    @property
    def short_id(self) -> str:
        return short_id(self.identity.node_id)

    def hello(self, node_id: Optional[str] = None, name: str = "mallory") -> None:
        """
        Say a valid HELLO, by default with the id our certificate proves.
        """
        if node_id is None:
            node_id = self.identity.node_id
        self.send_frame(wire.Hello(versions=(2,), node_id=node_id, listen_ports=(),
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
            out.append(decode_any_frame(data[pos + 4:pos + 4 + n]))
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
             "--state", os.path.join(base, "state"), "--name", "target", "--no-discover",
             "--no-web"]
            + ([] if tls else ["--no-tls"]) + list(args)
        )
        target_lines: List[str] = []

        def observe(event):
            target_lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, observe)
        service = makeService(options, reactor=reactor, quiet=False)
        node = service.getServiceNamed("node")
        service.startService()
        # Every file given, not just the first one recorded: a scan may
        # record them in more than one batch.
        scanned = gatherResults([first_scan(node, name) for name in [SHARED_NAME, *(files or {})]])
        testcase.addCleanup(lambda: service.running and service.stopService())
        await scanned.addTimeout(WAIT, reactor)
        # The disk keeps descriptors of the share's root and its trash can
        # open for the node's life, from their first use: open them before
        # any baseline, so the open-files check measures what an attack
        # leaves behind.
        node.folder.disk.free_bytes()
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
        Invariant 2: a fresh honest node (same TLS setting, send-only, so it
        takes nothing on its own) connects, learns the shared file from the
        target's INDEX with the right hash, fetches it by GET (path, hash)
        and gets exactly its bytes, verified against that hash, in normal
        time.  Returns the honest node's id; it has stopped when this
        returns.
        """
        from p2ptwisted.control import Control
        from p2ptwisted.tap import Options, makeService

        base = os.path.abspath(self.testcase.mktemp())
        options = Options()
        options.parseOptions(
            ["--port", "tcp:0:interface=127.0.0.1", "--share", os.path.join(base, "share"),
             "--state", os.path.join(base, "state"), "--name", "honest", "--no-sync",
             "--no-discover", "--no-web", "--peer", f"127.0.0.1:{self.port}"]
            + ([] if self.tls else ["--no-tls"])
        )
        service = makeService(options, reactor=reactor, quiet=False)
        honest = service.getServiceNamed("node")
        target_id = self.node.node_id
        service.startService()
        try:
            folder = honest.folder

            def listed() -> bool:
                entry = folder.store.remote_for(SHARED_NAME).get(target_id)
                return entry is not None and entry.live and entry.hash == SHARED_HASH

            await folder.when(listed).addTimeout(WAIT, reactor)
            dest = os.path.join(base, "fetched")
            path = await Control(honest).fetch(SHARED_NAME, dest=dest).addTimeout(WAIT, reactor)
            with open(path, "rb") as f:
                self.testcase.assertEqual(f.read(), SHARED_BYTES)
        finally:
            await service.stopService()
        return honest.node_id

    async def check(self, testcase, before: dict, attacker: Optional[Attacker] = None,
                    lines: Optional[int] = 1, pattern: Optional[str] = None,
                    share_may_gain: Sequence[str] = (),
                    share_may_change: Sequence[str] = ()) -> None:
        """
        Assert the invariants of threats.md after an attack.

        @param lines: log lines expected about the attacker's address
            (C{None}: any number, for attacks that are not refusals).
        @param pattern: a regex one of those lines must match.
        @param share_may_gain: paths (relative to the share) the attack may
            legitimately have added.
        @param share_may_change: paths already in the share that the case
            lets a winning version replace (what they held is checked by
            the case: kept as a conflict copy, or in the trash can).
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
        kept = {k: v for k, v in in_share(before["outside"]).items()
                if k not in share_may_change}
        testcase.assertEqual(
            kept, {k: v for k, v in in_share(after).items() if k in kept},
            "the share was changed by the attack",
        )
        # 2. still serving
        honest_id = await self.honest_fetch()
        # 5. open files back to where they were, once the honest node has
        # gone (the target closes a socket before it forgets the connection).
        await _until(lambda: honest_id not in self.node.connections, self.node)
        # ... and no scan holding the share's files open (a test that
        # restores a file has the watcher rescan it).
        folder = self.node.folder
        await folder.when(lambda: not folder.sync.scanning).addTimeout(WAIT, reactor)
        testcase.assertLessEqual(open_fds(), before["fds"])


# ---------------------------------------------------------------------------
# The attacker as a peer that offers files


#: An mtime for offered files (2023-11-14), older than anything the test creates.
OLD_MTIME = 1_700_000_000 * 10**9


def partials(root: str) -> List[str]:
    """
    Every partial download left anywhere under C{root} (the harness's
    check only looks at names it compares).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith(PARTIAL_PREFIX):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def wait_line(target: Target, pattern: str, mark: int = 0) -> Deferred:
    """
    A Deferred that fires with the first log line of the target (since
    C{mark}) matching C{pattern}: already logged, or when it is.
    """
    regex = re.compile(pattern)
    d = Deferred()
    for line in target.lines_since(mark):
        if regex.search(line):
            d.callback(line)
            return d
    fired: List[str] = []

    def observe(event):
        line = formatEvent(event)
        if not fired and regex.search(line):
            fired.append(line)
            reactor.callLater(0, d.callback, line)

    globalLogPublisher.addObserver(observe)
    target.testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return d.addTimeout(WAIT, reactor)


def assert_clean_lines(testcase, target: Target, mark: int) -> None:
    """
    Names in log lines are escaped: no raw control character in any line.
    """
    for line in target.lines_since(mark):
        testcase.assertFalse(wire.has_control_chars(line), repr(line))


class Conversation:
    """
    The attacker's side of a version 2 conversation, frame by frame as the
    target sends them: C{next} waits (on the data arriving, never on a
    clock) for the next frame of a kind.  The attacker offers files with
    INDEX frames, as a peer that has them, and serves the target's GETs.
    """

    def __init__(self, attacker: Attacker):
        self.attacker = attacker
        self.me = attacker.short_id
        self.index_id = secrets.token_hex(8)
        self.frames: List[object] = []
        self._pos = 0
        self._cursor = 0
        self._seq = 0
        self._waiters: List[tuple] = []
        self._nonce = 0
        original = attacker.dataReceived

        def dataReceived(data):
            original(data)
            self._parse()

        attacker.dataReceived = dataReceived

        def lost(result):
            waiters, self._waiters = self._waiters, []
            for *_, d in waiters:
                d.errback(AssertionError(
                    f"the target closed the connection; frames so far: {self.kinds()}"))
            return result

        attacker.lost.addBoth(lost)

    @classmethod
    async def open(cls, target: Target, identity_dir: Optional[str] = None,
                   index_id: Optional[str] = None, sequence: int = 0) -> "Conversation":
        """
        Connect as a fresh node (or as the node whose identity is in
        C{identity_dir}, with its index C{index_id} at C{sequence}: a peer
        coming back), say HELLO, wait for the target's INDEX_HELLO (it has
        registered us), and send ours: from then on the target takes the
        versions we offer.
        """
        attacker = await target.attack(identity_dir=identity_dir)
        conversation = cls(attacker)
        if index_id is not None:
            conversation.index_id = index_id
            conversation._seq = sequence
        attacker.hello()
        await conversation.next(IndexHello)
        conversation.index_hello(sequence)
        return conversation

    def _parse(self) -> None:
        data = self.attacker.received
        while len(data) - self._pos >= 4:
            n = int.from_bytes(data[self._pos:self._pos + 4], "big")
            if len(data) - self._pos - 4 < n:
                break
            frame = bytes(data[self._pos + 4:self._pos + 4 + n])
            self._pos += 4 + n
            message = decode_any_frame(frame)
            if isinstance(message, wire.Data):
                message = wire.Data(transfer=message.transfer, payload=bytes(message.payload))
            self.frames.append(message)
        self._wake()

    def _find(self, kind, where, anywhere=False):
        for i in range(0 if anywhere else self._cursor, len(self.frames)):
            frame = self.frames[i]
            if isinstance(frame, kind) and where(frame):
                if not anywhere:
                    self._cursor = i + 1
                return frame
        return None

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            kind, where, anywhere, d = waiter
            found = self._find(kind, where, anywhere)
            if found is not None:
                self._waiters.remove(waiter)
                d.callback(found)

    def next(self, kind, where: Callable[[object], bool] = lambda f: True,
             anywhere: bool = False) -> Deferred:
        """
        The next frame (after the last one C{next} returned, or the first
        of all if C{anywhere}) of type C{kind} for which C{where} holds.
        """
        d = Deferred()
        found = self._find(kind, where, anywhere)
        if found is not None:
            d.callback(found)
        else:
            self._waiters.append((kind, where, anywhere, d))
        return d.addTimeout(WAIT, reactor)

    def all(self, kind) -> List[object]:
        return [f for f in self.frames if isinstance(f, kind)]

    def kinds(self) -> List[str]:
        return [type(f).__name__ for f in self.frames]

    async def roundtrip(self) -> None:
        """
        A PING answered: everything the target wrote before reading it has
        arrived.
        """
        self._nonce += 1
        nonce = self._nonce
        self.attacker.send_frame(wire.Ping(nonce))
        await self.next(wire.Pong, lambda p: p.nonce == nonce)

    # -- the index ---------------------------------------------------------------

    def index_hello(self, sequence: int = 0) -> None:
        """
        Our INDEX_HELLO: a fresh index, and nothing of the target's yet.
        """
        self.attacker.send_raw(encode_index_hello(IndexHello(
            index_id=self.index_id, have_index_id="", have_sequence=0, sequence=sequence)))

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def entry(self, path: str, data: bytes = b"", *, mtime: int = OLD_MTIME,
              perms: int = 0o644, counter: Optional[int] = None, **changes) -> Entry:
        """
        An index entry of ours for C{data} at C{path}: a version made here
        now (so the target lacks it), with the next sequence.
        """
        entry = Entry(path=path, kind=FILE, size=len(data), mtime_ns=mtime, perms=perms,
                      hash=content_hash(data), deleted=False,
                      version=Vector({self.me: counter or int(time.time())}),
                      modified_by=self.me, sequence=self.next_seq())
        return attrs.evolve(entry, **changes) if changes else entry

    def offer(self, *entries: Entry) -> None:
        """
        Send C{entries} in INDEX frames, as our index.
        """
        for frame in pack_index(list(entries)):
            self.attacker.send_raw(frame)

    def raw_entry(self, data: bytes = b"x", **fields_json: str) -> str:
        """
        One INDEX entry as JSON text: a valid entry for C{data} at
        C{x.bin}, with the fields named in C{fields_json} (C{path}
        included) replaced by raw JSON text, so a case can spell escapes,
        fractions, negative numbers...
        """
        valid = entry_to_json(self.entry("x.bin", data))
        parts = []
        for key, value in valid.items():
            text = fields_json.pop(key, None)
            parts.append(json.dumps(key) + ":" + (text if text is not None
                                                  else json.dumps(value, ensure_ascii=False)))
        for key, text in fields_json.items():
            parts.append(json.dumps(key) + ":" + text)
        return "{" + ",".join(parts) + "}"

    def offer_raw(self, entries_json: Sequence[str]) -> None:
        """
        An INDEX written by hand, for entries C{wire_index} would not encode.
        """
        body = ('{"entries":[' + ",".join(entries_json) + "]}").encode("utf-8")
        self.attacker.send_raw(bytes((INDEX,)) + body)

    # -- serving -------------------------------------------------------------

    def data(self, transfer: int, payload: bytes) -> None:
        self.attacker.send(wire.data_header(transfer, len(payload)) + payload)

    def end(self, transfer: int, size: int, hash: str) -> None:
        self.attacker.send_frame(wire.End(transfer=transfer, size=size, hash=hash))

    def serve(self, get: wire.Get, content: bytes) -> None:
        """
        Answer a GET honestly.
        """
        rest = content[get.offset:]
        for i in range(0, len(rest), 128 * 1024):
            self.data(get.transfer, rest[i:i + 128 * 1024])
        self.end(get.transfer, len(content), content_hash(content))

    def landed(self, path: str, data: Optional[bytes] = None) -> Deferred:
        """
        The target's INDEX entry announcing that a live file is now at
        C{path} in its share (with C{data}'s hash, if given).
        """
        wanted = None if data is None else content_hash(data)

        def holds(index) -> bool:
            return any(e.path == path and e.live and e.kind == FILE
                       and (wanted is None or e.hash == wanted) for e in index.entries)

        return self.next(Index, holds, anywhere=True)


class Scribe(Conversation):
    """
    A conversation with no connection: only its entry helpers are used, to
    write entries as text for an INDEX written by hand.
    """

    def __init__(self):
        self.me = "5c51be00000000aa"
        self._seq = 0


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
