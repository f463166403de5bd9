"""
The factories of a node's connections: one for those it accepts and, the
same protocol marked outbound from its first moment, one for those it
dials (inbound limits must not count those; see
L{p2ptwisted.connections}).
"""

from __future__ import annotations

from twisted.internet.protocol import Factory

from p2ptwisted.protocol import PeerProtocol


class PeerFactory(Factory):
    """
    The one factory a node uses, for the connections it accepts and the ones
    it dials alike.
    """

    protocol = PeerProtocol
    noisy = False

    def __init__(self, node):
        self.node = node

    def buildProtocol(self, addr) -> PeerProtocol:
        proto = self.protocol(self.node)
        proto.factory = self
        return proto


class OutboundFactory(PeerFactory):
    """
    The node's peer factory for the connections it dials: the same
    protocol, marked as outbound from the start (limits on inbound
    connections must not count it).
    """

    def buildProtocol(self, addr) -> PeerProtocol:
        proto = PeerFactory.buildProtocol(self, addr)
        proto.outbound = True
        return proto
