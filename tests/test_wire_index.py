"""
Protocol version 2's index frames: round trips, one rule per rejected
entry, and totality on random bytes.
"""

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core.index import DIR, FILE, Entry
from p2ptwisted.core.versions import Vector
from p2ptwisted.core.blocks import MAX_BLOCK, MAX_BLOCKS, MIN_BLOCK
from p2ptwisted.wire import MAX_CONTROL_BODY, MAX_FRAME, ProtocolError
from p2ptwisted.wire_index import (
    INDEX, INDEX_HELLO, Index, IndexHello, decode_index_frame, encode_index_hello, entry_to_json,
    pack_index)

H = "ab" * 32
ID = "0123456789abcdef"


def entry(**kw):
    fields = dict(path="docs/a.txt", kind=FILE, size=3, mtime_ns=-5, perms=0o640, hash=H,
                  deleted=False, version=Vector({ID: 1_800_000_000}), modified_by=ID,
                  sequence=7)
    fields.update(kw)
    return Entry(**fields)


def frame(*items):
    return bytes((INDEX,)) + json.dumps({"entries": list(items)}).encode()


class RoundTripTests(SynchronousTestCase):
    def test_hello(self):
        for have in ("", "fedcba9876543210"):
            m = IndexHello(index_id=ID, have_index_id=have, have_sequence=42, sequence=7)
            self.assertEqual(decode_index_frame(encode_index_hello(m)), m)

    def test_entries_in_order_across_frames(self):
        entries = [entry(path=f"dir/file-{i:05}.txt", sequence=i + 1) for i in range(2000)]
        for blocks in (True, False):
            frames = pack_index(entries, blocks=blocks)
            self.assertGreater(len(frames), 1)
            self.assertTrue(all(len(f) - 1 <= MAX_CONTROL_BODY for f in frames))
            back = [e for f in frames for e in decode_index_frame(f).entries]
            self.assertEqual(back, entries)

    def test_through(self):
        """
        The last frame of a batch says how far it completes the receiver's
        copy; a batch with no entries is one frame saying only that.
        """
        entries = [entry(path=f"f{i}", sequence=i + 1) for i in range(3)]
        [one] = pack_index(entries, through=9)
        self.assertEqual(decode_index_frame(one).through, 9)
        self.assertIsNone(decode_index_frame(pack_index(entries)[0]).through)
        [empty] = pack_index([], through=12)
        self.assertEqual(decode_index_frame(empty), Index(entries=(), through=12))
        self.assertEqual(pack_index([]), [])
        with self.assertRaises(ProtocolError):
            decode_index_frame(bytes((INDEX,)) + b'{"entries": [], "through": -1}')

    def test_directory_and_tombstone(self):
        d = entry(kind=DIR, size=0, hash="", perms=0o755)
        t = entry(deleted=True, size=0, hash="")
        self.assertEqual(decode_index_frame(pack_index([d, t])[0]), Index(entries=(d, t)))

    def test_empty(self):
        self.assertEqual(pack_index([]), [])

    def test_block_lists(self):
        """
        A file's block list travels as base64 with its block size, to a
        version 3 peer only; a list too long for a control body gets a
        frame of its own, within the frame limit.
        """
        size = 5 * MIN_BLOCK + 1
        listed = entry(size=size, blocks=bytes(range(32)) * 6)
        obj = entry_to_json(listed)
        self.assertEqual(obj["bsize"], MIN_BLOCK)
        self.assertEqual(base64.b64decode(obj["blocks"]), listed.blocks)
        [back] = decode_index_frame(pack_index([listed])[0]).entries
        self.assertEqual(back.blocks, listed.blocks)
        [bare] = decode_index_frame(pack_index([listed], blocks=False)[0]).entries
        self.assertEqual(bare.blocks, b"")
        self.assertNotIn(b"blocks", pack_index([listed], blocks=False)[0])

        huge = entry(path="huge", size=MAX_BLOCK * MAX_BLOCKS, blocks=b"\x07" * 32 * MAX_BLOCKS)
        small = [entry(path=f"s{i}", sequence=i + 8) for i in range(3)]
        frames = pack_index(small[:1] + [huge] + small[1:])
        self.assertEqual(len(frames), 3)
        self.assertGreater(len(frames[1]), MAX_CONTROL_BODY)
        self.assertLessEqual(len(frames[1]), MAX_FRAME)
        self.assertEqual(decode_index_frame(frames[1]).entries[0].blocks, huge.blocks)


