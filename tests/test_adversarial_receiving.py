"""
Adversarial suite, family "Names a peer offers us" (threats.md): the
attacker serves, and offers in its CATALOG names that could leave the share
(C{..}, absolute and Windows forms, backslashes, NUL and control characters,
over-long names, non-NFC names, reserved C{.p2pshare} names), names that
collide with each other or with files the target already has, and files
whose download would land on a link, a FIFO or a hard link the test planted
in the target's share.  Every case ends with the invariant check of
L{tests.adversary}.

The module also holds the small helpers both serving-attacker families use
(L{Conversation}, L{open_conversation}, L{entry}, ...): the attacker plays
the node that has the files, and the target -- sync on, as by default --
asks it for them.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Callable, List, Optional, Sequence

import blake3
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from p2ptwisted import wire
from p2ptwisted.share import PARTIAL_PREFIX, conflict_name
from p2ptwisted.transfer import SMALL_FILE, partial_name

from .adversary import WAIT, Target

#: An mtime for offered files (2023-11-14), older than anything the test creates.
OLD_MTIME = 1_700_000_000 * 10**9

#: The name of the harmless file offered beside the hostile ones: once it
#: has landed, the target has certainly processed the whole catalog.
SENTINEL = "sentinel.txt"
SENTINEL_BYTES = b"an honest little file offered beside hostile names\n"


def content_hash(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def entry(path: str, data: bytes, mtime: int = OLD_MTIME) -> wire.FileEntry:
    """
    A catalog entry for C{data} offered at C{path}.
    """
    return wire.FileEntry(path=path, size=len(data), mtime_ns=mtime, hash=content_hash(data))


def raw_entry(path_json: str, size_json: str = "1", mtime_json: Optional[str] = None,
              hash_json: Optional[str] = None) -> str:
    """
    One catalog entry as hand-written JSON text: each argument is already
    JSON (so a case can spell escapes, fractions, negative numbers...).
    """
    return ('{"path":%s,"size":%s,"mtime":%s,"hash":%s}'
            % (path_json, size_json, mtime_json or str(OLD_MTIME),
               hash_json or json.dumps(content_hash(b"x"))))


def json_entry(e: wire.FileEntry) -> str:
    return json.dumps(wire.entry_to_json(e), ensure_ascii=False)


def partials(root: str) -> List[str]:
    """
    Every partial download left anywhere under C{root} (the harness only
    looks below the top level of the share).
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name.startswith(PARTIAL_PREFIX):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return found


def warm(target: Target) -> None:
    """
    The share keeps one descriptor of its root open for the node's life,
    opened by its first download: open it before the baseline, so the
    open-files check measures what an attack leaves behind.
    """
    os.close(target.node.share.open_parent("warm-up"))


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

    def observe(event):
        line = formatEvent(event)
        if not d.called and not fired and regex.search(line):
            fired.append(line)
            reactor.callLater(0, d.callback, line)

    fired: List[str] = []
    globalLogPublisher.addObserver(observe)
    target.testcase.addCleanup(globalLogPublisher.removeObserver, observe)
    return d.addTimeout(WAIT, reactor)


class Conversation:
    """
    The attacker's side of a file conversation, frame by frame as the
    target sends them: C{next} waits (on the data arriving, never on a
    clock) for the next frame of a kind.
    """

    def __init__(self, attacker):
        self.attacker = attacker
        self.frames: List[object] = []
        self._pos = 0
        self._cursor = 0
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

    def _parse(self) -> None:
        data = self.attacker.received
        while len(data) - self._pos >= 4:
            n = int.from_bytes(data[self._pos:self._pos + 4], "big")
            if len(data) - self._pos - 4 < n:
                break
            frame = bytes(data[self._pos + 4:self._pos + 4 + n])
            self._pos += 4 + n
            message = wire.decode_frame(frame)
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

    # -- serving -------------------------------------------------------------

    def offer(self, *entries: wire.FileEntry) -> None:
        self.attacker.send_frame(wire.Catalog(files=tuple(entries), more=False))

    def offer_raw(self, entries_json: Sequence[str]) -> None:
        """
        A CATALOG written by hand, for entries wire would not encode.
        """
        body = ('{"files":[' + ",".join(entries_json) + '],"more":false}').encode("utf-8")
        frame = bytes((wire.CATALOG,)) + body
        self.attacker.send(len(frame).to_bytes(4, "big") + frame)

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

    def landed(self, path: str) -> Deferred:
        """
        The target's HAVE announcing that C{path} is now in its share.
        """
        return self.next(wire.Have, lambda h: any(e.path == path for e in h.files),
                         anywhere=True)


