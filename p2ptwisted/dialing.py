# -*- test-case-name: tests.test_node -*-
"""
Dialling: the peer book's addresses turned into outbound connections,
within limits, and LAN discovery's news fed into the book.  A mixin of
L{p2ptwisted.node.Node}, kept apart so the node class stays readable; it
uses the node's C{book}, C{connections}, C{clock}, C{log}, C{running},
C{dial_factory}, C{_dials} and C{_endpoint_for}.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Callable, Dict, Optional, Set

from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.protocol import PeerProtocol
from p2ptwisted.peers import BookEntry, PeerBook, parse_dial_target, split_expected_id

if TYPE_CHECKING:
    from p2ptwisted.logbudget import LogBudget

#: Dials in flight at once, so a flood of gossip cannot turn us into a
#: tool for flooding someone else.
MAX_PENDING_DIALS = 8

#: TCP connect timeout for a dial.
CONNECT_TIMEOUT = 10.0

#: Dials the node may start at once, and how many per second after that
#: (a token bucket over all addresses): enough for a node joining a mesh
#: of dozens at once, while gossip of dead addresses, however much, can
#: never make the node dial more than this.
DIAL_BURST = 64
DIAL_RATE = 2.0


class DialBudget:
    """
    The token bucket that bounds the node's total dial rate.
    """

    def __init__(self, clock, burst: int = DIAL_BURST, rate: float = DIAL_RATE):
        self.clock = clock
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def take(self) -> bool:
        """
        Spend one dial, if there is one left.
        """
        now = self.clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def default_endpoint(reactor, entry: BookEntry) -> IStreamClientEndpoint:
    """
    The client endpoint that dials a book entry.

    Gossiped addresses are IP literals and get a plain TCP endpoint;
    operator-given names and endpoint strings are resolved as Twisted does.
    """
    if entry.endpoint is not None:
        return endpoints.clientFromString(reactor, entry.endpoint)
    assert entry.address is not None  # an entry has an endpoint string or an address
    host, port = entry.address.host, entry.address.port
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, host, port, timeout=CONNECT_TIMEOUT)
    cls = endpoints.TCP6ClientEndpoint if ip.version == 6 else endpoints.TCP4ClientEndpoint
    return cls(reactor, host, port, timeout=CONNECT_TIMEOUT)


class DialingMixin:
    # The node's, set in Node.__init__ (or, for methods, defined by the
    # node's other mixins): annotations only, nothing shadows them.
    connections: Dict[str, PeerProtocol]
    book: PeerBook
    clock: IReactorTime
    log: Logger
    running: int
    dial_factory: Optional[IProtocolFactory]
    dial_budget: DialBudget
    log_budget: LogBudget
    _dials: Set[Deferred]
    _endpoint_for: Callable[[BookEntry], IStreamClientEndpoint]
    _check_waiters: Callable[[], None]

    def add_bootstrap(self, text: str) -> BookEntry:
        """
        Add an operator-named peer: C{host:port} or a client endpoint
        string, optionally prefixed with C{ID@} to require that node there.
        """
        expected, target = split_expected_id(text)
        key, address, endpoint = parse_dial_target(target)
        entry = self.book.add_bootstrap(key, address=address, endpoint=endpoint)
        if expected is not None:
            entry.expected_id = expected
        return entry

    def dial_due(self) -> None:
        """
        Dial every address whose time has come, within the pending limit.
        """
        if not self.running:
            return
        now = self.clock.seconds()
        for entry in self.book.due(now, set(self.connections)):
            if len(self._dials) >= MAX_PENDING_DIALS or not self.dial_budget.take():
                break
            self._dial(entry)

    def _dial(self, entry: BookEntry) -> None:
        self.book.dial_started(entry)
        try:
            endpoint = self._endpoint_for(entry)
        except Exception as e:
            self.book.dial_failed(entry, self.clock.seconds())
            self.log.warn("cannot dial {key}: {error}", key=entry.key, error=e)
            return
        self.log.debug("dialling {key}", key=entry.key)
        assert self.dial_factory is not None  # set by startService; we dial while running
        d = endpoint.connect(self.dial_factory)
        self._dials.add(d)

        def connected(proto: PeerProtocol) -> None:
            self._dials.discard(d)
            getattr(proto, "wrappedProtocol", proto).dialed = entry

        def failed(failure) -> None:
            self._dials.discard(d)
            self.dial_failed(entry, failure.getErrorMessage(),
                             quiet=failure.check(CancelledError) and not self.running)

        d.addCallbacks(connected, failed)

    def dial_failed(self, entry: BookEntry, why: str, quiet: bool = False) -> None:
        """
        A dial to C{entry} failed, or ended before the handshake: back off,
        or forget a learned address that never answered, with one line
        within the host's log budget (gossip of dead addresses must not
        flood the log).
        """
        forgotten = self.book.dial_failed(entry, self.clock.seconds(), why)
        self._check_waiters()  # connect() in the manhole waits for this too
        if quiet:
            return
        host = entry.address.host if entry.address is not None else entry.key
        if forgotten:
            format = ("could not reach {key} (attempt {n}): {why}; it never answered,"
                      " forgetting it")
        else:
            format = "could not reach {key} (attempt {n}, next in {delay:.0f}s): {why}"
        self.log_budget.emit(host, self.log.info, format, key=entry.key, n=entry.failures,
                             why=why, delay=entry.next_attempt - self.clock.seconds())

    def discovered(self, host: str, port: int, node_id: str, restarted: bool) -> None:
        """
        LAN discovery heard node C{node_id} announce C{host:port}: dial it
        unless we are connected to it.

        The address goes through the peer book like any other, so its
        backoff holds; only a node that restarted (a new instance id) is
        dialled at once.  Who answers is proven by TLS, not by the datagram.
        """
        if node_id in self.connections or not self.running:
            return
        try:
            address = wire.parse_address(str(wire.PeerAddress(wire.normalize_host(host), port)))
        except wire.ProtocolError:
            return
        now = self.clock.seconds()
        entry = self.book.get(str(address)) or self.book.learn(address, now)
        if entry is None or entry.is_self:
            return
        if not entry.discovered:
            entry.discovered = True
            self.log.info("heard node {id} on the LAN at {address}",
                          id=node_id[:12], address=str(address))
        if restarted and not entry.dialing and entry.node_id == node_id:
            # That very node answered here before and has restarted: dial
            # now.  (A datagram alone never cuts an address's backoff.)
            entry.next_attempt = min(entry.next_attempt, now)
        self.dial_due()
