# -*- test-case-name: tests.test_wire -*-
"""
The p2pshare wire format: message types, their encodings, and the limits.

This module is the edge: it is the only code that ever looks at raw bytes
from a peer.  Every decoder is total -- any input gives a message object or
a L{ProtocolError}, never another exception -- so nothing past this module
has to distrust the shape of a message, only its meaning.

Nothing here does I/O.  The exact format is specified in C{docs/protocol.md};
keep the two in step.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
import unicodedata
from typing import Callable, Dict, Optional, Tuple, Type, Union

import attrs

from p2ptwisted.core.blocks import MAX_BLOCK

#: Protocol versions this implementation speaks, lowest first.
SUPPORTED_VERSIONS: Tuple[int, ...] = (2, 3)

#: The largest frame (type byte plus body) either side may send or accept.
#: One constant for both directions: Int32StringReceiver's sendString does
#: not check MAX_LENGTH, so a sender with a bigger limit than its receiver
#: would only ever see a silent disconnect.
MAX_FRAME = 256 * 1024

#: Control bodies (JSON) are much smaller than the frame limit; capping them
#: keeps the cost of parsing hostile JSON low.
MAX_CONTROL_BODY = 64 * 1024

#: The most addresses one PEERS frame may carry.
MAX_PEERS_PER_FRAME = 64

#: The most listen ports a HELLO may announce.
MAX_LISTEN_PORTS = 8

#: The most protocol versions a HELLO may list.
MAX_VERSIONS = 16

#: Longest display name, in characters.
MAX_NAME = 64

#: Longest ERROR message, in characters.
MAX_ERROR_MESSAGE = 512

#: Longest textual address (``[IPv6]:port`` is at most 47 characters).
MAX_ADDRESS = 64

NODE_ID_BYTES = 32

#: File content hashes are BLAKE3, 32 bytes, sent as 64 lowercase hex digits
#: (see docs/protocol.md for why BLAKE3 and not SHA-256).
HASH_BYTES = 32

#: Limits on a shared file's relative path, in UTF-8 bytes.
MAX_PATH_BYTES = 4096
MAX_COMPONENT_BYTES = 255

#: Names starting with this belong to the node itself (its state directory,
#: its partial downloads) and are never listed, served or accepted.
RESERVED_PREFIX = ".p2pshare"

#: The most DATA payload bytes in one frame.  Sender and receiver agree on
#: MAX_FRAME; the chunk size is only the sender's choice within it.
MAX_DATA_PAYLOAD = MAX_FRAME - 1 - 4

#: Largest file size and transfer id a peer may name.
MAX_FILE_SIZE = 2**63 - 1
MAX_TRANSFER_ID = 2**32 - 1

# Frame type bytes.
HELLO = 0x01
ERROR = 0x02
PEERS = 0x10
GET = 0x30
DATA = 0x31
END = 0x32
CANCEL = 0x33
PING = 0x7E
PONG = 0x7F

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_NODE_ID = re.compile(r"[0-9a-f]{64}")
_HASH = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"[A-Za-z]:")
_PING_STRUCT = struct.Struct("!Q")
_TRANSFER_STRUCT = struct.Struct("!I")


class ProtocolError(Exception):
    """
    A peer sent bytes that do not form a valid message.

    The message is safe to log: it never contains raw peer bytes, only
    descriptions and L{safe_text}-escaped excerpts.
    """


def has_control_chars(text: str) -> bool:
    """
    Whether C{text} holds C0/C1 control characters (newlines included).
    """
    return bool(_CONTROL_CHARS.search(text))


def safe_text(value: object, limit: int = 80) -> str:
    """
    Render untrusted text for a log line: escaped, never multi-line, bounded.
    """
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        text = text[:limit] + "..."
    return text


def check_path(path: object) -> str:
    """
    Validate a shared file's relative path as it travels on the wire.

    A valid path is NFC-normalised text of ``/``-separated components, none
    empty, C{.} or C{..}, none with control characters or backslashes, none
    starting with L{RESERVED_PREFIX}, no drive letter in front, within the
    byte limits.  Such a path can only name something inside a share --
    what is actually on disk there is checked when a file is opened
    (L{p2ptwisted.apply}, L{p2ptwisted.serving}).

    @raise ProtocolError: naming the problem, with the path escaped.
    """
    if not isinstance(path, str) or not path:
        raise ProtocolError(f"bad path {safe_text(path)}")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(f"path is not valid Unicode: {safe_text(path)}") from None
    if size > MAX_PATH_BYTES:
        raise ProtocolError(f"path longer than {MAX_PATH_BYTES} bytes: {safe_text(path)}")
    if not unicodedata.is_normalized("NFC", path):
        raise ProtocolError(f"path is not NFC-normalised: {safe_text(path)}")
    if has_control_chars(path) or "\\" in path:
        raise ProtocolError(f"path has control characters or backslashes: {safe_text(path)}")
    parts = path.split("/")
    if _DRIVE.match(parts[0]):
        raise ProtocolError(f"path starts with a drive: {safe_text(path)}")
    for part in parts:
        if part in ("", ".", ".."):
            raise ProtocolError(f"path has an empty, . or .. component: {safe_text(path)}")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise ProtocolError(f"path component too long: {safe_text(path)}")
        if part.startswith(RESERVED_PREFIX):
            raise ProtocolError(f"path uses a reserved name: {safe_text(path)}")
    return path


@attrs.frozen
class PeerAddress:
    """
    The address a node listens on: an IP literal and a TCP port.

    Only IP literals travel on the wire, so gossip can never make a node
    resolve names chosen by a stranger.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def normalize_host(host: str) -> str:
    """
    The canonical text of an IP literal: compressed, and IPv4 for an
    IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4
    peer).  Anything that is not an IP literal is returned unchanged.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).compressed


def is_loopback(host: str) -> bool:
    """
    Whether C{host} is an IP literal on the loopback network.
    """
    try:
        return ipaddress.ip_address(normalize_host(host)).is_loopback
    except ValueError:
        return False


def parse_address(text: object) -> PeerAddress:
    """
    Parse and validate a gossiped ``host:port`` listen address.

    Accepts ``a.b.c.d:port`` and ``[v6]:port``.  Refuses names, port 0,
    and addresses nobody can listen on for us: unspecified, multicast,
    broadcast and reserved ones.

    @raise ProtocolError: if C{text} is not such an address.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_ADDRESS:
        raise ProtocolError(f"bad address {safe_text(text)}")
    if text.startswith("["):
        end = text.find("]:")
        if end < 0:
            raise ProtocolError(f"bad address {safe_text(text)}")
        host_text, port_text = text[1:end], text[end + 2 :]
        version = 6
    else:
        host_text, sep, port_text = text.rpartition(":")
        if not sep:
            raise ProtocolError(f"bad address {safe_text(text)}")
        version = 4
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ProtocolError(f"bad port in address {safe_text(text)}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ProtocolError(f"bad port in address {safe_text(text)}")
    try:
        ip = ipaddress.ip_address(host_text)
    except ValueError:
        raise ProtocolError(f"bad host in address {safe_text(text)}") from None
    if ip.version != version:
        raise ProtocolError(f"bad host in address {safe_text(text)}")
    if getattr(ip, "scope_id", None):
        raise ProtocolError(f"scoped address not allowed {safe_text(text)}")
    # ::1 lies in IPv6's reserved ::/8, so loopback is let through first.
    if ip.is_unspecified or ip.is_multicast or (ip.is_reserved and not ip.is_loopback):
        raise ProtocolError(f"unusable address {safe_text(text)}")
    return PeerAddress(host=ip.compressed, port=port)


# ---------------------------------------------------------------------------
# Messages


@attrs.frozen
class Hello:
    """
    The first frame in each direction: who we are and how to reach us.
    """

    versions: Tuple[int, ...]
    node_id: str
    listen_ports: Tuple[int, ...]
    name: str


@attrs.frozen
class Error:
    """
    Why the sender refuses something or is about to close the connection.

    C{transfer} names the request it answers (a GET's transfer id), if any.
    """

    code: str
    message: str
    transfer: Optional[int] = None


@attrs.frozen
class Peers:
    """
    Listen addresses of nodes the sender has completed a handshake with.

    C{addresses} holds only the entries that validated; C{rejected} counts
    the ones that did not, so the receiver can log one line about them.
    """

    addresses: Tuple[PeerAddress, ...]
    rejected: int = 0
    #: The node id the sender reached at each address (aligned with
    #: C{addresses}), C{None} where unknown; empty when the sender sent none.
    ids: Tuple[Optional[str], ...] = ()


@attrs.frozen
class Get:
    """
    A request for the file at C{path} whose content hashes to C{hash},
    from byte C{offset} on; the answer is DATA frames and an END, or an
    ERROR naming C{transfer}.

    A block request (version 3) also has C{length} and C{block}: only
    C{length} bytes from C{offset}, which hash to C{block}; the server may
    send them from any file, or partial download, that has that block.
    """

    transfer: int
    path: str
    hash: str
    offset: int
    length: int = 0
    block: str = ""


@attrs.frozen
class Data:
    """
    The next bytes of a transfer.  C{payload} may be a memoryview into the
    received frame: no copy on the hot path.
    """

    transfer: int
    payload: Union[bytes, memoryview] = attrs.field(eq=False)


@attrs.frozen
class End:
    """
    The last frame of a transfer: the whole file's size and hash.
    """

    transfer: int
    size: int
    hash: str


@attrs.frozen
class Cancel:
    """
    The requester no longer wants a transfer; the sender stops sending it.
    """

    transfer: int


@attrs.frozen
class Ping:
    """
    A liveness probe; the receiver answers with a L{Pong} echoing C{nonce}.
    """

    nonce: int


@attrs.frozen
class Pong:
    nonce: int


Message = Union[Hello, Error, Peers, Get, Data, End, Cancel, Ping, Pong]


# ---------------------------------------------------------------------------
# JSON bodies


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def _unique_object(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _json_object(body: bytes, what: str, limit: int = MAX_CONTROL_BODY) -> dict:
    if len(body) > limit:
        raise ProtocolError(f"{what} body too long ({len(body)} bytes)")
    try:
        value = json.loads(
            body.decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_unique_object,
        )
    except (ValueError, RecursionError):
        # UnicodeDecodeError and JSONDecodeError are both ValueErrors.
        raise ProtocolError(f"{what} body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} body is not a JSON object")
    return value


def _dump(value: dict) -> bytes:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def _field(obj: dict, key: str, kind: type, what: str):
    if key not in obj:
        raise ProtocolError(f"{what} lacks {key!r}")
    value = obj[key]
    # bool is an int subclass; never accept true/false as a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(f"{what} field {key!r} has the wrong type")
    return value


def _int(obj: dict, key: str, low: int, high: int, what: str) -> int:
    value = _field(obj, key, int, what)
    if not low <= value <= high:
        raise ProtocolError(f"{what} field {key!r} out of range")
    return value


def _hash(obj: dict, key: str, what: str) -> str:
    value = _field(obj, key, str, what)
    if not _HASH.fullmatch(value):
        raise ProtocolError(f"{what} field {key!r} is not 64 lowercase hex digits")
    return value


def _text(obj: dict, key: str, limit: int, what: str, *, optional=False) -> str:
    if optional and key not in obj:
        return ""
    value = _field(obj, key, str, what)
    if len(value) > limit:
        raise ProtocolError(f"{what} field {key!r} too long")
    if has_control_chars(value):
        raise ProtocolError(f"{what} field {key!r} has control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON can spell lone surrogates ("\ud800"); they are not text.
        raise ProtocolError(f"{what} field {key!r} is not valid Unicode") from None
    return value


def _int_list(obj, key, low, high, min_len, max_len, what) -> Tuple[int, ...]:
    values = _field(obj, key, list, what)
    if not min_len <= len(values) <= max_len:
        raise ProtocolError(f"{what} field {key!r} has {len(values)} entries")
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise ProtocolError(f"{what} field {key!r} has a bad entry")
    return tuple(values)


def _decode_hello(body: bytes) -> Hello:
    obj = _json_object(body, "HELLO")
    versions = _int_list(obj, "versions", 1, 65535, 1, MAX_VERSIONS, "HELLO")
    node_id = _field(obj, "node_id", str, "HELLO")
    if not _NODE_ID.fullmatch(node_id):
        raise ProtocolError("HELLO node_id is not 64 lowercase hex digits")
    ports = _int_list(obj, "listen_ports", 1, 65535, 0, MAX_LISTEN_PORTS, "HELLO")
    name = _text(obj, "name", MAX_NAME, "HELLO", optional=True)
    return Hello(versions=versions, node_id=node_id, listen_ports=ports, name=name)


def _encode_hello(m: Hello) -> bytes:
    return _dump(
        {
            "versions": list(m.versions),
            "node_id": m.node_id,
            "listen_ports": list(m.listen_ports),
            "name": m.name,
        }
    )


def _decode_error(body: bytes) -> Error:
    obj = _json_object(body, "ERROR")
    code = _field(obj, "code", str, "ERROR")
    if not _ERROR_CODE.fullmatch(code):
        raise ProtocolError("ERROR code is not a short lowercase token")
    message = _text(obj, "message", MAX_ERROR_MESSAGE, "ERROR", optional=True)
    transfer = None
    if "transfer" in obj:
        transfer = _int(obj, "transfer", 0, MAX_TRANSFER_ID, "ERROR")
    return Error(code=code, message=message, transfer=transfer)


def _encode_error(m: Error) -> bytes:
    message = m.message
    if len(message) > MAX_ERROR_MESSAGE or has_control_chars(message):
        # An ERROR we send must be one we would accept ourselves.
        message = safe_text(message, MAX_ERROR_MESSAGE - 3)
    body: Dict[str, object] = {"code": m.code, "message": message}
    if m.transfer is not None:
        body["transfer"] = m.transfer
    return _dump(body)


def _decode_get(body: bytes) -> Get:
    obj = _json_object(body, "GET")
    return Get(
        transfer=_int(obj, "transfer", 0, MAX_TRANSFER_ID, "GET"),
        path=check_path(obj.get("path")),
        hash=_hash(obj, "hash", "GET"),
        offset=_int(obj, "offset", 0, MAX_FILE_SIZE, "GET"),
        **_block_request(obj),
    )


def _block_request(obj: dict) -> dict:
    if "length" not in obj and "block" not in obj:
        return {}
    return {"length": _int(obj, "length", 1, MAX_BLOCK, "GET"),
            "block": _hash(obj, "block", "GET")}


def _encode_get(m: Get) -> bytes:
    obj = {"transfer": m.transfer, "path": m.path, "hash": m.hash, "offset": m.offset}
    if m.length:
        obj.update(length=m.length, block=m.block)
    return _dump(obj)


def _decode_end(body: bytes) -> End:
    obj = _json_object(body, "END")
    return End(
        transfer=_int(obj, "transfer", 0, MAX_TRANSFER_ID, "END"),
        size=_int(obj, "size", 0, MAX_FILE_SIZE, "END"),
        hash=_hash(obj, "hash", "END"),
    )


def _decode_cancel(body: bytes) -> Cancel:
    obj = _json_object(body, "CANCEL")
    return Cancel(transfer=_int(obj, "transfer", 0, MAX_TRANSFER_ID, "CANCEL"))


def data_header(transfer: int, payload_length: int) -> bytes:
    """
    The length prefix, type byte and transfer id of a DATA frame, so a
    sender can write the header and the payload as two pieces without
    joining them.
    """
    return struct.pack("!IBI", 1 + 4 + payload_length, DATA, transfer)


def _decode_peers(body: bytes) -> Peers:
    obj = _json_object(body, "PEERS")
    entries = _field(obj, "peers", list, "PEERS")
    if len(entries) > MAX_PEERS_PER_FRAME:
        raise ProtocolError(f"PEERS carries {len(entries)} entries")
    # The optional "ids" (one node id or "" per entry) are a hint: one
    # that is not an array as long as "peers" is ignored, as is any
    # element that is not a node id.
    ids = obj.get("ids")
    if not isinstance(ids, list) or len(ids) != len(entries):
        ids = None
    good = []
    good_ids = []
    rejected = 0
    for i, entry in enumerate(entries):
        try:
            address = parse_address(entry)
        except ProtocolError:
            rejected += 1
        else:
            if address not in good:
                good.append(address)
                claimed = ids[i] if ids is not None else None
                good_ids.append(claimed if isinstance(claimed, str)
                                and _NODE_ID.fullmatch(claimed) else None)
    return Peers(addresses=tuple(good), rejected=rejected,
                 ids=tuple(good_ids) if ids is not None else ())


def _encode_peers(m: Peers) -> bytes:
    if len(m.addresses) > MAX_PEERS_PER_FRAME:
        raise ValueError("too many addresses for one PEERS frame")
    body = {"peers": [str(a) for a in m.addresses]}
    if m.ids:
        if len(m.ids) != len(m.addresses):
            raise ValueError("PEERS ids must match its addresses one to one")
        body["ids"] = [i or "" for i in m.ids]
    return _dump(body)


def _decode_nonce(body: bytes, what: str) -> int:
    if len(body) != _PING_STRUCT.size:
        raise ProtocolError(f"{what} body is {len(body)} bytes, not 8")
    return _PING_STRUCT.unpack(body)[0]


_DECODERS: Dict[int, Tuple[str, Callable[[bytes], Message]]] = {
    HELLO: ("HELLO", _decode_hello),
    ERROR: ("ERROR", _decode_error),
    PEERS: ("PEERS", _decode_peers),
    GET: ("GET", _decode_get),
    # (decode_frame decodes DATA itself, without copying the payload)
    DATA: ("DATA", lambda body: decode_data(memoryview(bytes((DATA,)) + body))),
    END: ("END", _decode_end),
    CANCEL: ("CANCEL", _decode_cancel),
    PING: ("PING", lambda body: Ping(_decode_nonce(body, "PING"))),
    PONG: ("PONG", lambda body: Pong(_decode_nonce(body, "PONG"))),
}

_ENCODERS: Dict[Type, Tuple[int, Callable[..., bytes]]] = {
    Hello: (HELLO, _encode_hello),
    Error: (ERROR, _encode_error),
    Peers: (PEERS, _encode_peers),
    Get: (GET, _encode_get),
    Data: (DATA, lambda m: _TRANSFER_STRUCT.pack(m.transfer) + bytes(m.payload)),
    End: (END, lambda m: _dump({"transfer": m.transfer, "size": m.size, "hash": m.hash})),
    Cancel: (CANCEL, lambda m: _dump({"transfer": m.transfer})),
    Ping: (PING, lambda m: _PING_STRUCT.pack(m.nonce)),
    Pong: (PONG, lambda m: _PING_STRUCT.pack(m.nonce)),
}


def type_name(type_byte: int) -> str:
    """
    The name of a frame type, or its hex value if we do not know it.
    """
    entry = _DECODERS.get(type_byte)
    return entry[0] if entry else f"0x{type_byte:02x}"


def decode_data(frame: memoryview) -> Data:
    """
    Decode a DATA frame (type byte included) without copying its payload:
    the payload is a view into C{frame}, valid while the caller's buffer is.
    """
    if len(frame) < 5:
        raise ProtocolError("DATA frame shorter than its transfer id")
    return Data(transfer=_TRANSFER_STRUCT.unpack(frame[1:5])[0], payload=frame[5:])


def decode_frame(frame: bytes) -> Message:
    """
    Turn one frame (type byte plus body, without the length prefix) into a
    message.

    @raise ProtocolError: for an empty or oversized frame, an unknown type,
        or a body that is not valid for its type.
    """
    if not frame:
        raise ProtocolError("empty frame")
    if len(frame) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    kind = frame[0]
    if kind == DATA:
        return decode_data(memoryview(frame))
    entry = _DECODERS.get(kind)
    if entry is None:
        raise ProtocolError(f"unknown frame type 0x{kind:02x}")
    return entry[1](bytes(frame[1:]))


def encode_frame(message: Message) -> bytes:
    """
    Turn a message into one frame (type byte plus body), without the length
    prefix, which the framing layer adds.

    @raise ValueError: if the result would exceed L{MAX_FRAME}; that is a bug
        in the sender, never something a peer can cause.
    """
    type_byte, encode = _ENCODERS[type(message)]
    frame = bytes((type_byte,)) + encode(message)
    if len(frame) > MAX_FRAME:
        raise ValueError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}")
    return frame


def negotiate_version(theirs: Tuple[int, ...]) -> Optional[int]:
    """
    The highest version both sides speak, or C{None} if there is none.
    """
    common = set(theirs).intersection(SUPPORTED_VERSIONS)
    return max(common) if common else None
