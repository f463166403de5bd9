"""
Adversarial suite, family "Sizes and integrity" (threats.md), on protocol
version 2: absurd, negative and non-integer sizes; more or fewer bytes than
the INDEX announced; wrong bytes of the right length; an END that describes
another file; DATA for a transfer never requested or after its END; and a
file that changes on the serving side while it is being sent.

In most cases the attacker serves: its INDEX advertises a file the target
lacks, so the target's sync plans a FETCH and asks the attacker, its only
source, with GET.  In the last family the target serves and the test
changes the file under it.  Every case asserts that no bad or half file
appears under a final name (invariant 6) and ends with the invariant check
of L{tests.adversary}.
"""

from __future__ import annotations

import json
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from p2ptwisted import fetcher as fetcher_module
from p2ptwisted import sync as sync_module
from p2ptwisted import wire
from p2ptwisted.downloads import SMALL_FILE

from .adversary import WAIT, Conversation, Scribe, Target, content_hash, partials, wait_line
from .helpers import indexed
from .test_adversarial_receiving import offer_beside_sentinel

#: A file large enough to be written to a partial file as it arrives.
LARGE = os.urandom(SMALL_FILE + 70000)

#: The file the target serves while the test changes it: about 4 MiB.
CHANGING = os.urandom(4 * 1024 * 1024)


class Fetch:
    """
    One file offered by the attacker and asked for by the target.
    """

    def __init__(self, testcase, target, before, conv, name, content, get):
        self.testcase, self.target, self.before = testcase, target, before
        self.conv, self.attacker = conv, conv.attacker
        self.name, self.content, self.get = name, content, get

    @property
    def final(self) -> str:
        return os.path.join(self.target.share, *self.name.split("/"))

    async def failed(self, pattern: str) -> str:
        """
        Wait for the target's line, naming the attacker, saying this fetch
        failed (matching C{pattern}); check that nothing is under the final
        name and no partial file is left.
        """
        line = await wait_line(self.target, rf"{self.name}.*{pattern}", self.before["mark"])
        self.testcase.assertIn(self.attacker.address, line)
        self.assert_nothing_kept()
        return line

    def assert_nothing_kept(self, partial_ok: bool = False) -> None:
        self.testcase.assertFalse(os.path.lexists(self.final))
        entry = self.target.node.folder.store.get(self.name)
        self.testcase.assertTrue(entry is None or not entry.live, entry)
        if not partial_ok:
            self.testcase.assertEqual(partials(self.target.share), [])

    async def landed_intact(self) -> None:
        """
        The file is in the target's index and on its disk, whole: waited
        for on the target (the attacker's connection may be gone).
        """
        await indexed(self.target.node, self.name, content_hash(self.content)).addTimeout(
            WAIT, reactor)
        with open(self.final, "rb") as f:
            self.testcase.assertEqual(f.read(), self.content)
        self.testcase.assertEqual(partials(self.target.share), [])

    async def finish(self, lines, pattern=None, landed: bool = False,
                     partial_ok: bool = False) -> None:
        self.attacker.transport.loseConnection()
        await self.target.check(self.testcase, self.before, self.attacker, lines=lines,
                                pattern=pattern,
                                share_may_gain=[self.name] if landed else [])
        if not landed:
            self.assert_nothing_kept(partial_ok)


async def offered(testcase, content: bytes, name: str = "file.bin",
                  before_index=None) -> Fetch:
    """
    Offer C{content} as C{name} in the attacker's INDEX and wait for the
    target's GET.
    """
    target = await Target.start(testcase)
    before = target.baseline()
    conv = await Conversation.open(target)
    if before_index is not None:
        before_index(conv)
    conv.offer(conv.entry(name, content))
    get = await conv.next(wire.Get)
    testcase.assertEqual((get.path, get.hash, get.offset), (name, content_hash(content), 0))
    return Fetch(testcase, target, before, conv, name, content, get)


