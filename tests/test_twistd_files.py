# -*- test-case-name: tests.test_twistd_files -*-
"""
End-to-end tests of file sync: real C{twistd -n p2pshare} processes on
127.0.0.1 keeping their shares in step (both ways over one connection,
edits and deletions included), fetching a large file in little memory,
resuming a download after the sender is killed, and taking nothing from
peers under C{--no-sync} and C{--mode send-only}.

The process plumbing (L{NodeProcess}, the twistd command line, waiting for
log lines with bounded timeouts, stopping and reaping children) comes from
L{tests.test_twistd}.  As there, nothing sleeps: every wait is for a log
line, a process exit or a file-system event (inotify), and is bounded by a
timeout.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence, Union

from blake3 import blake3
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from twisted.trial import unittest

# The module, not the class: trial collects every TestCase in this module's
# namespace, and importing TwistdTests by name would run its tests again.
from p2ptwisted.blockfile import HAVE_SUFFIX
from p2ptwisted.core.blocks import block_size

from . import test_twistd as base
from .test_twistd import NodeProcess, WaitTimeout, free_port

try:
    from twisted.internet import inotify
except ImportError:  # pragma: no cover (not Linux)
    inotify = None

MiB = 1024 * 1024

log = Logger()

#: The name of a node's default state directory inside its share, and the
#: prefix of every name a node reserves there (partial downloads).
RESERVED_PREFIX = ".p2pshare"
PARTIAL_PREFIX = RESERVED_PREFIX + "-part-"

#: The trash can, inside the state directory.
TRASH_DIR = "trash"

#: The most memory (peak resident set, VmHWM) a node may use while sending
#: or receiving a file of any size: the project's target.
MEMORY_BOUND = 100 * MiB

#: Seconds for a share to come into step, or a large file to arrive.
SYNC_TIMEOUT = 20.0

# Log lines, as written by p2ptwisted (folder.py, exchange.py, fetcher.py).
IN_STEP = re.compile(
    r"in step with peers: applied (?P<changes>\d+) changes, fetched (?P<n>\d+) files"
    r" \((?P<bytes>\d+) bytes\) in [\d.]+s, [\d.]+ MiB/s"
    r"(?:; reused (?P<reused>\d+) bytes from local files)?$"
)
SHARES = (r"{peer} shares (?P<n>\d+) files \((?P<bytes>\d+) bytes\);"
          r" its index is up to date here$")
FETCHED = (r"fetched {path} \((?P<size>\d+) bytes\) from {peer}(?: \(\d+ blocks\))?"
           r" at [\d.]+ MiB/s$")

#: What a block download may have asked and not received when its source
#: dies (p2ptwisted.swarm.DEPTH_BYTES), fetched again after.
IN_FLIGHT = 8 * MiB

#: A conflict copy's name (p2ptwisted.core.planner.conflict_name).
CONFLICT = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[0-9a-f]{7}")


def peer_text(node: NodeProcess) -> str:
    """
    How C{node} is named in its peers' log lines: "NAME (ID...) at HOST:PORT".
    """
    return rf"{re.escape(node.name)} \({node.node_id[:12]}\) at \S+"


def shares_line(node: NodeProcess) -> str:
    """
    The line a peer logs once it holds C{node}'s index.
    """
    return SHARES.format(peer=peer_text(node))


def fetched_line(path: str, source: NodeProcess) -> str:
    """
    The line a node logs once a file of 1 MiB or more has arrived.
    """
    return FETCHED.format(path=re.escape(path), peer=peer_text(source))


def write_files(root: str, files: Dict[str, bytes], age: Optional[float] = None) -> None:
    """
    Write C{files} under C{root}; with C{age}, date them C{age} seconds
    back, as files that were there before the node started.  (A node
    publishes a file only once it has been left alone for a moment, so
    a file written just now reaches peers a moment after the node's first
    scan.)
    """
    for path, data in files.items():
        full = os.path.join(root, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        if age is not None:
            then = os.stat(full).st_mtime - age
            os.utime(full, (then, then))


def share_contents(root: str) -> Dict[str, bytes]:
    """
    Every file under C{root} but the node's state directory, by relative
    path.  Partial downloads and conflict copies are included: none should
    be there.
    """
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root and RESERVED_PREFIX in dirnames:
            dirnames.remove(RESERVED_PREFIX)
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                found[os.path.relpath(full, root).replace(os.sep, "/")] = f.read()
    return found


def trashed(state: str, path: str) -> List[bytes]:
    """
    The contents of the versions of C{path} in the trash can of the node
    with state directory C{state} (STATE/trash/DIRS/STEM~YYYYMMDD-HHMMSS[-N]EXT).
    """
    head, _, name = path.rpartition("/")
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    version = re.compile(rf"{re.escape(stem)}~\d{{8}}-\d{{6}}(?:-\d+)?{re.escape(ext)}")
    where = os.path.join(state, TRASH_DIR, *head.split("/")) if head else os.path.join(
        state, TRASH_DIR)
    if not os.path.isdir(where):
        return []
    found = []
    for entry in sorted(os.listdir(where)):
        if version.fullmatch(entry):
            with open(os.path.join(where, entry), "rb") as f:
                found.append(f.read())
    return found


def write_random_file(path: str, size: int, age: float = 60) -> str:
    """
    Write C{size} random bytes to C{path}, 1 MiB at a time, dated C{age}
    seconds back (see L{write_files}); return their BLAKE3 hex digest.
    """
    hasher = blake3()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            hasher.update(block)
            f.write(block)
    then = os.stat(path).st_mtime - age
    os.utime(path, (then, then))
    return hasher.hexdigest()


def hash_file(path: str) -> str:
    hasher = blake3()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            hasher.update(block)
    return hasher.hexdigest()


def peak_memory(pid: int) -> int:
    """
    The peak resident set size (VmHWM) of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def tcp_bytes_received(pid: int, netns: Optional[str] = None) -> int:
    """
    The bytes process C{pid} has received on its established TCP
    connections, as the kernel counts them (C{ss -tinp}: tcp_info's
    bytes_received), in network namespace C{netns} if given.
    """
    args = ["ss", "-Htinp", "state", "established"]
    if netns is not None:
        args = ["ip", "netns", "exec", netns] + args
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=30,
                         stdin=subprocess.DEVNULL).stdout
    total, mine = 0, False
    for line in out.splitlines():
        if not line[:1].isspace():
            mine = f"pid={pid}," in line
            continue
        match = re.search(r"\bbytes_received:(\d+)", line)
        if mine and match:
            total += int(match.group(1))
    return total


