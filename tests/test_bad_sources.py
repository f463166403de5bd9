"""
A source whose copy fails is not asked again at once (issue 11, point
10): the peer is benched for that version for a growing time, another
source is asked instead, a peer that sends bad copies again and again is
dropped, each failure is one line naming the peer and what was wrong, and
a source that sent nothing leaves no empty partial file behind.

Real TCP and TLS on 127.0.0.1, against a target built as twistd builds
it; the attackers are the peers of L{tests.adversary} that offer files.
"""

from __future__ import annotations

import os

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from p2ptwisted import sync as sync_module
from p2ptwisted import wire

from .adversary import WAIT, Conversation, Target, content_hash, partials, wait_line
from .test_adversarial_integrity import LARGE, offered


def bad_copy(data: bytes) -> bytes:
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    return bytes(bad)


def retries(testcase, target, path: str, count: int) -> Deferred:
    """
    A Deferred firing once the sync has given up on C{path} C{count} times
    (each time it plans the fetch again later).
    """
    engine = target.node.folder.engine
    failed = engine.failed
    seen = []
    d = Deferred()

    def counting(action, retry_at):
        failed(action, retry_at)
        if action.path == path:
            seen.append(retry_at)
            if len(seen) == count and not d.called:
                d.callback(None)

    testcase.patch(engine, "failed", counting)
    return d.addTimeout(WAIT, reactor)


class BadSourceTests(TestCase):
    timeout = 60

    def setUp(self):
        self.patch(sync_module, "RETRY_DELAY", 0.1)

    async def test_bad_source_not_asked_again_at_once(self):
        """
        The only source sends bytes that fail the hash check: one line
        names it and says it is not asked for this version for a while;
        the sync tries again (soon) and does not ask it, so it sees one
        GET, not one every few seconds.
        """
        fetch = await offered(self, LARGE)
        again = retries(self, fetch.target, fetch.name, 3)
        fetch.conv.data(fetch.get.transfer, bad_copy(LARGE))
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(LARGE))
        line = await fetch.failed(r"content hash .*; bad data discarded; not asking it for"
                                  r" this version for 10s")
        self.assertIn("sent a bad copy of file.bin", line)
        await again  # the sync tried again, twice, and found no source to ask
        await fetch.conv.roundtrip()
        self.assertEqual(len(fetch.conv.all(wire.Get)), 1)
        await fetch.finish(lines=1, pattern="bad copy")

    async def test_another_source_is_asked(self):
        """
        Two peers hold the version; the one asked first (the one the node
        prefers) sends a bad copy: the other is asked, the file lands, and
        the bad one is asked nothing more.
        """
        target = await Target.start(self)
        before = target.baseline()
        first = await Conversation.open(target)
        second = await Conversation.open(target)
        if second.attacker.identity.node_id < first.attacker.identity.node_id:
            first, second = second, first  # the node tries the lower id first
        bad, good = first, second
        entry = bad.entry("file.bin", LARGE)
        bad.offer(entry)
        get = await bad.next(wire.Get)
        good.offer(attrs.evolve(entry, sequence=good.next_seq()))
        await good.roundtrip()  # the target holds the good peer's entry too
        bad.data(get.transfer, bad_copy(LARGE))
        bad.end(get.transfer, len(LARGE), content_hash(LARGE))
        get = await good.next(wire.Get)
        good.serve(get, LARGE)
        await good.landed("file.bin", LARGE)
        await bad.roundtrip()
        self.assertEqual(len(bad.all(wire.Get)), 1)
        line = await wait_line(target, r"sent a bad copy of file\.bin", before["mark"])
        self.assertIn(bad.attacker.address, line)
        with open(os.path.join(target.share, "file.bin"), "rb") as f:
            self.assertEqual(f.read(), LARGE)
        for conv in (good, bad):
            conv.attacker.transport.loseConnection()
            await conv.attacker.lost
        await target.check(self, before, bad.attacker, lines=1, pattern="bad copy",
                           share_may_gain=["file.bin"])

    async def test_repeat_offender_is_dropped(self):
        """
        A peer that sends a bad copy of three files in a row is dropped,
        with a line that names it and says why.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        contents = {f"f{i}.bin": os.urandom(len(LARGE)) for i in range(3)}
        conv.offer(*(conv.entry(name, data) for name, data in contents.items()))
        for _ in contents:
            get = await conv.next(wire.Get)
            conv.data(get.transfer, bad_copy(contents[get.path]))
            conv.end(get.transfer, len(LARGE), get.hash)
        await conv.attacker.lost.addTimeout(WAIT, reactor)
        line = await wait_line(target, r"dropping .*: 3 bad copies of files from it",
                               before["mark"])
        self.assertIn(conv.attacker.address, line)
        self.assertEqual(partials(target.share), [])
        await target.check(self, before, conv.attacker, lines=4, pattern="bad copy")

    async def test_refusal_leaves_no_empty_partial(self):
        """
        The source refuses the version its index offered (its index is
        wrong, or the file changed): the failure is one line, and no empty
        partial file is left behind.
        """
        fetch = await offered(self, LARGE)
        fetch.attacker.send_frame(wire.Error(code="not_found", message="no file with that"
                                             " content here", transfer=fetch.get.transfer))
        await fetch.failed("failed: no file with that content here")
        self.assertEqual(partials(fetch.target.share), [])
        await fetch.finish(lines=1, pattern="no file with that content")
