# -*- test-case-name: tests.test_twistd_sync -*-
"""
End-to-end tests of versioned sync: three real C{twistd -n p2pshare}
processes, A, B (C{--peer} A) and C (C{--peer} B), on 127.0.0.1, each with
a share and a state directory of its own.  What a user does on one node's
disk -- edit, delete, rename, chmod, mkdir, edit while a node is off, edit
the same file on two nodes -- must come out the same on every node, and
nothing replaced or deleted may be lost (the trash can, conflict copies).

The process plumbing (L{NodeProcess}, the twistd command line, bounded
waits for log lines, stopping and reaping children) comes from
L{tests.test_twistd}.  Nothing sleeps: the disks are compared when a node
logs "in step with peers: applied N changes, fetched M files (B bytes)",
which it does each time it has applied peers' changes, so every wait is
for a log line, bounded by a timeout.  What a step fetched is read off
those lines: one more change (a 1 MiB file, whose fetch is logged) is
made after the step, and a node's lines up to the one that applied it
count everything the step took (L{SyncTestCase.settle}).

The files the tests write carry mtimes an hour or more in the past: the
scanner publishes a file only once its mtime is a second old (a file still
being written must not travel half-written), and a test that waited that
second out for every change would be slow for nothing.  Each file is
written beside the share and renamed into it, as editors save, so a scan
never sees it half-made.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial import unittest

# The module, not the class: trial collects every TestCase in this module's
# namespace, and importing TwistdTests by name would run its tests again.
from . import test_twistd as base
from .test_twistd import NodeProcess, WaitTimeout, free_port

MiB = 1024 * 1024

#: Seconds for a change to reach every node.
SYNC_TIMEOUT = 20.0

#: Written after "in step with peers: " by p2ptwisted.folder.Folder._log_in_step.
IN_STEP = re.compile(
    r"in step with peers: applied (?P<changes>\d+) changes, fetched (?P<files>\d+) files"
    r" \((?P<bytes>\d+) bytes\) in [\d.]+s, [\d.]+ MiB/s"
    r"(?:; reused (?P<reused>\d+) bytes from local files)?$"
)

#: A conflict copy's name, as the planner makes it: NAME.sync-conflict-
#: YYYYMMDD-HHMMSS-<7 hex of the losing version's author>.EXT
CONFLICT = ".sync-conflict-"

#: A version in the trash can: STATE/trash/<dirs>/<stem>~YYYYMMDD-HHMMSS[-N]<ext>.
TRASHED = r"{stem}~\d{{8}}-\d{{6}}(?:-[1-9]\d*)?{ext}"

#: An mtime an hour and more in the past, with nanoseconds, that each test
#: counts up from (so later versions are newer).
EPOCH_NS = (int(time.time()) - 3 * 3600) * 10**9 + 123_456_789

#: What every node holds at a path: ("file", bytes, perms, mtime_ns) or
#: ("dir", perms).  Directory mtimes are not synced and not compared.
Snapshot = Dict[str, tuple]


def snapshot(root: str) -> Snapshot:
    """
    Every file and directory under C{root}, by relative path.  Partial
    downloads are included: none should be left behind.
    """
    found: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
                if stat.S_ISDIR(st.st_mode):
                    value = ("dir", stat.S_IMODE(st.st_mode))
                else:
                    with open(full, "rb") as f:
                        value = ("file", f.read(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            except FileNotFoundError:
                continue  # gone since listed: the node is still at work here
            found[os.path.relpath(full, root)] = value
    return found


def conflict_copies(root: str) -> List[str]:
    return sorted(path for path in snapshot(root) if CONFLICT in path)


def trashed(state: str, path: str) -> List[bytes]:
    """
    The contents of every version of C{path} in the trash can of the node
    whose state directory is C{state}.
    """
    head, _, name = path.rpartition("/")
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    pattern = re.compile(TRASHED.format(stem=re.escape(stem), ext=re.escape(ext)))
    where = os.path.join(state, "trash", *head.split("/")) if head else os.path.join(
        state, "trash")
    if not os.path.isdir(where):
        return []
    versions = []
    for entry in sorted(os.listdir(where)):
        if pattern.fullmatch(entry):
            with open(os.path.join(where, entry), "rb") as f:
                versions.append(f.read())
    return versions


class Node:
    """
    One node of a test: its share, its state directory, its port, and the
    twistd process running it now (a new one after each restart).
    """

    def __init__(self, name: str, share: str, state: str, port: int = 0):
        self.name, self.share, self.state, self.port = name, share, state, port
        self.proc: Optional[NodeProcess] = None

    def __repr__(self) -> str:
        return f"<Node {self.name}>"

    def full(self, path: str) -> str:
        return os.path.join(self.share, *path.split("/"))

    def mark(self) -> int:
        return self.proc.mark()


class SyncTestCase(unittest.TestCase):
    """
    A chain of real nodes and the means to change their disks and wait
    for the changes to travel.
    """

    timeout = 60

    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    terminate = base.TwistdTests.terminate
    connected_to = base.TwistdTests.connected_to

    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())
        # Where files are made before they are renamed into a share: the
        # same file system, outside every share.
        self.scratch = os.path.join(self.dir, "scratch")
        os.makedirs(self.scratch)
        self.writes = 0
        self.markers = 0
        self.procs: List[NodeProcess] = []

    # -- nodes -----------------------------------------------------------------------

    def node(self, name: str, files: Optional[Dict[str, bytes]] = None,
             port: int = 0) -> Node:
        """
        A node's directories, with C{files} in its share (not started).
        """
        node = Node(name, os.path.join(self.dir, name, "share"),
                    os.path.join(self.dir, name, "state"), port)
        os.makedirs(node.share)
        for path, data in (files or {}).items():
            self.put(node, path, data)
        return node

    async def start(self, node: Node, peers: Sequence[Node] = ()) -> Node:
        """
        Run C{node} (again), dialling C{peers}, and wait for its port.
        """
        options = ["--state", node.state]
        proc = base.TwistdTests.start_node(
            self, node.name, node.port, [p.port for p in peers], node.share, options=options)
        self.procs.append(proc)
        await self.started(proc)
        if node.proc is not None:
            self.assertEqual(proc.node_id, node.proc.node_id,
                             f"{node.name} restarted with another identity")
        node.proc, node.port = proc, (node.port or proc.port)
        return node

    async def chain(self, a_files: Dict[str, bytes], fixed_ports: bool = False,
                    local: Iterable[str] = (), a_dirs: Optional[Dict[str, int]] = None,
                    ) -> Tuple[Node, Node, Node]:
        """
        Start A (holding C{a_files}, and the directories C{a_dirs} with
        their permission bits), B --peer A and C --peer B, and wait until B
        and C hold what A holds but the paths in C{local}.  With
        C{fixed_ports}, each listens on a port chosen now, so it can be
        restarted where its peers know to find it.
        """
        port = free_port if fixed_ports else (lambda: 0)
        a = self.node("A", a_files, port=port())
        for path, mode in (a_dirs or {}).items():
            os.makedirs(a.full(path), exist_ok=True)
            os.chmod(a.full(path), mode)
        b = self.node("B", port=port())
        c = self.node("C", port=port())
        await self.start(a)
        await self.start(b, [a])
        await self.start(c, [b])
        await self.converged([a, b, c], {b: 0, c: 0}, skip=local)
        return a, b, c

    # -- the disk --------------------------------------------------------------------

    def stamp(self) -> int:
        """
        A new mtime, later than every one handed out before in this test.
        """
        self.writes += 1
        return EPOCH_NS + self.writes * 1_000_000_007

    def put(self, node: Node, path: str, data: bytes, mode: int = 0o644,
            mtime_ns: Optional[int] = None) -> int:
        """
        Save C{data} at C{path} in C{node}'s share as an editor does: a
        complete file, renamed into place.  Returns its mtime.
        """
        mtime_ns = self.stamp() if mtime_ns is None else mtime_ns
        tmp = os.path.join(self.scratch, f"tmp-{self.writes}-{len(data)}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        full = node.full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        os.replace(tmp, full)
        return mtime_ns

    def contents(self, node: Node) -> Dict[str, bytes]:
        return {p: v[1] for p, v in snapshot(node.share).items() if v[0] == "file"}

    # -- waiting ---------------------------------------------------------------------

    async def until(self, node: Node, since: int, check: Callable[[], Optional[str]],
                    timeout: float = SYNC_TIMEOUT) -> List[re.Match]:
        """
        Wait until C{check()} finds nothing wrong (returns C{None}) with
        C{node}'s disk, looking each time the node logs an "in step with
        peers" line from line C{since} on (a change the node has to apply
        always ends with one).  Returns those lines' matches, up to the
        one after which the check passed.
        """
        proc = node.proc
        deadline = time.monotonic() + timeout
        index = since
        seen: List[re.Match] = []
        problem = "it logged no 'in step with peers' line"
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise WaitTimeout("")
                await proc.wait_for(IN_STEP, index, timeout=left)
            except WaitTimeout:
                self.fail(f"{node.name} did not come into step within {timeout:g}s:"
                          f" {problem}\n{self.logs()}")
            while not IN_STEP.search(proc.lines[index]):
                index += 1
            seen.append(IN_STEP.search(proc.lines[index]))
            index += 1
            problem = check()
            if problem is None:
                return seen

    async def next_in_step(self, indexes: Dict[Node, int], deadline: float) -> Node:
        """
        Wait for the next "in step with peers" line of any of the nodes,
        at or after its index in C{indexes}; move that node's index past
        the line and return the node.

        @raise WaitTimeout: if none comes before C{deadline} (monotonic).
        """
        for node, index in indexes.items():
            for i in range(index, len(node.proc.lines)):
                if IN_STEP.search(node.proc.lines[i]):
                    indexes[node] = i + 1
                    return node
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout("")
        first: Deferred = Deferred()

        def heard(match, node):
            if not first.called:
                first.callback(node)

        def failed(failure, node):
            if not failure.check(CancelledError) and not first.called:
                first.errback(failure)

        waits = [node.proc.wait_for(IN_STEP, index, timeout=left).addCallbacks(
            heard, failed, callbackArgs=(node,), errbackArgs=(node,))
            for node, index in indexes.items()]
        try:
            node = await first
        finally:
            for d in waits:
                d.cancel()
        index = indexes[node]
        while not IN_STEP.search(node.proc.lines[index]):
            index += 1
        indexes[node] = index + 1
        return node

    async def converged(self, nodes: Sequence[Node], marks: Dict[Node, int],
                        skip: Iterable[str] = (), timeout: float = SYNC_TIMEOUT) -> None:
        """
        Wait until every node in C{marks} holds exactly what the first of
        C{nodes} holds (files, permission bits, mtimes, directories), but
        for the paths in C{skip} (those only the first holds).

        The disks are compared each time any running node of C{nodes} logs
        an "in step with peers" line (the first node too: it may itself be
        taking changes back), and a node in C{marks} must have logged one
        since its mark before its disk counts.
        """
        skip = set(skip)
        model = nodes[0]
        running = [n for n in nodes if n.proc.running]
        indexes = {n: marks.get(n, n.mark()) for n in running}
        heard = set()
        deadline = time.monotonic() + timeout

        def problems() -> List[str]:
            want = {p: v for p, v in snapshot(model.share).items() if p not in skip}
            found = []
            for node in marks:
                have = snapshot(node.share)
                if node not in heard:
                    found.append(f"{node.name} logged no 'in step with peers' line")
                elif have != want:
                    found.append(describe_difference(model, want, node, have))
            return found

        while True:
            wrong = problems()
            if not wrong:
                return
            try:
                heard.add(await self.next_in_step(indexes, deadline))
            except WaitTimeout:
                self.fail(f"no convergence within {timeout:g}s: {'; '.join(wrong)}"
                          f"\n{self.logs()}")

    async def settle(self, source: Node, marks: Dict[Node, int]) -> Dict[Node, Tuple[int, int]]:
        """
        Make one more change on C{source} (a new file of its own) and wait
        until every node in C{marks} has applied it; return the files and
        bytes each fetched from its mark up to then, that file left out.

        A node that has applied that later change has applied the earlier
        ones too (C{source} published them first, and a node comes into
        step only once it has applied all it knows of), so its lines from
        its mark to the first "in step" line after it fetched that file
        count everything they took.  The file is 1 MiB, so its fetch is
        logged ("fetched PATH (SIZE bytes) from PEER"), before the file is
        put in place and so before that "in step" line.
        """
        self.markers += 1
        path = f"settled-{self.markers}.bin"
        self.put(source, path, os.urandom(MiB))
        fetched_line = re.compile(rf"fetched {re.escape(path)} \({MiB} bytes\) from ")
        totals = {}
        for node, mark in marks.items():
            proc = node.proc
            await proc.wait_for(fetched_line, mark, timeout=SYNC_TIMEOUT)
            at = next(i for i in range(mark, len(proc.lines))
                      if fetched_line.search(proc.lines[i]))
            await proc.wait_for(IN_STEP, at + 1, timeout=SYNC_TIMEOUT)
            lines = []
            for i in range(mark, len(proc.lines)):
                match = IN_STEP.search(proc.lines[i])
                if match is not None:
                    lines.append(match)
                    if i > at:
                        break
            totals[node] = (sum(int(m["files"]) for m in lines) - 1,
                            sum(int(m["bytes"]) for m in lines) - MiB)
        return totals

    def marks(self, *nodes: Node) -> Dict[Node, int]:
        return {node: node.mark() for node in nodes}

    def logs(self) -> str:
        return "\n".join(proc.output() for proc in self.procs)

    def assertSane(self, nodes: Sequence[Node]) -> None:
        """
        No node logged a traceback, or failed to apply a change.
        """
        for proc in self.procs:
            bad = [line for line in proc.lines
                   if "Traceback" in line or "Unhandled" in line or "cannot apply" in line]
            self.assertEqual(bad, [], f"{proc.name} logged errors\n{self.logs()}")


def describe_difference(model: Node, want: Snapshot, node: Node, have: Snapshot) -> str:
    def show(value):
        if value is None:
            return "nothing"
        if value[0] == "dir":
            return f"dir {value[1]:o}"
        data = value[1]
        return f"{len(data)} bytes {data[:40]!r} mode {value[2]:o} mtime {value[3]}"

    diffs = [f"{path}: {model.name} has {show(want.get(path))}, {node.name} has"
             f" {show(have.get(path))}"
             for path in sorted(set(want) | set(have)) if want.get(path) != have.get(path)]
    return "; ".join(diffs)


class ChangeTests(SyncTestCase):
    """
    Edits, deletions, renames and metadata made on A reach B and C.
    """

    async def test_edit_delete_rename(self) -> None:
        """
        An edit on A replaces the file on B and C (the old version in their
        trash cans, no conflict copy anywhere); a deletion on A deletes it
        on B and C (into their trash cans) and it stays deleted; a rename
        on A is a rename on B and C, with no bytes fetched.
        """
        a, b, c = await self.chain({
            "notes.txt": b"first draft\n",
            "old.txt": b"soon gone\n" * 50,
            "docs/report.txt": os.urandom(100 * 1024),
            "docs/keep.txt": b"stays\n",
        })
        nodes = [a, b, c]

        # 1. An edit.
        marks = self.marks(b, c)
        self.put(a, "notes.txt", b"second draft, longer\n")
        await self.converged(nodes, marks)
        fetched = await self.settle(a, marks)
        for node in (b, c):
            self.assertEqual(trashed(node.state, "notes.txt"), [b"first draft\n"],
                             f"{node.name} did not keep the replaced version\n{self.logs()}")
            self.assertEqual(
                fetched[node], (1, len(b"second draft, longer\n")),
                f"{node.name} fetched other than the edited file\n{self.logs()}")
        for node in nodes:
            self.assertEqual(conflict_copies(node.share), [], node.name)

        # 2. A deletion.
        marks = self.marks(b, c)
        os.remove(a.full("old.txt"))
        await self.converged(nodes, marks)
        for node in (b, c):
            self.assertFalse(os.path.exists(node.full("old.txt")))
            self.assertEqual(trashed(node.state, "old.txt"), [b"soon gone\n" * 50],
                             f"{node.name} did not keep the deleted file\n{self.logs()}")

        # 3. A rename.
        inodes = {node: os.stat(node.full("docs/report.txt")).st_ino for node in (b, c)}
        marks = self.marks(b, c)
        os.rename(a.full("docs/report.txt"), a.full("docs/final-report.txt"))
        await self.converged(nodes, marks)
        fetched = await self.settle(a, marks)
        for node in (b, c):
            self.assertEqual(fetched[node], (0, 0),
                             f"{node.name} fetched bytes for a rename\n{self.logs()}")
            self.assertEqual(
                os.stat(node.full("docs/final-report.txt")).st_ino, inodes[node],
                f"{node.name} made a new file instead of renaming its own\n{self.logs()}")
            self.assertEqual(trashed(node.state, "docs/report.txt"), [],
                             f"{node.name} trashed a renamed file\n{self.logs()}")

        # Still deleted, still no conflict copy, once the rename came after.
        for node in nodes:
            self.assertFalse(os.path.exists(node.full("old.txt")), node.name)
            self.assertEqual(conflict_copies(node.share), [], node.name)
        self.assertSane(nodes)

    async def test_metadata_and_empty_directories(self) -> None:
        """
        A file's mtime (to the nanosecond, where the file system keeps it)
        and its executable bit travel, on a new file and as a chmod of an
        existing one; so do empty directories, with their permission bits.
        """
        a, b, c = await self.chain({"tool": b"#!/bin/sh\necho hi\n"})
        nodes = [a, b, c]

        marks = self.marks(b, c)
        stamp = EPOCH_NS + 987_654_321
        self.put(a, "run.sh", b"#!/bin/sh\nexit 0\n", mode=0o755, mtime_ns=stamp)
        os.chmod(a.full("tool"), 0o754)
        os.makedirs(a.full("empty"))
        os.makedirs(a.full("nest/inner"))
        os.chmod(a.full("nest/inner"), 0o750)
        await self.converged(nodes, marks)

        for node in nodes:
            st = os.stat(node.full("run.sh"))
            self.assertEqual(st.st_mtime_ns, os.stat(a.full("run.sh")).st_mtime_ns, node.name)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o755, node.name)
            self.assertEqual(stat.S_IMODE(os.stat(node.full("tool")).st_mode), 0o754,
                             node.name)
            self.assertTrue(os.path.isdir(node.full("empty")), node.name)
            self.assertEqual(os.listdir(node.full("empty")), [], node.name)
            self.assertEqual(os.listdir(node.full("nest/inner")), [], node.name)
            self.assertEqual(stat.S_IMODE(os.stat(node.full("nest/inner")).st_mode), 0o750,
                             node.name)
        if os.stat(a.full("run.sh")).st_mtime_ns == stamp:
            # This file system keeps nanoseconds: they travel too.
            for node in (b, c):
                self.assertEqual(os.stat(node.full("run.sh")).st_mtime_ns, stamp, node.name)
        self.assertSane(nodes)

    async def test_directory_permissions_stay(self) -> None:
        """
        Private directories (0o700) made on A, nested, some holding a file,
        keep their permission bits: on B and C, which make them, and on A,
        where a peer must not change them back.

        A receiving node that recorded a directory it was itself making as
        a change of its own -- the parent of a file or directory it makes
        first, with the default bits, or a directory caught between its
        mkdir and its chmod -- would publish those bits as a newer version
        of the directory, and every node, A included, would take them.
        """
        dirs = {}
        files = {}
        for i in range(8):
            dirs[f"p{i}"] = dirs[f"p{i}/sub"] = dirs[f"p{i}/sub/deeper"] = 0o700
            files[f"p{i}/sub/f.txt"] = b"private %d\n" % i
        a, b, c = await self.chain(files, a_dirs=dirs)
        nodes = [a, b, c]
        # Whatever B and C published while making them has reached A by
        # the time a later change of A's has reached them.
        marks = self.marks(b, c)
        await self.settle(a, marks)
        await self.converged(nodes, marks)
        changed = {}
        for node in nodes:
            for path, mode in dirs.items():
                found = stat.S_IMODE(os.stat(node.full(path)).st_mode)
                if found != mode:
                    changed[f"{node.name}:{path}"] = f"{found:o}, not {mode:o}"
        if changed:
            self.fail(f"directory permission bits changed: {changed}\n{self.logs()}")
        self.assertSane(nodes)

    async def test_ignored_paths_stay_local(self) -> None:
        """
        What A's C{.p2pignore} names never reaches B or C, nor does the
        C{.p2pignore} itself, whether there at start or made later; and a
        file B makes at a path A ignores does not replace A's.
        """
        local = {".p2pignore", "debug.log", "private", "private/secret.txt"}
        a, b, c = await self.chain({
            ".p2pignore": b"# A's own\n*.log\nprivate/\n",
            "debug.log": b"A's log\n",
            "private/secret.txt": b"A's secret\n",
            "shared.txt": b"for everyone\n",
        }, local=local)
        nodes = [a, b, c]
        for node in (b, c):
            self.assertEqual(sorted(self.contents(node)), ["shared.txt"], node.name)

        # Made while running, before a file that does travel.
        marks = self.marks(b, c)
        self.put(a, "private/more.txt", b"more secrets\n")
        self.put(a, "sub/trace.log", b"A's trace\n")
        self.put(a, "marker.txt", b"after the ignored ones\n")
        await self.converged(nodes, marks, skip=local | {"private/more.txt", "sub/trace.log"})
        for node in (b, c):
            self.assertEqual(sorted(self.contents(node)), ["marker.txt", "shared.txt"],
                             node.name)

        # B's own debug.log reaches C, and leaves A's alone.
        marks = self.marks(a, c)
        self.put(b, "debug.log", b"B's log\n")
        self.put(b, "b-marker.txt", b"from B\n")
        await self.until(c, marks[c], lambda: None if self.contents(c).get(
            "b-marker.txt") == b"from B\n" and self.contents(c).get("debug.log") == b"B's log\n"
            else "B's files not there yet")
        await self.until(a, marks[a], lambda: None if os.path.exists(
            a.full("b-marker.txt")) else "b-marker.txt not there yet")
        self.assertEqual(self.contents(a)["debug.log"], b"A's log\n")
        self.assertEqual(trashed(a.state, "debug.log"), [])
        self.assertSane(nodes)


class OfflineTests(SyncTestCase):
    """
    A node that was off catches up; edits made on two nodes while they
    could not talk end as a conflict, resolved the same everywhere.
    """

    async def test_stopped_node_catches_up(self) -> None:
        """
        C, stopped while A edits, adds and deletes files, applies all three
        once restarted: each changed file fetched once, the deleted one in
        its trash can.
        """
        a, b, c = await self.chain({
            "edit.txt": b"before\n",
            "gone.txt": b"delete me\n",
            "same.txt": b"untouched\n",
        }, fixed_ports=True)
        nodes = [a, b, c]

        await self.terminate(c.proc)
        marks = self.marks(b)
        self.put(a, "edit.txt", b"after, while C was off\n")
        self.put(a, "new/added.bin", os.urandom(300 * 1024))
        os.remove(a.full("gone.txt"))
        await self.converged(nodes, marks)

        await self.start(c, [b])
        await self.converged(nodes, {c: 0})
        fetched = await self.settle(a, {c: 0})
        changed = ["edit.txt", "new/added.bin"]
        self.assertEqual(
            fetched[c], (len(changed), sum(len(self.contents(a)[p]) for p in changed)),
            f"C fetched other than what changed\n{self.logs()}")
        self.assertEqual(trashed(c.state, "gone.txt"), [b"delete me\n"])
        self.assertEqual(trashed(c.state, "edit.txt"), [b"before\n"])
        self.assertFalse(os.path.exists(c.full("gone.txt")))
        for node in nodes:
            self.assertEqual(conflict_copies(node.share), [], node.name)
        self.assertSane(nodes)

    async def test_concurrent_edits_conflict(self) -> None:
        """
        A and B (stopped) edit the same files.  Once B is back, every node
        holds the newer edit under the file's name and the other as one
        conflict copy named after that version, the same on every node:
        whether the loser was held by B alone, or by A and C.
        """
        a, b, c = await self.chain({
            "a-wins.txt": b"original one\n",
            "b-wins.txt": b"original two\n",
        }, fixed_ports=True)
        nodes = [a, b, c]
        # C must reach A while B is off.
        await self.connected_to(c.proc, a.proc)

        await self.terminate(b.proc)
        marks = self.marks(c)
        b_loses = self.stamp()
        a_loses = self.put(a, "b-wins.txt", b"A's edit, older\n")
        a_wins = self.put(a, "a-wins.txt", b"A's edit, newer\n")
        await self.converged([a, c], marks)
        self.put(b, "a-wins.txt", b"B's edit, older\n", mtime_ns=b_loses)
        self.put(b, "b-wins.txt", b"B's edit, newer\n")
        self.assertLess(b_loses, a_wins)
        self.assertGreater(os.stat(b.full("b-wins.txt")).st_mtime_ns, a_loses)

        marks = self.marks(a, c)
        await self.start(b, [a])
        marks[b] = 0
        expected = {
            "a-wins.txt": b"A's edit, newer\n",
            "b-wins.txt": b"B's edit, newer\n",
            conflict_name("a-wins.txt", b_loses, b): b"B's edit, older\n",
            conflict_name("b-wins.txt", a_loses, a): b"A's edit, older\n",
        }

        def holds_expected(node: Node) -> Callable[[], Optional[str]]:
            def check() -> Optional[str]:
                have = self.contents(node)
                return None if have == expected else f"{node.name} holds {have!r}"
            return check

        for node in nodes:
            await self.until(node, marks[node], holds_expected(node))
        # Every copy alike (bytes, mtimes, permission bits), and no more
        # conflict copies once a later change has travelled everywhere.
        marks = self.marks(b, c)
        await self.settle(a, marks)
        await self.converged(nodes, marks)
        for node in nodes:
            self.assertEqual(
                {p: d for p, d in self.contents(node).items() if not p.startswith("settled-")},
                expected, f"{node.name}\n{self.logs()}")
        self.assertSane(nodes)


def conflict_name(path: str, mtime_ns: int, author: Node) -> str:
    """
    The name the losing version of C{path}, made by C{author} with
    C{mtime_ns}, must be kept under.
    """
    stem, ext = path.rsplit(".", 1)
    when = datetime.datetime.fromtimestamp(mtime_ns // 10**9, datetime.timezone.utc)
    return f"{stem}{CONFLICT}{when:%Y%m%d-%H%M%S}-{author.proc.node_id[:7]}.{ext}"
