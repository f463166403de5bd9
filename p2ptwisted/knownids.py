# -*- test-case-name: tests.test_identity -*-
"""
The node ids this node has met, kept in the state directory so that the
"first contact" line is logged once per node, not once per connection or
per restart.
"""

from __future__ import annotations

import os
from typing import Set

from twisted.logger import Logger

from p2ptwisted.identity import parse_id

KNOWN_IDS_FILE = "known-ids"

#: Ids remembered at most: a stranger making up ids must not grow the file
#: without bound.  Beyond it, new ids are still logged, just not remembered.
MAX_KNOWN_IDS = 10_000


class KnownIds:
    """
    A set of ids backed by an append-only file of one hex id per line.
    """

    log = Logger()

    def __init__(self, state_dir: str, limit: int = MAX_KNOWN_IDS):
        self.path = os.path.join(state_dir, KNOWN_IDS_FILE)
        self.limit = limit
        self.ids: Set[str] = set()

    def load(self) -> None:
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                for line in f:
                    try:
                        self.ids.add(parse_id(line))
                    except ValueError:
                        pass  # a torn last line after a crash
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            # Only a record of who we met: start without it rather than not at all.
            self.log.warn("cannot read known node ids from {path}: {error}",
                          path=self.path, error=e)

    def add(self, node_id: str) -> bool:
        """
        Remember C{node_id}; C{True} if it is new.
        """
        if node_id in self.ids:
            return False
        if len(self.ids) >= self.limit:
            return True
        self.ids.add(node_id)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, node_id.encode("ascii") + b"\n")
            finally:
                os.close(fd)
        except OSError as e:
            self.log.warn("cannot record known node ids in {path}: {error}",
                          path=self.path, error=e)
        return True
