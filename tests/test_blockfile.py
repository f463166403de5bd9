"""
The disk side of a block download: the record of verified blocks across
restarts, recovery without it, planted files, the final check.
"""

import os

from blake3 import blake3
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.blockfile import HAVE_SUFFIX, BlockFile, publish_as
from p2ptwisted.core.blocks import MIN_BLOCK
from p2ptwisted.core.index import FILE, Entry
from p2ptwisted.core.versions import Vector
from p2ptwisted.downloads import TransferFailed

from .test_exchange import content


def entry_of(data: bytes, listed: bytes = b"", content_hash: str = "") -> Entry:
    blocks = listed or b"".join(blake3(data[i:i + MIN_BLOCK]).digest()
                                for i in range(0, len(data), MIN_BLOCK))
    return Entry("d/big.bin", FILE, len(data), 1_700_000_000 * 10**9, 0o640,
                 content_hash or blake3(data).hexdigest(), False, Vector({"a" * 16: 1}),
                 "a" * 16, 1, blocks)


class BlockFileTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.dir_fd = os.open(self.dir, os.O_RDONLY)
        self.addCleanup(os.close, self.dir_fd)
        self.data = content(1, 5 * MIN_BLOCK + 99)
        self.entry = entry_of(self.data)

    def opened(self, entry=None):
        f = BlockFile(entry or self.entry, self.dir_fd)
        have = f.open()
        self.addCleanup(f.close)
        return f, have

    def put(self, f, i):
        offset, size = f.span(i)
        f.write(offset, self.data[offset:offset + size])
        f.mark(i)

    def test_verified_blocks_survive_a_restart(self):
        f, have = self.opened()
        self.assertEqual(have, set())
        for i in (0, 3, 5):
            self.put(f, i)
        f.close()  # (as a killed process would leave it)
        again, have = self.opened()
        self.assertEqual(have, {0, 3, 5})
        offset, size = again.span(3)
        self.assertEqual(os.pread(again.fd, size, offset), self.data[offset:offset + size])

    def test_without_a_record_the_blocks_there_are_hashed(self):
        """
        A partial file from a stream download (a prefix, no record): its
        whole blocks are found again; a torn last one is not.
        """
        with open(os.path.join(self.dir, BlockFile(self.entry, -1).partial), "wb") as f:
            f.write(self.data[:2 * MIN_BLOCK + 10])
        _, have = self.opened()
        self.assertEqual(have, {0, 1})

    def test_record_of_a_removed_partial_is_not_trusted(self):
        f, _ = self.opened()
        for i in range(3):
            self.put(f, i)
        f.close()
        os.unlink(os.path.join(self.dir, f.partial))
        _, have = self.opened()
        self.assertEqual(have, set())

    def test_planted_link_and_fifo_are_replaced(self):
        name = BlockFile(self.entry, -1).partial
        target = os.path.join(self.dir, "elsewhere")
        with open(target, "wb") as f:
            f.write(b"precious")
        os.symlink(target, os.path.join(self.dir, name))
        os.mkfifo(os.path.join(self.dir, name + HAVE_SUFFIX))
        f, have = self.opened()
        self.put(f, 0)
        with open(target, "rb") as g:
            self.assertEqual(g.read(), b"precious")
        self.assertFalse(os.path.islink(os.path.join(self.dir, name)))

    def test_check_finds_blocks_changed_on_disk(self):
        f, _ = self.opened()
        for i in range(f.count):
            self.put(f, i)
        self.assertEqual(f.check(), set())
        f.write(2 * MIN_BLOCK + 7, b"\xff")  # (a lost write, say)
        self.assertEqual(f.check(), {2})
        self.assertNotIn(2, f.have)

    def test_check_says_when_the_list_itself_is_wrong(self):
        """
        Every block matches the list, but the file is not the content hash
        the entry names: the list was a lie; nothing is published.
        """
        liar = entry_of(self.data, content_hash="0" * 64)
        f, _ = self.opened(liar)
        for i in range(f.count):
            self.put(f, i)
        error = self.assertRaises(TransferFailed, f.check)
        self.assertIn("the block list is wrong", str(error))

    def test_copy_in_takes_only_the_right_bytes(self):
        src = os.path.join(self.dir, "old")
        with open(src, "wb") as g:
            g.write(b"x" * MIN_BLOCK + self.data[MIN_BLOCK:2 * MIN_BLOCK])
        fd = os.open(src, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        f, _ = self.opened()
        self.assertFalse(f.copy_in(0, fd, 0))
        self.assertTrue(f.copy_in(1, fd, MIN_BLOCK))
        self.assertEqual(f.have, {1})

    def test_publish_as_never_replaces(self):
        f, _ = self.opened()
        for i in range(f.count):
            self.put(f, i)
        self.assertEqual(publish_as(f, "done.bin"), "done.bin")
        with open(os.path.join(self.dir, "done.bin"), "rb") as g:
            self.assertEqual(g.read(), self.data)
        self.assertEqual(oct(os.stat(os.path.join(self.dir, "done.bin")).st_mode & 0o777),
                         oct(0o640))
        self.assertEqual(sorted(os.listdir(self.dir)), ["done.bin"])
        g, _ = self.opened()
        for i in range(g.count):
            self.put(g, i)
        self.assertRaises(TransferFailed, publish_as, g, "done.bin")
        self.assertEqual(sorted(os.listdir(self.dir)), ["done.bin"])

    def test_leftover_of_a_replaced_version_gives_its_blocks(self):
        """
        A download whose version was replaced keeps its partial file as the
        path's leftover; the newer version's download (a longer file, its
        third block changed) takes it over and finds the blocks the two
        share; the leftover and the old record are gone.
        """
        f, _ = self.opened()
        for i in range(5):
            self.put(f, i)
        f.keep_leftover()
        self.assertEqual(len(os.listdir(self.dir)), 1)
        newer = bytearray(self.data + content(2, MIN_BLOCK))
        newer[2 * MIN_BLOCK:2 * MIN_BLOCK + 5] = b"edit!"
        g, have = self.opened(entry_of(bytes(newer)))
        self.assertEqual(have, {0, 1, 3, 4})
        self.assertEqual(sorted(os.listdir(self.dir)),
                         sorted([g.partial, g.have_name]))

    def test_leftover_cut_to_a_shorter_version(self):
        """
        A leftover longer than the newer version (the old file cut short)
        is cut to its size: every block of the new one is found there, its
        short last one too.
        """
        f, _ = self.opened()
        for i in range(6):
            self.put(f, i)
        f.keep_leftover()
        shorter = self.data[:3 * MIN_BLOCK + 7]
        g, have = self.opened(entry_of(shorter))
        self.assertEqual(have, {0, 1, 2, 3})
        self.assertEqual(os.fstat(g.fd).st_size, len(shorter))

    def test_no_leftover_without_verified_blocks_or_for_an_operator(self):
        """
        Nothing verified, nothing kept; an operator's fetch neither keeps a
        leftover nor takes the sync's.
        """
        f, _ = self.opened()
        f.keep_leftover()
        self.assertEqual(os.listdir(self.dir), [])
        mine = BlockFile(self.entry, self.dir_fd, "operator")
        mine.open()
        self.put(mine, 0)
        mine.keep_leftover()
        self.assertEqual(os.listdir(self.dir), [])
        f, _ = self.opened()
        self.put(f, 0)
        f.keep_leftover()
        theirs = BlockFile(self.entry, self.dir_fd, "operator")
        self.assertEqual(theirs.open(), set())
        theirs.close()
        _, have = self.opened()
        self.assertEqual(have, {0})
