# -*- test-case-name: tests.test_protocol -*-
"""
A connection's timers: the handshake deadline, then pings for a quiet
peer and a drop for a silent one.  A mixin of
L{p2ptwisted.protocol.PeerProtocol}, kept apart so the protocol class stays
readable; it uses the protocol's C{clock}, C{node.limits}, C{tls},
C{drop}, C{send}, C{held_for_output}, C{_timer}, C{_last_frame}, C{_ping_nonce} and C{_probe}.
"""

from __future__ import annotations

import secrets

from p2ptwisted import wire


class LivenessMixin:
    def _set_timer(self, delay: float, callback) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _handshake_timeout(self) -> None:
        self._timer = None
        self.drop(f"no {'TLS handshake and ' if self.tls else ''}HELLO within"
                  f" {self.node.limits.handshake_timeout:g} seconds")

    def _idle_check(self) -> None:
        """
        Ping a peer that has been quiet for PING_INTERVAL (once per quiet
        spell) and drop one that has been quiet for IDLE_TIMEOUT.
        """
        self._timer = None
        limits = self.node.limits
        quiet = self.clock.seconds() - self._last_frame
        if quiet >= limits.idle_timeout:
            if self.held_for_output:
                # Its silence is ours: we stopped reading (p2ptwisted.backlog).
                self.drop(f"it has read nothing of what we sent for {quiet:.0f} seconds")
            else:
                self.drop(f"silent for {quiet:.0f} seconds")
            return
        if quiet >= limits.ping_interval:
            if self._ping_nonce is None:
                self._ping_nonce = secrets.randbits(64)
                self.send(wire.Ping(self._ping_nonce))
            next_check = limits.idle_timeout - quiet
        else:
            next_check = limits.ping_interval - quiet
        self._set_timer(next_check, self._idle_check)

    def probe(self, answered) -> None:
        """
        Ask the peer whether this connection still works: C{answered(True)}
        is called when its PONG arrives, C{answered(False)} if the
        connection is lost first.
        """
        nonce = secrets.randbits(64)
        self._probe = (nonce, answered)
        self.send(wire.Ping(nonce))
