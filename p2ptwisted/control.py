# -*- test-case-name: tests.test_control -*-
"""
What an operator can do with a running node: the functions behind the
manhole's prompt.

Everything returns a plain value or a Deferred (the manhole has no
top-level C{await}; it prints a Deferred's result when it fires).  Peers
are named by node id, a unique prefix of it, or their display name.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Callable, List, Optional

import attrs
from twisted.internet.defer import Deferred, succeed

from twisted.internet import endpoints

from p2ptwisted import wire
from p2ptwisted.identity import format_id
from p2ptwisted.files import Transfer
from p2ptwisted.peers import parse_dial_target

if TYPE_CHECKING:  # pragma: no cover
    from p2ptwisted.node import Node
    from p2ptwisted.protocol import PeerProtocol


@attrs.frozen
class PeerInfo:
    """
    One connected peer, as the operator sees it.
    """

    id: str
    name: str
    address: str
    direction: str
    since: str
    bytes_in: int
    bytes_out: int

    def __repr__(self) -> str:
        return (f"<Peer {self.name!r} {self.id[:12]} at {self.address} ({self.direction},"
                f" since {self.since}, {self.bytes_in} bytes in, {self.bytes_out} out)>")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Control:
    """
    The operator's handle on a node.  See the README for an example session.
    """

    def __init__(self, node: "Node", out: Callable[[str], None] = print):
        self.node = node
        self.out = out

    # -- peers -------------------------------------------------------------

    def _info(self, proto: "PeerProtocol") -> PeerInfo:
        peer = proto.transport.getPeer()
        since = datetime.datetime.fromtimestamp(proto.connected_at, datetime.timezone.utc)
        return PeerInfo(
            id=proto.remote_id,
            name=proto.hello.name,
            address=f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}",
            direction="outbound" if proto.dialed is not None else "inbound",
            since=since.strftime("%Y-%m-%d %H:%M:%S UTC"),
            bytes_in=proto.bytes_in,
            bytes_out=proto.bytes_out,
        )

    def peers(self) -> List[PeerInfo]:
        """
        The connected peers: id, name, address, direction, since when, and
        bytes in and out on the connection.
        """
        return [self._info(p) for p in self.node.connections.values()]

    def _find(self, peer: str) -> "PeerProtocol":
        connections = self.node.connections
        if peer in connections:
            return connections[peer]
        matches = [p for i, p in connections.items()
                   if (len(peer) >= 4 and i.startswith(peer)) or p.hello.name == peer]
        if len(matches) != 1:
            raise LookupError(
                f"{'no' if not matches else 'more than one'} connected peer matches {peer!r}")
        return matches[0]

    def connect(self, address: str) -> Deferred:
        """
        Dial C{address} (C{host:port} or a client endpoint string) and keep
        it in the peer book; fires with the peer once connected.
        """
        if not isinstance(address, str):
            raise TypeError(f"connect() takes an address string, not {address!r}")
        _, _, endpoint = parse_dial_target(address)
        if endpoint is not None:
            endpoints.clientFromString(self.node.reactor, endpoint)  # ValueError if bad
        entry = self.node.add_bootstrap(address)
        entry.next_attempt = 0.0
        self.node.dial_due()
        d = self.node.wait_for(lambda n: entry.node_id is not None
                               and entry.node_id in n.connections)
        return d.addCallback(lambda n: self._info(n.connections[entry.node_id]))

    def drop(self, peer: str) -> PeerInfo:
        """
        Close the connection to a peer.  (Known peers are redialled later,
        with backoff, like after any drop.)
        """
        proto = self._find(peer)
        info = self._info(proto)
        proto.close("dropped", "dropped by the operator")
        return info

    # -- files ---------------------------------------------------------------

    def catalog(self) -> List[wire.FileEntry]:
        """
        This node's own catalog, sorted by path.
        """
        return sorted(self.node.share.entries(), key=lambda e: e.path)

    def catalog_of(self, peer: str) -> Deferred:
        """
        A peer's catalog as this node knows it (kept current by the peer's
        announcements), sorted by path.
        """
        proto = self._find(peer)
        catalog = self.node.files.remote.get(proto.remote_id, {})
        return succeed(sorted(catalog.values(), key=lambda e: e.path))

    def fetch(self, path: str, peer: Optional[str] = None, dest: Optional[str] = None) -> Transfer:
        """
        Fetch C{path} from C{peer} (or from whoever has it) into the share,
        or into the directory C{dest}.  Returns the L{Transfer}: look at it
        for live progress; C{transfer.done} fires with the final path.
        """
        node_id = self._find(peer).remote_id if peer is not None else None
        return self.node.files.fetch(path, peer=node_id, dest=dest)

    def transfers(self) -> List[Transfer]:
        """
        Recent transfers, then those in flight, with state, bytes, rate, ETA.
        """
        return self.node.files.transfers()

    def cancel(self, transfer: Transfer) -> bool:
        return self.node.files.cancel(transfer)

    def rescan(self) -> Deferred:
        """
        Look at the share again now; fires with the new or changed entries.
        """
        return self.node.rescan()

    # -- the summary ---------------------------------------------------------

    def status(self) -> None:
        """
        Print a readable summary of the node.
        """
        node = self.node
        lines = [
            f"node {node.display_name} ({node.node_id})",
            f"  id {format_id(node.node_id)}; "
            + ("plaintext (--no-tls)" if not node.tls
               else f"TLS, {len(node.allow)} allowed ids" if node.allow is not None
               else "TLS, open to any node"),
            f"  listening on port(s) {', '.join(map(str, node.listen_ports)) or 'none'};"
            f" share {node.share_dir}",
            f"  sharing {len(node.share.files)} files"
            f" ({_human(sum(f.entry.size for f in node.share.files.values()))});"
            f" sync {'on' if node.files.sync else 'off'}",
            f"  peers: {len(node.connections)} connected, {len(node.book)} in the peer book",
        ]
        for info in self.peers():
            lines.append(f"    {info.name} {info.id[:12]} {info.address} {info.direction}"
                         f" since {info.since}, in {_human(info.bytes_in)},"
                         f" out {_human(info.bytes_out)}")
        running = [t for t in self.transfers() if t.finished is None]
        lines.append(f"  transfers: {len(running)} in flight or waiting,"
                     f" {node.files.completed} completed since start")
        for t in running[:10]:
            lines.append(f"    {t!r}")
        if len(running) > 10:
            lines.append(f"    ... and {len(running) - 10} more")
        self.out("\n".join(lines))

    def doctor(self) -> None:
        """
        Print what this node can see of its reachability: where it listens,
        whether LAN discovery works, and for each peer who reached whom --
        with what to do when something only works one way.
        """
        from p2ptwisted.doctor import diagnose

        self.out("\n".join(diagnose(self.node)))

    def namespace(self) -> dict:
        """
        The names a manhole session starts with.
        """
        names = {"node": self.node, "control": self}
        for name in ("status", "peers", "connect", "drop", "catalog", "catalog_of", "fetch",
                     "transfers", "cancel", "rescan", "doctor"):
            names[name] = getattr(self, name)
        return names
