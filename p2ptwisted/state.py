# -*- test-case-name: tests.test_state -*-
"""
The lock on a node's state directory, which keeps two running nodes from
using the same identity by accident.

A node that restarts must be the same node (same id), and two nodes on one
machine must never be the same node: peers would take them for a
self-connection and the mesh would split.  So the identity lives in the
state directory (see L{p2ptwisted.identity}), and the directory is locked
for as long as the node runs.
"""

from __future__ import annotations

import errno
import fcntl
import os
from typing import Optional

import attrs

LOCK_FILE = "lock"


class StateError(Exception):
    """
    The state directory cannot be used; the message says what to do.
    """


@attrs.define
class StateLock:
    """
    An exclusive lock on a state directory, held while the node runs.

    C{flock} locks vanish with the process, so a crashed node never leaves a
    stale lock behind.
    """

    state_dir: str
    _fd: Optional[int] = None

    def acquire(self) -> None:
        path = os.path.join(self.state_dir, LOCK_FILE)
        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            # The cause first: twistd shows a daemon's parent only the
            # first ~65 characters.
            raise StateError(f"state directory unusable ({e.strerror}): {e.filename}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateError(
                    f"state directory in use by another node (pid {holder or 'unknown'}):"
                    f" {self.state_dir}; give each node its own --state (or its own --share)"
                ) from None
            raise StateError(f"cannot lock {path}: {e}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
