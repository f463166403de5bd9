# -*- test-case-name: tests.test_protocol -*-
"""
Splitting a connection's byte stream into frames, fast.

Int32StringReceiver's own parser joins its whole buffer with every read,
which is quadratic in the frame size.  L{FrameReceiver} parses frames
straight out of what arrived, keeping only an incomplete tail for next
time, and offers each frame first as a view into the received bytes
(L{FrameReceiver.view_received}), so a subclass can take bulk data without
copying it in Python.  It keeps Int32StringReceiver's contract: the same
length prefix, the MAX_LENGTH check before any body is buffered, and
C{pauseProducing} stopping delivery at once.
"""

from __future__ import annotations

from twisted.protocols.basic import Int32StringReceiver


class FrameReceiver(Int32StringReceiver):
    """
    @ivar _closing: set by the subclass once it is closing: no more frames
        are delivered.
    """

    _closing = False
    #: Bytes received on the connection.
    bytes_in = 0

    def __init__(self):
        self._buffer = bytearray()
        self._parsing = False

    def view_received(self, frame: memoryview) -> bool:
        """
        A complete frame (type byte and body), as a view valid only during
        the call.  Return C{True} if it was handled; else it is copied and
        handed to C{stringReceived}.
        """
        return False

    def dataReceived(self, data: bytes) -> None:
        """
        Split the stream into frames (see the module docstring).
        """
        self.bytes_in += len(data)
        if self._parsing:
            # Re-entered through resumeProducing from a frame handler: the
            # outer call carries on where it is.
            if data:
                self._buffer += data
            return
        self._parsing = True
        try:
            self._receive(data)
        finally:
            self._parsing = False

    def _receive(self, data: bytes) -> None:
        buffer = self._buffer
        pos = 0
        if buffer:
            # The buffer holds the start of a frame: copy in only the bytes
            # that complete it, not the whole read.
            if len(buffer) < 4:
                pos = min(4 - len(buffer), len(data))
                buffer += data[:pos]
            if len(buffer) >= 4:
                length = int.from_bytes(buffer[:4], "big")
                missing = 4 + length - len(buffer)
                if length <= self.MAX_LENGTH and missing > 0:
                    take = min(missing, len(data) - pos)
                    buffer += memoryview(data)[pos : pos + take]
                    pos += take
                del buffer[: self._parse(buffer)]
            if self._closing:
                self._buffer = bytearray()
                return
            if buffer or self.paused:
                buffer += memoryview(data)[pos:]
                return
        rest = memoryview(data)[pos:]
        used = self._parse(rest)
        if self._closing:
            self._buffer = bytearray()
        elif used < len(rest):
            self._buffer += rest[used:]

    def _parse(self, source) -> int:
        """
        Deliver every complete frame in C{source}; return how many bytes
        were used.
        """
        view = memoryview(source)
        try:
            offset = 0
            available = len(view)
            while available - offset >= 4 and not self.paused and not self._closing:
                length = int.from_bytes(view[offset : offset + 4], "big")
                if length > self.MAX_LENGTH:
                    self.lengthLimitExceeded(length)
                    return available
                end = offset + 4 + length
                if end > available:
                    break
                if not self.view_received(view[offset + 4 : end]):
                    self.stringReceived(bytes(view[offset + 4 : end]))
                offset = end
            return offset
        finally:
            del view