class SizeTests(TestCase):
    """
    Sizes a peer announces that the node must refuse before writing.
    """

    timeout = 60

    async def test_absurd_size(self):
        """
        A file far bigger than the free disk (2**63 - 1 bytes): the node
        refuses before writing anything -- no GET, no directory, no partial
        -- and says so in one line naming the path, then still fetches an
        honest file offered beside it.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        small = b"small enough\n"
        conv.offer(conv.entry("huge/deep/file.bin", b"", size=wire.MAX_FILE_SIZE,
                              hash=content_hash(b"whatever")),
                   conv.entry("fits.txt", small))
        get = await conv.next(wire.Get, lambda g: g.path == "fits.txt", anywhere=True)
        conv.serve(get, small)
        await conv.landed("fits.txt", small)
        await conv.roundtrip()
        self.assertEqual([g.path for g in conv.all(wire.Get)], ["fits.txt"])
        self.assertFalse(os.path.lexists(os.path.join(target.share, "huge")))
        self.assertEqual(partials(target.share), [])
        await wait_line(target, r"huge/deep/file\.bin.*space", before["mark"])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=None, share_may_gain=["fits.txt"])

    async def test_negative_and_non_integer_sizes(self):
        """
        Sizes that are negative, fractional, exponents, strings, booleans,
        null, lists or past 2**63 - 1 make their entries invalid: they are
        counted in one log line and skipped; the valid entry beside them is
        fetched, nothing else is written.
        """
        s = Scribe()
        sizes = ["-1", "1.5", "1e3", "1.0", '"12"', "true", "null", "[]", "{}",
                 str(2**63), str(-(2**63)), "-0.0"]
        await offer_beside_sentinel(
            self, [s.raw_entry(path=json.dumps(f"s{i}.bin"), size=size)
                   for i, size in enumerate(sizes)])

    async def test_extreme_mtimes(self):
        """
        Files offered with the most negative and the largest mtime the wire
        allows (beyond what the file system stores): they land intact and
        verified, without a traceback.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        files = {"lo.txt": (b"low\n", -(2**63)), "hi.txt": (b"high\n", 2**63 - 1),
                 "big.bin": (LARGE, 2**63 - 1)}
        conv.offer(*(conv.entry(n, c, mtime=m) for n, (c, m) in files.items()))
        for _ in files:
            get = await conv.next(wire.Get)
            conv.serve(get, files[get.path][0])
        for name, (content, _) in files.items():
            await conv.landed(name, content)
            with open(os.path.join(target.share, name), "rb") as f:
                self.assertEqual(f.read(), content)
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=list(files))

    async def test_malformed_end(self):
        """
        An END whose size is negative is a malformed frame: the connection
        is dropped with one line, and the file never appears under its
        final name.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.data(fetch.get.transfer, LARGE)
        body = json.dumps({"transfer": fetch.get.transfer, "size": -1,
                           "hash": content_hash(LARGE)}).encode()
        fetch.attacker.send_raw(bytes((wire.END,)) + body)
        await fetch.attacker.lost.addTimeout(WAIT, reactor)
        self.assertFalse(os.path.lexists(fetch.final))
        # The connection closed mid-transfer: the partial file may stay, to
        # resume -- but never under the final name, and never indexed.
        await fetch.finish(lines=1, pattern=r"dropping .*END field 'size' out of range",
                           partial_ok=True)


class ByteCountTests(TestCase):
    """
    More or fewer bytes than the INDEX announced.
    """

    timeout = 60

    async def test_more_bytes_than_announced_large(self):
        """
        A large file (written to a partial file as it arrives) gets one
        byte more than its size: the node cancels the transfer, discards
        the partial file, logs one line, and nothing appears under the
        final name.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.data(fetch.get.transfer, LARGE)
        fetch.conv.data(fetch.get.transfer, b"!")
        await fetch.conv.next(wire.Cancel, lambda c: c.transfer == fetch.get.transfer)
        line = await fetch.failed(rf"failed: it sent more bytes than its index entry says the"
                                  rf" file has \({len(LARGE)}\): its index entry is wrong")
        self.assertNotIn("bad data", line)  # the peer's index is what is wrong
        await fetch.finish(lines=1, pattern="more bytes than its index entry says")

    async def test_more_bytes_than_announced_small(self):
        """
        A small file (gathered in memory) gets one DATA frame longer than
        the whole file: cancelled, discarded, one line, no file; the END
        that crosses the CANCEL is not taken for a protocol error.
        """
        content = b"twelve bytes"
        fetch = await offered(self, content)
        fetch.conv.data(fetch.get.transfer, content + b"and then some")
        fetch.conv.end(fetch.get.transfer, len(content), content_hash(content))
        await fetch.conv.next(wire.Cancel, lambda c: c.transfer == fetch.get.transfer)
        await fetch.failed("more bytes than its index entry says the file has")
        await fetch.conv.roundtrip()  # the late END was taken as crossing the CANCEL
        self.assertFalse(fetch.attacker.lost.called)
        await fetch.finish(lines=1, pattern="more bytes than its index entry says")

    async def test_fewer_bytes_then_end(self):
        """
        The peer sends all but the last 1000 bytes, then an END that claims
        the whole file: verification fails, the partial file is removed,
        one line, nothing under the final name.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.data(fetch.get.transfer, LARGE[:-1000])
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(LARGE))
        await fetch.failed(rf"got {len(LARGE) - 1000} of {len(LARGE)} bytes; bad data discarded")
        await fetch.finish(lines=1, pattern=r"got \d+ of \d+ bytes")

    async def test_empty_then_end(self):
        """
        An END straight after the GET, with no DATA at all, for a large
        file: refused the same way; not even an empty file appears.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(LARGE))
        await fetch.failed(rf"got 0 of {len(LARGE)} bytes")
        await fetch.finish(lines=1, pattern=r"got 0 of")