async def start_target(testcase, **kwargs) -> Target:
    target = await Target.start(testcase, **kwargs)
    warm(target)
    return target


async def open_conversation(target: Target):
    """
    Connect as a fresh node, say HELLO, and wait for the target's LIST:
    from then on the target takes what we offer.
    """
    attacker = await target.attack()
    conversation = Conversation(attacker)
    attacker.hello()
    await conversation.next(wire.List)
    return attacker, conversation


def assert_clean_lines(testcase, target: Target, mark: int) -> None:
    """
    Names in log lines are escaped: no raw control character in any line.
    """
    for line in target.lines_since(mark):
        testcase.assertFalse(wire.has_control_chars(line), repr(line))


async def offer_beside_sentinel(testcase, bad_json: Sequence[str],
                                sentinel: str = SENTINEL) -> Target:
    """
    Offer the hand-written entries C{bad_json}, all invalid, in one
    CATALOG with a valid entry for C{sentinel}; serve the sentinel when the
    target asks for it, and assert: the target asked for nothing else,
    wrote nothing else, left no partial file, logged one line counting the
    invalid entries (no raw control characters in any line), and passes
    the invariant check.
    """
    target = await start_target(testcase)
    before = target.baseline()
    attacker, conv = await open_conversation(target)
    good = entry(sentinel, SENTINEL_BYTES)
    conv.offer_raw(list(bad_json) + [json_entry(good)])
    get = await conv.next(wire.Get)
    testcase.assertEqual(get.path, sentinel)
    conv.serve(get, SENTINEL_BYTES)
    await conv.landed(sentinel)
    await conv.roundtrip()
    testcase.assertEqual([g.path for g in conv.all(wire.Get)], [sentinel])
    with open(os.path.join(target.share, sentinel), "rb") as f:
        testcase.assertEqual(f.read(), SENTINEL_BYTES)
    testcase.assertEqual(partials(target.share), [])
    assert_clean_lines(testcase, target, before["mark"])
    attacker.transport.loseConnection()
    await target.check(testcase, before, attacker, lines=1,
                       pattern=rf"ignored {len(bad_json)} invalid file entries in CATALOG",
                       share_may_gain=[sentinel])
    return target


