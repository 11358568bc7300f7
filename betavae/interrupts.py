"""Ctrl-C and SIGTERM handled alike: the signal `kill`, `timeout`, `docker stop`, systemd and Slurm
send stops betavae the way Ctrl-C does, and long-running work can defer either to a safe point.

- :func:`terminate_as_interrupt` makes SIGTERM raise :class:`Terminated` (a ``KeyboardInterrupt``)
  wherever the program is, so every ``except KeyboardInterrupt`` clean-up path also runs for it.
- :class:`DeferredStop` holds SIGINT and SIGTERM while a block that must not be cut in half runs
  (one training step and what follows it) and raises at the block's end instead.

Both only install handlers on the main thread of the main interpreter; elsewhere they do nothing.
"""
from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """Raised for SIGTERM, so that clean-up written for Ctrl-C runs for it too."""


def _can_handle_signals() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise Terminated("terminated (SIGTERM)")
    raise KeyboardInterrupt


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` instead of killing the process."""
    if not _can_handle_signals():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _raise_for(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class DeferredStop:
    """Defers SIGINT/SIGTERM to safe points.

    Use as ``with DeferredStop() as stop:`` around a loop and call :meth:`check` at each safe point
    (between training steps): a signal received since the last check raises there, as
    ``KeyboardInterrupt`` (SIGINT) or :class:`Terminated` (SIGTERM). Outside the ``with`` block the
    previous handlers are back, so a signal at any other moment behaves as before.
    """

    def __init__(self, message: str | None = "stopping after the current step (a safe point to resume from)…"):
        self.message = message
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is None and self.message:
            print(f"\n{self.message}", file=sys.stderr, flush=True)
        self.received = self.received or signum

    def __enter__(self) -> "DeferredStop":
        if _can_handle_signals():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def check(self) -> None:
        """Raises now if a stop signal arrived since the block began."""
        if self.received is not None:
            signum, self.received = self.received, None
            _raise_for(signum)