def verified_bytes(record: str, block: int) -> int:
    """
    The bytes a block download's record of verified blocks counts.
    """
    with open(record, "rb") as f:
        return f.read().count(1) * block


def partial_reaches(testcase: unittest.TestCase, directory: str, size: int, block: int,
                    timeout: float = SYNC_TIMEOUT) -> Deferred:
    """
    A Deferred firing with the path of the partial download in
    C{directory} once it holds at least C{size} verified bytes (its record
    of verified blocks, one byte per block of C{block} bytes, says so): an
    inotify watch looks at it each time it is written.
    """
    notifier = inotify.INotify()
    notifier.startReading()
    testcase.addCleanup(notifier.loseConnection)
    d: Deferred = Deferred()

    def changed(ignored, path: FilePath, mask: int) -> None:
        name = os.fsdecode(path.basename())
        if d.called or not name.startswith(PARTIAL_PREFIX) or not name.endswith(HAVE_SUFFIX):
            return
        try:
            held = verified_bytes(path.path, block)
        except OSError:
            return
        if held >= size:
            d.callback(os.fsdecode(path.path)[:-len(HAVE_SUFFIX)])

    notifier.watch(FilePath(directory), mask=inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE,
                   callbacks=[changed])

    def timed_out(result, timeout):
        raise WaitTimeout(f"no partial file in {directory} reached {size} bytes"
                          f" within {timeout:g}s")

    return d.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)


