# -*- test-case-name: tests.test_sim -*-
"""
A simulated node: the real sync engine, a simulated disk and links.

It plays the part of the node's shells: the scanner (L{SimNode.scan}),
the applier (L{SimNode.apply}), and the index exchange over its links.
The applier follows the same rules as the real one: check before
replace, trash before delete, conflict copies by rename.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import attrs

from p2ptwisted.core.engine import SyncEngine
from p2ptwisted.core.index import DIR, FILE, LocalIndex
from p2ptwisted.core.planner import (ADOPT, DELETE, FETCH, MKDIR, MOVE, SET_META, Action)
from p2ptwisted.core.trouble import Trouble
from p2ptwisted.core.versions import short_id
from p2ptwisted.sim.fs import Item, SimFS

#: Seconds before a failed action is planned again (doubled with each
#: failure in a row of a path, up to MAX_RETRY), and rescans in a row
#: before a path waits (as in p2ptwisted.sync).
RETRY = 2.0
MAX_RETRY = 60.0
STUCK_AFTER = 3


class SimNode:
    """
    @ivar sim: the L{p2ptwisted.sim.mesh.Simulation} it runs in (not
        imported here: the mesh imports this module).
    """

    def __init__(self, sim, name: str, node_id: str):
        self.sim = sim
        self.name = name
        self.node_id = node_id
        self.fs = SimFS()
        self.store = sim.store_factory()
        self.running = False
        self.sent = 0
        #: Content requests sent to peers (a rename must cost none).
        self.gets = 0
        self.engine: Optional[SyncEngine] = None
        self.links: Dict[str, object] = {}
        self._fetches: Dict[int, Tuple[Action, str]] = {}
        self.trouble = Trouble(RETRY, MAX_RETRY)  # request id: (action, peer asked)
        self._scan_call = None
        self._pump_call = None

    # -- life cycle ----------------------------------------------------------

    @property
    def live_engine(self) -> SyncEngine:
        """
        The engine of a node that is up (a stopped node has none, and the
        simulator never drives one).
        """
        assert self.engine is not None, f"{self.name} is down"
        return self.engine

    def start(self) -> None:
        self.running = True
        index = LocalIndex(self.store, short_id(self.node_id),
                           index_id=self.sim.random_hex(16))
        self.engine = SyncEngine(index, self.store)
        self.live_engine.sweep()
        self.scan()

    def stop(self) -> None:
        for peer in list(self.links):
            self.sim.disconnect(self.name, peer)
        self.running = False
        self.engine = None
        self._fetches.clear()
        for call in (self._scan_call, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        self._scan_call = self._pump_call = None

    # -- scanning ----------------------------------------------------------------

    def changed_on_disk(self, delay: float) -> None:
        """
        The user changed something: the watcher notices after C{delay}.
        """
        if self.running and (self._scan_call is None or not self._scan_call.active()):
            self._scan_call = self.sim.clock.callLater(delay, self.scan)

    def scan(self) -> None:
        self._scan_call = None
        if not self.running:
            return
        observed = [item.observed(path) for path, item in sorted(self.fs.items.items())]
        gone = [p for p in self.store.local_paths()
                if p not in self.fs.items and not self.store.get(p).deleted]
        made = self.live_engine.local_changed(observed, gone, self.sim.now())
        for entry in made:
            if entry.live and entry.kind == FILE:
                self.sim.published.add(entry.hash)
        self.announce()
        self.kick()

    # -- index exchange ------------------------------------------------------------

    def connected(self, peer: str) -> None:
        self.links[peer] = True
        hello = self.live_engine.peer_connected(peer)
        self.sim.send(self.name, peer, ("hello", hello))

    def lost(self, peer: str) -> None:
        self.links.pop(peer, None)
        if self.engine is not None:
            self.live_engine.peer_lost(peer)
        for rid, (action, source) in list(self._fetches.items()):
            if source == peer:
                del self._fetches[rid]
                self.live_engine.failed(action, self.sim.clock.seconds() + RETRY)
                self.kick()

    def received(self, peer: str, message: tuple) -> None:
        if not self.running or peer not in self.links:
            return
        kind = message[0]
        if kind == "hello":
            if self.live_engine.hello_received(peer, message[1]):
                for other in list(self.links):
                    self.sim.send(self.name, other, ("hello", self.live_engine.hello_for(other)))
            self.announce()
        elif kind == "entries":
            self.live_engine.entries_received(peer, message[1], self.sim.now())
            self.kick()
        elif kind == "get":
            _, rid, content = message
            found = self.fs.find_content(content)
            self.sim.send(self.name, peer, ("data", rid, content if found else None))
        elif kind == "data":
            _, rid, content = message
            action, _ = self._fetches.pop(rid, (None, None))
            if action is not None:
                if content is None:
                    self.live_engine.failed(action, self.sim.clock.seconds() + RETRY)
                else:
                    self._place(action, content)
                self.kick()

    def announce(self) -> None:
        if not self.running:
            return
        for peer in list(self.links):
            while True:
                entries = self.live_engine.outgoing(peer, limit=50)
                if not entries:
                    break
                self.sim.send(self.name, peer, ("entries", entries))

    # -- applying ------------------------------------------------------------------

    def kick(self) -> None:
        if self.running and (self._pump_call is None or not self._pump_call.active()):
            self._pump_call = self.sim.clock.callLater(0, self.pump)

    def pump(self) -> None:
        self._pump_call = None
        if not self.running:
            return
        actions = self.live_engine.next_actions(self.sim.clock.seconds())
        # Parents before children; deletions last and deepest first, so
        # directories are empty before they go.
        deletes = sorted((a for a in actions if a.kind == DELETE), key=lambda a: a.path,
                         reverse=True)
        rest = sorted((a for a in actions if a.kind != DELETE), key=lambda a: a.path)
        for action in rest + deletes:
            self.apply(action)
        if self.live_engine.has_planning():
            # As the real shell (FolderSync.pump): more to plan now, such
            # as deletions held back until the rest was done.
            self._pump_call = self.sim.clock.callLater(0, self.pump)
        elif self.live_engine.waiting:
            soonest = min(self.live_engine.waiting.values())
            self._pump_call = self.sim.clock.callLater(
                max(0.0, soonest - self.sim.clock.seconds()), self.pump)
        self.announce()

    def _fail(self, action: Action, rescan: bool = False) -> None:
        """
        As the real shell (L{p2ptwisted.sync}): a path whose action fails
        rescans and is planned again at once, but after STUCK_AFTER such
        failures in a row it waits, longer each time, so a disk state the
        scan does not record cannot make the node loop.
        """
        if rescan and self.trouble.in_a_row(action.path) < STUCK_AFTER:
            self.trouble.failed(action.path)
            self.scan()
            self.live_engine.failed(action, None)
            self.kick()
        else:
            delay, _ = self.trouble.failed(action.path)
            self.live_engine.failed(action, self.sim.clock.seconds() + delay)
            if rescan:
                # The real node rescans its whole share every few minutes
                # (p2ptwisted.watch), whatever its watcher saw: by the
                # time a stuck path is retried, a scan has looked at it.
                self.changed_on_disk(delay)

    def apply(self, action: Action) -> None:
        fs = self.fs
        item = fs.items.get(action.path)
        if action.kind == MKDIR and item is not None and item.kind == DIR:
            # Already a directory (made for its files): as the real
            # applier, give it the version's permission bits.
            fs.items[action.path] = attrs.evolve(item, perms=action.entry.perms)
            self._done(action)
            return
        if not fs.holds(action.path, action.local):
            self._fail(action, rescan=True)
            return
        if action.source is not None and not fs.holds(action.source.path, action.source.local):
            self._fail(action, rescan=True)
            return
        kind = action.kind
        if kind == ADOPT:
            self._done(action)
        elif kind == SET_META:
            item = fs.items[action.path]
            fs.items[action.path] = attrs.evolve(item, perms=action.entry.perms,
                                                 mtime_ns=action.entry.mtime_ns)
            self._done(action)
        elif kind == DELETE:
            item = fs.items.get(action.path)
            if item is not None and item.kind == DIR and fs.children(action.path):
                self._blocked_dir(action)
                return
            if item is not None:
                fs.to_trash(action.path)
            self._done(action)
        elif kind == MKDIR:
            if not self._make_room(action):
                return
            fs.items[action.path] = Item(DIR, perms=action.entry.perms)
            self._done(action)
        elif kind == MOVE:
            assert action.source is not None  # (a move always has one)
            item = fs.items[action.source.path]
            if not self._make_room(action):
                return
            del fs.items[action.source.path]
            fs.items[action.path] = attrs.evolve(item, perms=action.entry.perms,
                                                 mtime_ns=action.entry.mtime_ns)
            self._done(action)
        elif kind == FETCH:
            local = fs.find_content(action.entry.hash)
            if local is not None:
                self._place(action, action.entry.hash)
                return
            sources = self.live_engine.sources_for(action)
            if not sources:
                self._fail(action)
                return
            peer = sources[self.sim.random.randrange(len(sources))]
            rid = self.sim.next_id()
            self._fetches[rid] = (action, peer)
            self.gets += 1
            self.sim.send(self.name, peer, ("get", rid, action.entry.hash))

    def _make_room(self, action: Action) -> bool:
        """
        Parents made, the old file kept (conflict copy or trash): ready to
        put C{action.entry} at its path.
        """
        fs = self.fs
        made = fs.make_parents(action.path)
        if made is None:
            self._fail(action)
            return False
        if made:
            self.changed_on_disk(0.0)  # new directories become local versions
        item = fs.items.get(action.path)
        if item is not None and item.kind == DIR and action.entry.kind == FILE:
            if fs.children(action.path):
                self._blocked_dir(action)
                return False
            del fs.items[action.path]
        elif item is not None and item.kind == FILE:
            if action.conflict_copy and action.conflict_copy not in fs.items:
                fs.items[action.conflict_copy] = item
                del fs.items[action.path]
                self.changed_on_disk(0.0)
            else:
                fs.to_trash(action.path)
        return True

    def _blocked_dir(self, action: Action) -> None:
        """
        A directory to delete or replace still holds something: rescan if
        the disk holds what the index does not know; keep the directory if
        anything in it is still needed; else wait for its contents to go.
        """
        for child in self.fs.children(action.path):
            if not self.fs.holds(child, self.store.get(child)):
                self._fail(action, rescan=True)
                return
        if self.live_engine.needed_under(action.path, self.sim.now()):
            self.live_engine.revive(action, self.sim.now())
            self.announce()
            self.kick()
        else:
            self._fail(action)

    def _place(self, action: Action, content: str) -> None:
        if not self.fs.holds(action.path, action.local):
            self._fail(action, rescan=True)
            return
        if not self._make_room(action):
            return
        self.fs.items[action.path] = Item(FILE, content, action.entry.mtime_ns, action.entry.perms)
        self._done(action)

    def _done(self, action: Action) -> None:
        self.trouble.cleared(action.path)
        self.live_engine.done(action)
        self.announce()

    def holds_content(self) -> List[str]:
        return [i.content for i in self.fs.items.values() if i.kind == FILE] + [
            i.content for _, i in self.fs.trash]
