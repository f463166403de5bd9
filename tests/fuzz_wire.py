"""
A coverage-guided fuzzer for the parsers at the edge: the frame decoder
and the path rules.  Outside the default test run (trial only collects
test_*.py, and atheris is not a dependency); the hypothesis properties in
tests/test_wire.py and tests/test_adversarial_*.py run in CI instead.

    .venv/bin/pip install atheris
    .venv/bin/python tests/fuzz_wire.py -max_total_time=300 [corpus-dir]

It fails (and libFuzzer saves the input) if any input makes the decoder
raise anything but wire.ProtocolError, if a decoded frame does not encode
back to a frame that decodes to the same message, or if check_path accepts
a path that could leave the share.
"""

import os
import sys
import unicodedata

import atheris

with atheris.instrument_imports():
    from p2ptwisted import wire


def check_frame(data: bytes) -> None:
    try:
        message = wire.decode_frame(data)
    except wire.ProtocolError:
        return
    if isinstance(message, wire.Data):
        return
    try:
        again = wire.decode_frame(wire.encode_frame(message))
    except ValueError:
        return  # valid to receive, refused by our encoder (e.g. rejected entries)
    if type(again) is not type(message):
        raise AssertionError(f"{message!r} re-decoded as {again!r}")


def check_path(text: str) -> None:
    try:
        path = wire.check_path(text)
    except wire.ProtocolError:
        return
    parts = path.split("/")
    assert path == unicodedata.normalize("NFC", path), path
    assert not path.startswith("/") and "\\" not in path, path
    assert all(p not in ("", ".", "..") for p in parts), path
    root = "/share"
    assert os.path.normpath(os.path.join(root, path)).startswith(root + "/"), path


def one_input(data: bytes) -> None:
    check_frame(data)
    provider = atheris.FuzzedDataProvider(data)
    check_path(provider.ConsumeUnicodeNoSurrogates(len(data)))


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
