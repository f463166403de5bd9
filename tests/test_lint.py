"""
The code passes its own linters, as configured in pyproject.toml: ruff
(pycodestyle, pyflakes, bugbear) over everything, and mypy over the
package.  Both are in the C{test} extra, so the README's test command and
CI run them; a checkout without them skips these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        raise SkipTest(f"{name} is not installed (pip install -e '.[test]')")
    return found


class LintTests(TestCase):
    def check(self, argv):
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stdout[-6000:] + result.stderr[-2000:])

    def test_ruff(self):
        self.check([tool("ruff"), "check", "--no-cache", "."])

    def test_mypy(self):
        cache = os.path.abspath(self.mktemp())
        self.check([tool("mypy"), "--cache-dir", cache])
