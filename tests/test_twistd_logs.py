# -*- test-case-name: tests.test_twistd_logs -*-
"""
What an operator reads: the default output of two real C{twistd -n
p2pshare} nodes while one takes 1,000 files from the other.  twistd shows
every log level, so whatever the node logs is on the screen: a sync of a
thousand files must read as a few lines with counts, bytes and rates, not
a line per file, and Twisted's own factory chatter must not be there.
"""

from __future__ import annotations

import re
from typing import List

from . import test_twistd_sync as sync

#: Lines that say something per file: the paths the test writes.
FILE_NAMES = re.compile(r"\bd\d/f\d+\.txt\b")

#: Twisted's factory and port chatter, which says nothing to an operator.
CHATTER = re.compile(r"starting on \d+|Starting factory|Stopping factory|_Receiver starting")


def node_lines(lines: List[str]) -> List[str]:
    """
    The lines the node itself wrote, less twistd's own start and stop
    banners (what twistd says is the same for every plugin).
    """
    return [line for line in lines if "[twisted.scripts." not in line
            and "[twisted.internet.base#" not in line]


class SyncLogTests(sync.SyncTestCase):
    timeout = 120

    async def test_a_thousand_files_in_a_few_lines(self):
        """
        B fetches 1,000 files from A.  Each node says, in a handful of
        lines, who it met, what it shares or took (counts, bytes, rate) and
        what it served; no line is about one file; no factory chatter.
        """
        files = {f"d{i % 10}/f{i}.txt": b"%d\n" % i * 20 for i in range(1000)}
        a = self.node("A", files)
        b = self.node("B")
        await self.start(a)
        mark = a.mark()
        await self.start(b, [a])
        await self.converged([a, b], {b: 0}, timeout=60)
        served = await a.proc.wait_for(
            r"served (?P<files>\d+) files \((?P<bytes>\d+) bytes\) to B \(\w+\) at [\d.:]+"
            r" in [\d.]+s, [\d.]+ MiB/s$", mark, timeout=30)
        self.assertEqual(int(served["files"]), 1000)
        self.assertEqual(int(served["bytes"]), sum(len(data) for data in files.values()))
        for node in (a, b):
            await self.stop_node(node.proc)
        took = [m for m in b.proc.matching(sync.IN_STEP)]
        self.assertEqual(sum(int(m["files"]) for m in took), 1000)
        for node in (a, b):
            lines = node_lines(node.proc.lines)
            per_file = [line for line in lines if FILE_NAMES.search(line)]
            self.assertEqual(per_file, [], f"{node.name} logged lines about single files")
            chatter = [line for line in lines if CHATTER.search(line)]
            self.assertEqual(chatter, [], f"{node.name} logged Twisted's factory chatter")
            self.assertLessEqual(len(lines), 16, f"{node.name} said too much:\n"
                                 + node.proc.output())
