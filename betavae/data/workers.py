"""The decoding worker processes of `betavae prepare`, made so that they never outlive the build.

Each worker, when it starts (the pool's initializer):

- asks Linux to send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so that a
  ``kill -9`` of ``prepare`` (or the OOM killer) takes the workers with it; where prctl is
  unavailable (other systems), or the worker's parent is not the process that made the pool (a
  fork server), a daemon thread polls for that process instead and ends the worker when it is gone;
- ignores SIGINT and SIGTERM: Ctrl-C reaches every process of the terminal's group, and systemd,
  Slurm or ``kill -TERM -PGID`` stop whole groups; the parent alone decides what stopping means
  (it kills its workers when it stops, see :func:`kill_workers`, and the kernel kills them when it
  dies), so a group-wide signal cannot break the pool half-way or print a worker's traceback.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

__all__ = ["kill_workers", "parent_death_signal", "watch_parent", "worker_pool"]

_PR_SET_PDEATHSIG = 1
_PR_GET_PDEATHSIG = 2
POLL_SECONDS = 0.5  # how often the fallback looks for the parent


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers end when the process that made it ends."""
    return ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),)
    )


def kill_workers(pool: ProcessPoolExecutor) -> None:
    """Ends the pool's workers now (SIGKILL), with the work they were given: for a stop, when
    finishing the chunks already queued would only delay it. Then ``shutdown`` returns at once."""
    kill = getattr(pool, "kill_workers", None)  # Python 3.14+
    if kill is not None:
        kill()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError, AttributeError):  # already ended or closed
            pass


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl  # noqa: B018 (raises AttributeError where there is no prctl)
    except (OSError, AttributeError):
        return None
    return libc


def _set_parent_death_signal(signum: int) -> bool:
    """Asks the kernel to send ``signum`` to this process when its parent ends; False if not."""
    libc = _libc()
    if libc is None:
        return False
    return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0


def parent_death_signal() -> int:
    """The signal this process gets when its parent ends (0: none, or unknown off Linux)."""
    libc = _libc()
    if libc is None:
        return 0
    value = ctypes.c_int(0)
    if libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0) != 0:
        return 0
    return value.value


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie counts as ended)."""
    if os.getppid() == pid:
        return True  # still our parent: a dead parent would have handed us to another process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to someone else (should not happen for our parent)
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc: os.kill said it exists


def watch_parent(
    pid: int, every: float = POLL_SECONDS, on_gone: Callable[[], None] | None = None
) -> None:
    """Polls until process ``pid`` has ended, then calls ``on_gone`` (default: exit at once)."""
    while _alive(pid):
        time.sleep(every)
    if on_gone is None:
        os._exit(1)
    on_gone()


def _init_worker(creator: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # not the creator's handler (forked copies it)
    armed = _set_parent_death_signal(signal.SIGKILL)
    if armed and os.getppid() == creator:
        return  # the kernel ends us with the creator (it was alive after prctl: no race)
    if not _alive(creator):
        os._exit(1)  # the creator died before we started
    threading.Thread(target=watch_parent, args=(creator,), name="watch-parent", daemon=True).start()
