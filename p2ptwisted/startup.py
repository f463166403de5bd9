# -*- test-case-name: tests.test_twistd_startup -*-
"""
The top of a node's service tree, which turns the start-up failures an
operator can cause into one clear line and exit status 1.

Some failures can only be seen when the node starts: a port already in
use, a state directory held by another node, a share or state directory
that cannot be created or written.  twistd starts services after it has
daemonized, so these reach the operator in one of two ways:

 - with C{-n}, as the log line and the exit status;
 - as a daemon, through twistd's status pipe: the waiting parent prints
   the line and exits 1.  twistd writes to that pipe, and removes the
   pidfile, only for an L{Exception}; a plain L{SystemExit} leaves the
   parent waiting for ever and the pidfile behind.  Hence L{StartupError}.
"""

from __future__ import annotations

from twisted.application.service import MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from p2ptwisted.quiet import quiet_twisted
from p2ptwisted.state import StateError

#: The option to name when a child service cannot listen, by service name.
LISTEN_OPTIONS = {"listener": "--port", "manhole": "--manhole", "web": "--web"}


class StartupError(SystemExit, Exception):
    """
    The node cannot start; the message says why, in one line.

    An L{Exception}, so that twistd's C{postApplication} reports it through
    the status pipe to a daemon's parent and removes the pidfile; and a
    L{SystemExit} with code 1, so that, re-raised by twistd, it ends the
    process with exit status 1 and no traceback.
    """

    def __init__(self, message: str):
        SystemExit.__init__(self, 1)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _why(error: BaseException, service: Service) -> str:
    """
    One line that says what failed, for an error from starting C{service}.
    """
    if isinstance(error, CannotListenError):
        cause = error.socketError
        reason = getattr(cause, "strerror", None) or str(cause)
        name = service.name or ""
        option = LISTEN_OPTIONS.get(name, name or "listen")
        return f"{error.interface or '*'}:{error.port} ({option}): {reason}"
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror}: {error.filename}"
    return str(error)


class NodeService(MultiService):
    """
    The top of a node's service tree: starts its children in order and
    turns their start-up failures into L{StartupError}.
    """

    log = Logger()

    #: The errors an operator can cause and fix; anything else is a bug
    #: and keeps its traceback.
    OPERATOR_ERRORS = (CannotListenError, StateError, OSError)

    def privilegedStartService(self) -> None:
        # twistd binds strports services (the manhole) here, before
        # startService: a port in use fails in this step.
        for service in self:
            try:
                service.privilegedStartService()
            except self.OPERATOR_ERRORS as e:
                self._fail(_why(e, service))

    _loud = None

    def __init__(self, quiet: bool = True) -> None:
        MultiService.__init__(self)
        self.quiet = quiet

    def startService(self) -> None:
        Service.startService(self)
        # twistd has begun logging by now: keep Twisted's port chatter out
        # of its log (see p2ptwisted.quiet).
        if self.quiet:
            self._loud = quiet_twisted()
        for service in self:
            try:
                service.startService()
            except self.OPERATOR_ERRORS as e:
                self._fail(_why(e, service))

    def stopService(self):
        d = MultiService.stopService(self)
        loud, self._loud = self._loud, None
        if loud is not None:
            d.addBoth(lambda result: (loud(), result)[1])
        return d

    def _fail(self, why: str) -> None:
        self.log.critical("cannot start: {why}", why=why)
        # Undo what did start (timers, the state lock) before leaving.
        if self.running:
            self.stopService()
        raise StartupError(why) from None
