"""
The package metadata in pyproject.toml tells the truth: every package the
code imports is declared, and the Python it claims to run on is one every
dependency installs on.  (A user installing on an older Python would
otherwise get a resolver error about blake3, not about us.)
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import os
import re
import sys
import tomllib

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def dist_name(requirement: str) -> str:
    """
    The normalised distribution name of a requirement string.
    """
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(*dirs: str) -> set:
    """
    The top-level modules imported anywhere under C{dirs} (absolute
    imports only: relative ones are ours).
    """
    found = set()
    for top in dirs:
        for where, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if not name.endswith(".py"):
                    continue
                with open(os.path.join(where, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        found.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0:
                        found.add(node.module.split(".")[0])
    return found


def minimum(specifier: str) -> tuple:
    """
    The lowest version a C{>=X.Y} specifier allows, as a tuple.
    """
    m = re.search(r">=\s*(\d+)\.(\d+)", specifier or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class MetadataTests(SynchronousTestCase):
    def test_every_import_is_declared(self):
        """
        Each third-party package the node imports is a declared dependency
        of its own, not only something another dependency happens to pull
        in today.
        """
        declared = {dist_name(r) for r in project()["dependencies"]}
        owners = importlib.metadata.packages_distributions()
        ours = {"p2ptwisted", "__future__"}
        missing = {}
        for module in imported_modules("p2ptwisted", os.path.join("twisted", "plugins")):
            if module in sys.stdlib_module_names or module in ours:
                continue
            dists = {dist_name(d) for d in owners.get(module, [])} - {"p2ptwisted"}
            if not dists & declared:
                missing[module] = sorted(dists)
        self.assertEqual(missing, {}, "imported but not declared in pyproject.toml")

    def test_requires_python_is_true(self):
        """
        requires-python is no lower than what any dependency, as installed
        here, requires.
        """
        ours = minimum(project()["requires-python"])
        self.assertGreaterEqual(ours, (3, 11))
        for requirement in project()["dependencies"]:
            name = dist_name(requirement)
            theirs = minimum(importlib.metadata.metadata(name).get("Requires-Python"))
            self.assertGreaterEqual(ours, theirs, f"{name} needs Python {theirs}")


class PageFilesTests(SynchronousTestCase):
    def test_page_is_shipped(self):
        """
        Every file of the web page (p2ptwisted/web/static/) is package data:
        include-package-data is off, so a file no pattern names would be
        missing from the wheel, and the page broken for whoever installs it.
        """
        with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
            patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["p2ptwisted.web"]
        static = os.path.join(ROOT, "p2ptwisted", "web", "static")
        files = [f"static/{name}" for name in os.listdir(static)]
        self.assertIn("static/index.html", files)
        unshipped = [name for name in files
                     if not any(fnmatch.fnmatch(name, p) for p in patterns)]
        self.assertEqual(unshipped, [])
