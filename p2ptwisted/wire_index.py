# -*- test-case-name: tests.test_wire_index -*-
"""
The index frames of protocol version 2: parsing and packing, at the edge.

Version 2 replaces version 1's LIST, CATALOG and HAVE with two frames:

  - C{0x23} INDEX_HELLO: C{{"index_id": "16 hex", "sequence": n,
    "have_index_id": "16 hex" or "", "have_sequence": n}}: the sender's
    index id and highest sequence, and how much of the receiver's index
    it already holds (see L{p2ptwisted.core.engine.SyncEngine.hello_for}).
  - C{0x24} INDEX: C{{"entries": [entry, ...], "through": n}}: entries of
    the sender's index in sequence order, after the sequence the receiver
    said it had; C{through} (optional) is the sender's sequence up to
    which the receiver now holds everything (gaps left by forgotten
    deletions included), so the receiver knows when it has caught up.

An entry is C{{"path", "kind": "file"|"dir", "size", "mtime" (ns),
"perms" (0..0o777), "hash" (64 hex for a live file, else ""),
"deleted": bool, "version": [["16 hex", counter], ...], "by": "16 hex",
"seq"}}, and since version 3, for a file of more than one block,
C{"bsize"} and C{"blocks"} (its block list, base64).  An entry that breaks
a rule is dropped and counted, not fatal (as CATALOG entries in version
1); a frame that is not a valid object is.

Like L{p2ptwisted.wire}, every decoder is total: bytes in, a message or a
L{ProtocolError} out.  They live apart from L{p2ptwisted.wire} because they
speak in the sync core's terms (L{Entry}, L{Vector}); the protocol sends
frames of types L{TYPES} here and every other frame to C{wire}.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import FrozenSet, List, Optional, Tuple, Union

import attrs

from p2ptwisted.core.blocks import MAX_BLOCKS, block_size, list_problem
from p2ptwisted.core.index import KINDS, PERM_MASK, Entry, entry_problem
from p2ptwisted.core.versions import MAX_COUNTER, MAX_COUNTERS, Vector
from p2ptwisted.wire import (
    MAX_CONTROL_BODY, MAX_FILE_SIZE, MAX_FRAME, ProtocolError, _dump, _field, _int, _json_object,
    check_path)
from p2ptwisted.wire import decode_frame as wire_decode_frame
from p2ptwisted.wire import type_name as wire_type_name

INDEX_HELLO = 0x23
INDEX = 0x24
HAVE = 0x25
TYPES = frozenset({INDEX_HELLO, INDEX, HAVE})

#: Longest HAVE bitmap: one bit per block of the longest block list.
MAX_HAVE_BYTES = MAX_BLOCKS // 8

_SHORT_ID = re.compile(r"[0-9a-f]{16}")
_HASH = re.compile(r"[0-9a-f]{64}")

#: Room kept under MAX_CONTROL_BODY when packing entries into one frame.
_PACK_LIMIT = MAX_CONTROL_BODY - 256

#: The body limit of INDEX since version 3: entries with block lists are
#: bigger (a list of 4,096 blocks is 175,000 characters), so INDEX bodies
#: may fill a frame.  Accepted from any peer: a version 2 peer never sends
#: more than MAX_CONTROL_BODY.
MAX_INDEX_BODY = MAX_FRAME - 1


@attrs.frozen
class IndexHello:
    index_id: str
    have_index_id: str
    have_sequence: int
    #: The sender's highest sequence when it sent this: the receiver has
    #: caught up once it holds the entries up to here.
    sequence: int = 0


@attrs.frozen
class Have:
    """
    Version 3: the blocks of a file version the sender has verified in
    its partial download (BitTorrent's BITFIELD, Syncthing's
    DownloadProgress), so others may ask it for them.

    @ivar blocks: the verified block indexes.
    """

    path: str
    hash: str
    blocks: FrozenSet[int]


@attrs.frozen
class Index:
    """
    @ivar rejected: entries dropped for breaking a rule.
    """

    entries: Tuple[Entry, ...]
    rejected: int = 0
    #: The sender's sequence the receiver is now complete up to, if given.
    through: Optional[int] = None


def _short_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SHORT_ID.fullmatch(value):
        raise ProtocolError(f"{what} is not 16 lowercase hex digits")
    return value


def _version(value: object) -> Vector:
    if not isinstance(value, list) or len(value) > MAX_COUNTERS:
        raise ProtocolError("entry version is not a list of at most"
                            f" {MAX_COUNTERS} counters")
    counters = {}
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ProtocolError("entry version counter is not a pair")
        who, counter = _short_id(pair[0], "version id"), pair[1]
        if (not isinstance(counter, int) or isinstance(counter, bool)
                or not 1 <= counter <= MAX_COUNTER):
            raise ProtocolError("entry version counter out of range")
        if who in counters:
            raise ProtocolError("entry version names a node twice")
        counters[who] = counter
    return Vector(counters)


def decode_entry(obj: object) -> Entry:
    """
    @raise ProtocolError: naming the first rule the entry breaks.
    """
    if not isinstance(obj, dict):
        raise ProtocolError("index entry is not an object")
    kind = _field(obj, "kind", str, "index entry")
    if kind not in KINDS:
        raise ProtocolError("index entry kind is not file or dir")
    content_hash = _field(obj, "hash", str, "index entry")
    if content_hash and not _HASH.fullmatch(content_hash):
        raise ProtocolError("index entry hash is not 64 lowercase hex digits")
    size = _int(obj, "size", 0, MAX_FILE_SIZE, "index entry")
    entry = Entry(
        path=check_path(obj.get("path")),
        kind=kind,
        size=size,
        mtime_ns=_int(obj, "mtime", -(2**63), 2**63 - 1, "index entry"),
        perms=_int(obj, "perms", 0, PERM_MASK, "index entry"),
        hash=content_hash,
        deleted=_field(obj, "deleted", bool, "index entry"),
        version=_version(obj.get("version")),
        modified_by=_short_id(obj.get("by"), "index entry by"),
        sequence=_int(obj, "seq", 1, 2**63 - 1, "index entry"),
        blocks=_blocks(obj, size),
    )
    problem = entry_problem(entry)
    if problem is not None:
        raise ProtocolError(f"index entry: {problem}")
    return entry


def _blocks(obj: dict, size: int) -> bytes:
    """
    An entry's block list (C{b""} if it has none), checked against its
    size: one digest per block of the size the rule gives.
    """
    if "blocks" not in obj:
        return b""
    text = _field(obj, "blocks", str, "index entry")
    if _int(obj, "bsize", 1, 2**63 - 1, "index entry") != block_size(size):
        raise ProtocolError(f"index entry bsize is not {block_size(size)} for its size")
    try:
        blocks = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError("index entry blocks is not base64") from None
    problem = list_problem(size, blocks)
    if problem or not blocks:
        raise ProtocolError(f"index entry blocks: {problem or 'empty'}")
    return blocks


def entry_to_json(e: Entry, blocks: bool = True) -> dict:
    """
    @param blocks: include the block list (not for a version 2 peer).
    """
    obj = {"path": e.path, "kind": e.kind, "size": e.size, "mtime": e.mtime_ns,
           "perms": e.perms, "hash": e.hash, "deleted": e.deleted,
           "version": [[k, v] for k, v in e.version.counters], "by": e.modified_by,
           "seq": e.sequence}
    if blocks and e.blocks and e.live:
        obj["bsize"] = block_size(e.size)
        obj["blocks"] = base64.b64encode(e.blocks).decode("ascii")
    return obj


def decode_index_frame(frame: bytes) -> Union[IndexHello, Index]:
    """
    Decode an INDEX_HELLO or INDEX frame (type byte included).
    """
    if not frame or frame[0] not in (INDEX_HELLO, INDEX):
        raise ProtocolError("not an index frame")
    body = bytes(frame[1:])
    if frame[0] == INDEX_HELLO:
        obj = _json_object(body, "INDEX_HELLO")
        have = obj.get("have_index_id")
        return IndexHello(
            index_id=_short_id(obj.get("index_id"), "INDEX_HELLO index_id"),
            have_index_id="" if have == "" else _short_id(have, "INDEX_HELLO have_index_id"),
            have_sequence=_int(obj, "have_sequence", 0, 2**63 - 1, "INDEX_HELLO"),
            sequence=_int(obj, "sequence", 0, 2**63 - 1, "INDEX_HELLO"),
        )
    obj = _json_object(body, "INDEX", MAX_INDEX_BODY)
    raw = _field(obj, "entries", list, "INDEX")
    through = (_int(obj, "through", 0, 2**63 - 1, "INDEX") if "through" in obj else None)
    entries: List[Entry] = []
    rejected = 0
    for item in raw:
        try:
            entries.append(decode_entry(item))
        except ProtocolError:
            rejected += 1
    return Index(entries=tuple(entries), rejected=rejected, through=through)


def decode_have(frame: bytes) -> Have:
    """
    Decode a HAVE frame (type byte included): C{{"path", "hash",
    "blocks": base64 bitmap}}, bit 7 of byte 0 being block 0.
    """
    obj = _json_object(bytes(frame[1:]), "HAVE")
    content_hash = _field(obj, "hash", str, "HAVE")
    if not _HASH.fullmatch(content_hash):
        raise ProtocolError("HAVE hash is not 64 lowercase hex digits")
    text = _field(obj, "blocks", str, "HAVE")
    try:
        bitmap = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError("HAVE blocks is not base64") from None
    if len(bitmap) > MAX_HAVE_BYTES:
        raise ProtocolError(f"HAVE bitmap longer than {MAX_HAVE_BYTES} bytes")
    blocks = frozenset(i for i in range(len(bitmap) * 8) if bitmap[i >> 3] & (0x80 >> (i & 7)))
    return Have(path=check_path(obj.get("path")), hash=content_hash, blocks=blocks)


def encode_have(m: Have) -> bytes:
    bitmap = bytearray((max(m.blocks, default=-1) >> 3) + 1)
    for i in m.blocks:
        bitmap[i >> 3] |= 0x80 >> (i & 7)
    return bytes((HAVE,)) + _dump({"path": m.path, "hash": m.hash,
                                   "blocks": base64.b64encode(bytes(bitmap)).decode("ascii")})


def decode_any_frame(frame: bytes):
    """
    Decode any version 2 frame: index frames here, the rest by
    L{p2ptwisted.wire.decode_frame}.
    """
    if frame and frame[0] == HAVE:
        return decode_have(frame)
    if frame and frame[0] in TYPES:
        return decode_index_frame(frame)
    return wire_decode_frame(frame)


def type_name(type_byte: int) -> str:
    """
    The name of any frame type (L{wire.type_name} for the others).
    """
    names = {INDEX_HELLO: "INDEX_HELLO", INDEX: "INDEX", HAVE: "HAVE"}
    return names.get(type_byte) or wire_type_name(type_byte)


def encode_index_hello(m: IndexHello) -> bytes:
    return bytes((INDEX_HELLO,)) + _dump({"index_id": m.index_id, "sequence": m.sequence,
                                          "have_index_id": m.have_index_id,
                                          "have_sequence": m.have_sequence})


def pack_index(entries: List[Entry], through: Optional[int] = None,
               blocks: bool = True) -> List[bytes]:
    """
    INDEX frames holding C{entries} in order, each within the body limit;
    the last carries C{through}, if given (then there is one frame even
    for no entries).

    @param blocks: whether the peer speaks version 3: entries then carry
        their block lists; for a version 2 peer, they do not.  Frames are
        packed to L{MAX_CONTROL_BODY}, except that an entry with a list
        too long for that gets a frame of its own, up to
        L{MAX_INDEX_BODY}.
    """
    frames: List[bytes] = []
    group: List[bytes] = []
    size = 0
    for entry in entries:
        item = _dump(entry_to_json(entry, blocks))
        if group and size + len(item) + 1 > _PACK_LIMIT:
            frames.append(_index_frame(group, None))
            group, size = [], 0
        group.append(item)
        size += len(item) + 1
    if group or through is not None:
        frames.append(_index_frame(group, through))
    return frames


def _index_frame(group: List[bytes], through: Optional[int]) -> bytes:
    tail = b"]}" if through is None else b'],"through":%d}' % through
    return bytes((INDEX,)) + b'{"entries":[' + b",".join(group) + tail
