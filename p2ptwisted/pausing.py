# -*- test-case-name: tests.test_web_api -*-
"""
The operator's pause of a folder (the web API's pause and resume), a part
of L{p2ptwisted.sync.FolderSync} kept apart so that class stays readable.

Paused, the folder plans and applies nothing from peers (what is in flight
finishes) and does not announce its own changes; scanning, serving and the
connections go on.  Resuming announces what changed meanwhile and plans.
"""

from __future__ import annotations

from typing import Callable, List


class Pausable:
    # (set by FolderSync, the class this is a part of)
    announce: Callable[[], None]
    kick: Callable[[], None]
    observers: List[Callable[[], None]]

    paused = False

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.announce()
        self.kick()

    def _scanned(self, made: int) -> None:
        """
        A scan recorded C{made} changes of ours: announce them (unless
        paused), and plan.
        """
        if made:
            self._announce()
        self.kick()

    def _announce(self) -> None:
        """
        Tell peers our index has news, unless paused (resuming does).
        """
        if not self.paused:
            self.announce()

    def held(self) -> bool:
        """
        Whether planning must wait: paused.  (Waiters on the folder still
        hear that something happened, and look again.)
        """
        if self.paused:
            for observer in list(self.observers):
                observer()
        return self.paused
