# -*- test-case-name: tests.test_sim -*-
"""
The simulator's file system: a dictionary of paths, and a trash can.

It keeps only what sync cares about (kind, content, mtime, permission
bits); content is a string that doubles as its hash.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import attrs

from p2ptwisted.core.index import DIR, FILE, Entry, Observed


@attrs.frozen
class Item:
    kind: str
    content: str = ""
    mtime_ns: int = 0
    perms: int = 0o644

    def observed(self, path: str) -> Observed:
        if self.kind == DIR:
            return Observed(path, DIR, 0, self.mtime_ns, self.perms)
        return Observed(path, FILE, len(self.content), self.mtime_ns, self.perms, self.content)

    def holds(self, entry: Optional[Entry]) -> bool:
        """
        Whether this item is what C{entry} says (C{None} or a tombstone:
        nothing).
        """
        if entry is None or entry.deleted:
            return False
        return self.observed(entry.path).matches(entry)


@attrs.define
class SimFS:
    """
    A share on a simulated disk.
    """

    items: Dict[str, Item] = attrs.field(factory=dict)
    trash: List[Tuple[str, Item]] = attrs.field(factory=list)

    def holds(self, path: str, entry: Optional[Entry]) -> bool:
        """
        Check before replace: is the disk at C{path} still what the index
        said?
        """
        item = self.items.get(path)
        if entry is None or entry.deleted:
            return item is None
        return item is not None and item.holds(entry)

    def children(self, path: str) -> List[str]:
        prefix = path + "/"
        return [p for p in self.items if p.startswith(prefix)]

    def to_trash(self, path: str) -> None:
        item = self.items.pop(path)
        if item.kind == FILE:
            self.trash.append((path, item))

    def make_parents(self, path: str) -> Optional[List[str]]:
        """
        Create the directories above C{path}; C{None} if a file is in the
        way (the caller retries later), else the directories made.
        """
        made = []
        parts = path.split("/")[:-1]
        for i in range(len(parts)):
            p = "/".join(parts[: i + 1])
            item = self.items.get(p)
            if item is None:
                self.items[p] = Item(DIR, perms=0o755)
                made.append(p)
            elif item.kind != DIR:
                return None
        return made

    def find_content(self, content: str) -> Optional[str]:
        for path, item in self.items.items():
            if item.kind == FILE and item.content == content:
                return path
        return None

    def tree(self) -> Dict[str, tuple]:
        """
        What two converged nodes must agree on.
        """
        return {p: (i.kind, i.content, i.perms, i.mtime_ns if i.kind == FILE else 0)
                for p, i in self.items.items()}
