"""
docs/protocol.md and the code agree on every number the spec states: the
frame type bytes of section 2.1 and every constant in the table of
section 19, read from the document and compared with the module it names.
Someone wrote a compatible peer from the spec alone; a constant changed in
the code but not in the spec (or the reverse) would break that peer
silently.  (A mutation run over wire.py found the suite pinned none of
these values.)
"""

from __future__ import annotations

import ast
import importlib
import os
import re
from typing import Iterator, Tuple

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "docs", "protocol.md")

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")


def section(title: str) -> str:
    with open(SPEC, encoding="utf-8") as f:
        text = f.read()
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:] if end < 0 else text[start:end]


def table_rows(text: str) -> Iterator[list]:
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            yield [cell.strip() for cell in line.strip("|").split(" | ")]


def spec_value(cell: str):
    """
    The value a cell of the constants table states: a Python literal in
    backquotes, a power of two less one (2⁶³ − 1), or a number (units and
    remarks after it are words for the reader).
    """
    literal = re.match(r"`([^`]+)`", cell)
    if literal:
        return ast.literal_eval(literal.group(1))
    power = re.match(r"2([⁰¹²³⁴⁵⁶⁷⁸⁹]+) − 1\b", cell)
    if power:
        return 2 ** int(power.group(1).translate(_SUPERSCRIPT)) - 1
    number = re.match(r"(\d+(?:\.\d+)?)\b", cell)
    if number is None:
        raise ValueError(f"no value in {cell!r}")
    text = number.group(1)
    return float(text) if "." in text else int(text)


def constants() -> Iterator[Tuple[str, object, str, str]]:
    """
    (name in the code, value the spec states, module, name in the table)
    for each row of section 19.
    """
    for names, values, where, _ in table_rows(section("## 19. Constants")):
        if names == "Constant":
            continue
        module = re.match(r"`([\w/]+)\.py`", where)
        alias = re.search(r"\(`(\w+)`\)", where)
        # A row may name several constants, with as many values, in order.
        split_names, split_values = names.split(", "), values.split(", ")
        if len(split_names) == 1:
            split_values = [values]
        if len(split_names) != len(split_values):
            raise ValueError(f"row {names}: {len(split_values)} values")
        for name, value in zip(split_names, split_values):
            yield (alias.group(1) if alias else name.strip("`"), spec_value(value),
                   "p2ptwisted." + module.group(1).replace("/", "."), name)


class SpecConstantsTests(SynchronousTestCase):
    def test_section_19_matches_the_code(self):
        wrong = []
        checked = 0
        for attribute, stated, module_name, row in constants():
            module = importlib.import_module(module_name)
            if not hasattr(module, attribute):
                wrong.append(f"{row}: {module_name} has no {attribute}")
                continue
            actual = getattr(module, attribute)
            checked += 1
            if actual != stated:
                wrong.append(f"{row}: the spec says {stated!r}, {module_name} has {actual!r}")
        self.assertEqual(wrong, [])
        self.assertGreater(checked, 50)  # the table was read, not skipped

    def test_frame_types_match_the_code(self):
        from p2ptwisted import wire, wire_index

        rows = [r for r in table_rows(section("### 2.1 Types defined in version 2"))
                if r[0].startswith("`0x")]
        stated = {name: int(code.strip("`"), 16) for code, name, *_ in rows}
        actual = {name: getattr(wire, name, getattr(wire_index, name, None)) for name in stated}
        self.assertEqual(actual, stated)
        self.assertEqual(len(stated), 12)  # (with 2.3, the type version 3 adds)