class FileNodeTestCase(unittest.TestCase):
    """
    Starts nodes with any p2pshare options; otherwise the helpers of
    L{tests.test_twistd.TwistdTests}, borrowed rather than copied.
    """

    timeout = 60

    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    connected_to = base.TwistdTests.connected_to
    left = base.TwistdTests.left

    def start_node(self, name: str, share: str, port: Union[int, str] = 0,
                   peers: Sequence[NodeProcess] = (), state: Optional[str] = None,
                   options: Sequence[str] = ()) -> NodeProcess:
        """
        Spawn C{twistd -n p2pshare --name NAME --share SHARE} listening on
        127.0.0.1:PORT, dialling C{peers}, with C{--state STATE} if given
        and any further p2pshare C{options}.

        The node is stopped and reaped when the test ends.
        """
        extra = (["--state", state] if state is not None else []) + list(options)
        return base.TwistdTests.start_node(self, name, port, [p.port for p in peers], share,
                                           options=extra)

    def temp_dir(self) -> str:
        """
        A fresh directory outside trial's working directory, removed (with
        the large files in it) after every node has been stopped.
        """
        path = tempfile.mkdtemp(prefix="p2ptwisted-test-")
        self.addCleanup(shutil.rmtree, path, ignore_errors=True)
        return path

    async def in_step(self, node: NodeProcess, files: int, size: int, since: int = 0,
                      slack: int = 0) -> int:
        """
        Wait until C{node}'s "in step with peers" lines from line C{since}
        on add up to C{files} fetched files, and check they add up to
        exactly that many, of C{size} bytes in all: each missing file is
        fetched once, and nothing else is.  Returns the index of the line
        after the last one counted.

        A node may come into step more than once (first with the peer it
        dialled, then with those it learned of); each line counts the files
        fetched since the one before.
        """
        got = got_bytes = 0
        while True:
            match = await node.wait_for(IN_STEP, since, timeout=SYNC_TIMEOUT)
            got += int(match.group("n"))
            got_bytes += int(match.group("bytes"))
            since = next(i for i in range(since, len(node.lines))
                         if IN_STEP.search(node.lines[i])) + 1
            if got >= files:
                break
        self.assertEqual(got, files, f"{node.name} fetched other files\n{node.output()}")
        self.assertTrue(size <= got_bytes <= size + slack,
                        f"{node.name} received {got_bytes} bytes, not {size}"
                        f" (+ up to {slack})\n{node.output()}")
        return since

    def no_conflict_copies(self, *nodes: NodeProcess) -> None:
        for node in nodes:
            copies = [p for p in share_contents(node.share) if CONFLICT.search(p)]
            self.assertEqual(copies, [], f"conflict copies at {node.name}\n{node.output()}")


