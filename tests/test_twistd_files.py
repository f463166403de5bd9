# -*- test-case-name: tests.test_twistd_files -*-
"""
End-to-end tests of file sharing: real C{twistd -n p2pshare} processes on
127.0.0.1 keeping their shares in step, fetching a large file in little
memory, resuming a download after the sender is killed, and leaving the
share alone under C{--no-sync}.

The process plumbing (L{NodeProcess}, the twistd command line, waiting for
log lines with bounded timeouts, stopping and reaping children) comes from
L{tests.test_twistd}.  As there, nothing sleeps: every wait is for a log
line or a process exit, and is bounded by a timeout.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from typing import Dict, Optional, Sequence, Union

from blake3 import blake3
from twisted.internet.error import ProcessTerminated
from twisted.logger import Logger
from twisted.trial import unittest

# The module, not the class: trial collects every TestCase in this module's
# namespace, and importing TwistdTests by name would run its tests again.
from . import test_twistd as base
from .test_twistd import NodeProcess, free_port

MiB = 1024 * 1024

log = Logger()

#: The name of a node's default state directory inside its share, and the
#: prefix of every name a node reserves there (partial downloads).
RESERVED_PREFIX = ".p2pshare"
PARTIAL_PREFIX = RESERVED_PREFIX + "-part-"

#: The most memory (peak resident set, VmHWM) a node may use while sending
#: or receiving a file of any size: the project's target.
MEMORY_BOUND = 100 * MiB

#: Seconds for a share to come into step, or a large file to arrive.
SYNC_TIMEOUT = 20.0

# Log lines, as written by p2ptwisted (files.py and node.py).
IN_STEP = re.compile(
    r"in step with peers: got (?P<n>\d+) files \((?P<bytes>\d+) bytes\) in [\d.]+s$"
)
SCANNED = re.compile(r"share scanned: (?P<total>\d+) files, ")


def peer_text(node: NodeProcess) -> str:
    """
    How C{node} is named in its peers' log lines: "NAME (ID...) at HOST:PORT".
    """
    return rf"{re.escape(node.name)} \({node.node_id[:12]}\) at \S+"


def got_line(path: str, source: NodeProcess) -> str:
    return (
        rf"got {re.escape(path)} \((?P<size>\d+) bytes\) from {peer_text(source)}"
        rf"(?:, resumed at byte (?P<resumed>\d+))?, verified"
    )


def write_files(root: str, files: Dict[str, bytes]) -> None:
    for path, data in files.items():
        full = os.path.join(root, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def share_contents(root: str) -> Dict[str, bytes]:
    """
    Every file under C{root} but the node's state directory, by relative
    path.  Partial downloads are included: none should be left behind.
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


def write_random_file(path: str, size: int) -> str:
    """
    Write C{size} random bytes to C{path}, 1 MiB at a time; return their
    BLAKE3 hex digest.
    """
    hasher = blake3()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            hasher.update(block)
            f.write(block)
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


class FileNodeTestCase(unittest.TestCase):
    """
    Starts nodes with any p2pshare options; otherwise the helpers of
    L{tests.test_twistd.TwistdTests}, borrowed rather than copied.
    """

    timeout = 60

    started = base.TwistdTests.started
    stop_node = base.TwistdTests.stop_node
    connected_to = base.TwistdTests.connected_to

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

    async def scanned(self, node: NodeProcess, files: int) -> None:
        """
        Wait until C{node} has scanned its share, and check what it found.
        """
        match = await node.wait_for(SCANNED, timeout=SYNC_TIMEOUT)
        self.assertEqual(int(match.group("total")), files, node.output())

    async def in_step(self, node: NodeProcess, files: int, size: int) -> None:
        """
        Wait until C{node}'s "in step with peers" lines add up to C{files}
        files, and check they add up to exactly that many, of C{size} bytes
        in all: each missing file is fetched once, and nothing else is.

        A node may come into step more than once (first with the peer it
        dialled, then with those it learned of); each line counts the files
        fetched since the one before.
        """
        got = got_bytes = 0
        since = 0
        while got < files:
            match = await node.wait_for(IN_STEP, since, timeout=SYNC_TIMEOUT)
            got += int(match.group("n"))
            got_bytes += int(match.group("bytes"))
            since = next(i for i in range(since, len(node.lines))
                         if IN_STEP.search(node.lines[i])) + 1
        self.assertEqual((got, got_bytes), (files, size),
                         f"{node.name} fetched other than what it lacked\n{node.output()}")