class HostileNamesTests(TestCase):
    """
    Catalog entries whose names must never reach the disk: the decoder
    rejects them, the node logs one line counting them, fetches the valid
    entry offered beside them, and writes nothing else anywhere.
    """

    timeout = 60

    async def offered(self, bad_json: Sequence[str], sentinel: str = SENTINEL) -> Target:
        return await offer_beside_sentinel(self, bad_json, sentinel)

    async def test_dot_dot_names(self):
        """
        C{..} and C{.} components, plain and spelled with JSON escapes,
        are rejected: nothing lands beside the share or anywhere else.
        """
        names = ["../escape.txt", "sub/../../escape.txt", "..", "a/..", "./x.txt",
                 "a/./b.txt", "a//b.txt", "x/", "../../../../../../tmp/escape.txt"]
        bad = [raw_entry(json.dumps(n)) for n in names]
        bad.append(raw_entry(r'"\u002e\u002e/escape2.txt"'))
        target = await self.offered(bad)
        self.assertFalse(os.path.exists(os.path.join(target.base, "escape.txt")))
        self.assertFalse(os.path.exists(os.path.join(target.base, "escape2.txt")))

    async def test_absolute_and_drive_names(self):
        """
        Absolute paths (one pointing right into the test's own directory)
        and Windows drive forms are rejected.
        """
        target_dir = os.path.abspath(self.mktemp())
        os.makedirs(target_dir)
        names = [os.path.join(target_dir, "abs.txt"), "/etc/passwd-p2p", "//server/x",
                 "C:/x.txt", "c:x.txt", "Z:", "/"]
        target = await self.offered([raw_entry(json.dumps(n)) for n in names])
        self.assertEqual(os.listdir(target_dir), [])
        self.assertNotIn("abs.txt", os.listdir(target.share))
        self.assertFalse(os.path.exists("/etc/passwd-p2p"))

    async def test_backslash_names(self):
        """
        Backslashes -- Windows separators, UNC paths, a backslash C{..} --
        are rejected, never turned into a file named with them.
        """
        names = ["..\\escape.txt", "a\\b.txt", "\\\\server\\share\\x", "C:\\x.txt",
                 "dir/..\\..\\escape.txt", "\\"]
        target = await self.offered([raw_entry(json.dumps(n)) for n in names])
        self.assertFalse(os.path.exists(os.path.join(target.base, "escape.txt")))

    async def test_nul_and_control_names(self):
        """
        NUL, newline, tab, escape, DEL and C1 characters in a name are
        rejected; the log line says how many, and no log line carries a raw
        control character.
        """
        names = ["nul\x00.txt", "line\nbreak.txt", "tab\t.txt", "esc\x1b[31m.txt",
                 "del\x7f.txt", "c1\x85.txt", "csi\x9b.txt", "dir\x01/x.txt", "\r"]
        bad = [raw_entry(json.dumps(n)) for n in names]
        bad.append(raw_entry(r'"spelled\u0000nul.txt"'))
        await self.offered(bad)

    async def test_overlong_names(self):
        """
        A component over 255 bytes (ASCII, or 128 two-byte characters) and
        a path over 4096 bytes are rejected: the limits count bytes.
        """
        names = ["a" * 256, "d/" + "b" * 300 + ".txt", "\u00e9" * 128,
                 "/".join(["c" * 200] * 21), "y" * 5000]
        target = await self.offered([raw_entry(json.dumps(n, ensure_ascii=False))
                                     for n in names])
        self.assertEqual(sorted(os.listdir(target.share)),
                         sorted(["shared", SENTINEL]))

    async def test_non_nfc_names(self):
        """
        Names that are not NFC are rejected; a name that only NFKC would
        change (a ligature) is valid, and lands under exactly that name,
        never its NFKC form.
        """
        names = ["e\u0301.txt", "dir\u0301/x.txt", "A\u030a.txt", "\u1e0b\u0323.txt"]
        for name in names:
            self.assertFalse(unicodedata.is_normalized("NFC", name))
        ligature = "\ufb01le.txt"
        self.assertTrue(unicodedata.is_normalized("NFC", ligature))
        target = await self.offered([raw_entry(json.dumps(n, ensure_ascii=False))
                                     for n in names], sentinel=ligature)
        self.assertFalse(os.path.exists(os.path.join(target.share, "file.txt")))
        self.assertIn(ligature, os.listdir(target.share))

    async def test_reserved_names(self):
        """
        Names in the node's own C{.p2pshare} namespace (its partial files,
        anything under a C{.p2pshare} directory) are rejected at any depth.
        """
        names = [".p2pshare/x.txt", ".p2pshare-part-0123456789abcdef",
                 "d/.p2pshare-part-0123456789abcdef", "a/.p2pshare/b.txt", ".p2pshare",
                 ".p2pshareX.txt"]
        target = await self.offered([raw_entry(json.dumps(n)) for n in names])
        for name in names:
            self.assertFalse(os.path.lexists(os.path.join(target.share, name)), name)


