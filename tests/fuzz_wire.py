"""
A coverage-guided fuzzer for the parsers at the edge: the frame decoder
(every protocol version 2 frame, the index frames of wire_index included)
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
    from p2ptwisted import wire, wire_index


def encode_any(message) -> bytes:
    """
    The frame our own encoders make for C{message}.
    """
    if isinstance(message, wire_index.IndexHello):
        return wire_index.encode_index_hello(message)
    if isinstance(message, wire_index.Index):
        frames = wire_index.pack_index(list(message.entries))
        if len(frames) != 1:
            raise ValueError("not one frame")
        return frames[0]
    return wire.encode_frame(message)


def check_frame(data: bytes) -> None:
    try:
        message = wire_index.decode_any_frame(data)
    except wire.ProtocolError:
        return
    if isinstance(message, wire.Data):
        return
    try:
        again = wire_index.decode_any_frame(encode_any(message))
    except ValueError:
        return  # valid to receive, refused by our encoder (e.g. rejected entries)
    if type(again) is not type(message):
        raise AssertionError(f"{message!r} re-decoded as {again!r}")
    if isinstance(message, (wire_index.Index, wire.Peers)):
        # Entries that were dropped on the way in are not sent on; the rest
        # travel unchanged.
        kept = "entries" if isinstance(message, wire_index.Index) else "addresses"
        if getattr(again, kept) != getattr(message, kept) or again.rejected:
            raise AssertionError(f"{message!r} re-decoded as {again!r}")
    elif again != message:
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
