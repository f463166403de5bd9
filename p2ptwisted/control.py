# -*- test-case-name: tests.test_control -*-
"""
What an operator can do with a running node: the functions behind the
manhole's prompt.

Everything returns a plain value or a Deferred (the manhole has no
top-level C{await}; it prints a Deferred's result when it fires).  Peers
are named by node id, a unique prefix of it, or their display name.
Lists of files and of transfers print as tables (L{p2ptwisted.tables}).
"""

from __future__ import annotations

import datetime
import os
import weakref
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

import attrs
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted.internet import endpoints

from p2ptwisted.identity import format_id
from p2ptwisted.core.index import FILE
from p2ptwisted.peers import parse_dial_target
from p2ptwisted.tables import EntryTable, human as _human, transfer_cells
from p2ptwisted.transfer_ops import TransferOps

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


class ConnectFailed(ConnectionError):
    """
    C{connect()} could not reach the address; the message says why.
    """


class Control(TransferOps):
    """
    The operator's handle on a node.  See the README for an example session.
    """

    def __init__(self, node: "Node", out: Callable[[str], None] = print):
        self.node = node
        self.out = out
        #: Operator fetches in flight: (path, hash, dest) -> who waits.
        self._fetching: dict = {}
        #: What fetch() returned -> the fetcher's Deferred of that fetch.
        self._fetch_of: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    # -- peers -------------------------------------------------------------

    def _info(self, proto: "PeerProtocol") -> PeerInfo:
        peer = proto.transport.getPeer()
        since = datetime.datetime.fromtimestamp(proto.connected_at, datetime.timezone.utc)
        hello = proto.hello
        assert hello is not None  # one of the node's connections: past its HELLO
        return PeerInfo(
            id=hello.node_id,
            name=hello.name,
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
        it in the peer book; fires with the peer once connected, or fails
        with L{ConnectFailed} (and why) if the dial fails.  The address
        stays in the peer book either way, redialled with backoff like a
        C{--peer}.
        """
        if not isinstance(address, str):
            raise TypeError(f"connect() takes an address string, not {address!r}")
        _, _, endpoint = parse_dial_target(address)
        if endpoint is not None:
            endpoints.clientFromString(self.node.reactor, endpoint)  # ValueError if bad
        entry = self.node.add_bootstrap(address)
        entry.next_attempt = 0.0
        failures = entry.failures

        def settled(node) -> bool:
            return ((entry.node_id is not None and entry.node_id in node.connections)
                    or (entry.failures > failures and not entry.dialing))

        def answer(node):
            if entry.node_id is not None and entry.node_id in node.connections:
                return self._info(node.connections[entry.node_id])
            raise ConnectFailed(f"could not reach {entry.key}: {entry.last_error or 'no answer'}"
                                " (it stays in the peer book, redialled with backoff)")

        d = self.node.wait_for(settled)
        self.node.dial_due()
        return d.addCallback(answer)

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

    def catalog(self) -> EntryTable:
        """
        The live files and directories of this node's index, sorted by
        path: a list of index entries, printed as a table.
        """
        store = self.node.folder.store
        entries = (store.get(path) for path in store.local_paths())
        return EntryTable(e for e in entries if e is not None and e.live)

    def catalog_of(self, peer: str) -> EntryTable:
        """
        A connected peer's live files and directories as its index told us
        (kept current as it changes), sorted by path: a list of index
        entries, printed as a table.
        """
        peer_id = self._find(peer).remote_id
        store = self.node.folder.store
        found = []
        for path in store.remote_paths(peer_id):
            entry = store.remote_for(path).get(peer_id)
            if entry is not None and entry.live:
                found.append(entry)
        return EntryTable(sorted(found, key=lambda e: e.path))

    def fetch(self, path: str, peer: Optional[str] = None, dest: Optional[str] = None) -> Deferred:
        """
        Fetch the file at C{path} as a peer's index has it (C{peer}'s, or
        any connected peer's) into the directory C{dest}, outside the
        share; without C{dest}, into the share at C{path}, where nothing
        may be yet (a node in send-only or receive-only mode, or a file
        still waiting its turn).  Fires with where the file landed.
        """
        folder = self.node.folder
        peer_ids = ([self._find(peer).remote_id] if peer is not None
                    else list(self.node.connections))
        holders = folder.store.remote_for(path)
        found = [(pid, holders[pid]) for pid in peer_ids
                 if pid in holders and holders[pid].live and holders[pid].kind == FILE]
        if not found:
            raise LookupError(f"no connected peer has a file at {path!r}")
        entry = found[0][1]
        sources = tuple(pid for pid, e in found if e.hash == entry.hash)
        dest = os.path.abspath(dest) if dest is not None else None
        key = (path, entry.hash, dest)
        if key not in self._fetching:
            # The same fetch asked twice while it runs is one fetch.
            if dest is not None:
                d = folder.fetcher.fetch(entry, sources, keep=path,
                                         open_dir=lambda _: _open_outside(dest))
                d.addCallback(lambda name: os.path.join(dest, name))
            else:
                d = folder.fetcher.fetch(entry, sources, keep=path)
                landed = os.path.join(folder.root, *path.split("/"))
                d.addCallback(lambda _: folder.rescan().addCallback(lambda _: landed))
            waiters = self._fetching[key] = []

            def fire(result):
                del self._fetching[key]
                for waiter in waiters:
                    if isinstance(result, Failure):
                        waiter.errback(result)
                    else:
                        waiter.callback(result)
                # A transfer's .done (transfers()) then fires with where
                # the file landed, as fetch()'s Deferred does; a failure
                # went to the waiters, who handle it.
                return None if isinstance(result, Failure) else result

            d.addBoth(fire)
        waiter: Deferred[str] = Deferred()
        self._fetching[key].append(waiter)
        self._fetch_of[waiter] = next(
            (w.done for w in folder.fetcher.transfers()
             if w.keep == path and w.entry.hash == entry.hash and w.finished_at is None),
            None)
        return waiter

    def rescan(self) -> Deferred:
        """
        Look at the share again now; fires with the number of changes.
        """
        return self.node.rescan()

    # -- the summary ---------------------------------------------------------

    def status(self) -> None:
        """
        Print a readable summary of the node.
        """
        node = self.node
        files, size = node.folder.store.totals()
        lines = [
            f"node {node.display_name} ({node.node_id})",
            f"  id {format_id(node.node_id)}; "
            + ("plaintext (--no-tls)" if not node.tls
               else f"TLS, {len(node.allow)} allowed ids" if node.allow is not None
               else "TLS, open to any node"),
            f"  listening on port(s) {', '.join(map(str, node.listen_ports)) or 'none'};"
            f" share {node.share_dir}",
            f"  sharing {files} files ({_human(size)}); mode {node.folder.mode},"
            f" {'in step' if node.folder.in_sync() else 'syncing'}",
            f"  peers: {len(node.connections)} connected, {len(node.book)} in the peer book",
        ]
        if node.folder.mode == "receive-only":
            differ = sorted(node.folder.sync.local_changes)
            lines.insert(4, f"  receive-only: {len(differ)} local changes not sent"
                         + (f" (such as {differ[0]})" if differ else ""))
        for info in self.peers():
            lines.append(f"    {info.name} {info.id[:12]} {info.address} {info.direction}"
                         f" since {info.since}, in {_human(info.bytes_in)},"
                         f" out {_human(info.bytes_out)}")
        running = [t for t in self.transfers() if t.finished_at is None]
        lines.append(f"  transfers: {len(running)} in flight or waiting,"
                     f" {node.folder.fetcher.completed} completed since start")
        for t in running[:10]:
            lines.append("    " + "  ".join(transfer_cells(t, node.clock.seconds())[:4]))
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
                     "transfers", "cancel", "watch", "rescan", "doctor"):
            names[name] = getattr(self, name)
        return names

    def session_namespace(self, console) -> dict:
        """
        The names of one manhole session (its own copy): those of
        L{namespace}, with C{watch} drawing in that session.
        """
        names = self.namespace()
        names["watch"] = lambda what: self.watch(what, console)
        names["watch"].__doc__ = self.watch.__doc__
        return names


def _open_outside(directory: str) -> Tuple[int, List[str]]:
    """
    An operator's destination outside the share: made if missing.
    """
    os.makedirs(directory, exist_ok=True)
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), []