class CollidingNamesTests(TestCase):
    """
    Names that collide with each other or with what the target has: nothing
    is overwritten, every version that lands is verified, each once.
    """

    timeout = 60

    async def test_same_path_twice(self):
        """
        One catalog lists the same path twice with different content: the
        target fetches exactly one version, once, and it lands verified.
        """
        target = await start_target(self)
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        first, second = b"first version\n" * 10, b"second version\n" * 10
        versions = {content_hash(first): first, content_hash(second): second}
        conv.offer(entry("dup.txt", first), entry("dup.txt", second))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, "dup.txt")
        conv.serve(get, versions[get.hash])
        await conv.landed("dup.txt")
        await conv.roundtrip()
        self.assertEqual(len(conv.all(wire.Get)), 1)
        with open(os.path.join(target.share, "dup.txt"), "rb") as f:
            self.assertEqual(f.read(), versions[get.hash])
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0, share_may_gain=["dup.txt"])

    async def test_names_equal_after_nfc(self):
        """
        Two entries that differ only before NFC (a precomposed and a
        decomposed e-acute): the decomposed one is rejected, only the NFC
        one is fetched, and only one file appears.
        """
        target = await start_target(self)
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        nfc, nfd = "caf\u00e9.txt", "cafe\u0301.txt"
        content = b"one cafe\n"
        conv.offer(entry(nfd, b"the decomposed impostor\n"), entry(nfc, content))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, nfc)
        conv.serve(get, content)
        await conv.landed(nfc)
        await conv.roundtrip()
        self.assertEqual(len(conv.all(wire.Get)), 1)
        names = [n for n in os.listdir(target.share) if n != "shared"]
        self.assertEqual(names, [nfc])
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=1,
                           pattern=r"ignored 1 invalid file entries in CATALOG",
                           share_may_gain=[nfc])

    async def test_file_and_directory_of_one_name(self):
        """
        One catalog offers C{x} as a file and C{x/y.txt} beneath it: both
        versions land, neither replaces the other (the file that cannot have
        its name keeps a conflict name).
        """
        target = await start_target(self)
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        as_file, beneath = b"x as a file\n", b"a file inside x\n"
        contents = {"x": as_file, "x/y.txt": beneath}
        conv.offer(entry("x", as_file), entry("x/y.txt", beneath))
        for _ in range(2):
            get = await conv.next(wire.Get)
            conv.serve(get, contents[get.path])
        await conv.landed("x/y.txt")
        moved = conflict_name("x", content_hash(as_file))
        await conv.landed(moved)
        await conv.roundtrip()
        self.assertEqual(len(conv.all(wire.Get)), 2)
        with open(os.path.join(target.share, "x", "y.txt"), "rb") as f:
            self.assertEqual(f.read(), beneath)
        with open(os.path.join(target.share, moved), "rb") as f:
            self.assertEqual(f.read(), as_file)
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0,
                           share_may_gain=["x/y.txt", moved])

    async def test_existing_file_with_other_content(self):
        """
        The peer offers (as an older version) a path the target already has
        with other content: the offered bytes land as a conflict copy
        C{NAME.conflict-XXXXXXXX.EXT}; the target's own file is untouched.
        """
        ours = b"the target's own notes\n"
        target = await start_target(self, files={"docs/notes.txt": ours})
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        theirs = b"the stranger's notes\n"
        conv.offer(entry("docs/notes.txt", theirs))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, "docs/notes.txt")
        conv.serve(get, theirs)
        copy = conflict_name("docs/notes.txt", content_hash(theirs))
        self.assertRegex(copy, r"^docs/notes\.conflict-[0-9a-f]{8}\.txt$")
        await conv.landed(copy)
        with open(os.path.join(target.share, copy), "rb") as f:
            self.assertEqual(f.read(), theirs)
        with open(os.path.join(target.share, "docs/notes.txt"), "rb") as f:
            self.assertEqual(f.read(), ours)
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0, share_may_gain=[copy])


