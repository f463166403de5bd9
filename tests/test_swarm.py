"""
Block transfer between nodes (protocol version 3), in memory: blocks from
every source, local reuse of blocks, bad blocks, resume of a partial file
from its verified blocks.
"""

from __future__ import annotations

import os
import struct

from twisted.trial.unittest import SynchronousTestCase

from p2ptwisted import wire
from p2ptwisted.blockfile import HAVE_SUFFIX
from p2ptwisted.core.blocks import block_size
from p2ptwisted.wire_index import Have, encode_have

from .helpers import capture_logs
from .test_exchange import MiB, Mesh, content, partials, read_file, record, tap, tree


def received(node) -> int:
    return node.folder.fetcher.bytes_received


class SwarmTests(SynchronousTestCase):
    def setUp(self):
        self.logs = capture_logs(self)
        self.mesh = Mesh(self)

    def spread(self, data, *names):
        """
        Nodes C{names}; the first makes big.bin, the others take it from it.
        """
        mesh = self.mesh
        nodes = [mesh.node(n) for n in names]
        mesh.change(nodes[0], "big.bin", data)
        for other in nodes[1:]:
            mesh.link(other, nodes[0])
        mesh.settle(*nodes)
        return nodes

    def test_blocks_from_every_source(self):
        """
        Three nodes hold a file; a fourth joins them all: it asks blocks of
        each of the three, its log says so, and the file is whole.
        """
        data = content(1, 6 * MiB)
        a, b, c = self.spread(data, "a", "b", "c")
        d = self.mesh.node("d")
        gets = {}
        for source in (a, b, c):
            _, _, pump = self.mesh.link(d, source)
            gets[source.display_name] = record(pump.clientIO, wire.GET)
        self.mesh.settle(a, b, c, d)
        self.assertEqual(read_file(d.share_dir, "big.bin"), data)
        for name, seen in gets.items():
            self.assertTrue(seen, f"no block asked of {name}")
            self.assertTrue(all(g.length and g.block for g in seen))
        line = [x for x in self.logs() if x.startswith("fetched big.bin")][-1]
        for name in ("a", "b", "c"):
            self.assertRegex(line, f"{name} \\([0-9a-f]{{12}}\\) .*\\(\\d+ blocks\\)")
        self.assertEqual(sum(len(s) for s in gets.values()), 6 * MiB // block_size(6 * MiB))
        self.assertEqual(partials(d), set())

    def test_a_source_whose_index_comes_later_is_used(self):
        """
        D starts fetching from A alone; C, which has the file too, connects
        later: its index makes it a source of the download under way.
        """
        data = content(9, 8 * MiB)
        a, c = self.spread(data, "a", "c")
        d = self.mesh.node("d")
        self.mesh.link(d, a)
        self.mesh.run(lambda: 0 < received(d) < MiB)
        _, _, pump = self.mesh.link(d, c)
        from_c = record(pump.clientIO, wire.GET)
        self.mesh.settle(a, c, d)
        self.assertEqual(read_file(d.share_dir, "big.bin"), data)
        self.assertTrue(from_c, "C never asked")

    def test_edit_in_the_middle_moves_about_the_edit(self):
        """
        A block-sized edit in the middle of a big file: the other node takes
        every other block from its old copy and receives about the edit.
        """
        data = bytearray(content(2, 8 * MiB))
        a, b = self.spread(bytes(data), "a", "b")
        before = received(b)
        bsize = block_size(len(data))
        middle = 4 * MiB + 1000  # straddles two blocks
        data[middle:middle + bsize] = content(3, bsize)
        self.mesh.change(a, "big.bin", bytes(data))
        self.mesh.settle(a, b)
        self.assertEqual(read_file(b.share_dir, "big.bin"), bytes(data))
        self.assertEqual(received(b) - before, 2 * bsize)
        self.assertEqual(b.folder.fetcher.bytes_reused, len(data) - 2 * bsize)

    def test_a_file_changed_at_its_source_mid_download(self):
        """
        A edits the end of the file B is fetching: B's download of the old
        version ends (A no longer has it), B fetches the new one taking the
        blocks it had verified of the old one from its partial file, and
        no partial file of the old one is left behind.
        """
        data = bytearray(content(12, 8 * MiB))
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        mesh.change(a, "big.bin", bytes(data))
        mesh.link(b, a)
        mesh.run(lambda: received(b) >= 4 * MiB)
        data[-1000:] = content(13, 1000)
        mesh.change(a, "big.bin", bytes(data))
        mesh.settle(a, b)
        self.assertEqual(read_file(b.share_dir, "big.bin"), bytes(data))
        self.assertEqual(partials(b), set())
        # Once each, but for the blocks on their way when A changed it.
        self.assertLessEqual(received(b), len(data) + 8 * block_size(len(data)))
        self.assertTrue([x for x in self.logs() if x.startswith("resuming big.bin")])

    def test_a_file_changed_at_its_source_then_deleted(self):
        """
        A edits then deletes the file B is fetching: nothing of the partial
        file is left behind.
        """
        data = bytearray(content(14, 8 * MiB))
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        mesh.change(a, "big.bin", bytes(data))
        mesh.link(b, a)
        mesh.run(lambda: received(b) >= 4 * MiB)
        mesh.change(a, "big.bin", None)
        mesh.settle(a, b)
        self.assertFalse(os.path.exists(os.path.join(b.share_dir, "big.bin")))
        self.assertEqual(partials(b), set())

    def test_copy_of_a_big_file_moves_no_bytes(self):
        """
        A copy, under another name, of a file both nodes have: its blocks
        are taken from the local file, not the network.
        """
        data = content(4, 3 * MiB)
        a, b = self.spread(data, "a", "b")
        before = received(b)
        self.mesh.change(a, "copy.bin", data + b"tail")
        self.mesh.settle(a, b)
        self.assertEqual(read_file(b.share_dir, "copy.bin"), data + b"tail")
        self.assertEqual(received(b) - before, len(data + b"tail") % block_size(len(data) + 4))

    def test_flipped_bit_costs_one_block_from_another_source(self):
        """
        One bit flipped between A and the downloader: that block fails its
        digest, is fetched again from C, and the file is whole; what it
        cost is that one block.
        """
        data = content(5, 4 * MiB)
        a, c = self.spread(data, "a", "c")
        b = self.mesh.node("b")
        _, _, pump = self.mesh.link(b, a)
        flipped = []

        def flip(frame):
            if frame[0] == wire.DATA and not flipped and len(frame) > 2000:
                frame = bytearray(frame)
                frame[1500] ^= 0x10
                flipped.append(True)
                return bytes(frame)
            return frame

        tap(pump.serverIO, flip)
        self.mesh.link(b, c)
        self.mesh.settle(a, b, c)
        self.assertEqual(read_file(b.share_dir, "big.bin"), data)
        self.assertEqual(flipped, [True])
        [bad] = [x for x in self.logs() if "sent a bad copy of block" in x]
        self.assertIn("digest", bad)
        self.assertEqual(received(b), len(data) + block_size(len(data)))

    def test_a_relay_that_keeps_flipping_bits_is_dropped(self):
        """
        A source whose every block is bad: benched, then dropped after
        DROP_AFTER bad copies, and the file comes from the other source.
        """
        data = content(6, 4 * MiB)
        a, c = self.spread(data, "a", "c")
        b = self.mesh.node("b")
        _, _, pump = self.mesh.link(b, a)

        def flip(frame):
            if frame[0] == wire.DATA and len(frame) > 2000:
                frame = bytearray(frame)
                frame[1500] ^= 0x01
            return bytes(frame)

        tap(pump.serverIO, flip)
        self.mesh.run(lambda: any("sent a bad copy of block" in x for x in self.logs()))
        self.mesh.link(b, c)
        self.mesh.settle(b, c)
        self.assertEqual(read_file(b.share_dir, "big.bin"), data)

    def test_interrupted_download_keeps_its_verified_blocks(self):
        """
        The only source goes away mid-file: the partial file and its record
        of verified blocks stay; when it is back, only the missing blocks
        are fetched.
        """
        data = content(7, 8 * MiB)
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        mesh.change(a, "big.bin", data)
        _, _, pump = mesh.link(b, a)
        mesh.run(lambda: received(b) >= 3 * MiB)
        mesh.cut(pump)
        mesh.run(lambda: not b.connections)
        kept = partials(b)
        self.assertEqual(len(kept), 2)
        self.assertTrue(any(n.endswith(HAVE_SUFFIX) for n in kept))
        got = received(b)
        mesh.link(b, a)
        mesh.settle(a, b, timeout=120)
        self.assertEqual(read_file(b.share_dir, "big.bin"), data)
        bsize = block_size(len(data))
        # What was verified before the cut is not asked again; at most the
        # blocks in flight at the cut are.
        self.assertLessEqual(received(b), len(data) + (got % bsize) + 8 * bsize)
        self.assertLess(received(b) - got, len(data) - 2 * MiB)
        self.assertEqual(partials(b), set())

    def test_version_2_peer_gets_a_stream(self):
        """
        A peer that speaks only version 2 is sent no block lists and asked
        no blocks: the file moves as one stream.
        """
        self.patch(wire, "SUPPORTED_VERSIONS", (2,))
        data = content(8, 2 * MiB)
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        mesh.change(a, "big.bin", data)
        _, _, pump = mesh.link(b, a)
        gets = record(pump.clientIO, wire.GET)
        mesh.settle(a, b)
        self.assertEqual(tree(b.share_dir), tree(a.share_dir))
        self.assertEqual([(g.path, g.length) for g in gets], [("big.bin", 0)])
        self.assertEqual(b.folder.store.remote_for("big.bin")[a.node_id].blocks, b"")
        self.assertTrue(os.path.exists(os.path.join(b.share_dir, "big.bin")))

    def test_have_on_a_version_2_connection_is_an_unknown_type(self):
        """
        HAVE is a type version 3 adds: a peer that sends it on a connection
        that negotiated version 2 is dropped, as for any unknown type.
        """
        self.patch(wire, "SUPPORTED_VERSIONS", (2,))
        mesh = self.mesh
        a, b = mesh.node("a"), mesh.node("b")
        client, server, _ = mesh.link(b, a)
        mesh.settle(a, b)
        frame = encode_have(Have(path="x.bin", hash="ab" * 32, blocks=frozenset({1})))
        server.dataReceived(struct.pack("!I", len(frame)) + frame)
        mesh.run(lambda: not a.connections)
        self.assertTrue(any("unknown frame type 0x25" in line for line in self.logs()))

