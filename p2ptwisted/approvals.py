# -*- test-case-name: tests.test_web_api -*-
"""
Nodes that asked to join a node running with an allow-list, and the ones
its operator approved.

With C{--allow}/C{--trust} a node not on the list is refused at the TLS
handshake.  The refusal is remembered here (id, address, when, how often)
so the operator can see who knocked and approve them (the web page's
"approve" button): the id then joins the allowed ids at once, and is
appended to C{STATE/approved-ids} (the format of a C{--trust} file), which
the node reads at every start, so the approval lasts.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Dict, FrozenSet, List, Optional

import attrs
from twisted.logger import Logger

from p2ptwisted.identity import format_id, parse_id, read_trust_file

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.web.hub import EventHub

APPROVED_FILE = "approved-ids"

#: Refused nodes remembered at most (a stranger making up ids must not
#: grow the list without bound); the oldest go first.
MAX_PENDING = 50


@attrs.define
class PendingNode:
    id: str
    address: str
    time: float
    attempts: int = 1

    def as_json(self) -> Dict[str, object]:
        return {"id": self.id, "id_readable": format_id(self.id), "address": self.address,
                "time": self.time, "attempts": self.attempts}


class Approvals:
    log = Logger()

    def __init__(self, state_dir: str, events: "EventHub"):
        self.path = os.path.join(state_dir, APPROVED_FILE)
        self.events = events
        self.pending: "OrderedDict[str, PendingNode]" = OrderedDict()

    def load(self) -> FrozenSet[str]:
        """
        The ids approved before (none if the file is missing; a file that
        cannot be read is logged, and approves nobody).
        """
        try:
            return frozenset(read_trust_file(self.path))
        except FileNotFoundError:
            return frozenset()
        except (OSError, ValueError) as e:
            self.log.warn("cannot read approved node ids: {error}", error=e)
            return frozenset()

    def refused(self, node_id: str, address: str, now: float) -> Optional[PendingNode]:
        """
        A node not on the allow-list tried to connect.  Returns the pending
        entry when it is new (worth an event), else C{None}.
        """
        known = self.pending.pop(node_id, None)
        if known is not None:
            known.attempts += 1
            known.address, known.time = address, now
            self.pending[node_id] = known
            return None
        self.pending[node_id] = entry = PendingNode(node_id, address, now)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
        self.events.emit("pending", entry.as_json())
        return entry

    def newest_first(self) -> List[PendingNode]:
        return list(reversed(self.pending.values()))

    def approve(self, text: str) -> str:
        """
        Approve the id C{text} (any spelling L{parse_id} reads): forget it
        as pending, and append it to the approved-ids file.  Returns the id.

        @raise ValueError: not an id.
        @raise OSError: the file cannot be written.
        """
        node_id = parse_id(text)
        self.pending.pop(node_id, None)
        if node_id not in self.load():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, f"{node_id} approved from the web page\n".encode("ascii"))
            finally:
                os.close(fd)
        return node_id


def approve(node, text: str) -> str:
    """
    Admit the node with id C{text} to C{node} (which runs with an
    allow-list) from now on, and at every start.  Returns the id.

    @raise ValueError: no allow-list (anyone may connect already), or not
        an id.
    """
    if node.allow is None:
        raise ValueError("this node admits any node (no --allow or --trust): there is nothing"
                         " to approve")
    node_id = node.approvals.approve(text)
    node.allow = node.allow | {node_id}
    Approvals.log.info("approved node {readable}: it may connect from now on",
                       readable=format_id(node_id))
    return node_id