class SyncTests(FileNodeTestCase):
    """
    Nodes keep their shares in step, and C{--no-sync} and C{--mode
    send-only} opt out of taking peers' changes.
    """

    async def test_three_nodes_come_into_step(self) -> None:
        """
        A, B --peer A and C --peer B, started as a new user would (state in
        the share), each with files of its own (one in a subdirectory they
        all use), each end up with every file, byte-identical.
        """
        rng = random.Random(0xF11E5)
        shares: Dict[str, Dict[str, bytes]] = {}
        for name in "ABC":
            low = name.lower()
            shares[name] = {
                f"{low}-notes.txt": f"notes of {name}\n".encode() * rng.randrange(10, 100),
                # Larger than one DATA chunk and than a file held in memory.
                f"{low}-data.bin": rng.randbytes(200 * 1024 + rng.randrange(1000)),
                f"docs/{low}-readme.txt": rng.randbytes(rng.randrange(1, 20_000)),
            }
        everything = {path: data for files in shares.values() for path, data in files.items()}
        self.assertEqual(len(everything), 9)

        nodes = []
        for name in "ABC":
            share = os.path.abspath(self.mktemp())
            write_files(share, shares[name], age=60)
            node = self.start_node(name, share, peers=nodes[-1:])
            nodes.append(await self.started(node))

        for node in nodes:
            lacking = {p: d for p, d in everything.items() if p not in shares[node.name]}
            await self.in_step(node, len(lacking), sum(map(len, lacking.values())))

        for node in nodes:
            contents = share_contents(node.share)
            self.assertEqual(sorted(contents), sorted(everything),
                             f"share of {node.name}\n{node.output()}")
            for path, data in everything.items():
                self.assertTrue(contents[path] == data,
                                f"{path} at {node.name} differs from the original")

    async def test_both_ways_over_one_connection_edits_and_deletions(self) -> None:
        """
        B dials A, and A never dials B: over that one connection each gets
        the other's files; an edit on either side replaces the file on the
        other (the old version in its trash can, no conflict copy); a file
        deleted on B is deleted on A (into A's trash can).
        """
        a_files = {"a.txt": b"written by A\n" * 40, "notes/shared.txt": b"first draft\n"}
        b_files = {"b.txt": b"written by B\n" * 30}
        a_share = os.path.abspath(self.mktemp())
        b_share = os.path.abspath(self.mktemp())
        write_files(a_share, a_files, age=60)
        write_files(b_share, b_files, age=60)
        a = await self.started(self.start_node("A", a_share))
        b = await self.started(self.start_node("B", b_share, peers=[a]))
        a_state = os.path.join(a_share, RESERVED_PREFIX)
        b_state = os.path.join(b_share, RESERVED_PREFIX)

        a_mark = await self.in_step(a, 1, sum(map(len, b_files.values())))
        b_mark = await self.in_step(b, 2, sum(map(len, a_files.values())))
        everything = {**a_files, **b_files}
        self.assertEqual(share_contents(a_share), everything, a.output())
        self.assertEqual(share_contents(b_share), everything, b.output())

        # An edit on A replaces B's copy; B keeps the old one in its trash.
        edited = b"rewritten by A, and longer than before\n" * 50
        write_files(a_share, {"a.txt": edited})
        b_mark = await self.in_step(b, 1, len(edited), since=b_mark)
        self.assertEqual(share_contents(b_share)["a.txt"], edited, b.output())
        self.assertEqual(trashed(b_state, "a.txt"), [a_files["a.txt"]], b.output())

        # The other way: an edit on B replaces A's copy.
        draft = b"second draft, by B\n"
        write_files(b_share, {"notes/shared.txt": draft})
        a_mark = await self.in_step(a, 1, len(draft), since=a_mark)
        self.assertEqual(share_contents(a_share)["notes/shared.txt"], draft, a.output())
        self.assertEqual(trashed(a_state, "notes/shared.txt"), [a_files["notes/shared.txt"]],
                         a.output())

        # A deletion on B deletes A's copy, into A's trash can.
        os.remove(os.path.join(b_share, "b.txt"))
        await self.in_step(a, 0, 0, since=a_mark)
        self.assertNotIn("b.txt", share_contents(a_share), a.output())
        self.assertEqual(trashed(a_state, "b.txt"), [b_files["b.txt"]], a.output())

        expected = {"a.txt": edited, "notes/shared.txt": draft}
        self.assertEqual(share_contents(a_share), expected, a.output())
        self.assertEqual(share_contents(b_share), expected, b.output())
        self.no_conflict_copies(a, b)
        # All of it over the one connection B opened.
        at_a = a.matching(base.CONNECTED.format(name="B", id=b.node_id[:12]))
        at_b = b.matching(base.CONNECTED.format(name="A", id=a.node_id[:12]))
        self.assertEqual([m.group("direction") for m in at_a], ["inbound"], a.output())
        self.assertEqual([m.group("direction") for m in at_b], ["outbound"], b.output())
        self.assertEqual(a.matching(base.LEFT.format(name="B", id=b.node_id[:12])), [])
        self.assertEqual(b.matching(base.LEFT.format(name="A", id=a.node_id[:12])), [])

    async def test_send_only_nodes_take_nothing(self) -> None:
        """
        B (--no-sync) and D (--mode send-only) connect to A and hold its
        index but fetch none of it, while C (syncing) beside them fetches
        everything -- including B's and D's own files, which they still
        publish and serve, as A fetches them too.
        """
        files = {
            "one.txt": b"one\n",
            "two.bin": os.urandom(300 * 1024),
            # Large enough for a "fetched" line of its own.
            "sub/three.bin": os.urandom(2 * MiB),
        }
        own = {"B": {"b-own.txt": b"B publishes this\n"},
               "D": {"d-own.txt": b"D publishes this\n" * 3}}
        a_share = os.path.abspath(self.mktemp())
        write_files(a_share, files, age=60)
        a = await self.started(self.start_node("A", a_share))

        opted_out = []
        published: Dict[str, bytes] = {}
        mark = 0
        for name, options in (("B", ["--no-sync"]), ("D", ["--mode", "send-only"])):
            share = os.path.abspath(self.mktemp())
            write_files(share, own[name], age=60)
            node = await self.started(self.start_node(name, share, peers=[a], options=options))
            # It holds A's index: A's files, and what A took from the
            # send-only nodes before it.
            index = await node.wait_for(shares_line(a), timeout=SYNC_TIMEOUT)
            offered = {**files, **published}
            self.assertEqual((int(index.group("n")), int(index.group("bytes"))),
                             (len(offered), sum(map(len, offered.values()))), node.output())
            opted_out.append(node)
            # A takes what the send-only node publishes.
            mark = await self.in_step(a, 1, len(own[name][f"{name.lower()}-own.txt"]),
                                      since=mark)
            published.update(own[name])

        # Had B or D been syncing, they would have been done before C,
        # which joins later and must first connect and fetch everything.
        everything = {**files, **published}
        c_share = os.path.abspath(self.mktemp())
        c = await self.started(self.start_node("C", c_share, peers=[a]))
        await self.in_step(c, len(everything), sum(map(len, everything.values())))
        self.assertTrue(share_contents(c_share) == everything,
                        f"C's share differs\n{c.output()}")
        self.assertTrue(share_contents(a_share) == everything,
                        f"A's share differs\n{a.output()}")

        for node in opted_out:
            self.assertTrue(node.running, node.output())
            took = [m.string for m in node.matching(r"\bfetched\b|in step with peers")]
            self.assertEqual(took, [], f"{node.name} took peers' files\n{node.output()}")
            self.assertEqual(share_contents(node.share), own[node.name], node.output())


