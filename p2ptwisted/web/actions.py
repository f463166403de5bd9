# -*- test-case-name: tests.test_web_api -*-
"""
What the API's POST endpoints do, through the functions the manhole
already offers (L{Control}: rescan, connect, fetch; the trash can's
restore; L{approvals.approve}) and the folder's pause switch.

Each takes the request's JSON object and returns a JSON-ready value or a
Deferred of one; a mistake of the caller's is an L{ApiError}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from p2ptwisted.approvals import approve
from p2ptwisted.control import ConnectFailed
from p2ptwisted.fsops import ApplyError

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.web.views import Views


class ApiError(Exception):
    """
    A request the API refuses: an HTTP status and one line.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def text_field(body: Dict[str, Any], name: str, required: bool = True) -> Any:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"give {name!r} as a non-empty string")
    return value


class Actions:
    log = Logger()

    def __init__(self, views: "Views"):
        self.views = views
        self.node = views.node
        self.control = views.control

    def rescan(self, body: Dict[str, Any]) -> Deferred:
        return self.control.rescan().addCallback(lambda n: {"changes": n})

    def _set_paused(self, paused: bool) -> Dict[str, Any]:
        sync = self.views.folder.sync
        if sync.paused != paused:
            sync.pause() if paused else sync.resume()
            self.log.info("sync {what} from the web API", what="paused" if paused else "resumed")
            self.node.events.emit("paused", {"paused": paused})
        return {"paused": paused}

    def pause(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return self._set_paused(True)

    def resume(self, body: Dict[str, Any]) -> Dict[str, Any]:
        return self._set_paused(False)

    def connect(self, body: Dict[str, Any]) -> Deferred:
        address = text_field(body, "address")
        try:
            d = self.control.connect(address)
        except ValueError as e:
            raise ApiError(400, f"{address!r}: {e}") from None

        def failed(failure):
            failure.trap(ConnectFailed)
            raise ApiError(502, str(failure.value))

        return d.addCallbacks(
            lambda info: self.views.peer(self.node.connections[info.id]), failed)

    def approve(self, body: Dict[str, Any]) -> Dict[str, Any]:
        try:
            return {"approved": approve(self.node, text_field(body, "id"))}
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    def restore(self, body: Dict[str, Any]) -> Deferred:
        trashed = text_field(body, "trashed", required=False) or text_field(body, "path")
        folder = self.views.folder
        d = folder.sync.run_blocking(folder.disk.restore, trashed)

        def failed(failure):
            why = failure.value
            if isinstance(why, FileNotFoundError) or getattr(why, "code", "") == "not_found":
                raise ApiError(404, f"no version {trashed!r} in the trash can")
            if isinstance(why, (ApplyError, OSError)):
                raise ApiError(400, f"cannot restore {trashed!r}: {why}")
            return failure

        def restored(path):
            self.log.info("restored {path} from the trash can", path=path)
            return self.control.rescan().addCallback(lambda _: {"path": path})

        return d.addCallbacks(restored, failed)

    def fetch(self, body: Dict[str, Any]) -> Dict[str, Any]:
        path = text_field(body, "path")
        peer = text_field(body, "peer", required=False)
        try:
            done = self.control.fetch(path, peer)
        except LookupError as e:
            raise ApiError(404, str(e)) from None
        # The outcome shows in /api/transfers and the events; failures
        # are logged by the fetcher.
        done.addErrback(lambda _: None)
        wants = [w for w in self.views.folder.fetcher.transfers()
                 if w.keep == path and w.finished_at is None]
        found = self.views.monitor.id_of(wants[-1]) if wants else None
        return {"transfer": found}
