# -*- test-case-name: tests.test_ignore -*-
"""
Ignore patterns: C{.p2pignore} at the share root, in gitignore syntax.

An ignored path is neither announced to peers nor touched when peers
change it; the file C{.p2pignore} itself is always ignored (each node has
its own, as Syncthing's C{.stignore}).  Matching is gitignore's, through
C{pathspec}'s L{GitIgnoreSpec} (the same rules as C{git}, including
C{dir/} for directories, C{/anchored}, C{**} and C{!negation}), so users
can copy patterns they already know.

Pure: the shell reads the file and passes its text.
"""

from __future__ import annotations

from typing import Optional

import attrs
from pathspec import GitIgnoreSpec

#: The ignore file's name, at the share root.
IGNORE_FILE = ".p2pignore"

#: The largest ignore file read (a pattern file this large is a mistake).
MAX_IGNORE_BYTES = 1024 * 1024


class IgnoreError(ValueError):
    """
    The ignore file cannot be used; the message names the line.
    """


@attrs.frozen
class IgnoreRules:
    """
    The patterns of one C{.p2pignore}.
    """

    spec: Optional[GitIgnoreSpec] = None
    lines: int = 0

    @classmethod
    def parse(cls, text: str) -> "IgnoreRules":
        """
        @raise IgnoreError: if the text is too large or a line is not a
            valid pattern.
        """
        if len(text.encode("utf-8", "surrogateescape")) > MAX_IGNORE_BYTES:
            raise IgnoreError(f"{IGNORE_FILE} is larger than {MAX_IGNORE_BYTES} bytes")
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            try:
                GitIgnoreSpec.from_lines([line])
            except Exception as e:  # pathspec raises several kinds
                raise IgnoreError(f"{IGNORE_FILE} line {number}: {e}") from None
        patterns = [line for line in lines if line.strip() and not line.startswith("#")]
        return cls(spec=GitIgnoreSpec.from_lines(lines) if patterns else None,
                   lines=len(patterns))

    def ignored(self, path: str, is_dir: bool = False) -> bool:
        """
        Whether C{path} (relative, C{/}-separated) is ignored, or lies under
        an ignored directory.
        """
        if path == IGNORE_FILE:
            return True
        if self.spec is None:
            return False
        if self.spec.match_file(path + "/" if is_dir else path):
            return True
        # A path under an ignored directory is ignored too, whatever its
        # own name (git never looks inside an excluded directory).
        parts = path.split("/")
        for i in range(1, len(parts)):
            if self.spec.match_file("/".join(parts[:i]) + "/"):
                return True
        return False
