# -*- test-case-name: tests.test_control_ops -*-
"""
The manhole's functions about transfers: C{transfers()}, C{cancel()} and
C{watch()}.  A mixin of L{p2ptwisted.control.Control}, kept apart so that
class stays readable; it uses the control's C{node}, C{out} and
C{_fetch_of} (what C{fetch()} returned -> the fetcher's Deferred).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred

from p2ptwisted.downloads import TransferFailed
from p2ptwisted.tables import TransferTable, transfer_table


class TransferOps:
    # (set by Control, the class this is a part of)
    node: Any
    out: Callable[[str], None]

    def known_paths(self) -> list:
        """
        Every path in our index and in our connected peers' (what Tab
        completes inside a string at the prompt), sorted; deleted ones
        too (telling them apart would read every entry on each Tab).
        """
        store = self.node.folder.store
        paths = set(store.local_paths())
        for peer in self.node.connections:
            paths.update(store.remote_paths(peer))
        return sorted(paths)

    def transfers(self, finished: int = 10) -> TransferTable:
        """
        The last C{finished} fetches that ended, then those in flight and
        waiting (the folder's own and fetch()'s), with state and bytes: a
        list of transfers (each with C{.path}, C{.state} and C{.done}, a
        Deferred), printed as a table.
        """
        wants = self.node.folder.fetcher.transfers()
        ended = [w for w in wants if w.finished_at is not None]
        going = [w for w in wants if w.finished_at is None]
        return transfer_table(ended[max(0, len(ended) - finished):] + going,
                              self.node.clock.seconds())

    def _transfer(self, what):
        """
        The fetch C{what} names: a transfer from transfers(), the Deferred
        fetch() returned, or a path (the newest fetch of it).
        """
        wants = self.node.folder.fetcher.transfers()
        if isinstance(what, Deferred):
            done = self._fetch_of.get(what)
            found = [w for w in wants if done is not None and w.done is done]
            if not found:
                raise LookupError("that Deferred is not a fetch() in flight")
            return found[-1]
        if isinstance(what, str):
            found = [w for w in wants if w.path == what]
            if not found:
                raise LookupError(f"no transfer of {what!r}: transfers() lists them")
            going = [w for w in found if w.finished_at is None]
            return (going or found)[-1]
        if hasattr(what, "entry") and hasattr(what, "state"):
            return what
        raise TypeError(f"name a transfer by its path, by what fetch() returned, or by an"
                        f" element of transfers(), not {what!r}")

    def cancel(self, what) -> None:
        """
        Stop a fetch() of yours (by path, by what fetch() returned, or by
        an element of transfers()), and say so: its Deferred fails with
        "cancelled".
        The folder's own downloads are not cancelled this way (they come
        back at the next plan): raises saying why nothing was cancelled.
        """
        want = self._transfer(what)
        path = want.path
        if want.finished_at is not None or want.done.called:
            raise ValueError(f"the fetch of {path!r} has already ended ({want.state})")
        if want.keep is None:
            raise ValueError(f"{path!r} is the folder's own download, not a fetch() of"
                             " yours: only fetch()es can be cancelled")
        fetcher = self.node.folder.fetcher
        why = TransferFailed("cancelled", "cancelled by the operator")
        if not fetcher.cancel(want, why):
            raise RuntimeError(f"the fetch of {path!r} is opening its file: try again in a"
                               " moment")
        self.out(f"cancelled the fetch of {path!r}")

    def watch(self, what, console=None) -> None:
        """
        A live progress line for a fetch (by path, by what fetch()
        returned, or by an element of transfers()) in the manhole session,
        until it ends or you press Ctrl-C (which stops the view, not the
        fetch).
        """
        from p2ptwisted.progress import ProgressView, finished
        from p2ptwisted.tables import progress_line

        want = self._transfer(what)
        if console is None or finished(want):
            self.out(progress_line(want, None))
            return
        ProgressView(console, self.node.clock, want).start()
