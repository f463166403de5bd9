# -*- test-case-name: tests.test_blocks -*-
"""
Blocks: how a file version is cut into pieces that travel, are verified and
are reused on their own.

A file is cut into blocks of one size, a power of two from L{MIN_BLOCK}
(128 KiB) to L{MAX_BLOCK} (16 MiB): the smallest that keeps the file under
L{TARGET_BLOCKS} blocks, as Syncthing does.  So a block list stays small
(a 1 GiB file has 1,024 blocks of 1 MiB) while a small edit costs one
small block.  The size follows from the file's size alone, so two nodes
that hash the same bytes get the same list, and any block with a given
hash, in any file, can stand in for any other.

A file of one block has no list: its one block hash is its content hash.
A file of more than L{MAX_BLOCKS} blocks (over 64 GiB) has none either: it
travels as one stream, as in protocol version 2, since its list would not
fit in a frame.

A list is the block digests (L{DIGEST} bytes each, BLAKE3) concatenated,
as C{bytes}: compact in memory and in the index store.

Pure: no I/O.
"""

from __future__ import annotations

from typing import List, Tuple

MIN_BLOCK = 128 * 1024
MAX_BLOCK = 16 * 1024 * 1024

#: Files are kept under this many blocks where the block sizes allow.
TARGET_BLOCKS = 2000

#: The most blocks a list may have (64 GiB at L{MAX_BLOCK}); bigger files
#: have no list.
MAX_BLOCKS = 4096

#: Bytes in one block digest (BLAKE3).
DIGEST = 32


def block_size(size: int) -> int:
    """
    The block size for a file of C{size} bytes: the smallest power of two
    from L{MIN_BLOCK} to L{MAX_BLOCK} that keeps it under
    L{TARGET_BLOCKS} blocks (L{MAX_BLOCK} if none does).
    """
    bsize = MIN_BLOCK
    while bsize < MAX_BLOCK and size >= bsize * TARGET_BLOCKS:
        bsize *= 2
    return bsize


def block_count(size: int) -> int:
    """
    How many blocks a file of C{size} bytes has (at least one: an empty
    file is one empty block).
    """
    bsize = block_size(size)
    return max(1, -(-size // bsize))


def has_list(size: int) -> bool:
    """
    Whether a file of C{size} bytes carries a block list: more than one
    block, and not more than L{MAX_BLOCKS}.
    """
    return 1 < block_count(size) <= MAX_BLOCKS


def block_span(size: int, index: int) -> Tuple[int, int]:
    """
    The (offset, length) of block C{index} of a file of C{size} bytes.

    @raise IndexError: if there is no such block.
    """
    bsize = block_size(size)
    if not 0 <= index < block_count(size):
        raise IndexError(f"no block {index} in a file of {size} bytes")
    offset = index * bsize
    return offset, min(bsize, size - offset)


def block_lengths(size: int) -> List[int]:
    """
    The length of every block of a file of C{size} bytes, in order.
    """
    return [block_span(size, i)[1] for i in range(block_count(size))]


def digests(blocks: bytes) -> List[bytes]:
    """
    The digests of a block list, in order.
    """
    return [blocks[i:i + DIGEST] for i in range(0, len(blocks), DIGEST)]


def digest_at(blocks: bytes, index: int) -> bytes:
    return blocks[index * DIGEST:(index + 1) * DIGEST]


def list_problem(size: int, blocks: bytes) -> str:
    """
    What is wrong with C{blocks} as the list of a file of C{size} bytes, or
    C{""}: a list must have exactly one digest per block, and only files
    that carry a list (L{has_list}) have one.
    """
    if not blocks:
        return ""
    if len(blocks) % DIGEST:
        return f"a block list is not a whole number of {DIGEST}-byte digests"
    if not has_list(size):
        return "a block list for a file that has none"
    if len(blocks) // DIGEST != block_count(size):
        return (f"{len(blocks) // DIGEST} blocks listed for a file of {block_count(size)}"
                f" blocks of {block_size(size)} bytes")
    return ""
