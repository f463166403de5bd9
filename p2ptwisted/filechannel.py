# -*- test-case-name: tests.test_transfer -*-
"""
The file side of a peer connection: the uploads it serves (through its
L{UploadScheduler}, the transport's one producer) and the transfer ids of
the downloads it asks for.  A part of L{p2ptwisted.protocol.PeerProtocol},
in a module of its own so that class stays readable.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Optional

from p2ptwisted import wire
from p2ptwisted.limits import TRANSPORT_BUFFER
from p2ptwisted.uploads import UploadScheduler


def set_buffer(proto: Any, size: int) -> None:
    """
    Read, write and buffer up to C{size} bytes on C{proto}'s socket (where
    the transport has these settings: TLS, say, may not).
    """
    socket_transport = proto.transport.transport if proto.tls else proto.transport
    for attribute in ("bufferSize", "SEND_LIMIT"):
        if hasattr(socket_transport, attribute):
            setattr(socket_transport, attribute, size)


class FileChannel:
    """
    @ivar downloads: our transfers on this connection, by id
        (L{p2ptwisted.downloads.Download} or a block request).
    @ivar cancelled: the ids we cancelled lately (their END may cross our
        CANCEL).
    """

    # (set by PeerProtocol, the class this is a part of)
    node: Any
    clock: Any
    transport: Any
    tls: bool

    def __init__(self) -> None:
        self.scheduler: Optional[UploadScheduler] = None
        self.downloads: Dict[int, object] = {}
        self.cancelled: Deque[int] = deque(maxlen=256)
        self._next_transfer = 0

    def send(self, message: wire.Message) -> None:
        raise NotImplementedError

    def cancel_transfer(self, transfer: int) -> None:
        """
        Tell the peer to stop sending one of our transfers, and remember it
        so its END, crossing our CANCEL, is not taken for a protocol error.
        """
        self.cancelled.append(transfer)
        self.send(wire.Cancel(transfer=transfer))

    def next_transfer_id(self) -> int:
        """
        A transfer id for our next GET on this connection.  Ids name our own
        requests only (DATA always flows towards the requester), so the two
        ends never need to agree on them.
        """
        self._next_transfer = (self._next_transfer + 1) % (wire.MAX_TRANSFER_ID + 1)
        return self._next_transfer

    def start_files(self) -> None:
        """
        Register the upload scheduler: the transport's one producer.

        Twisted's TCP transport reads 64 KiB at a time, sends at most
        128 KiB per reactor turn, and pauses its producer past 64 KiB of
        buffered output; for bulk data that leaves the pipe idle between
        turns.  We raise all three to TRANSPORT_BUFFER (measured in
        benchmarks/transfer.py); the node lowers them when it has more
        connections (see L{set_buffer}).
        """
        set_buffer(self, TRANSPORT_BUFFER)
        self.scheduler = UploadScheduler(self, self.clock, limit=self.node.rate_limit)
        self.transport.registerProducer(self.scheduler, True)
