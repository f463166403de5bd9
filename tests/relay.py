"""
A small fault-injecting TCP relay for the adversarial suite (threats.md,
"How we test it": real processes on loopback "with a small fault-injecting
relay (cut after N bytes, stall, trickle, flip a bit)").

The relay listens on 127.0.0.1 (port 0: the kernel picks one), and for
every connection it accepts it opens one to the target port and forwards
bytes both ways.  Each direction has its own L{Fault}:

    relay = Relay(target_port,
                  to_client=Fault(flip_at=3_000_000),   # target -> dialler
                  to_target=Fault())                    # dialler -> target
    port = await relay.start()        # dial 127.0.0.1:port instead
    ...
    await relay.faulted              # fires once a fault has taken effect
    await relay.stop()               # closes everything (also at clean-up)

"to_client" is what the listening side (the target) sends back to whoever
dialled the relay; "to_target" is the other way.  Offsets count the bytes
of one direction of one connection, from 0.

The faults, any of which may be combined in one L{Fault}:

- C{cut_after=N}: forward the first N bytes, then close both connections
  as the kernel does for a process that died (the bytes already written
  are delivered, then FIN; nothing more passes either way): a peer
  vanishing mid-stream.  (L{Relay.stop} aborts whatever is left.)
- C{stall_after=N}: forward the first N bytes, then forward nothing more
  in that direction, while keeping both connections open and reading (a
  peer that has silently stopped sending; the bytes are discarded).
- C{trickle=(K, delay)}: forward at most K bytes at a time, one chunk per
  C{reactor.callLater(delay)} (C{delay=0}: one chunk per reactor turn).
  The sender is paused (TCP back-pressure) while more than
  L{Relay.MAX_BUFFER} bytes wait, so a fast sender is slowed honestly
  rather than buffered without bound.
- C{flip_at=N} (with C{bit=B}, default 0): invert bit B of the byte at
  offset N, then forward normally (corruption on the wire that TCP's
  checksum missed: TLS must notice it).

Faults apply to the first C{faulty} connections the relay accepts
(default 1); later connections are forwarded cleanly, so a node that
reconnects after a fault gets a working link.  C{None} means every
connection is faulty.

Nothing here sleeps: all waiting is on the reactor.  Every connection the
relay opens is closed by L{Relay.stop}.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import attrs
from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

LOCALHOST = "127.0.0.1"


@attrs.define
class Fault:
    """
    What to do to one direction of a relayed connection; all C{None} (the
    default) forwards every byte unchanged at once.
    """

    cut_after: Optional[int] = None
    stall_after: Optional[int] = None
    trickle: Optional[Tuple[int, float]] = None
    flip_at: Optional[int] = None
    bit: int = 0

    @property
    def clean(self) -> bool:
        return (self.cut_after is None and self.stall_after is None
                and self.trickle is None and self.flip_at is None)


CLEAN = Fault()


class _Pipe:
    """
    One direction of one relayed connection: bytes from C{source} go to
    C{sink}'s transport, through a L{Fault}.
    """

    def __init__(self, relay: "Relay", conn: "_Connection", fault: Fault, name: str):
        self.relay = relay
        self.conn = conn
        self.fault = fault
        self.name = name
        self.offset = 0          # bytes of this direction seen so far
        self.forwarded = 0       # bytes actually written on
        self.writes = 0          # and in how many writes
        self.queue = bytearray()
        self.timer = None
        self.stalled = False
        self.source_paused = False
        self.source: Optional[Protocol] = None
        self.sink: Optional[Protocol] = None

    def received(self, data: bytes) -> None:
        fault = self.fault
        start = self.offset
        self.offset += len(data)
        if self.stalled or self.conn.closed:
            return
        if fault.flip_at is not None and start <= fault.flip_at < self.offset:
            data = bytearray(data)
            data[fault.flip_at - start] ^= 1 << fault.bit
            data = bytes(data)
            self.relay._fired(f"{self.name}: flipped bit {fault.bit} of byte {fault.flip_at}")
        limit = None
        for after in (fault.cut_after, fault.stall_after):
            if after is not None:
                limit = after if limit is None else min(limit, after)
        if limit is not None and self.offset > limit:
            data = data[: max(0, limit - start)]
        self.queue += data
        self._pump()
        if limit is not None and self.offset > limit:
            if fault.cut_after is not None and fault.cut_after == limit:
                self._cut_when_flushed()
            else:
                self.stalled = True
                self.relay._fired(f"{self.name}: stalled after {limit} bytes")

    def _cut_when_flushed(self) -> None:
        # Everything before the cut goes out first (trickled or not); then
        # both ends are aborted.
        if self.queue:
            self.cut_pending = True
            return
        self.relay._fired(f"{self.name}: cut after {self.fault.cut_after} bytes")
        self.conn.cut()

    cut_pending = False

    def _pump(self) -> None:
        if self.sink is None or self.sink.transport is None or self.conn.closed:
            return
        trickle = self.fault.trickle
        if trickle is None:
            if self.queue:
                chunk, self.queue = bytes(self.queue), bytearray()
                self._write(chunk)
        elif self.timer is None and self.queue:
            size, _ = trickle
            chunk = bytes(self.queue[:size])
            del self.queue[:size]
            self._write(chunk)
            if self.queue:
                self.timer = self.relay.reactor.callLater(trickle[1], self._tick)
        self._flow_control()
        if self.cut_pending and not self.queue:
            self.cut_pending = False
            self._cut_when_flushed()

    def _tick(self) -> None:
        self.timer = None
        self._pump()

    def _write(self, chunk: bytes) -> None:
        self.forwarded += len(chunk)
        self.writes += 1
        self.sink.transport.write(chunk)

    def _flow_control(self) -> None:
        transport = getattr(self.source, "transport", None)
        if transport is None or self.conn.closed:
            return
        if len(self.queue) > self.relay.MAX_BUFFER and not self.source_paused:
            self.source_paused = True
            transport.pauseProducing()
        elif len(self.queue) <= self.relay.MAX_BUFFER // 2 and self.source_paused:
            self.source_paused = False
            transport.resumeProducing()

    drain_timer = None

    def stop(self) -> None:
        for timer in (self.timer, self.drain_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.timer = self.drain_timer = None


class _End(Protocol):
    """
    One socket of a relayed connection (the accepted one or the dialled one).
    """

    def __init__(self, conn: "_Connection", inbound: _Pipe):
        self.conn = conn
        self.inbound = inbound   # the pipe this socket's bytes go into
        self.lost = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.inbound.received(data)

    def connectionLost(self, reason) -> None:
        self.lost.callback(None)
        self.conn.end_lost(self)


class _Connection:
    """
    One relayed connection: the client's socket, the socket to the target,
    and a pipe each way.
    """

    def __init__(self, relay: "Relay", faulty: bool):
        self.relay = relay
        self.closed = False
        self.to_target = _Pipe(relay, self, relay.to_target if faulty else CLEAN, "to_target")
        self.to_client = _Pipe(relay, self, relay.to_client if faulty else CLEAN, "to_client")
        self.client: Optional[_End] = None  # set by the accepted socket's protocol
        self.server: Optional[_End] = None

    def start(self) -> None:
        """
        The client is connected: pause it until the target answers, then
        splice the two together.
        """
        self.client.transport.pauseProducing()
        endpoint = TCP4ClientEndpoint(self.relay.reactor, LOCALHOST, self.relay.target_port,
                                      timeout=5)
        server = _End(self, self.to_client)
        d = connectProtocol(endpoint, server)

        def connected(_):
            if self.closed:
                server.transport.abortConnection()
                return
            self.server = server
            self.to_target.source, self.to_target.sink = self.client, server
            self.to_client.source, self.to_client.sink = server, self.client
            self.to_target._pump()
            self.client.transport.resumeProducing()

        def failed(_):
            self.abort()

        d.addCallbacks(connected, failed)

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pipe in (self.to_target, self.to_client):
            pipe.stop()
        for end in (self.client, self.server):
            if end is not None and end.transport is not None and end.transport.connected:
                end.transport.abortConnection()

    def cut(self) -> None:
        """
        Close both sockets as a process that dies does: what was already
        written still goes out, then FIN; nothing more is forwarded either
        way.  (An abort would make the kernels discard bytes in flight,
        so "the first N bytes" would not be exact.)
        """
        if self.closed:
            return
        self.closed = True
        for pipe in (self.to_target, self.to_client):
            pipe.stop()
        for end in (self.client, self.server):
            if end is not None and end.transport is not None and end.transport.connected:
                end.transport.loseConnection()

    def end_lost(self, end: _End) -> None:
        # One side went away: pass on what is queued towards the other if
        # it is clean, then close it too (a graceful close, as TCP would).
        other = self.server if end is self.client else self.client
        if self.closed:
            return
        if other is None or other.transport is None:
            self.abort()
            return
        pipe = self.to_client if end is self.server else self.to_target
        if pipe.queue and pipe.fault.trickle is not None and not pipe.stalled:
            # Let the trickle finish (its own timer goes on), then close.
            def drain():
                pipe.drain_timer = None
                if self.closed:
                    return
                if pipe.queue:
                    pipe._pump()
                    pipe.drain_timer = self.relay.reactor.callLater(
                        max(pipe.fault.trickle[1], 0.001), drain)
                else:
                    self.closed = True
                    other.transport.loseConnection()
            drain()
            return
        self.closed = True
        for p in (self.to_target, self.to_client):
            p.stop()
        other.transport.loseConnection()


class _RelayFactory(Factory):
    noisy = False

    def __init__(self, relay: "Relay"):
        self.relay = relay

    def buildProtocol(self, addr):
        relay = self.relay
        faulty = relay.faulty is None or len(relay.connections) < relay.faulty
        conn = _Connection(relay, faulty)
        relay.connections.append(conn)
        return _AcceptedEnd(conn)


class _AcceptedEnd(_End):
    def __init__(self, conn: _Connection):
        _End.__init__(self, conn, conn.to_target)
        conn.client = self

    def connectionMade(self) -> None:
        self.conn.start()


class Relay:
    """
    A TCP relay from 127.0.0.1:C{port} to 127.0.0.1:C{target_port}, with
    faults per direction (see the module docstring).

    @ivar connections: every relayed connection, in the order accepted.
    @ivar events: a description of each fault as it took effect.
    @ivar faulted: fires with the first event.
    """

    #: Bytes queued in one direction before the sender is paused.
    MAX_BUFFER = 1 << 20

    def __init__(self, target_port: int, to_client: Fault = CLEAN, to_target: Fault = CLEAN,
                 faulty: Optional[int] = 1, reactor=None):
        self.target_port = target_port
        self.to_client = to_client
        self.to_target = to_target
        self.faulty = faulty
        self.reactor = reactor or default_reactor
        self.connections: List[_Connection] = []
        self.events: List[str] = []
        self.faulted: Deferred = Deferred()
        self.port = None
        self._listening = None

    async def start(self, testcase=None) -> int:
        """
        Listen on 127.0.0.1, port 0; return the port.  With C{testcase},
        the relay is stopped at its clean-up.
        """
        endpoint = TCP4ServerEndpoint(self.reactor, 0, interface=LOCALHOST)
        self._listening = await endpoint.listen(_RelayFactory(self))
        self.port = self._listening.getHost().port
        if testcase is not None:
            testcase.addCleanup(self.stop)
        return self.port

    def _fired(self, event: str) -> None:
        self.events.append(event)
        if not self.faulted.called:
            self.faulted.callback(event)

    def stop(self) -> Deferred:
        """
        Stop listening and abort every relayed connection; fires once all
        of their sockets are closed.
        """
        waits = []
        if self._listening is not None:
            listening, self._listening = self._listening, None
            waits.append(listening.stopListening() or succeed(None))
        for conn in self.connections:
            conn.abort()
            for end in (conn.client, conn.server):
                if end is not None and end.transport is not None:
                    waits.append(end.lost)
        return DeferredList(waits)
