"""
Shared fixtures: nodes on a fake clock, joined by in-memory connections.
"""

import os

from twisted.internet.address import IPv4Address
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim

from p2ptwisted.node import Node
from p2ptwisted.peers import PeerBook

_next_port = [40000]


def make_node(testcase, name, reactor=None, port=None, **kwargs):
    """
    A started L{Node} on a L{MemoryReactorClock}, stopped at cleanup.

    @param port: the listen port it announces in HELLO.
    """
    reactor = reactor if reactor is not None else MemoryReactorClock()
    base = testcase.mktemp()
    kwargs.setdefault("book", PeerBook(jitter=lambda: 0.0))
    kwargs.setdefault("run_blocking", maybeDeferred)
    kwargs.setdefault("watch", False)
    # In memory, plaintext by default: the TLS tests turn it on.
    kwargs.setdefault("tls", False)
    node = Node(
        reactor,
        state_dir=os.path.join(base, "state"),
        share_dir=os.path.join(base, "share"),
        display_name=name,
        **kwargs,
    )
    node.startService()
    testcase.addCleanup(stop_in_memory, node)
    if port is None:
        _next_port[0] += 1
        port = _next_port[0]
    node.listening_on(port)
    return node


def stop_in_memory(node):
    """
    Stop C{node} and deliver the end of its in-memory connections.

    Nothing pumps them once a test is over, so without this the stop would
    wait forever and the node would keep its state directory (lock file,
    index) open for the rest of the run: a SynchronousTestCase does not
    wait for the Deferred, and a whole C{trial tests} in one process runs
    out of file descriptors.
    """
    if not node.running:
        return None
    stopped = node.stopService()
    for proto in list(node.connections.values()) + list(node.pending):
        proto.connectionLost(Failure(ConnectionDone("the test is over")))
    return stopped


def link(dialer, listener, entry=None, dialer_host="127.0.0.1", listener_host="127.0.0.1"):
    """
    Connect C{dialer} to C{listener} in memory, as if C{dialer} had dialled
    the book entry C{entry}.  Returns C{(dialer_proto, listener_proto, pump)};
    the HELLOs have not been exchanged until the pump is flushed.
    """
    port = listener.listen_ports[0]
    client = dialer.factory.buildProtocol(None)
    server = listener.factory.buildProtocol(None)
    if entry is None:
        entry = dialer.book.add_bootstrap(f"{listener_host}:{port}")
    dialer.book.dial_started(entry)
    client.dialed = entry
    _next_port[0] += 1
    source = _next_port[0]
    client_transport = iosim.FakeTransport(
        client, isServer=False,
        hostAddress=IPv4Address("TCP", dialer_host, source),
        peerAddress=IPv4Address("TCP", listener_host, port),
    )
    server_transport = iosim.FakeTransport(
        server, isServer=True,
        hostAddress=IPv4Address("TCP", listener_host, port),
        peerAddress=IPv4Address("TCP", dialer_host, source),
    )
    pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
    return client, server, pump


def flush(*pumps):
    """
    Pump every connection until none has anything left to move.
    """
    while any([p.pump() for p in pumps]):
        pass


def capture_logs(testcase):
    """
    Collect log events for the rest of the test; returns a function that
    gives the formatted messages so far.
    """
    observer = EventLoggingObserver.createWithCleanup(testcase, globalLogPublisher)
    return lambda: [formatEvent(e) for e in observer]


class RealNodes:
    """
    A TestCase mixin: nodes built the way twistd builds them
    (C{tap.Options} and C{makeService}) on the real reactor, listening on
    127.0.0.1, all stopped at the end of the test.
    """

    def setUp(self):
        self.base = self.mktemp()
        self.services = []

    async def tearDown(self):
        await gatherResults([s.stopService() for s in self.services if s.running])

    def start(self, name, peers=(), port=0, web=False, extra=()):
        """
        @param web: serve the web API on a free loopback port (else
            C{--no-web}: nodes in one process would queue for port 8384).
        """
        from twisted.internet import reactor

        from p2ptwisted.tap import Options, makeService

        options = Options()
        args = ["--port", f"tcp:{port}:interface=127.0.0.1", "--no-discover",
                "--share", os.path.join(self.base, name), "--name", name,
                *(["--web", "tcp:0:interface=127.0.0.1"] if web else ["--no-web"]), *extra]
        for peer in peers:
            args += ["--peer", peer]
        options.parseOptions(args)
        service = makeService(options, reactor=reactor, quiet=False)
        service.startService()
        self.services.append(service)
        node = service.getServiceNamed("node")
        node.address = f"127.0.0.1:{node.listen_ports[0]}"
        return service, node


def first_scan(node, path):
    """
    A Deferred that fires once the node's index holds a live entry at
    C{path} (as soon as a scan records it).
    """
    return indexed(node, path)


def indexed(node, path, content_hash=None):
    """
    A Deferred firing once C{node}'s index has a live entry at C{path}
    (with C{content_hash}, if given): checked after every round of
    planning, which every scan and every applied change ends with.
    """
    store = node.folder.store

    def holds():
        entry = store.get(path)
        return entry is not None and entry.live and (
            content_hash is None or entry.hash == content_hash)

    return node.folder.when(holds)


def first_pause(testcase):
    """
    A Deferred that fires with the first upload scheduler to be paused by
    its transport (for the rest of C{testcase}).
    """
    from twisted.internet.defer import Deferred

    from p2ptwisted.uploads import UploadScheduler

    paused = Deferred()
    pause = UploadScheduler.pauseProducing

    def pause_and_tell(scheduler):
        pause(scheduler)
        if not paused.called:
            paused.callback(scheduler)

    testcase.patch(UploadScheduler, "pauseProducing", pause_and_tell)
    return paused


async def until_settled(scheduler, transport, quiet=50, turns=3000):
    """
    Let the reactor run until a paused scheduler has made no progress for
    C{quiet} turns (the kernel's buffers are full), at most C{turns} turns.

    @return: (the number of quiet turns reached, the most output the
        socket C{transport} ever held buffered).
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    buffered_max = 0
    last, still = -1, 0
    for _ in range(turns):
        await deferLater(reactor, 0, lambda: None)
        buffered = len(transport.dataBuffer) + transport._tempDataLen
        buffered_max = max(buffered_max, buffered)
        if scheduler.bytes_sent == last and scheduler.paused:
            still += 1
            if still >= quiet:
                break
        else:
            last, still = scheduler.bytes_sent, 0
    return still, buffered_max


def answer_dial(reactor, index, listener, dialer_host="127.0.0.1"):
    """
    Complete the in-memory dial number C{index} of C{reactor} (the node's
    own dial, through its endpoint) at C{listener}, as if the TCP
    connection succeeded.  Returns C{(dialer_proto, listener_proto, pump)}
    before any byte has moved.
    """
    host, port, factory = reactor.tcpClients[index][:3]
    _next_port[0] += 1
    source = _next_port[0]
    client = factory.buildProtocol(IPv4Address("TCP", host, port))
    server = listener.factory.buildProtocol(IPv4Address("TCP", dialer_host, source))
    client_transport = iosim.FakeTransport(
        client, isServer=False,
        hostAddress=IPv4Address("TCP", dialer_host, source),
        peerAddress=IPv4Address("TCP", host, port),
    )
    server_transport = iosim.FakeTransport(
        server, isServer=True,
        hostAddress=IPv4Address("TCP", host, port),
        peerAddress=IPv4Address("TCP", dialer_host, source),
    )
    pump = iosim.connect(server, server_transport, client, client_transport, greet=False)
    return getattr(client, "_wrappedProtocol", client), server, pump
