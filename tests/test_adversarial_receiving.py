"""
Adversarial suite, family "Names and versions a peer offers us"
(threats.md), on protocol version 2: the attacker plays a peer whose INDEX
offers files, and the target -- sync on, as by default -- plans a FETCH for
every version it lacks and asks the attacker for the bytes.

A hostile INDEX: names that could leave the share (C{..}, absolute and
Windows forms, backslashes, NUL and control characters, over-long names,
non-NFC names, reserved C{.p2pshare} names), bad hashes, bad version
vectors (too many counters, counters out of range or far in the future),
directories and deletions with content, entries that are not objects, a
frame too big or not an object.  Bad entries are dropped and counted in one
line, never reach the disk, and the valid entry offered beside them (the
sentinel) still lands; a bad frame drops the connection.

Then names that collide with each other or with what the target has, and
files whose download would land on a link, a FIFO or a hard link the test
planted in the target's share.  Every case ends with the invariant check of
L{tests.adversary}.
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
from typing import Optional, Sequence

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from p2ptwisted import wire
from p2ptwisted.core.planner import conflict_name
from p2ptwisted.core.versions import MAX_AHEAD, MAX_COUNTER, MAX_COUNTERS, Vector
from p2ptwisted.downloads import SMALL_FILE, partial_name
from p2ptwisted.sync import STUCK_AFTER
from p2ptwisted.wire_index import Index, entry_to_json

from .adversary import (
    SHARED_NAME, WAIT, Conversation, Scribe, Target, assert_clean_lines, content_hash,
    partials, wait_line)

#: The name of the harmless file offered beside the hostile entries: once it
#: has landed, the target has certainly processed the whole INDEX.
SENTINEL = "sentinel.txt"
SENTINEL_BYTES = b"an honest little file offered beside hostile entries\n"

#: How the target counts the entries it drops at the wire's edge.
INVALID = r"ignored {n} invalid index entries from "


async def offer_beside_sentinel(testcase, bad_json: Sequence[str], sentinel: str = SENTINEL,
                                pattern: Optional[str] = None) -> Target:
    """
    Offer the hand-written entries C{bad_json}, all invalid, in one INDEX
    with a valid entry for C{sentinel}; serve the sentinel when the target
    asks for it, and assert: the target asked for nothing else, stored
    nothing else of ours, wrote nothing else, left no partial file, logged
    one line counting the invalid entries (no raw control characters in any
    line), and passes the invariant check.
    """
    target = await Target.start(testcase)
    before = target.baseline()
    conv = await Conversation.open(target)
    good = conv.entry(sentinel, SENTINEL_BYTES)
    conv.offer_raw(list(bad_json) + [json.dumps(entry_to_json(good), ensure_ascii=False)])
    get = await conv.next(wire.Get)
    testcase.assertEqual(get.path, sentinel)
    conv.serve(get, SENTINEL_BYTES)
    await conv.landed(sentinel, SENTINEL_BYTES)
    await conv.roundtrip()
    testcase.assertEqual([g.path for g in conv.all(wire.Get)], [sentinel])
    with open(os.path.join(target.share, sentinel), "rb") as f:
        testcase.assertEqual(f.read(), SENTINEL_BYTES)
    store = target.node.folder.store
    testcase.assertEqual(store.remote_paths(conv.attacker.identity.node_id), [sentinel])
    testcase.assertEqual(partials(target.share), [])
    assert_clean_lines(testcase, target, before["mark"])
    conv.attacker.transport.loseConnection()
    await target.check(testcase, before, conv.attacker, lines=1,
                       pattern=pattern or INVALID.format(n=len(bad_json)),
                       share_may_gain=[sentinel])
    return target


def paths(conv: Conversation, names) -> list:
    """
    Entries (JSON text) valid in every field but the path, one per name.
    """
    return [conv.raw_entry(path=json.dumps(n, ensure_ascii=False)) for n in names]


class HostileNamesTests(TestCase):
    """
    INDEX entries whose names must never reach the disk: the decoder
    rejects them, the node logs one line counting them, fetches the valid
    entry offered beside them, and writes nothing else anywhere.
    """

    timeout = 60

    async def offered(self, bad_json_of, sentinel: str = SENTINEL) -> Target:
        """
        C{bad_json_of(conv)}: the hand-written bad entries, made with a
        throwaway conversation's helpers (only their text matters).
        """
        return await offer_beside_sentinel(self, bad_json_of(Scribe()), sentinel)

    async def test_dot_dot_names(self):
        """
        C{..} and C{.} components, plain and spelled with JSON escapes,
        are rejected: nothing lands beside the share or anywhere else.
        """
        names = ["../escape.txt", "sub/../../escape.txt", "..", "a/..", "./x.txt",
                 "a/./b.txt", "a//b.txt", "x/", "../../../../../../tmp/escape.txt"]

        def bad(conv):
            return paths(conv, names) + [conv.raw_entry(path=r'"\u002e\u002e/escape2.txt"')]

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
        target = await self.offered(lambda conv: paths(conv, names))
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
        target = await self.offered(lambda conv: paths(conv, names))
        self.assertFalse(os.path.exists(os.path.join(target.base, "escape.txt")))

    async def test_nul_and_control_names(self):
        """
        NUL, newline, tab, escape, DEL and C1 characters in a name are
        rejected; the log line says how many, and no log line carries a raw
        control character.
        """
        names = ["nul\x00.txt", "line\nbreak.txt", "tab\t.txt", "esc\x1b[31m.txt",
                 "del\x7f.txt", "c1\x85.txt", "csi\x9b.txt", "dir\x01/x.txt", "\r"]
        await self.offered(lambda conv: paths(conv, names)
                           + [conv.raw_entry(path=r'"spelled\u0000nul.txt"')])

    async def test_overlong_names(self):
        """
        A component over 255 bytes (ASCII, or 128 two-byte characters) and
        a path over 4096 bytes are rejected: the limits count bytes.
        """
        names = ["a" * 256, "d/" + "b" * 300 + ".txt", "\u00e9" * 128,
                 "/".join(["c" * 200] * 21), "y" * 5000]
        target = await self.offered(lambda conv: paths(conv, names))
        self.assertEqual(sorted(os.listdir(target.share)), sorted(["shared", SENTINEL]))

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
        target = await self.offered(lambda conv: paths(conv, names), sentinel=ligature)
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
        target = await self.offered(lambda conv: paths(conv, names))
        for name in names:
            self.assertFalse(os.path.lexists(os.path.join(target.share, name)), name)


class HostileEntryTests(TestCase):
    """
    INDEX entries whose every field but one is valid: a bad hash, a bad
    version vector, a directory or a deletion with content, a bad kind,
    size, mtime, permission bits, sequence or author, an entry that is not
    an object.  Each is dropped and counted; the sentinel beside them lands.
    """

    timeout = 60

    async def test_bad_hashes(self):
        """
        Hashes that are not 64 lowercase hex digits (upper case, short,
        long, not hex, a number, null), a live file without a hash, and an
        entry with no hash field at all.
        """
        s = Scribe()
        good = content_hash(b"x")
        hashes = [json.dumps(good.upper()), json.dumps(good[:63]), json.dumps(good + "0"),
                  json.dumps("g" * 64), "12", "null", '""', json.dumps(" " + good[1:])]
        bad = [s.raw_entry(hash=h) for h in hashes]
        missing = json.loads(s.raw_entry())
        del missing["hash"]
        bad.append(json.dumps(missing))
        await offer_beside_sentinel(self, bad)

    async def test_directories_and_deletions_with_content(self):
        """
        A directory with a hash or a size, and a deletion with a hash or a
        size: content where there can be none is refused, never written.
        """
        s = Scribe()
        h = json.dumps(content_hash(b"x"))
        bad = [s.raw_entry(path='"d1"', kind='"dir"', size="0", hash=h),
               s.raw_entry(path='"d2"', kind='"dir"', size="5", hash='""'),
               s.raw_entry(path='"f1"', deleted="true", size="0", hash=h),
               s.raw_entry(path='"f2"', deleted="true", size="5", hash='""')]
        target = await offer_beside_sentinel(self, bad)
        for name in ("d1", "d2", "f1", "f2"):
            self.assertFalse(os.path.lexists(os.path.join(target.share, name)))

    async def test_bad_version_vectors(self):
        """
        Version vectors that are empty, longer than MAX_COUNTERS, or hold a
        counter that is zero, negative, fractional, a boolean or past
        MAX_COUNTER, a short id that is not 16 lowercase hex digits, one
        node twice, or pairs that are not pairs.
        """
        s = Scribe()
        me = s.me
        too_many = json.dumps([[f"{i:016x}", 1] for i in range(MAX_COUNTERS + 1)])
        versions = ["[]", too_many, f'[["{me}",0]]', f'[["{me}",-1]]', f'[["{me}",1.5]]',
                    f'[["{me}",true]]', f'[["{me}",{MAX_COUNTER + 1}]]', '[["ABCDEF0123456789",1]]',
                    '[["abc",1]]', f'[["{me}",1],["{me}",2]]', f'[["{me}"]]', f'[["{me}",1,2]]',
                    f'["{me}",1]', '{}', '"1"', "null"]
        await offer_beside_sentinel(self, [s.raw_entry(version=v) for v in versions])

    async def test_other_bad_fields(self):
        """
        A kind that is neither file nor dir (a link, say), permission bits
        past 0o777 or negative, a negative, fractional or string size, an
        mtime out of range, a sequence of 0, an author that is not a short
        id, deleted as a string.
        """
        s = Scribe()
        fields = [{"kind": '"link"'}, {"kind": "null"}, {"perms": str(0o1000)}, {"perms": "-1"},
                  {"size": "-1"}, {"size": "1.5"}, {"size": '"1"'}, {"size": str(2**63)},
                  {"mtime": str(2**63)}, {"mtime": str(-(2**63) - 1)}, {"mtime": "1.5"},
                  {"seq": "0"}, {"seq": "-3"}, {"by": '"mallory"'}, {"by": "null"},
                  {"deleted": '"false"'}, {"deleted": "0"}]
        await offer_beside_sentinel(self, [s.raw_entry(**f) for f in fields])

    async def test_entries_that_are_not_objects(self):
        """
        Numbers, strings, null, booleans, lists and nested lists where an
        entry object belongs.
        """
        await offer_beside_sentinel(
            self, ["1", '"sentinel.txt"', "null", "true", "[]", '[{"path":"x"}]', "[[[]]]",
                   "{}"])

    async def test_counters_far_in_the_future(self):
        """
        A version whose counter is far ahead of the target's clock would
        win every conflict for years: the entry passes the wire's checks
        but the engine refuses it, in one line naming the path and why;
        nothing is fetched for it.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        ahead = int(time.time()) + MAX_AHEAD + 3600
        future = conv.entry("future.txt", b"wins forever?\n",
                            version=Vector({conv.me: ahead}))
        conv.offer(future, conv.entry(SENTINEL, SENTINEL_BYTES))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, SENTINEL)
        conv.serve(get, SENTINEL_BYTES)
        await conv.landed(SENTINEL, SENTINEL_BYTES)
        await conv.roundtrip()
        self.assertEqual([g.path for g in conv.all(wire.Get)], [SENTINEL])
        self.assertEqual(target.node.folder.store.remote_for("future.txt"), {})
        self.assertFalse(os.path.lexists(os.path.join(target.share, "future.txt")))
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=1,
                           pattern=r"ignored 1 index entries from .*: future\.txt: .*too far"
                                   r" ahead",
                           share_may_gain=[SENTINEL])

    async def test_future_counter_on_the_targets_own_file(self):
        """
        The attacker read the target's INDEX and offers other bytes for the
        target's shared file, at a version that would dominate the target's
        with a counter far in the future: refused, and the target's file
        is untouched (no GET for it).
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        ours = await conv.next(Index, lambda m: any(e.path == SHARED_NAME
                                                    for e in m.entries))
        [mine] = [e for e in ours.entries if e.path == SHARED_NAME]
        counters = mine.version.as_dict()
        counters[conv.me] = int(time.time()) + MAX_AHEAD + 3600
        conv.offer(conv.entry(SHARED_NAME, b"replaced?\n", version=Vector(counters)))
        await wait_line(target, r"ignored 1 index entries from .*too far ahead",
                        before["mark"])
        await conv.roundtrip()
        self.assertEqual(conv.all(wire.Get), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=1, pattern=r"too far ahead")

    async def test_index_body_over_control_limit(self):
        """
        An INDEX whose JSON body is over MAX_CONTROL_BODY but within the
        frame is valid since version 3 (entries with long block lists need
        it): its entries are stored and the connection stays.
        """
        target = await Target.start(self)
        conv = await Conversation.open(target)
        entries = []
        size = 0
        while size <= wire.MAX_CONTROL_BODY:
            text = conv.raw_entry(path=json.dumps(f"bulk/{len(entries):06d}.bin"))
            entries.append(text)
            size += len(text) + 1
        conv.offer_raw(entries)
        await conv.roundtrip()
        self.assertEqual(
            len(target.node.folder.store.remote_paths(conv.attacker.identity.node_id)),
            len(entries))
        self.assertFalse(conv.attacker.lost.called)

    async def test_index_frame_not_an_index(self):
        """
        INDEX bodies that are valid JSON but not an index (entries not a
        list, no entries at all, an array for a body): each drops the
        connection with one line.
        """
        for body, why in ((b'{"entries":{}}', r"INDEX field 'entries' has the wrong type"),
                          (b'{"files":[]}', r"INDEX lacks 'entries'"),
                          (b'[]', r"INDEX body is not a JSON object")):
            target = await Target.start(self)
            before = target.baseline()
            conv = await Conversation.open(target)
            conv.attacker.send_raw(bytes((0x24,)) + body)
            await conv.attacker.lost.addTimeout(WAIT, reactor)
            await target.check(self, before, conv.attacker, lines=1, pattern=why)


class CollidingNamesTests(TestCase):
    """
    Names that collide with each other or with what the target has: nothing
    is overwritten but by a version that wins, and then the loser is kept;
    every version that lands is verified, each once.
    """

    timeout = 60

    async def test_same_path_twice(self):
        """
        One INDEX lists the same path twice with different content: the
        target fetches exactly one version, once, and it lands verified.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        first, second = b"first version\n" * 10, b"second version\n" * 10
        versions = {content_hash(first): first, content_hash(second): second}
        conv.offer(conv.entry("dup.txt", first), conv.entry("dup.txt", second))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, "dup.txt")
        conv.serve(get, versions[get.hash])
        await conv.landed("dup.txt", versions[get.hash])
        await conv.roundtrip()
        self.assertEqual(len(conv.all(wire.Get)), 1)
        with open(os.path.join(target.share, "dup.txt"), "rb") as f:
            self.assertEqual(f.read(), versions[get.hash])
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=["dup.txt"])

    async def test_names_equal_after_nfc(self):
        """
        Two entries that differ only before NFC (a precomposed and a
        decomposed e-acute): the decomposed one is rejected, only the NFC
        one is fetched, and only one file appears.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        nfc, nfd = "caf\u00e9.txt", "cafe\u0301.txt"
        content = b"one cafe\n"
        conv.offer_raw([conv.raw_entry(path=json.dumps(nfd, ensure_ascii=False),
                                       hash=json.dumps(content_hash(b"the impostor\n"))),
                        conv.raw_entry(path=json.dumps(nfc, ensure_ascii=False),
                                       size=str(len(content)),
                                       hash=json.dumps(content_hash(content)))])
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, nfc)
        conv.serve(get, content)
        await conv.landed(nfc, content)
        await conv.roundtrip()
        self.assertEqual(len(conv.all(wire.Get)), 1)
        names = [n for n in os.listdir(target.share) if n != "shared"]
        self.assertEqual(names, [nfc])
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=1,
                           pattern=INVALID.format(n=1), share_may_gain=[nfc])

    async def test_file_and_directory_of_one_name(self):
        """
        One INDEX offers C{x} as a file and C{x/y.txt} beneath it (an index
        no honest node can hold): the file beneath lands, and the directory
        holding it is never replaced by the file C{x}: the node leaves
        C{x} alone, says so once, and backs off instead of trying again
        and again; nothing else appears.
        """
        target = await Target.start(self)
        before = target.baseline()
        conv = await Conversation.open(target)
        as_file, beneath = b"x as a file\n", b"a file inside x\n"
        contents = {"x": as_file, "x/y.txt": beneath}
        conv.offer(conv.entry("x", as_file), conv.entry("x/y.txt", beneath))
        gets = [await conv.next(wire.Get) for _ in range(2)]
        self.assertEqual(sorted(g.path for g in gets), ["x", "x/y.txt"])
        # The file beneath first, so its directory is there when x arrives.
        for get in sorted(gets, key=lambda g: g.path, reverse=True):
            conv.serve(get, contents[get.path])
        await conv.landed("x/y.txt", beneath)
        await wait_line(target, r"leaving x alone", before["mark"])
        self.assertEqual(len([line for line in target.lines_since(before["mark"])
                              if "leaving x alone" in line]), 1)
        with open(os.path.join(target.share, "x", "y.txt"), "rb") as f:
            self.assertEqual(f.read(), beneath)
        self.assertTrue(os.path.isdir(os.path.join(target.share, "x")))
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=["x/y.txt"])

    async def test_existing_file_concurrent_older_version(self):
        """
        The peer offers, as a version concurrent with the target's and
        older (its mtime), other bytes at a path the target has: the
        target's version wins the conflict, so it fetches nothing and its
        file is untouched; no conflict copy appears on the target (only
        the loser's holder keeps one).
        """
        ours = b"the target's own notes\n"
        target = await Target.start(self, files={"docs/notes.txt": ours})
        self.assertIsNotNone(target.node.folder.store.get("docs/notes.txt"))
        before = target.baseline()
        conv = await Conversation.open(target)
        theirs = b"the stranger's notes\n"
        conv.offer(conv.entry("docs/notes.txt", theirs), conv.entry(SENTINEL, SENTINEL_BYTES))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, SENTINEL)
        conv.serve(get, SENTINEL_BYTES)
        await conv.landed(SENTINEL, SENTINEL_BYTES)
        await conv.roundtrip()
        self.assertEqual([g.path for g in conv.all(wire.Get)], [SENTINEL])
        with open(os.path.join(target.share, "docs/notes.txt"), "rb") as f:
            self.assertEqual(f.read(), ours)
        self.assertEqual(sorted(os.listdir(os.path.join(target.share, "docs"))), ["notes.txt"])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=[SENTINEL])

    async def test_existing_file_concurrent_newer_version(self):
        """
        The peer offers, as a concurrent and newer version, other bytes at
        a path the target has: its version wins, and lands verified; the
        target's own bytes are kept as the conflict copy named after the
        target's version, never lost.
        """
        ours = b"the target's own notes\n"
        target = await Target.start(self, files={"docs/notes.txt": ours})
        local = target.node.folder.store.get("docs/notes.txt")
        self.assertIsNotNone(local)
        before = target.baseline()
        conv = await Conversation.open(target)
        theirs = b"the stranger's notes\n"
        conv.offer(conv.entry("docs/notes.txt", theirs, mtime=local.mtime_ns + 10**9))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, "docs/notes.txt")
        conv.serve(get, theirs)
        copy = conflict_name("docs/notes.txt", local)
        self.assertRegex(copy, r"^docs/notes\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{7}\.txt$")
        await conv.landed("docs/notes.txt", theirs)
        await conv.landed(copy, ours)
        with open(os.path.join(target.share, "docs/notes.txt"), "rb") as f:
            self.assertEqual(f.read(), theirs)
        with open(os.path.join(target.share, copy), "rb") as f:
            self.assertEqual(f.read(), ours)
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=[copy],
                           share_may_change=["docs/notes.txt"])


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

    async def in_the_way(self, target: Target, name: str, content: bytes):
        """
        Offer C{content} at C{name}, where the test planted something that
        is not a regular file: the target never writes through it and never
        asks for bytes it cannot place, says in a line why the file does
        not arrive, and does not rescan the share over and over meanwhile
        (the thing in the way is not a change of the user's to wait for).
        """
        before = target.baseline()
        sync = target.node.folder.sync
        scans = sync.scans.count
        conv = await Conversation.open(target)
        conv.offer(conv.entry(name, content), conv.entry(SENTINEL, SENTINEL_BYTES))
        get = await conv.next(wire.Get)
        self.assertEqual(get.path, SENTINEL)
        conv.serve(get, SENTINEL_BYTES)
        await conv.landed(SENTINEL, SENTINEL_BYTES)
        line = await wait_line(target, rf"{name}.*(link|special|in the way|not a regular)",
                               before["mark"])
        self.assertNotIn(conv.attacker.address, line)
        # A few rescans tell a thing a scan does not index from a user's
        # edit in progress; then the node backs off (one more scan may come
        # from the sentinel's arrival).
        self.assertLessEqual(sync.scans.count - scans, STUCK_AFTER + 2,
                             "rescanning while something is in the way")
        await conv.roundtrip()
        self.assertEqual([g.path for g in conv.all(wire.Get)], [SENTINEL])
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=[SENTINEL])

    async def test_symlink_at_destination(self):
        """
        A symlink out of the share sits where the download would land: the
        link and the file it points to are unchanged.
        """
        target = await Target.start(self)
        victim = self.outside_file(target)
        link = os.path.join(target.share, "evil.txt")
        os.symlink(victim, link)
        await self.in_the_way(target, "evil.txt", b"written through the link?\n")
        self.assertEqual(os.readlink(link), victim)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"must never change\n")

    async def test_fifo_at_destination(self):
        """
        A FIFO sits where the download would land: the node neither blocks
        on it nor writes into it.
        """
        target = await Target.start(self)
        fifo = os.path.join(target.share, "pipe.txt")
        os.mkfifo(fifo)
        await self.in_the_way(target, "pipe.txt", b"into the pipe?\n")
        self.assertFalse(os.path.isfile(fifo))
        self.assertTrue(os.path.exists(fifo))

    async def test_symlink_at_parent_directory(self):
        """
        A symlink out of the share sits where the download's directory will
        be: the node refuses to walk through it (one line naming the path),
        never asks for the file, and the directory outside stays empty.
        """
        target = await Target.start(self)
        outside = os.path.join(target.base, "outside")
        os.makedirs(outside)
        os.symlink(outside, os.path.join(target.share, "sub"))
        before = target.baseline()
        conv = await Conversation.open(target)
        conv.offer(conv.entry("sub/deeper/x.txt", b"through the link?\n"))
        line = await wait_line(target, r"cannot apply fetch to sub/deeper/x\.txt: .*link",
                               before["mark"])
        self.assertIn("link", line)
        await conv.roundtrip()
        self.assertEqual(conv.all(wire.Get), [])
        self.assertEqual(os.listdir(outside), [])
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0)

    async def test_links_at_partial_names(self):
        """
        Symlinks out of the share at the partial-file names of a large file
        (written as it arrives) and a small one (written when complete), and
        a hard link to a file outside at another large file's partial name:
        none is written through; all three files land intact.
        """
        target = await Target.start(self)
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
        conv = await Conversation.open(target)
        conv.offer(*(conv.entry(name, content) for name, content in files.items()))
        gets = [await conv.next(wire.Get) for _ in files]
        for name in ("big.bin", "big2.bin"):
            # Replaced by a fresh file of its own when the download opened it.
            part = os.path.join(target.share, partial_name(name, content_hash(files[name])))
            self.assertFalse(os.path.islink(part))
            self.assertEqual(os.stat(part).st_nlink, 1)
        for get in gets:
            self.assertEqual(get.offset, 0)
            conv.serve(get, files[get.path])
        for name, content in files.items():
            await conv.landed(name, content)
        for name, content in files.items():
            with open(os.path.join(target.share, name), "rb") as f:
                self.assertEqual(f.read(), content)
            with open(victims[name], "rb") as f:
                self.assertEqual(f.read(), b"must never change\n")
            self.assertEqual(os.stat(victims[name]).st_nlink, 1)
        self.assertEqual(partials(target.share), [])
        conv.attacker.transport.loseConnection()
        await target.check(self, before, conv.attacker, lines=0, share_may_gain=list(files))
