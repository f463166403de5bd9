"""
Control frames are never stuck behind a large file: real TCP, two nodes in
one reactor, a PING sent while a big file flows the other way is answered
long before the file ends.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from p2ptwisted import wire
from p2ptwisted.fetcher import Fetcher
from p2ptwisted.protocol import PeerProtocol

from .helpers import RealNodes

SIZE = 48 * 1024 * 1024


class InterleaveTests(RealNodes, TestCase):
    timeout = 60

    async def test_pong_overtakes_the_file(self):
        os.makedirs(os.path.join(self.base, "A"))
        with open(os.path.join(self.base, "A", "big.bin"), "wb") as f:
            for _ in range(SIZE >> 20):
                f.write(os.urandom(1 << 20))
        a = self.start("A")[1]
        b = self.start("B", [a.address])[1]

        pinged = Deferred()
        ponged = Deferred()
        original_data = Fetcher.data_received
        original_pong = PeerProtocol._handlers[wire.Pong]

        def data_received(fetcher, proto, data):
            original_data(fetcher, proto, data)
            if fetcher is b.folder.fetcher and not pinged.called:
                if fetcher.bytes_received >= 1024 * 1024:
                    proto.send(wire.Ping(7))
                    pinged.callback(fetcher)

        def pong_received(proto, message):
            original_pong(proto, message)
            if proto.node is b and message.nonce == 7 and not ponged.called:
                ponged.callback(pinged.result.bytes_received)

        self.patch(Fetcher, "data_received", data_received)
        self.patch(PeerProtocol, "_handlers", {**PeerProtocol._handlers, wire.Pong: pong_received})
        offset_at_pong = await ponged.addTimeout(30, reactor)
        # Answered while the file was still arriving, within a few MiB.
        self.assertLess(offset_at_pong, SIZE)
        self.assertLess(offset_at_pong - 1024 * 1024, 8 * 1024 * 1024)
