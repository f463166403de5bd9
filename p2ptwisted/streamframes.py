# -*- test-case-name: tests.test_exchange -*-
"""
A download that comes as one stream (protocol version 2, and files without
a block list): its start (L{StreamFrames._start}), DATA written into the
partial file, END verified, ERROR.  A part of L{p2ptwisted.fetcher.Fetcher}, in a module of
its own so that class stays readable; it uses the fetcher's C{active},
C{sources}, C{clock}, C{run_blocking}, C{log} and the helpers named below.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger

from p2ptwisted import wire
from p2ptwisted.downloads import (Download, TransferFailed, Want, check_space,
                                  download_of, in_flight)

#: Files of at least this size get a log line each when they arrive.
LOG_EACH_MIN = 1024 * 1024


class StreamFrames:
    # (set by Fetcher, the class this is a part of)
    active: list
    sources: Any
    clock: Any
    completed: int
    bytes_received: int
    run_blocking: Any
    log: Logger

    def _give_up(self, proto, transfer: int, why: TransferFailed, cancel: bool = False,
                 bench: bool = True) -> None:
        raise NotImplementedError

    def _finish(self, want: Want, proto, record: bool = True) -> None:
        raise NotImplementedError

    def _fail(self, want: Want, why: TransferFailed, logged: bool = True) -> None:
        raise NotImplementedError

    def _start(self, want: Want, proto) -> None:
        """
        Start downloading C{want} from C{proto} as one stream: open its
        partial file (in a disk thread; a small one is gathered in memory
        instead), then GET it.
        """
        want.state, want.peer = "opening", proto.remote_id
        want.tried.add(proto.remote_id)
        self.active.append(want)
        entry = want.entry
        transfer = proto.next_transfer_id()
        download = Download(entry=entry, dir_fd=-1, transfer=transfer, peer=proto,
                            started_at=self.clock.seconds(),
                            purpose="operator" if want.keep is not None else "")
        want.download = download
        proto.downloads[transfer] = download  # counts against the peer's limit now

        def open_blocking() -> int:
            # The destination's directory (made if missing), room for the
            # file, then the partial file.
            assert want.open_dir is not None  # Fetcher.fetch gives every want one
            download.dir_fd, made = want.open_dir(entry.path)
            want.made.extend(made)
            check_space(download)
            return download.open()

        def opened(offset: int) -> None:
            if want.download is not download:
                download.release()  # given up while we opened it
                return
            want.state = "running"
            download.last_activity = self.clock.seconds()
            if offset:
                self.log.info("resuming {path} from {peer} at byte {offset} of {size}",
                              path=wire.safe_text(entry.path), peer=proto.describe(),
                              offset=offset, size=entry.size)
            proto.send(wire.Get(transfer=transfer, path=entry.path, hash=entry.hash,
                                offset=offset))

        def failed(failure) -> None:
            if want.download is download:
                self._finish(want, proto)
                download.release()
                why = failure.value
                if not isinstance(why, TransferFailed):
                    why = TransferFailed("local", str(why))
                self._fail(want, why, logged=False)

        self.run_blocking(open_blocking).addCallbacks(opened, failed)

    def _want_of(self, proto, transfer: int) -> Optional[Want]:
        download = proto.downloads.get(transfer)
        if download is None:
            return None
        for want in self.active:
            if want.download is download:
                return want
        return None

    def _stream_data(self, proto, data: wire.Data, download) -> None:
        if download is None:
            if data.transfer not in proto.cancelled:
                proto.drop(f"DATA for unknown transfer {data.transfer}")
            return
        if (download.dir_fd < 0
                or in_flight(self._want_of(proto, data.transfer)).state != "running"):
            proto.drop(f"DATA for transfer {data.transfer} before its GET")
            return
        try:
            download.write(data.payload)
        except TransferFailed as e:
            self._give_up(proto, data.transfer, e, cancel=True)
            return
        except OSError as e:
            self._give_up(proto, data.transfer, TransferFailed("local", str(e)), cancel=True,
                          bench=False)
            return
        if len(data.payload):  # empty DATA frames do not keep a download alive
            download.last_activity = self.clock.seconds()
        self.bytes_received += len(data.payload)

    def _stream_end(self, proto, end: wire.End) -> None:
        want = self._want_of(proto, end.transfer)
        if want is None or want.state != "running":
            if end.transfer not in proto.cancelled:
                proto.drop(f"END for unknown transfer {end.transfer}")
            return
        download = download_of(want)
        try:
            download.verify(end)
        except TransferFailed as e:
            self._give_up(proto, end.transfer, e)
            return
        self._finish(want, proto)
        self.sources.succeeded(proto.remote_id, want.version)
        if want.keep is not None:
            d = self.run_blocking(download.keep_as, want.keep.rsplit("/", 1)[-1])
        else:
            d = self.run_blocking(download.seal)

        def sealed(name: str) -> str:
            download.release()
            want.state = "done"
            self.completed += 1
            if want.entry.size >= LOG_EACH_MIN:
                seconds = max(self.clock.seconds() - download.started_at, 1e-6)
                self.log.info("fetched {path} ({size} bytes) from {peer} at {rate:.1f} MiB/s",
                              path=wire.safe_text(want.path), size=want.entry.size,
                              peer=proto.describe(), rate=download.received / seconds / 2**20)
            return name

        def unsealed(failure):
            download.release()
            want.state = f"failed: {getattr(failure.value, 'code', 'local')}"
            return failure

        d.addCallbacks(sealed, unsealed).chainDeferred(want.done)

    def _stream_error(self, proto, error: wire.Error) -> None:
        assert error.transfer is not None
        want = self._want_of(proto, error.transfer)
        if want is None:
            return  # an answer to a transfer we cancelled
        if want.state != "running":
            proto.drop(f"ERROR for transfer {error.transfer} before its GET")
            return
        self._give_up(proto, error.transfer,
                      TransferFailed(error.code, wire.safe_text(error.message, 200)),
                      bench=error.code != "busy")
