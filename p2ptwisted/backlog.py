# -*- test-case-name: tests.test_backlog -*-
"""
Bounding what we buffer for one peer, whatever it sends.

Every request a peer makes can cost us output: a refusal for a GET, a
PONG for a PING.  A peer that sends requests and never reads the answers
would make us buffer them without end.  File data needs no such guard
(the upload scheduler stops while the transport is backed up), but every
frame written with C{send} does: once a connection holds
L{READ_PAUSE_AT} bytes of output we stop reading from the peer -- its
requests wait in its own socket -- and read again when the output has
drained.  The threshold is far above what an honest peer ever makes us
hold (file data is paused at 1 MiB, the index exchange stops at the same
mark), so two honest nodes never stop reading from each other, and
nothing else changes for them.

Output that no request of the peer caused (a PING of ours, gossip) cannot
pass the threshold by much while we do not read; past L{DROP_AT} the peer
is dropped all the same.  A peer that reads nothing at all is dropped by
the idle check (L{p2ptwisted.liveness}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from twisted.protocols.tls import TLSMemoryBIOProtocol

if TYPE_CHECKING:
    from p2ptwisted.uploads import UploadScheduler

#: Buffered output for one peer at which we stop reading from it.
READ_PAUSE_AT = 4 * 1024 * 1024

#: Buffered output for one peer at which we drop it.
DROP_AT = 16 * 1024 * 1024


def buffered(transport) -> int:
    """
    Bytes written to C{transport} that the kernel has not taken yet: over
    TLS, what the socket under it holds plus cleartext TLS still holds.
    (A transport that keeps no buffer, a test's, counts as empty.)
    """
    held = 0
    if isinstance(transport, TLSMemoryBIOProtocol):
        held = sum(len(b) for b in transport._appSendBuffer)
        transport = transport.transport
    data = getattr(transport, "dataBuffer", b"")
    if not isinstance(data, (bytes, bytearray)):
        return held
    return (held + len(data) - getattr(transport, "offset", 0)
            + getattr(transport, "_tempDataLen", 0))


class BacklogMixin:
    """
    A mixin of L{p2ptwisted.protocol.PeerProtocol}: it uses the
    protocol's C{transport}, C{scheduler}, C{drop} and the pausing of
    L{p2ptwisted.framing.FrameReceiver}.

    @ivar held_for_output: whether we stopped reading because our output
        to the peer is backed up.
    """

    held_for_output = False

    # The protocol's (see above): annotations only, nothing here shadows them.
    transport: Any
    scheduler: Optional[UploadScheduler]
    drop: Callable[[str], None]
    pauseProducing: Callable[[], None]
    resumeProducing: Callable[[], None]
    _closing: bool

    def output_written(self) -> None:
        """
        A frame was just written: stop reading from the peer if our output
        to it is backed up, drop it if far past that.
        """
        backlog = buffered(self.transport)
        if backlog < READ_PAUSE_AT:
            return
        if backlog >= DROP_AT or self.scheduler is None:
            # Without a scheduler the transport would never tell us it
            # drained (see output_drained): nothing to wait for.
            self.drop(f"it does not read what we send ({backlog} bytes waiting)")
        elif not self.held_for_output:
            self.held_for_output = True
            self.pauseProducing()

    def output_drained(self) -> None:
        """
        The transport has sent everything it held (it resumed the upload
        scheduler, which it had paused long before the threshold): read
        from the peer again, starting with what we had received.
        """
        if self.held_for_output and not self._closing:
            self.held_for_output = False
            self.resumeProducing()