class RejectTests(SynchronousTestCase):
    def rejected(self, **changes):
        obj = entry_to_json(entry())
        obj.update(changes)
        got = decode_index_frame(frame(entry_to_json(entry()), obj))
        return got.rejected, len(got.entries)

    def test_each_rule(self):
        cases = [
            {"path": "../etc/passwd"}, {"path": ".p2pshare/x"}, {"kind": "symlink"},
            {"size": -1}, {"perms": 0o1777}, {"hash": "XY"}, {"hash": ""},
            {"deleted": 1}, {"version": []}, {"version": [[ID, 0]]},
            {"version": [[ID, 2**60]]}, {"version": [[ID, 1], [ID, 2]]},
            {"version": [["short", 1]]}, {"version": [[f"{i:016x}", 1] for i in range(257)]},
            {"by": "nope"}, {"seq": 0}, {"seq": True}, {"mtime": 2**63},
            {"kind": "dir", "size": 0},  # a directory with a hash
        ]
        for change in cases:
            self.assertEqual(self.rejected(**change), (1, 1), change)

    def test_block_list_rules(self):
        """
        A list must match the entry's size exactly: its block size, one
        digest per block, valid base64, and only on a file that has one.
        """
        size = 3 * MIN_BLOCK
        good = base64.b64encode(b"\x01" * 96).decode()
        base = {"size": size, "bsize": MIN_BLOCK, "blocks": good}
        self.assertEqual(self.rejected(**base), (0, 2))
        cases = [
            {"bsize": 2 * MIN_BLOCK}, {"bsize": "x"}, {"bsize": None},
            {"blocks": base64.b64encode(b"\x01" * 64).decode()},
            {"blocks": base64.b64encode(b"\x01" * 97).decode()},
            {"blocks": good[:-2] + "!!"}, {"blocks": "é" * 4}, {"blocks": 5}, {"blocks": ""},
            {"size": MIN_BLOCK, "blocks": base64.b64encode(b"\x01" * 32).decode()},
        ]
        for change in cases:
            bad = dict(base, **change)
            if bad["bsize"] is None:
                del bad["bsize"]
            self.assertEqual(self.rejected(**bad), (1, 1), change)

    def test_missing_field(self):
        obj = entry_to_json(entry())
        del obj["perms"]
        self.assertEqual(decode_index_frame(frame(obj)).rejected, 1)

    def test_bad_frames(self):
        for bad in (bytes((INDEX,)) + b"[]", bytes((INDEX,)) + b'{"entries": 3}',
                    bytes((INDEX_HELLO,)) + b'{"index_id": "x", "have_index_id": "",'
                    b' "have_sequence": 0}', b"", b"\x21{}"):
            with self.assertRaises(ProtocolError):
                decode_index_frame(bad)


class TotalityTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(st.sampled_from([INDEX, INDEX_HELLO]), st.binary(max_size=300))
    def test_random_bodies(self, kind, body):
        try:
            decode_index_frame(bytes((kind,)) + body)
        except ProtocolError:
            pass

    @settings(max_examples=300)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.sampled_from(
                            ["path", "kind", "size", "mtime", "perms", "hash", "deleted",
                             "version", "by", "seq"]), inner, max_size=10),
                        max_leaves=30))
    def test_random_entries_are_dropped_not_fatal(self, item):
        got = decode_index_frame(frame(item))
        self.assertEqual(got.rejected + len(got.entries), 1)