class LargeFileTests(FileNodeTestCase):
    """
    A 256 MiB file crosses from A to B in bounded memory.
    """

    SIZE = 256 * MiB
    PATH = "big.bin"

    def setUp(self) -> None:
        self.dir = self.temp_dir()
        self.a_share = os.path.join(self.dir, "a")
        os.makedirs(self.a_share)
        self.digest = write_random_file(os.path.join(self.a_share, self.PATH), self.SIZE)

    async def test_memory_stays_bounded(self) -> None:
        """
        Neither the sender nor the receiver of a 256 MiB file ever holds
        more than MEMORY_BOUND resident, and the copy is identical.
        """
        a = await self.started(self.start_node("A", self.a_share))
        b_share = os.path.join(self.dir, "b")
        b = await self.started(self.start_node("B", b_share, peers=[a]))
        index = await b.wait_for(shares_line(a), timeout=SYNC_TIMEOUT)
        self.assertEqual((int(index.group("n")), int(index.group("bytes"))), (1, self.SIZE))
        got = await b.wait_for(fetched_line(self.PATH, a), timeout=SYNC_TIMEOUT)
        self.assertEqual(int(got.group("size")), self.SIZE)
        await self.in_step(b, 1, self.SIZE)

        peaks = {node.name: peak_memory(node.transport.pid) for node in (a, b)}
        log.info("peak resident memory moving {size} MiB: {peaks}", size=self.SIZE // MiB,
                 peaks={n: f"{p / MiB:.1f} MiB" for n, p in peaks.items()})
        for name, peak in peaks.items():
            self.assertLess(
                peak, MEMORY_BOUND,
                f"node {name} peaked at {peak / MiB:.1f} MiB resident"
                f" (bound {MEMORY_BOUND / MiB:.0f} MiB) moving a {self.SIZE // MiB} MiB file;"
                f" all peaks: { {n: f'{p / MiB:.1f} MiB' for n, p in peaks.items()} }",
            )
        self.assertEqual(hash_file(os.path.join(b_share, self.PATH)), self.digest)