class ContentTests(TestCase):
    """
    Bytes of the right length that are not the file, and ENDs that do not
    describe the file asked for.
    """

    timeout = 60

    async def test_wrong_bytes_right_length(self):
        """
        One byte in the middle flipped, with the INDEX's own size and hash
        in the END: the hash check fails, the partial file is removed (so
        the bad bytes are never resumed from), nothing appears under the
        final name, one line, and the node keeps wanting the file (it
        plans the fetch again after a delay, not at once).
        """
        fetch = await offered(self, LARGE)
        bad = bytearray(LARGE)
        bad[len(bad) // 2] ^= 0x01
        fetch.conv.data(fetch.get.transfer, bytes(bad))
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(LARGE))
        await fetch.failed(r"content hash [0-9a-f]{16} is not [0-9a-f]{16}; bad data discarded")
        folder = fetch.target.node.folder
        await folder.when(lambda: fetch.name in folder.engine.waiting).addTimeout(WAIT, reactor)
        self.assertEqual([w for w in folder.fetcher.active + list(folder.fetcher.queue)
                          if w.path == fetch.name], [])
        self.assertEqual(len(fetch.conv.all(wire.Get)), 1)  # not at once: after a delay
        await fetch.finish(lines=1, pattern=r"content hash .* is not")

    async def test_wrong_bytes_for_a_nested_path(self):
        """
        Bad bytes for a file deep in directories the target does not have:
        nothing of it stays -- no file, no partial, and none of the
        directories made for it, which would otherwise be indexed and
        synced to every peer as if the user had made them.
        """
        fetch = await offered(self, LARGE, name="made/for/it/file.bin")
        bad = bytearray(LARGE)
        bad[0] ^= 0x80
        fetch.conv.data(fetch.get.transfer, bytes(bad))
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(LARGE))
        await fetch.failed(r"content hash [0-9a-f]{16} is not [0-9a-f]{16}; bad data discarded")
        self.assertFalse(os.path.lexists(os.path.join(fetch.target.share, "made")))
        await fetch.finish(lines=1, pattern=r"content hash .* is not")

    async def test_end_hash_differs_from_index(self):
        """
        The right bytes, but an END naming another hash than the INDEX
        promised: the node trusts neither, discards the bytes, one line.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.data(fetch.get.transfer, LARGE)
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(b"another file"))
        await fetch.failed("END does not describe the file we asked for")
        await fetch.finish(lines=1, pattern="END does not describe")

    async def test_end_size_differs_from_index(self):
        """
        Bytes of a longer file than the INDEX announced, sent within the
        announced size, with an END giving the version asked for but the
        longer size: the bytes are discarded, and the one line says the
        peer's index entry is wrong (not that the data was bad); no file.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.data(fetch.get.transfer, LARGE)
        fetch.conv.end(fetch.get.transfer, len(LARGE) + 4, content_hash(LARGE))
        line = await fetch.failed(rf"failed: its END says the file has {len(LARGE) + 4} bytes,"
                                  rf" its index entry {len(LARGE)}: its index entry is wrong")
        self.assertNotIn("bad data", line)
        await fetch.finish(lines=1, pattern="its index entry is wrong")


