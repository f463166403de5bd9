"""
Adversarial suite, family "framing" (threats.md): lengths over the limit,
empty frames, unknown types, malformed bodies, messages out of order,
frames dripped slowly -- each against a TLS node, each followed by the
invariant check in L{tests.adversary}.
"""

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from p2ptwisted import wire

from .adversary import WAIT, Target


class FramingTests(TestCase):
    timeout = 60

    async def dropped_after(self, payload: bytes, pattern: str, hello: bool = False):
        target = await Target.start(self)
        before = target.baseline()
        attacker = await target.attack()
        if hello:
            attacker.hello()
        attacker.send(payload)
        await attacker.lost.addTimeout(WAIT, reactor)
        await target.check(self, before, attacker, lines=1, pattern=pattern)

    async def test_length_over_limit(self):
        """
        A declared length over the frame limit is refused before any body.
        """
        await self.dropped_after((wire.MAX_FRAME + 1).to_bytes(4, "big"), r"exceeds")

    async def test_empty_frame(self):
        await self.dropped_after(b"\x00\x00\x00\x00", r"empty frame")

    async def test_unknown_type_after_hello(self):
        await self.dropped_after(b"\x00\x00\x00\x02\x55\x00", r"unknown|type", hello=True)
