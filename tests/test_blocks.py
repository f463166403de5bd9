"""
Block lists: the block size rule, one-pass hashing of a file's content and
blocks, and lists as the scanner records them.
"""

import os

from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted.core import blocks
from p2ptwisted.core.blocks import (
    DIGEST, MAX_BLOCK, MAX_BLOCKS, MIN_BLOCK, block_count, block_size, block_span, digests,
    has_list, list_problem)
from p2ptwisted.hashing import BlockHasher, hash_file

KiB, MiB, GiB = 1024, 1024**2, 1024**3


def listed(data: bytes) -> bytes:
    """The block list of C{data}, computed the slow, obvious way."""
    size = len(data)
    if not has_list(size):
        return b""
    bsize = block_size(size)
    return b"".join(blake3(data[i:i + bsize]).digest() for i in range(0, size, bsize))


class RuleTests(SynchronousTestCase):
    def test_sizes(self):
        """
        The smallest power of two from 128 KiB to 16 MiB that keeps a file
        under 2,000 blocks.
        """
        self.assertEqual(block_size(0), MIN_BLOCK)
        self.assertEqual(block_size(200 * MiB), 128 * KiB)  # 1,600 blocks
        self.assertEqual(block_size(250 * MiB), 256 * KiB)  # 2,000 would be too many
        self.assertEqual(block_size(GiB), MiB)
        self.assertEqual(block_count(GiB), 1024)
        self.assertEqual(block_size(4 * GiB), 4 * MiB)
        self.assertEqual(block_size(10**15), MAX_BLOCK)
        for size in (1, 128 * KiB + 1, 3 * GiB + 5, 31 * GiB):
            self.assertLess(block_count(size), 2000)
            self.assertEqual(block_size(size) & (block_size(size) - 1), 0)

    def test_which_files_have_lists(self):
        """
        One block: no list (its content hash is its block hash); more than
        MAX_BLOCKS: none either (it travels as one stream).
        """
        self.assertFalse(has_list(0))
        self.assertFalse(has_list(MIN_BLOCK))
        self.assertTrue(has_list(MIN_BLOCK + 1))
        self.assertTrue(has_list(MAX_BLOCK * MAX_BLOCKS))
        self.assertFalse(has_list(MAX_BLOCK * MAX_BLOCKS + 1))

    def test_spans_cover_the_file(self):
        size = 5 * MIN_BLOCK + 77
        self.assertEqual(block_count(size), 6)
        self.assertEqual(sum(blocks.block_lengths(size)), size)
        self.assertEqual(block_span(size, 5), (5 * MIN_BLOCK, 77))
        self.assertRaises(IndexError, block_span, size, 6)
        self.assertEqual(blocks.block_lengths(size), [MIN_BLOCK] * 5 + [77])

    def test_list_problems(self):
        size = 3 * MIN_BLOCK
        good = b"\x01" * DIGEST * 3
        self.assertEqual(list_problem(size, good), "")
        self.assertEqual(list_problem(size, b""), "")
        self.assertIn("2 blocks listed", list_problem(size, good[:-DIGEST]))
        self.assertIn("whole number", list_problem(size, good[:-1]))
        self.assertIn("has none", list_problem(MIN_BLOCK, b"\x01" * DIGEST))


class HasherTests(SynchronousTestCase):
    def test_small_file_is_its_own_block(self):
        data = os.urandom(1000)
        self.assertEqual(BlockHasher(len(data)).result(), (blake3(b"").hexdigest(), b""))
        hasher = BlockHasher(len(data))
        hasher.update(data)
        self.assertEqual(hasher.result(), (blake3(data).hexdigest(), b""))

    @settings(max_examples=30, deadline=None)
    @given(st.integers(MIN_BLOCK - 3, 4 * MIN_BLOCK + 3), st.lists(st.integers(1, 300_000),
                                                                   max_size=20))
    def test_any_chunking_gives_the_obvious_list(self, size, cuts):
        """
        However the bytes are fed, the content hash and each block digest
        are BLAKE3 of the whole and of each block.
        """
        data = (bytes(range(256)) * (size // 256 + 1))[:size]
        hasher = BlockHasher(size)
        at = 0
        for cut in cuts + [size]:
            hasher.update(data[at:at + cut])
            at += cut
            if at >= size:
                break
        content, got = hasher.result()
        self.assertEqual(content, blake3(data).hexdigest())
        self.assertEqual(got, listed(data))
        self.assertEqual(len(digests(got)), block_count(size) if has_list(size) else 0)

    def test_hash_file_of_a_big_file(self):
        """
        A big file's content hash is computed on a second thread while its
        block list is computed here: the same results, read in many turns
        (through both buffers), from where the descriptor stands.
        """
        from p2ptwisted import hashing
        self.patch(hashing, "PARALLEL_MIN", 1)
        self.patch(hashing, "HASH_READ", 7 * 1024 + 3)
        path = self.mktemp()
        data = os.urandom(5 * MIN_BLOCK + 10)
        with open(path, "wb") as f:
            f.write(b"skipped" + data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        os.lseek(fd, 7, os.SEEK_SET)
        self.assertEqual(hash_file(fd, len(data)), (blake3(data).hexdigest(), listed(data)))
        os.lseek(fd, 7, os.SEEK_SET)
        self.assertEqual(hash_file(fd, -1), (blake3(data).hexdigest(), b""))
        os.lseek(fd, 7, os.SEEK_SET)
        self.assertRaises(hashing.ScanStopped, hash_file, fd, len(data), lambda: True)

    def test_hash_file_reads_once(self):
        path = self.mktemp()
        data = os.urandom(3 * MIN_BLOCK + 10)
        with open(path, "wb") as f:
            f.write(data)
        fd = os.open(path, os.O_RDONLY)
        self.addCleanup(os.close, fd)
        self.assertEqual(hash_file(fd, len(data)), (blake3(data).hexdigest(), listed(data)))
