# -*- test-case-name: tests.test_state -*-
"""
The node's state directory: its identity and the lock that keeps two
running nodes from using the same identity by accident.

A node that restarts must be the same node (same id), and two nodes on one
machine must never be the same node: peers would take them for a
self-connection and the mesh would split.  So the id lives in the state
directory, and the directory is locked for as long as the node runs.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from typing import Optional

import attrs

from p2ptwisted.wire import NODE_ID_BYTES

NODE_ID_FILE = "node_id"
LOCK_FILE = "lock"


class StateError(Exception):
    """
    The state directory cannot be used; the message says what to do.
    """


def load_or_create_node_id(state_dir: str) -> str:
    """
    Return this node's id (64 lowercase hex digits), creating it on first use.

    The id is written to a temporary file and renamed into place, so a crash
    never leaves a half-written id behind.
    """
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(state_dir, NODE_ID_FILE)
    try:
        with open(path, "r", encoding="ascii") as f:
            node_id = f.read().strip()
    except FileNotFoundError:
        node_id = secrets.token_hex(NODE_ID_BYTES)
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(node_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return node_id
    except (OSError, UnicodeDecodeError) as e:
        raise StateError(f"cannot read node id from {path}: {e}") from None
    if len(node_id) != 2 * NODE_ID_BYTES or not all(c in "0123456789abcdef" for c in node_id):
        raise StateError(
            f"{path} does not hold a node id; move it away to get a new identity"
        )
    return node_id


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
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.state_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateError(
                    f"state directory {self.state_dir} is in use by another node"
                    f" (pid {holder or 'unknown'}); give each node its own --state"
                    " (or its own --share)"
                ) from None
            raise StateError(f"cannot lock {path}: {e}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