class StrayFrameTests(TestCase):
    """
    DATA and END frames that belong to no transfer in flight: a peer that
    sends them breaks the protocol (DATA only ever answers our GET), so it
    is dropped with one line, and nothing it sent reaches a final name.
    """

    timeout = 60

    async def test_data_before_any_get(self):
        """
        DATA for a transfer id the node never used, before it asked for
        anything: dropped, the bytes land nowhere.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        conv.data(4242, b"unrequested bytes " * 100)
        await conv.attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, conv.attacker, lines=1,
                           pattern=r"dropping .*DATA for unknown transfer 4242")

    async def test_data_for_unrequested_transfer_mid_transfer(self):
        """
        DATA for another transfer id interleaved with a real transfer:
        dropped with one line; the half-received file never reaches its
        final name (its partial file may stay, to resume from).
        """
        fetch = await offered(self, LARGE)
        half = len(LARGE) // 2
        fetch.conv.data(fetch.get.transfer, LARGE[:half])
        fetch.conv.data(fetch.get.transfer + 1000, b"unrequested bytes " * 100)
        fetch.conv.data(fetch.get.transfer, LARGE[half:])
        fetch.conv.end(fetch.get.transfer, len(LARGE), content_hash(LARGE))
        await fetch.attacker.lost.addTimeout(WAIT, reactor)
        await fetch.finish(lines=1, partial_ok=True,
                           pattern=rf"dropping .*DATA for unknown transfer"
                                   rf" {fetch.get.transfer + 1000}")

    async def test_data_after_end(self):
        """
        More DATA for a transfer after its END: the peer is dropped with one
        line; the landed file is exactly the verified one, never appended
        to.
        """
        fetch = await offered(self, LARGE)
        fetch.conv.serve(fetch.get, LARGE)
        fetch.conv.data(fetch.get.transfer, b"appended after END")
        await fetch.attacker.lost.addTimeout(WAIT, reactor)
        await fetch.landed_intact()
        await fetch.finish(lines=1, landed=True,
                           pattern=rf"dropping .*DATA for unknown transfer {fetch.get.transfer}")
        with open(fetch.final, "rb") as f:
            self.assertEqual(f.read(), LARGE)

    async def test_second_end(self):
        """
        A second END for a transfer already ended: the peer is dropped with
        one line; the verified file from the first END still lands intact.
        """
        content = b"small file, ended twice\n"
        fetch = await offered(self, content)
        fetch.conv.serve(fetch.get, content)
        fetch.conv.end(fetch.get.transfer, len(content), content_hash(content))
        await fetch.attacker.lost.addTimeout(WAIT, reactor)
        await fetch.landed_intact()
        await fetch.finish(lines=1, pattern=r"dropping .*END for unknown transfer", landed=True)


class InterruptedTests(TestCase):
    """
    A peer that vanishes in the middle of a file the target fetches from it.
    """

    timeout = 60

    async def test_vanishes_mid_fetch_then_resumes(self):
        """
        The attacker serves half of a large file and aborts: the target
        keeps the bytes it got in its partial file (never under the final
        name, never indexed) and says so in one line naming the peer; when
        the same node comes back and offers the file again, the target asks
        from where it stopped (the GET's offset), says it resumes, and the
        file lands verified -- the bytes of both connections together.
        """
        target = await Target.start(self)
        before = target.baseline()
        identity_dir = os.path.abspath(self.mktemp())
        conv = await Conversation.open(target, identity_dir=identity_dir)
        entry = conv.entry("file.bin", LARGE)
        conv.offer(entry)
        get = await conv.next(wire.Get)
        self.assertEqual(get.offset, 0)
        half = len(LARGE) // 2
        conv.data(get.transfer, LARGE[:half])
        await conv.roundtrip()  # the target has taken them
        conv.attacker.transport.abortConnection()
        line = await wait_line(target, r"fetching file\.bin from .* interrupted;"
                                       r" (\d+) bytes kept", before["mark"])
        self.assertIn(conv.attacker.address, line)
        self.assertIn(f" {half} bytes kept", line)
        final = os.path.join(target.share, "file.bin")
        self.assertFalse(os.path.lexists(final))
        [partial] = partials(target.share)
        self.assertEqual(os.path.getsize(os.path.join(target.share, partial)), half)
        entry_there = target.node.folder.store.get("file.bin")
        self.assertTrue(entry_there is None or not entry_there.live)
        again = await Conversation.open(target, identity_dir=identity_dir)
        again.offer(entry)
        get = await again.next(wire.Get)
        self.assertEqual((get.path, get.offset), ("file.bin", half))
        await wait_line(target, rf"resuming file\.bin from .* at byte {half} of {len(LARGE)}",
                        before["mark"])
        again.serve(get, LARGE)
        await again.landed("file.bin", LARGE)
        with open(final, "rb") as f:
            self.assertEqual(f.read(), LARGE)
        self.assertEqual(partials(target.share), [])
        again.attacker.transport.loseConnection()
        await target.check(self, before, again.attacker, lines=0, share_may_gain=["file.bin"])


    async def test_source_comes_back_after_a_retry_found_none(self):
        """
        The only source vanishes mid-fetch and stays away past the sync's
        retry (which finds no source); then it comes back, same node, same
        index, nothing new to say.  The target must use it again: it asks
        for the rest of the file (GET at the kept offset) and the file
        lands verified.
        """
        self.patch(sync_module, "RETRY_DELAY", 0.2)
        self.patch(fetcher_module, "RECONNECT_WAIT", 0.5)  # the wait for it to come back
        target = await Target.start(self)
        before = target.baseline()
        engine = target.node.folder.engine
        identity_dir = os.path.abspath(self.mktemp())
        conv = await Conversation.open(target, identity_dir=identity_dir)
        entry = conv.entry("file.bin", LARGE)
        conv.offer(entry)
        get = await conv.next(wire.Get)
        half = len(LARGE) // 2
        conv.data(get.transfer, LARGE[:half])
        await conv.roundtrip()
        # The second failure of the path: the retry that found no source.
        failures = []
        retried = Deferred()
        failed = engine.failed

        def counting(action, retry_at):
            failed(action, retry_at)
            if action.path == "file.bin":
                failures.append(retry_at)
                if len(failures) == 2 and not retried.called:
                    retried.callback(None)

        self.patch(engine, "failed", counting)
        conv.attacker.transport.abortConnection()
        await retried.addTimeout(WAIT, reactor)
        again = await Conversation.open(target, identity_dir=identity_dir,
                                        index_id=conv.index_id, sequence=entry.sequence)
        get = await again.next(wire.Get)
        self.assertEqual((get.path, get.offset), ("file.bin", half))
        again.serve(get, LARGE)
        await again.landed("file.bin", LARGE)
        again.attacker.transport.loseConnection()
        await target.check(self, before, again.attacker, lines=0, share_may_gain=["file.bin"])


class ChangingSourceTests(TestCase):
    """
    The target serves a file of about 4 MiB to the attacker, and the test
    changes that file on disk while it is being sent (right after the
    first DATA frame is written).  The node must never present a mix as the
    file: it ends with ERROR "changed", or with an END whose hash is the
    hash of exactly the bytes it sent.
    """

    timeout = 60

    async def serve_changing(self, change, expect: str):
        """
        Serve CHANGING to the attacker, calling C{change(path)} right after
        the first DATA frame is written; C{expect} is C{"error"} (ERROR
        "changed"), C{"end"} (an END for exactly the bytes sent, the
        original file) or C{"safe"} (either, as long as no END vouches for
        a mix).
        """
        target = await Target.start(self, files={"big.bin": CHANGING})
        path = os.path.join(target.share, "big.bin")
        before = target.baseline()
        conv = await Conversation.open(target)
        attacker = conv.attacker
        transport = target.node.connections[attacker.identity.node_id].transport
        write_sequence = transport.writeSequence
        changed = []

        def writeSequence(sequence):
            write_sequence(sequence)
            if not changed and sequence and bytes(sequence[0][4:5]) == bytes((wire.DATA,)):
                changed.append(True)
                change(path)

        transport.writeSequence = writeSequence
        attacker.send_frame(wire.Get(transfer=7, path="big.bin", hash=content_hash(CHANGING),
                                     offset=0))
        ending = await conv.next((wire.End, wire.Error), lambda f: f.transfer == 7)
        self.assertTrue(changed)
        sent = b"".join(f.payload for f in conv.all(wire.Data) if f.transfer == 7)
        self.assertGreater(len(sent), 0)
        if isinstance(ending, wire.End):
            # An END always names what the index promised; if the bytes
            # sent are not that file, the hash gives the mix away.
            self.assertEqual((ending.size, ending.hash), (len(CHANGING), content_hash(CHANGING)))
            if expect == "end":
                self.assertEqual(sent, CHANGING)
            elif sent != CHANGING:
                self.assertNotEqual(content_hash(sent), ending.hash)
        else:
            self.assertEqual(ending.code, "changed")
        if expect != "safe":
            self.assertEqual(isinstance(ending, wire.Error), expect == "error", ending)
        # One ending for the transfer, and no DATA for it after that.
        await conv.roundtrip()
        for_seven = [f for f in conv.frames if getattr(f, "transfer", None) == 7]
        self.assertIs(for_seven[-1], ending)
        self.assertEqual(sum(isinstance(f, (wire.End, wire.Error)) for f in for_seven), 1)
        self.assertFalse(any(os.path.basename(p).startswith("big.bin.")
                             for p in os.listdir(target.share)))
        # The test restores the file, so the share compares equal.
        with open(path, "wb") as f:
            f.write(CHANGING)
        attacker.transport.loseConnection()
        error = isinstance(ending, wire.Error)
        await target.check(self, before, attacker, lines=1 if error else 0,
                           pattern=r"upload of big\.bin to .* failed: the file")
        return ending

    async def test_rewritten_in_place(self):
        """
        The file is overwritten in place with other bytes of the same size
        (and a newer mtime): the node, having sent part of a mix, ends with
        ERROR "changed" -- never an END -- and logs one line.
        """
        def rewrite(path):
            st = os.stat(path)
            with open(path, "r+b") as f:
                f.write(os.urandom(len(CHANGING)))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

        await self.serve_changing(rewrite, expect="error")

    async def test_rewritten_keeping_mtime(self):
        """
        The file is overwritten in place and its mtime put back, so size
        and mtime still match the index: the node may not be able to
        tell, but it must not vouch for the mix -- an END it sends names the
        index's hash, which the mixed bytes do not have.
        """
        def rewrite(path):
            st = os.stat(path)
            with open(path, "r+b") as f:
                f.write(os.urandom(len(CHANGING)))
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

        await self.serve_changing(rewrite, expect="safe")

    async def test_truncated(self):
        """
        The file is cut to half its size: the node notices it shrank, ends
        with ERROR "changed" instead of END, one line.
        """
        def truncate(path):
            os.truncate(path, len(CHANGING) // 2)

        await self.serve_changing(truncate, expect="error")

    async def test_replaced_by_rename(self):
        """
        A new file is renamed over the old one: the node keeps sending the
        file it opened, whole, and ends with an END whose hash is that of
        the bytes sent (and of the index).
        """
        def replace(path):
            with open(path + ".new", "wb") as f:
                f.write(os.urandom(len(CHANGING)))
            os.replace(path + ".new", path)

        await self.serve_changing(replace, expect="end")