class PlantedTests(TestCase):
    """
    Something planted (by the test) in the target's share where a download
    will be written: a symlink out of the share at the destination, at a
    parent directory or at the partial file's name, a hard link, a FIFO.
    Nothing is ever written through it; what lies outside is unchanged.
    """

    timeout = 60

    def outside_file(self, target: Target, name: str = "victim.txt") -> str:
        outside = os.path.join(target.base, "outside")
        os.makedirs(outside, exist_ok=True)
        victim = os.path.join(outside, name)
        with open(victim, "wb") as f:
            f.write(b"must never change\n")
        return victim

    async def test_symlink_at_destination(self):
        """
        A symlink out of the share sits where the download will land: the
        file lands under its conflict name instead; the link and the file it
        points to are unchanged.
        """
        target = await start_target(self)
        victim = self.outside_file(target)
        os.symlink(victim, os.path.join(target.share, "evil.txt"))
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        content = b"written through the link?\n"
        conv.offer(entry("evil.txt", content))
        get = await conv.next(wire.Get)
        conv.serve(get, content)
        moved = conflict_name("evil.txt", content_hash(content))
        await conv.landed(moved)
        with open(os.path.join(target.share, moved), "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertTrue(os.path.islink(os.path.join(target.share, "evil.txt")))
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"must never change\n")
        await wait_line(target, r"appeared while it was being fetched: keeping both",
                        before["mark"])
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0, share_may_gain=[moved])

    async def test_symlink_at_parent_directory(self):
        """
        A symlink out of the share sits where the download's directory will
        be: the node refuses to walk through it, logs one line naming the
        peer, never asks for the file, and the directory outside stays
        empty.
        """
        target = await start_target(self)
        outside = os.path.join(target.base, "outside")
        os.makedirs(outside)
        os.symlink(outside, os.path.join(target.share, "sub"))
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        conv.offer(entry("sub/deeper/x.txt", b"through the link?\n"))
        line = await wait_line(target, r"cannot fetch sub/deeper/x\.txt", before["mark"])
        self.assertIn(attacker.address, line)
        self.assertIn("link", line)
        await conv.roundtrip()
        self.assertEqual(conv.all(wire.Get), [])
        self.assertEqual(os.listdir(outside), [])
        about = [x for x in target.lines_since(before["mark"]) if "sub/deeper" in x]
        self.assertEqual(len(about), 1, about)
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0)

    async def test_links_at_partial_names(self):
        """
        Symlinks out of the share at the partial-file names of a large file
        (written as it arrives) and a small one (written when complete), and
        a hard link to a file outside at another large file's partial name:
        none is written through; all three files land intact.
        """
        target = await start_target(self)
        big = os.urandom(SMALL_FILE + 70000)
        big2 = os.urandom(SMALL_FILE + 1000)
        small = b"small and gathered in memory\n"
        files = {"big.bin": big, "small.txt": small, "big2.bin": big2}
        victims = {}
        for name, content in files.items():
            victim = self.outside_file(target, f"victim-{name}")
            victims[name] = victim
            part = os.path.join(target.share, partial_name(name, content_hash(content)))
            if name == "big2.bin":
                os.link(victim, part)
            else:
                os.symlink(victim, part)
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        conv.offer(*(entry(name, content) for name, content in files.items()))
        gets = [await conv.next(wire.Get) for _ in files]
        for name in ("big.bin", "big2.bin"):
            # Replaced by a fresh file of its own when the download opened it.
            part = os.path.join(target.share, partial_name(name, content_hash(files[name])))
            self.assertFalse(os.path.islink(part))
            self.assertEqual(os.stat(part).st_nlink, 1)
        for get in gets:
            self.assertEqual(get.offset, 0)
            conv.serve(get, files[get.path])
        for name in files:
            await conv.landed(name)
        for name, content in files.items():
            with open(os.path.join(target.share, name), "rb") as f:
                self.assertEqual(f.read(), content)
            with open(victims[name], "rb") as f:
                self.assertEqual(f.read(), b"must never change\n")
            self.assertEqual(os.stat(victims[name]).st_nlink, 1)
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0, share_may_gain=list(files))

    async def test_fifo_at_destination(self):
        """
        A FIFO sits where the download will land: the node neither blocks
        on it nor writes into it; the file lands under its conflict name.
        """
        target = await start_target(self)
        fifo = os.path.join(target.share, "pipe.txt")
        os.mkfifo(fifo)
        before = target.baseline()
        attacker, conv = await open_conversation(target)
        content = b"into the pipe?\n"
        conv.offer(entry("pipe.txt", content))
        get = await conv.next(wire.Get)
        conv.serve(get, content)
        moved = conflict_name("pipe.txt", content_hash(content))
        await conv.landed(moved)
        with open(os.path.join(target.share, moved), "rb") as f:
            self.assertEqual(f.read(), content)
        self.assertFalse(os.path.isfile(fifo))
        await wait_line(target, r"appeared while it was being fetched: keeping both",
                        before["mark"])
        self.assertEqual(partials(target.share), [])  # no half file anywhere
        attacker.transport.loseConnection()
        await target.check(self, before, attacker, lines=0, share_may_gain=[moved])
