"""``betavae study FILE``: every cell of a study as a Ray task, with restart, one retry and a live table.

Each cell trains (or resumes) its run folder and then evaluates it (:func:`run_cell`). Cells that
finished in an earlier invocation are skipped; a cell that raises is retried once (it resumes from
its last checkpoint) and then reported with its error while the other cells go on.

Stopping: Ctrl-C or SIGTERM of the driver asks every running cell to stop (inside the cell that is
a Ctrl-C, which training takes at the next step boundary, saving ``last``), waits up to
:data:`STOP_GRACE_SECONDS` for them, then cancels what is left by force; a cell whose own process
gets SIGTERM checkpoints the same way. Starting: Ray gets :data:`START_TIMEOUT_SECONDS` to start
or answer, then the study stops with the reason instead of waiting forever.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import yaml

from betavae.config import ConfigError, RunConfig
from betavae.fileio import write_text
from betavae.interrupts import DeferredStop, Terminated, terminate_as_interrupt
from betavae.runs import RunPaths, read_config, read_info, update_info
from betavae.starts import StartsPolicy, read_starts
from betavae.evaluation.headline import read_headline
from betavae.study.folder import StudyPaths, cell_evaluated, cell_finished, write_state
from betavae.study.progress import LiveTable
from betavae.study.report import write_report
from betavae.study.spec import Cell, StudySpec, load_study

POLL_SECONDS = 1.0
START_TIMEOUT_SECONDS = 60.0  # for Ray to start (local) or answer (--address); then a clear error
STOP_GRACE_SECONDS = 30.0  # after Ctrl-C/SIGTERM, for the cells to checkpoint before a forced stop
ACTIVE_STATES = ("pending", "queued", "training", "evaluating", "retrying")


class RayStartError(ConnectionError):
    """Ray could not be started (or the cluster at ``--address`` did not answer) in time; the message
    says why and what to check."""


class CellTerminated(RuntimeError):
    """The cell's own process received SIGTERM: training saved its last checkpoint and stopped; the
    next attempt (a retry, or the next ``betavae study``) resumes from it."""


def run_cell(run_dir: str, config: dict, evaluate: dict, threads: int, starts: dict | None = None) -> None:
    """Trains (or resumes) and evaluates one cell; calling it again after a crash continues the work.

    Runs inside a Ray worker; ``config`` is a resolved run config, ``evaluate`` an ``EvaluateSpec``
    dict, ``starts`` a ``StartsSpec`` dict (with more than one start the cell is chosen among them).
    """
    import torch

    from betavae.config import validate_config
    from betavae.evaluation.run_eval import evaluate_run
    from betavae.starts import train_with_starts
    from betavae.study.spec import EvaluateSpec, StartsSpec
    from betavae.tracking import log_figures
    from betavae.training import train_or_resume

    torch.set_num_threads(max(1, int(threads)))
    paths = RunPaths(Path(run_dir))
    try:
        # SIGTERM to this worker (Slurm, docker and systemd signal every process) stops the cell like
        # Ctrl-C: training defers it to the step boundary and saves `last`; Ray's own handler would
        # end the process mid-step
        with terminate_as_interrupt():
            _stage(paths, "training")
            run_config, policy = validate_config(config), StartsSpec.model_validate(starts or {}).policy()
            if policy.starts > 1:
                train_with_starts(run_config, paths.root, policy)
            else:
                train_or_resume(run_config, paths.root)
            if not cell_evaluated(paths.root):
                _stage(paths, "evaluating")
                device = "cuda" if torch.cuda.is_available() else "cpu"
                evaluate_run(paths.root, EvaluateSpec.model_validate(evaluate).options(device))
                log_figures(paths.root)  # to the cell's MLflow run, when train.trackers has mlflow
    except Terminated:
        info = read_info(paths)
        where = f" at step {info['step']}" if info.get("status") == "interrupted" and "step" in info else ""
        raise CellTerminated(f"the cell's process received SIGTERM; it stopped{where} with its last "
                             "checkpoint saved, and its next attempt resumes from there") from None


def _stage(paths: RunPaths, stage: str) -> None:
    """Records what a cell is doing in its ``run.json`` (the driver's table reads it); a fresh run
    folder is left for training to create."""
    if paths.config.is_file():
        update_info(paths, stage=stage, stage_since=time.time())


def run_study(study_file: str | Path, out: str | Path | None = None, address: str | None = None,
              num_cpus: int | None = None, retries: int = 1, live: bool = True,
              start_timeout: float = START_TIMEOUT_SECONDS) -> dict:
    """Runs every unfinished cell of a study on Ray, writes ``study.json`` and the report; returns the state.

    ``address``: an existing Ray cluster (``ray://host:10001`` or ``auto``); without it a local
    instance with ``num_cpus`` cores (default: all) is started and stopped again. Ray gets
    ``start_timeout`` seconds to start or answer (:class:`RayStartError`). Ctrl-C or SIGTERM stops
    the cells at a checkpoint (:func:`_stop_cells`), marks them interrupted and raises
    ``KeyboardInterrupt`` (:class:`~betavae.interrupts.Terminated` for SIGTERM).
    """
    spec, cells = load_study(study_file)
    paths = StudyPaths(Path(out or Path("runs") / f"study-{spec.name}").resolve())
    configs = {cell.name: _resolved(cell.config, spec.name) for cell in cells}
    _check_inputs(cells, configs, paths, spec.starts.policy())
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.spec, Path(study_file).read_text())
    state = _initial_state(spec, cells, paths, Path(study_file))
    write_state(paths, state)
    todo = [cell for cell in cells if state["cells"][cell.name]["state"] != "finished"]
    table = LiveTable(paths, live=live)
    if todo:
        with _StopSignals() as signals:
            try:
                with _ray(address, num_cpus, spec, start_timeout) as ray:
                    signals.install()  # again: starting Ray puts a C++ SIGTERM handler over ours
                    _execute(ray, spec, todo, configs, paths, state, table, retries)
            except KeyboardInterrupt as exc:
                if signals.last == signal.SIGTERM and not isinstance(exc, Terminated):
                    raise Terminated("terminated (SIGTERM)") from None
                raise
    table.show(state)
    write_report(paths.root)
    return state


class _StopSignals:
    """Ctrl-C and SIGTERM of the driver, both raising ``KeyboardInterrupt`` (SIGTERM as
    :class:`~betavae.interrupts.Terminated`), with the last one received remembered.

    Remembered because Ray turns an exception raised by a signal handler while the driver waits in
    ``ray.wait`` into a plain ``KeyboardInterrupt``. :meth:`install` is called again once Ray has
    started: its C++ core worker installs abseil's failure-signal handler for SIGTERM over ours,
    which prints a stack trace and aborts the process 3 s later. Does nothing off the main thread.
    """

    def __init__(self):
        self.last: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        self.last = signum
        if signum == signal.SIGTERM:
            raise Terminated("terminated (SIGTERM)")
        raise KeyboardInterrupt

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def __enter__(self) -> "_StopSignals":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _resolved(config: RunConfig, study: str | None = None) -> dict:
    """The cell's config as sent to a worker: data paths absolute, no progress bars, tracked as a run
    of the MLflow experiment named after the study, in the driver's store (workers have other folders)."""
    from betavae.tracking import mlflow_tracking_uri

    raw = config.to_dict()
    if raw["data"].get("path"):
        raw["data"]["path"] = str(Path(raw["data"]["path"]).expanduser().resolve())
    raw["train"]["progress"] = False
    raw["train"]["tracker_experiment"] = raw["train"]["tracker_experiment"] or study
    if "mlflow" in raw["train"]["trackers"]:
        raw["train"]["mlflow_tracking_uri"] = mlflow_tracking_uri(config)
    return raw


def _evaluation(spec: StudySpec, cell: Cell) -> dict:
    """The cell's evaluation settings as sent to a worker: its dataset's outside images, path absolute."""
    images = str(Path(cell.images).expanduser().resolve()) if cell.images else None
    return {**spec.evaluate.model_dump(mode="json"), "images": images}


def _check_inputs(cells: list[Cell], configs: dict[str, dict], paths: StudyPaths, policy: StartsPolicy) -> None:
    """Fails before any work when prepared data or outside-image folders are missing, or a cell folder
    holds another config or was chosen among other starts."""
    missing = sorted({(c.dataset, configs[c.name]["data"]["path"]) for c in cells
                      if configs[c.name]["data"]["name"] == "prepared" and not Path(configs[c.name]["data"]["path"]).is_dir()})
    if missing:
        raise ConfigError(f"prepared data not found:{_listing(missing)}\nprepare each with `betavae prepare` "
                          "(the dataset's config file in configs/ gives the command) or set its data.path "
                          "in the study file")
    folders = sorted({(c.dataset, c.images) for c in cells if c.images and not Path(c.images).expanduser().is_dir()})
    if folders:
        raise ConfigError(f"outside-image folders not found (datasets.*.images / evaluate.images):{_listing(folders)}")
    _check_cell_folders(cells, configs, paths, policy)


def _listing(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"\n  - {dataset}: {path}" for dataset, path in pairs)


def _check_cell_folders(cells: list[Cell], configs: dict[str, dict], paths: StudyPaths, policy: StartsPolicy) -> None:
    """A cell folder trained with another config, or chosen among other starts, is never silently reused."""
    for cell in cells:
        run = paths.cell(cell.name)
        if not RunPaths(run).config.is_file():
            continue
        saved, wanted = read_config(run).to_dict(), configs[cell.name]
        record = read_starts(run)
        if record is not None:
            if record["policy"] != asdict(policy):
                raise ConfigError(f"{run} was chosen among starts ({_policy_text(record['policy'])}) but the study "
                                  f"asks for {_policy_text(asdict(policy))}; delete that cell folder to retrain "
                                  "it, or pass another --out")
            # its run trains seed + k, for the start's steps until chosen: the record holds the cell's own
            saved["train"].update(seed=record["base_seed"], max_steps=record["max_steps"])
        changed = _differences(saved, wanted)
        if changed:
            raise ConfigError(f"{run} was trained with another config (differs in {', '.join(changed)}); "
                              "delete that cell folder to retrain it, or pass another --out")


def _policy_text(policy: dict) -> str:
    return ", ".join(f"{key}: {value}" for key, value in policy.items())


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    # display only / may be written relative or absolute / where tracking goes
    ignored = {"train.progress", "data.path", "train.tracker_experiment", "train.mlflow_tracking_uri"}
    keys = sorted(set(saved) | set(wanted))
    found = []
    for key in keys:
        name, a, b = f"{prefix}{key}", saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{name}.")
        elif a != b and name not in ignored:
            found.append(name)
    return found


def _initial_state(spec: StudySpec, cells: list[Cell], paths: StudyPaths, study_file: Path) -> dict:
    """``study.json`` at the start: finished cells stay finished, every other cell is pending."""
    entries = {}
    for cell in cells:
        done = cell_finished(paths.cell(cell.name))
        entries[cell.name] = {
            **cell.identity(), "describe": cell.describe(), "run": f"cells/{cell.name}",
            "state": "finished" if done else "pending", "attempts": 0, "error": None, "seconds": None, "skipped": done,
            "headline": _headline(paths.cell(cell.name)) if done else None,
        }
    return {"name": spec.name, "description": spec.description, "study_file": str(study_file.resolve()),
            "folder": str(paths.root),
            "grid_keys": list(spec.grid), "evaluate": spec.evaluate.model_dump(mode="json"), "cells": entries}


def _headline(run_dir: Path) -> dict:
    """A finished cell's computed headline scores (:class:`~betavae.evaluation.headline.Headline`)."""
    return read_headline(run_dir).computed()


@contextmanager
def _ray(address: str | None, num_cpus: int | None, spec: StudySpec, start_timeout: float) -> Iterator:
    """A connected Ray: the cluster at ``address`` or a local instance started (and stopped) here."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage reporting
    import ray

    starter = None
    if not ray.is_initialized():
        options = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            options["address"] = address
        else:
            options.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
        starter = _start_ray(options, address, start_timeout)
    try:
        _check_resources(ray.cluster_resources(), spec)
        yield ray
    finally:
        if starter is not None:
            ray.shutdown()
            starter.release()


class _RayStarter(threading.Thread):
    """Runs ``ray.init`` in a thread of its own, so that the driver can give up after a deadline: a
    ``ray.init`` that cannot reach its GCS waits inside Ray's C++ client (about 40 s a try, 20 tries)
    where neither a signal nor an exception reaches it.

    The thread then stays alive until :meth:`release`: the processes of a local instance are bound to
    the thread that started them (Linux's ``PR_SET_PDEATHSIG`` fires when that *thread* ends). A
    start given up on is shut down by the thread itself should ``ray.init`` still return.
    """

    def __init__(self, options: dict):
        super().__init__(name="betavae-ray-start", daemon=True)
        self.options = options
        self.done, self._released = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self._abandoned = False

    def run(self) -> None:
        import ray

        try:
            ray.init(**self.options)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver's thread
            self.error = exc
        finally:
            self.done.set()
        self._released.wait()
        if self._abandoned and self.error is None:
            ray.shutdown()

    def release(self) -> None:
        self._released.set()

    def abandon(self) -> None:
        self._abandoned = True
        self._released.set()


class _QuietNonMainThreadWarning(logging.Filter):
    """Drops Ray's warning that ``ray.init`` outside the main thread sets no SIGTERM handler: the
    driver's own handler (SIGTERM like Ctrl-C) is the one wanted."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in str(record.msg)


_QUIET = _QuietNonMainThreadWarning()


def _start_ray(options: dict, address: str | None, timeout: float) -> _RayStarter:
    """Starts (or connects to) Ray within ``timeout`` seconds, or raises :class:`RayStartError`."""
    if not address:
        problem = _loopback_problem()
        if problem:
            raise RayStartError(_start_message(None, f"127.0.0.1 is not usable ({problem})"))
    logging.getLogger("ray._private.worker").addFilter(_QUIET)
    starter = _RayStarter(options)
    starter.start()
    try:
        started = starter.done.wait(timeout)
    except KeyboardInterrupt:
        starter.abandon()
        raise
    if not started:
        starter.abandon()
        raise RayStartError(_start_message(address, _why_unreachable(address), timeout))
    if starter.error is not None:
        starter.release()
        raise RayStartError(_start_message(address, _first_line(starter.error))) from starter.error
    return starter


def _start_message(address: str | None, cause: str, timeout: float | None = None) -> str:
    within = f" within {timeout:g} s" if timeout is not None else ""
    longer = "; --start-timeout waits longer" if timeout is not None else ""
    if address:
        return (f"could not connect to the Ray cluster at {address}{within}: {cause}; check the address "
                f"and that the cluster is up{longer}")
    return (f"could not start a local Ray instance{within}: {cause}; check that 127.0.0.1 is usable, "
            f"or pass --address{longer}")


def _loopback_problem() -> str | None:
    """Why TCP over 127.0.0.1 does not work here (a local Ray needs it), or None when it does."""
    try:
        with socket.create_server(("127.0.0.1", 0)) as server:
            with socket.create_connection(server.getsockname()[:2], timeout=2):
                pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _why_unreachable(address: str | None) -> str:
    """The likely cause of a Ray start that timed out, found by a quick TCP probe."""
    if not address:
        problem = _loopback_problem()
        if problem:
            return f"127.0.0.1 is not usable ({problem})"
        return "Ray's processes did not come up (their logs: /tmp/ray/session_latest/logs)"
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return "no Ray cluster answered"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            pass
    except OSError as exc:
        return f"nothing answers at {target} ({exc.strerror or exc})"
    return f"{target} accepts connections, but no Ray cluster answered there"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _check_resources(available: dict, spec: StudySpec) -> None:
    """A cell that asks for more than the cluster has would wait forever: say so instead."""
    for name, wanted in (("CPU", spec.resources.cpus), ("GPU", spec.resources.gpus)):
        if wanted > available.get(name, 0):
            raise ConfigError(f"each cell asks for {wanted:g} {name} (resources.{name.lower()}s) but the Ray "
                              f"cluster has {available.get(name, 0):g}; lower it in the study file or use --num-cpus")


def _execute(ray, spec: StudySpec, todo: list[Cell], configs: dict[str, dict], paths: StudyPaths,
             state: dict, table: LiveTable, retries: int) -> None:
    """Submits the cells, retries a failure once, records every state change until all are done."""
    task = ray.remote(run_cell).options(num_cpus=spec.resources.cpus, num_gpus=spec.resources.gpus, max_retries=0)

    def submit(cell: Cell):
        entry = state["cells"][cell.name]
        entry.update(state="queued", attempts=entry["attempts"] + 1, submitted=time.time(), started=None,
                     seconds=None)
        return task.remote(str(paths.cell(cell.name)), configs[cell.name], _evaluation(spec, cell),
                           spec.resources.cpus, spec.starts.model_dump())

    running: dict = {}
    try:
        for cell in _round_robin(todo):
            running[submit(cell)] = cell
        write_state(paths, state)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                cell = running.pop(ref)
                entry = state["cells"][cell.name]
                entry["seconds"] = round(time.time() - (entry.get("started") or entry["submitted"]), 1)
                try:
                    ray.get(ref)
                    entry.update(state="finished", error=None, headline=_headline(paths.cell(cell.name)))
                except Exception as exc:  # noqa: BLE001 - a cell's failure must not stop the others
                    _record_failure(paths, entry, exc)
                    if entry["attempts"] <= retries:
                        entry["state"] = "retrying"
                        running[submit(cell)] = cell
                    else:
                        entry["state"] = "interrupted" if _terminated(exc) else "failed"
            _refresh_stages(paths, state, running.values())
            write_state(paths, state)
            table.show(state)
    except KeyboardInterrupt:
        _stop_cells(ray, running, paths, state)
        table.show(state)
        raise


def _stop_cells(ray, running: dict, paths: StudyPaths, state: dict, grace: float | None = None) -> None:
    """After Ctrl-C or SIGTERM of the driver: stops every cell at a checkpoint and marks it interrupted.

    A graceful ``ray.cancel`` raises ``KeyboardInterrupt`` in the task's main thread (Ray simulates
    a SIGINT there), which training takes at the next step boundary, saving ``last``. The cells get
    ``grace`` seconds (default :data:`STOP_GRACE_SECONDS`) for that; what is still running then, or
    when a second Ctrl-C/SIGTERM comes, is cancelled by force (no checkpoint beyond the periodic ones).
    """
    grace = STOP_GRACE_SECONDS if grace is None else grace
    with DeferredStop(message=None) as again:  # a second signal ends the wait, not this clean-up
        for ref in running:
            ray.cancel(ref, force=False)
        pending = set(running)
        if pending:
            print(f"\nstopping {len(pending)} cell(s) at their next checkpoint (up to {grace:g} s)…",
                  file=sys.stderr, flush=True)
        deadline = time.monotonic() + grace
        while pending and again.received is None and time.monotonic() < deadline:
            wait = max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=wait)
            for ref in ready:
                pending.discard(ref)
                cell = running[ref]
                try:
                    ray.get(ref)
                except Exception:  # noqa: BLE001 - cancelled (or stopped by its own signal): interrupted
                    continue
                state["cells"][cell.name].update(state="finished", error=None,
                                                 headline=_headline(paths.cell(cell.name)))
        for ref in pending:
            ray.cancel(ref, force=True)
        for entry in state["cells"].values():
            if entry["state"] in ACTIVE_STATES:
                entry["state"] = "interrupted"
        write_state(paths, state)


def _terminated(exc: BaseException) -> bool:
    """True when a cell's task ended because its own process received SIGTERM."""
    return isinstance(getattr(exc, "cause", None) or exc, CellTerminated)


def _round_robin(cells: list[Cell]) -> list[Cell]:
    """Cells ordered one dataset at a time in turn, so that the cells running together mostly use
    different datasets and later cells of a dataset find its FID reference statistics cached."""
    by_dataset: dict[str, list[Cell]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.dataset, []).append(cell)
    turns = itertools.zip_longest(*by_dataset.values())
    return [cell for turn in turns for cell in turn if cell is not None]


def _record_failure(paths: StudyPaths, entry: dict, exc: BaseException) -> None:
    """Keeps a failed attempt's error: one line in ``study.json``; in the cell's ``error.txt`` the
    traceback appended after the earlier attempts', headed with the attempt's number and time."""
    cause = getattr(exc, "cause", None) or exc
    entry["error"] = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    path = paths.cell(entry["name"]) / "error.txt"
    earlier = path.read_text(encoding="utf-8", errors="replace").rstrip("\n") if path.is_file() else ""
    header = f"=== attempt {entry['attempts']}, {time.strftime('%Y-%m-%d %H:%M:%S %z')} ==="
    attempt = header + "\n" + "".join(traceback.format_exception(exc))
    write_text(path, f"{earlier}\n\n{attempt}" if earlier else attempt)


def _refresh_stages(paths: StudyPaths, state: dict, running) -> None:
    """Moves queued cells to training/evaluating once their worker says so (in ``run.json``)."""
    for cell in running:
        entry = state["cells"][cell.name]
        info = read_info(RunPaths(paths.cell(cell.name)))
        if info.get("stage_since", 0) >= entry["submitted"] and info.get("stage") in ("training", "evaluating"):
            entry["state"] = info["stage"]
        elif "stage_since" not in info and info.get("status") == "running":  # a fresh run has started
            entry["state"] = "training"
        if entry["state"] in ("training", "evaluating") and not entry.get("started"):
            entry["started"] = time.time()


def dry_run(study_file: str | Path) -> str:
    """The cells a study file expands to, one YAML document (what ``--dry-run`` prints)."""
    spec, cells = load_study(study_file)
    listing = {"study": spec.name, "cells": [{"name": c.name, "dataset": c.dataset, "group": c.group,
                                               "values": c.values} for c in cells]}
    if spec.starts.starts > 1:
        listing["starts"] = spec.starts.model_dump()
    return yaml.safe_dump(listing, sort_keys=False, allow_unicode=True)