class ResumeTests(FileNodeTestCase):
    """
    A download cut off by the sender's death resumes where it stopped.
    """

    SIZE = 64 * MiB
    PATH = "movie.bin"

    if inotify is None:  # pragma: no cover
        skip = "needs inotify to see the partial file grow"
    elif shutil.which("ss") is None:  # pragma: no cover
        skip = "needs iproute2's ss to count the bytes a connection carried"

    def setUp(self) -> None:
        self.dir = self.temp_dir()
        self.a_share = os.path.join(self.dir, "a")
        self.a_state = os.path.join(self.dir, "a-state")
        os.makedirs(self.a_share)
        self.digest = write_random_file(os.path.join(self.a_share, self.PATH), self.SIZE)

    async def test_resume_after_sender_killed(self) -> None:
        """
        A (rate-capped, so the transfer takes seconds) is SIGKILLed once B's
        partial file holds a fifth of the file.  Restarted on the same port
        with the same share and state, A serves B the rest: B receives
        only the bytes it lacked (the kernel's count for its connection),
        and ends with an identical file and no partial file.
        """
        a_port = free_port()
        a = await self.started(self.start_node(
            "A", self.a_share, port=a_port, state=self.a_state, options=["--max-rate", "16M"]))
        b_share = os.path.join(self.dir, "b")
        os.makedirs(b_share)
        growing = partial_reaches(self, b_share, self.SIZE // 5, block_size(self.SIZE))
        b = await self.started(self.start_node("B", b_share, peers=[a]))
        partial = await growing

        mark = b.mark()
        self.assertTrue(a.send_signal("KILL"), a.output())
        reason = await a.wait_exit()
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.signal, 9, a.output())
        await self.left(b, a, since=mark)
        kept = verified_bytes(partial + HAVE_SUFFIX, block_size(self.SIZE))
        self.assertGreaterEqual(kept, self.SIZE // 5, b.output())
        self.assertLess(kept, self.SIZE, "A was not slow enough to be killed mid-transfer")
        self.assertFalse(os.path.exists(os.path.join(b_share, self.PATH)))

        mark = b.mark()
        a2 = await self.started(self.start_node(
            "A", self.a_share, port=a_port, state=self.a_state))
        self.assertEqual(a2.node_id, a.node_id, "a restarted node must keep its identity")
        got = await b.wait_for(fetched_line(self.PATH, a2), mark, timeout=SYNC_TIMEOUT)
        self.assertEqual(int(got.group("size")), self.SIZE)
        # One file fetched since B was last in step, of SIZE bytes in all
        # (what arrived before the kill and after the restart), and the
        # blocks on their way at the kill, fetched again.
        await self.in_step(b, 1, self.SIZE, slack=IN_FLIGHT)
        # B took from A2 the bytes it lacked (plus frames and TLS records),
        # not the whole file again.
        received = tcp_bytes_received(b.transport.pid)
        self.assertGreaterEqual(received, self.SIZE - kept, b.output(mark))
        self.assertLess(received, self.SIZE - kept + MiB,
                        f"B fetched {received} bytes for the {self.SIZE - kept} it lacked:"
                        f" it did not resume at byte {kept}\n{b.output(mark)}")

        self.assertEqual(hash_file(os.path.join(b_share, self.PATH)), self.digest)
        leftovers = [name for name in os.listdir(b_share) if name.startswith(PARTIAL_PREFIX)]
        self.assertEqual(leftovers, [], b.output())
