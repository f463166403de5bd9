# -*- test-case-name: tests.test_tap -*-
"""
The limits that keep one peer from exhausting a node, in one place, so an
operator can change them (C{--limit NAME=VALUE}) and tests can see them.

The defaults are far above what an ordinary LAN needs.  Connection counts
have their own options (C{--max-connections}, C{--max-per-address}) and
C{--max-rate} caps bandwidth.  The frame limit is not here: it is part of
the protocol (a peer may send DATA frames up to C{wire.MAX_FRAME}), so a
node that lowered it would drop honest peers.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

import attrs

from p2ptwisted import wire

#: Seconds a peer has to finish the TLS handshake and send HELLO, together.
HANDSHAKE_TIMEOUT = 15.0

#: After this many quiet seconds we send a PING ...
PING_INTERVAL = 30.0

#: ... and after this many without any frame from the peer we drop it.
IDLE_TIMEOUT = 90.0

#: PEERS frames from one peer closer together than this (seconds) are ignored.
GOSSIP_MIN_SPACING = 1.0

#: Uploads one peer may have in flight from us; more GETs are refused "busy".
MAX_UPLOADS_PER_PEER = 64

#: A download whose peer sends nothing for this long (seconds) is given up
#: (the partial file is kept for resuming).
STALL_TIMEOUT = 60.0


def _positive(instance, attribute, value):
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class Limits:
    """
    Per-connection limits a node enforces on its peers.
    """

    handshake_timeout: float = attrs.field(default=HANDSHAKE_TIMEOUT, validator=_positive)
    ping_interval: float = attrs.field(default=PING_INTERVAL, validator=_positive)
    idle_timeout: float = attrs.field(default=IDLE_TIMEOUT, validator=_positive)
    gossip_entries: int = attrs.field(default=wire.MAX_PEERS_PER_FRAME, validator=_positive)
    gossip_spacing: float = attrs.field(default=GOSSIP_MIN_SPACING, validator=_positive)
    uploads_per_peer: int = attrs.field(default=MAX_UPLOADS_PER_PEER, validator=_positive)
    stall_timeout: float = attrs.field(default=STALL_TIMEOUT, validator=_positive)

    def __attrs_post_init__(self):
        if self.idle_timeout <= self.ping_interval:
            raise ValueError("idle_timeout must be longer than ping_interval")
        if self.gossip_entries > wire.MAX_PEERS_PER_FRAME:
            raise ValueError(f"gossip_entries is at most {wire.MAX_PEERS_PER_FRAME}"
                             " (the protocol's PEERS limit)")

    @classmethod
    def names(cls) -> list:
        return [a.name for a in attrs.fields(cls)]

    @classmethod
    def parse(cls, items: Iterable[str]) -> "Limits":
        """
        Limits from C{NAME=VALUE} texts, the rest left at their defaults.

        @raise ValueError: naming the bad item.
        """
        fields = {a.name: a for a in attrs.fields(cls)}
        values: Dict[str, Any] = {}  # each an int or a float, as its field is
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields:
                raise ValueError(f"{item!r}: expected NAME=VALUE with NAME one of"
                                 f" {', '.join(fields)}")
            kind = fields[name].type
            try:
                values[name] = int(text) if kind in (int, "int") else float(text)
            except ValueError:
                raise ValueError(f"{item!r}: not a number") from None
        return cls(**values)


#: Bytes per socket read and write, and buffered output before the upload
#: scheduler is paused (see PeerProtocol.start_files in protocol.py), with
#: one or two connections ...
TRANSPORT_BUFFER = 1 << 20

#: ... shared by more: the node's connections split this many bytes between
#: them (L{buffer_share}), each keeping at least L{MIN_TRANSPORT_BUFFER}.
#: A source uploading to five peers on 100 Mbit/s links held a full buffer
#: for each, 9 MiB of its 68 MiB peak (benchmarks/blocks.py swarm).
NODE_TRANSPORT_BUFFERS = 2 << 20
MIN_TRANSPORT_BUFFER = 256 << 10


def buffer_share(connections: int) -> int:
    """
    Each connection's buffer size when the node has C{connections}.
    """
    share = NODE_TRANSPORT_BUFFERS // max(1, connections)
    return max(MIN_TRANSPORT_BUFFER, min(TRANSPORT_BUFFER, share))
