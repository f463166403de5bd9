# -*- test-case-name: tests.test_protocol -*-
"""
A connection's timers: the handshake deadline, then pings for a quiet
peer and a drop for a silent one.  A mixin of
L{p2ptwisted.protocol.PeerProtocol}, kept apart so the protocol class stays
readable; it uses the protocol's C{clock}, C{node.limits}, C{tls},
C{drop}, C{send}, C{held_for_output}, C{_timer}, C{_last_frame},
C{_ping_nonce} and C{_probe}.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from p2ptwisted import wire


#: A probe's waiter: C{[answered, its timeout's call or None]}.
ProbeWaiter = List[Any]


class LivenessMixin:
    # The protocol's (see the module docstring): annotations only, nothing
    # here shadows them.
    clock: IReactorTime
    node: Any  # the Node (never imported here: the node imports us)
    tls: bool
    held_for_output: bool
    drop: Callable[[str], None]
    send: Callable[[wire.Message], None]
    _timer: Optional[IDelayedCall]
    _last_frame: float
    _ping_nonce: Optional[int]
    #: (nonce, waiters) of a PING whose answer someone waits for.
    _probe: Optional[Tuple[int, List[ProbeWaiter]]]

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
                self.drop(f"it does not read what we send: our output to it has been backed"
                          f" up for {quiet:.0f} seconds")
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

    @property
    def probing(self) -> bool:
        return self._probe is not None

    def quiet_for(self) -> float:
        """
        Seconds since the peer's last frame.
        """
        return self.clock.seconds() - self._last_frame

    def probe(self, answered, timeout: Optional[float] = None) -> None:
        """
        Ask the peer whether this connection still works: C{answered(True)}
        is called when its PONG arrives, C{answered(False)} if the
        connection is lost first or C{timeout} seconds pass.  Probes made
        while one is in flight share its PING.
        """
        if self._probe is None:
            self._probe = (secrets.randbits(64), [])
            self.send(wire.Ping(self._probe[0]))
        waiter = [answered, None]
        if timeout is not None:
            waiter[1] = self.clock.callLater(timeout, self._probe_expired, waiter)
        self._probe[1].append(waiter)

    def check_alive(self, timeout: float, why: str) -> None:
        """
        Probe the connection and drop it, saying C{why}, if it does not
        answer within C{timeout} seconds.
        """
        def answered(alive: bool) -> None:
            if not alive:
                self.drop(f"no answer to a PING within {timeout:g} seconds {why}")

        self.probe(answered, timeout)

    def _probe_expired(self, waiter: list) -> None:
        waiters = self._probe[1] if self._probe is not None else []
        if waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                self._probe = None  # a late PONG is only a frame
            waiter[0](False)

    def _probe_answered(self, alive: bool) -> None:
        """
        The probe's PONG arrived (or the connection is gone): tell everyone
        who waits for it.
        """
        if self._probe is None:
            return
        _, waiters = self._probe
        self._probe = None
        for answered, timer in waiters:
            if timer is not None and timer.active():
                timer.cancel()
            answered(alive)
