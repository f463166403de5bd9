# -*- test-case-name: tests.test_protocol -*-
"""
The peer protocol: framing, the handshake, and dispatch by message type.

The same protocol runs on both ends of every connection, whoever dialled:
after HELLO the two ends are equals.  It knows the conversation, not the
policy -- what to do with a peer's HELLO or PEERS is the node's decision
(see L{p2ptwisted.node.Node}), and the folder's frames (index, GET, DATA,
END, CANCEL) go to the node's folder (L{p2ptwisted.folder.Folder}).  It
imports neither: the node is handed in, and used only through the
methods named here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from p2ptwisted import wire, wire_index
from p2ptwisted.backlog import BacklogMixin
from p2ptwisted.filechannel import FileChannel
from p2ptwisted.framing import FrameReceiver
from p2ptwisted.liveness import LivenessMixin
from p2ptwisted.tls import describe_tls_error, peer_id

if TYPE_CHECKING:  # for annotations only: the node is handed in
    from p2ptwisted.peers import BookEntry

#: A handler of one type of frame: PeerProtocol's method, or one that hands
#: the frame to the folder (see _to_folder).
Handler = Callable[["PeerProtocol", Any], None]

#: How long a graceful close may take before we abort the connection.
CLOSE_TIMEOUT = 10.0


def _to_folder(part: str, name: str) -> Handler:
    """
    The handler that gives a frame to the folder's method C{name} (of its
    C{part}, if one is named), on the node's own connections only.
    """
    def handler(self: PeerProtocol, message: Any) -> None:
        if self.scheduler is None:
            return  # not (or no longer) this node's connection to that peer
        folder = self.node.folder
        getattr(getattr(folder, part) if part else folder, name)(self, message)

    return handler


@implementer(IHandshakeListener)
class PeerProtocol(FileChannel, BacklogMixin, LivenessMixin, FrameReceiver):
    """
    One connection to one peer, inbound or outbound.

    @ivar dialed: the book entry we dialled to make this connection, or
        C{None} for an inbound connection.
    @ivar hello: the peer's HELLO, once received.
    @ivar tls: whether this connection runs over TLS.
    @ivar certificate_id: over TLS, the node id the peer's certificate
        proves, once the TLS handshake is done.
    """

    MAX_LENGTH = wire.MAX_FRAME
    log = Logger()

    node: Any  # the Node, handed in (never imported here: it imports us)
    # A TCP transport, or TLS over one (whose .transport is the TCP one).
    transport: Any
    dialed: Optional[BookEntry] = None
    #: Set by the factory of the connections we dial (see _outbound in
    #: p2ptwisted.connections).
    outbound = False
    hello: Optional[wire.Hello] = None
    version: Optional[int] = None
    connected_at: float = 0.0
    bytes_in = 0
    bytes_out = 0
    peers_received_at: Optional[float] = None
    _closing = False
    _lost = False
    _timer = None
    _last_frame = 0.0
    _ping_nonce: Optional[int] = None
    _probe = None  # (nonce, waiters) of a PING whose answer someone waits for
    tls = False
    certificate_id: Optional[str] = None
    #: Why we closed the connection, if we did.
    closed_because: Optional[str] = None
    #: GETs the peer sent on this connection (the doctor's hint at --no-sync).
    gets_received = 0

    def __init__(self, node: Any) -> None:
        self.node = node
        self.clock = node.clock
        self._lost_waiters: list = []
        FrameReceiver.__init__(self)
        FileChannel.__init__(self)

    def when_lost(self) -> Deferred:
        """
        A Deferred that fires once this connection has closed.
        """
        d: Deferred[None] = Deferred()
        if self._lost:
            d.callback(None)
        else:
            self._lost_waiters.append(d)
        return d

    # -- what other code asks of a connection ------------------------------

    @property
    def remote_id(self) -> Optional[str]:
        return self.hello.node_id if self.hello else None

    def describe(self) -> str:
        """
        How this connection is named in log lines: the peer's name and short
        id once known, and its address.
        """
        peer = self.transport.getPeer() if self.transport else None
        where = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        if self.hello is None:
            return where
        name = wire.safe_text(self.hello.name, 32)
        return f"{name or 'unnamed'} ({self.hello.node_id[:12]}) at {where}"

    def send(self, message: wire.Message) -> None:
        self.send_frame(wire.encode_frame(message))

    def send_frame(self, frame: bytes) -> None:
        """
        Send one encoded frame (type byte and body): the index frames are
        encoded by L{p2ptwisted.wire_index}.
        """
        self.bytes_out += 4 + len(frame)
        self.sendString(frame)
        self.output_written()

    def drop(self, reason: str) -> None:
        """
        Abort the connection because the peer broke the protocol or a limit.

        Abort rather than a graceful close: a graceful close never finishes
        against a peer that has stopped reading.
        """
        if self._closing:
            return
        self._closing = True
        self.closed_because = f"dropped: {reason}"
        self.log_limited(self.log.warn, "dropping {peer}: {reason}", reason=reason)
        self.transport.abortConnection()

    def log_limited(self, emit, format: str, **fields) -> None:
        """
        Log a line about this peer within its host's log budget (see
        L{p2ptwisted.logbudget}); lines over budget are counted and the
        count is added to the next line that gets through.
        """
        self.node.log_budget.emit(getattr(self.transport.getPeer(), "host", None), emit,
                                  format, peer=self.describe(), **fields)

    def close(self, code: str, message: str) -> None:
        """
        Tell the peer why, then close gracefully (aborting if that stalls).
        """
        if self._closing:
            return
        self._closing = True
        self.closed_because = f"closed: {message}"
        self.log.info("closing {peer}: {why}", peer=self.describe(), why=message)
        text = wire.safe_text(message, wire.MAX_ERROR_MESSAGE - 3)
        self.send(wire.Error(code=code, message=text))
        self.close_transport()

    def close_transport(self) -> None:
        """
        Close gracefully, aborting if that has not finished in time.

        The scheduler is unregistered first: a transport with a registered
        producer waits for it before it closes.
        """
        self._closing = True
        if self.scheduler is not None:
            self.scheduler.stopProducing()
            self.transport.unregisterProducer()
            self.scheduler = None
        self.transport.loseConnection()
        self._set_timer(CLOSE_TIMEOUT, self.transport.abortConnection)

    # -- Twisted's side ----------------------------------------------------

    def connectionMade(self) -> None:
        self.tls = isinstance(self.transport, TLSMemoryBIOProtocol)
        self.connected_at = self._last_frame = self.clock.seconds()
        self._set_timer(self.node.limits.handshake_timeout, self._handshake_timeout)
        self.node.connection_made(self)
        if not self._closing and not self.tls:
            self.send(self.node.make_hello())

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: learn the id the peer's certificate
        proves, let the node refuse it, and only then say HELLO -- a node
        that refuses a stranger tells it nothing.
        """
        if self._closing:
            return
        try:
            self.certificate_id = peer_id(self.transport)
        except Exception as e:
            self.drop(f"unreadable TLS certificate ({wire.safe_text(str(e), 80)})")
            return
        if self.certificate_id is None:
            self.drop("no TLS certificate")
            return
        refusal = self.node.certificate_received(self, self.certificate_id)
        if refusal is not None:
            self.drop(refusal)
            return
        self.send(self.node.make_hello())

    def view_received(self, frame: memoryview) -> bool:
        """
        DATA payloads go to the fetcher as views into the received bytes,
        never copied in Python (see L{FrameReceiver}).
        """
        if len(frame) > 4 and frame[0] == wire.DATA and self.scheduler is not None:
            self._last_frame = self.clock.seconds()
            self._ping_nonce = None
            assert self.node.folder is not None  # the node started: it registered us
            self.node.folder.fetcher.data_received(self, wire.decode_data(frame))
            return True
        return False

    def lengthLimitExceeded(self, length: int) -> None:
        if self.hello is None and not self.tls and (length >> 16) in _TLS_RECORD_STARTS:
            self.drop("the peer speaks TLS and this node runs with --no-tls")
            return
        self.drop(f"frame of {length} bytes exceeds the {wire.MAX_FRAME}-byte limit")

    def stringReceived(self, frame: bytes) -> None:
        if self._closing:
            return
        self._last_frame = self.clock.seconds()
        self._ping_nonce = None
        try:
            message = wire_index.decode_any_frame(frame)
        except wire.ProtocolError as e:
            self.drop(str(e))
            return
        if self.hello is None:
            if not isinstance(message, wire.Hello):
                self.drop(f"{wire_index.type_name(frame[0])} before HELLO")
                return
            self._hello_received(message)
            return
        self._handlers[type(message)](self, message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.tls and self.hello is None and not self._closing and reason.check(SSL.Error):
            # Before HELLO, a TLS failure is the peer's: no certificate,
            # plaintext, a broken handshake.
            self.log_limited(self.log.warn, "TLS with {peer} failed: {why}",
                             why=describe_tls_error(reason))
        self._lost = True
        self._cancel_timer()
        self._probe_answered(False)
        if self.scheduler is not None:
            self.scheduler.stopProducing()
        self.node.connection_lost(self, reason)
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)

    # -- the conversation ---------------------------------------------------

    def _hello_received(self, hello: wire.Hello) -> None:
        if self.tls and hello.node_id != self.certificate_id:
            self.drop(f"HELLO claims id {hello.node_id[:12]} but the TLS certificate"
                      f" proves {(self.certificate_id or 'nothing')[:12]}")
            return
        self.hello = hello
        self.version = wire.negotiate_version(hello.versions)
        if self.version is None:
            hint = (": it runs a p2ptwisted from before versioned sync; upgrade it"
                    if max(hello.versions) < min(wire.SUPPORTED_VERSIONS) else "")
            self.close(
                "version",
                f"no common protocol version (we speak {list(wire.SUPPORTED_VERSIONS)},"
                f" peer speaks {list(hello.versions)}){hint}",
            )
            return
        self._set_timer(self.node.limits.ping_interval, self._idle_check)
        self.node.handshake_completed(self)

    def _second_hello(self, message: wire.Hello) -> None:
        self.drop("second HELLO")

    def _error_received(self, message: wire.Error) -> None:
        if message.transfer is not None:
            if self.scheduler is not None:
                assert self.node.folder is not None  # the node started: it registered us
                self.node.folder.fetcher.error_received(self, message)
            return
        self.log.info(
            "{peer} reports error {code}: {text}",
            peer=self.describe(),
            code=message.code,
            text=wire.safe_text(message.message, 200),
        )

    def _peers_received(self, message: wire.Peers) -> None:
        self.node.peers_received(self, message)

    def _ping_received(self, message: wire.Ping) -> None:
        self.send(wire.Pong(message.nonce))

    def _pong_received(self, message: wire.Pong) -> None:
        # Any frame counts as liveness (see stringReceived); the nonce
        # matches an answer to a probe (see probe).
        if self._probe is not None and message.nonce == self._probe[0]:
            self._probe_answered(True)

    _handlers: Dict[type, Handler] = {
        wire.Hello: _second_hello,
        wire.Error: _error_received,
        wire.Peers: _peers_received,
        wire_index.IndexHello: _to_folder("", "hello_received"),
        wire_index.Index: _to_folder("exchange", "index_received"),
        wire_index.Have: _to_folder("fetcher", "have_received"),
        wire.Get: _to_folder("server", "get_received"),
        wire.Data: _to_folder("fetcher", "data_received"),
        wire.End: _to_folder("fetcher", "end_received"),
        wire.Cancel: _to_folder("server", "cancel_received"),
        wire.Ping: _ping_received,
        wire.Pong: _pong_received,
    }


#: The first two bytes of a TLS record (handshake or alert, version 3.x),
#: read as the top of a length prefix: a TLS peer talking to a plaintext one.
_TLS_RECORD_STARTS = frozenset({0x1603, 0x1503})
