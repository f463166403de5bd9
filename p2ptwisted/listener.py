# -*- test-case-name: tests.test_tap -*-
"""
The service that accepts peers' connections.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger


class ListenerService(Service):
    """
    Listen on a server endpoint for a node, and tell the node the port.

    Unlike a plain C{StreamServerEndpointService}, a failure to listen that
    happens at once (a port already in use) is raised from C{startService},
    so twistd stops with the error instead of running a node nobody can
    reach; and the bound port is reported to the node, so HELLO announces
    the real port even for C{--port 0}.
    """

    log = Logger()

    def __init__(self, endpoint, node, description: str):
        self.endpoint = endpoint
        self.node = node
        self.description = description
        self.port = None
        self._waiting: Deferred | None = None

    def startService(self) -> None:
        Service.startService(self)
        early = []

        def failed(failure):
            if starting:
                early.append(failure)
            else:
                self.log.failure("cannot listen on {where}", failure,
                                 where=self.description)

        starting = True
        self._waiting = self.endpoint.listen(self.node.listen_factory)
        self._waiting.addCallbacks(self._listening, failed)
        starting = False
        if early:
            # Failed at once (a port already in use): stop start-up.
            Service.stopService(self)
            early[0].raiseException()

    def _listening(self, port) -> None:
        self.port = port
        host = port.getHost()
        self.node.listening_on(host.port)
        self.log.info("listening for peers on {host}:{port}",
                      host=host.host or "*", port=host.port)

    def stopService(self):
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        if self._waiting is not None:
            self._waiting.cancel()