class SyncTests(FileNodeTestCase):
    """
    Nodes keep their shares in step, and C{--no-sync} opts out.
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
                # Larger than one DATA chunk: goes through a partial file.
                f"{low}-data.bin": rng.randbytes(200 * 1024 + rng.randrange(1000)),
                f"docs/{low}-readme.txt": rng.randbytes(rng.randrange(1, 20_000)),
            }
        everything = {path: data for files in shares.values() for path, data in files.items()}
        self.assertEqual(len(everything), 9)

        nodes = []
        for name in "ABC":
            share = os.path.abspath(self.mktemp())
            write_files(share, shares[name])
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

    async def test_no_sync_fetches_nothing(self) -> None:
        """
        B, started with --no-sync, connects to A and hears its catalog but
        fetches none of it, while C (syncing) beside it fetches everything.
        """
        files = {
            "one.txt": b"one\n",
            "two.bin": os.urandom(300 * 1024),
            # Large enough for a "got" line of its own.
            "sub/three.bin": os.urandom(2 * MiB),
        }
        a_share = os.path.abspath(self.mktemp())
        write_files(a_share, files)
        a = await self.started(self.start_node("A", a_share))
        await self.scanned(a, len(files))

        b_share = os.path.abspath(self.mktemp())
        b = await self.started(self.start_node("B", b_share, peers=[a], options=["--no-sync"]))
        await self.connected_to(b, a)
        catalog = await b.wait_for(rf"{peer_text(a)} shares (?P<n>\d+) files$")
        self.assertEqual(int(catalog.group("n")), len(files), b.output())

        # Had B been syncing, it would have been done before C, which joins
        # later and must first connect and fetch everything.
        c_share = os.path.abspath(self.mktemp())
        c = await self.started(self.start_node("C", c_share, peers=[a]))
        await self.in_step(c, len(files), sum(map(len, files.values())))
        self.assertTrue(share_contents(c_share) == files,
                        f"C's share differs from A's\n{c.output()}")

        self.assertTrue(b.running, b.output())
        fetched = [m.string for m in b.matching(r" got |\bfetching\b|\bresuming\b")]
        self.assertEqual(fetched, [], f"B fetched under --no-sync\n{b.output()}")
        self.assertEqual(share_contents(b_share), {}, b.output())


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
        await self.scanned(a, 1)
        b_share = os.path.join(self.dir, "b")
        b = await self.started(self.start_node("B", b_share, peers=[a]))
        got = await b.wait_for(got_line(self.PATH, a), timeout=SYNC_TIMEOUT)
        self.assertEqual(int(got.group("size")), self.SIZE)

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

    def setUp(self) -> None:
        self.dir = self.temp_dir()
        self.a_share = os.path.join(self.dir, "a")
        self.a_state = os.path.join(self.dir, "a-state")
        os.makedirs(self.a_share)
        self.digest = write_random_file(os.path.join(self.a_share, self.PATH), self.SIZE)

    async def test_resume_after_sender_killed(self) -> None:
        """
        A (rate-capped, so the transfer takes seconds) is SIGKILLed while B
        is a fifth of the way through its file.  Restarted on the same port
        with the same share and state, A serves B the rest: B resumes at
        the byte it had reached, and ends with an identical file and no
        partial file.
        """
        a_port = free_port()
        a = await self.started(self.start_node(
            "A", self.a_share, port=a_port, state=self.a_state, options=["--max-rate", "16M"]))
        await self.scanned(a, 1)
        b_share = os.path.join(self.dir, "b")
        b = await self.started(self.start_node("B", b_share, peers=[a]))

        progress = await b.wait_for(
            rf"{re.escape(self.PATH)}: (?P<percent>[2-9]\d|100)% \((?P<done>\d+) of"
            rf" {self.SIZE} bytes\) from {peer_text(a)}$",
            timeout=SYNC_TIMEOUT,
        )
        self.assertLess(int(progress.group("done")), self.SIZE,
                        "A was not slow enough to be killed mid-transfer")
        mark = b.mark()
        self.assertTrue(a.send_signal("KILL"), a.output())
        reason = await a.wait_exit()
        self.assertIsInstance(reason, ProcessTerminated)
        self.assertEqual(reason.signal, 9, a.output())
        interrupted = await b.wait_for(
            rf"fetching {re.escape(self.PATH)} interrupted \(.*\); (?P<kept>\d+) bytes kept",
            mark,
        )
        kept = int(interrupted.group("kept"))
        self.assertGreaterEqual(kept, int(progress.group("done")), b.output())
        self.assertLess(kept, self.SIZE, b.output())

        mark = b.mark()
        a2 = await self.started(self.start_node(
            "A", self.a_share, port=a_port, state=self.a_state))
        self.assertEqual(a2.node_id, a.node_id, "a restarted node must keep its identity")
        resuming = await b.wait_for(
            rf"resuming {re.escape(self.PATH)} from {peer_text(a2)}"
            rf" at byte (?P<offset>\d+) of {self.SIZE}$",
            mark, timeout=SYNC_TIMEOUT,
        )
        offset = int(resuming.group("offset"))
        self.assertGreater(offset, 0, b.output())
        self.assertEqual(offset, kept, f"B resumed elsewhere than it stopped\n{b.output()}")
        got = await b.wait_for(got_line(self.PATH, a2), mark, timeout=SYNC_TIMEOUT)
        self.assertEqual(int(got.group("size")), self.SIZE)
        self.assertEqual(got.group("resumed"), str(offset), b.output())
        self.assertEqual(len(b.matching(rf"resuming {re.escape(self.PATH)} ", mark)), 1,
                         b.output(mark))

        self.assertEqual(hash_file(os.path.join(b_share, self.PATH)), self.digest)
        leftovers = [name for name in os.listdir(b_share) if name.startswith(PARTIAL_PREFIX)]
        self.assertEqual(leftovers, [], b.output())
