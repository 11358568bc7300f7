"""``betavae study FILE``: every cell of a study as a Ray task, with restart, one retry and a live table.

Each cell trains (or resumes) its run folder and then evaluates it (:func:`run_cell`). Cells that
finished in an earlier invocation are skipped; a cell that raises is retried once (it resumes from
its last checkpoint) and then reported with its error while the other cells go on.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from betavae.config import ConfigError, RunConfig
from betavae.fileio import write_text
from betavae.runs import RunPaths, read_config, read_info, update_info
from betavae.study.folder import StudyPaths, cell_finished, write_state
from betavae.study.progress import LiveTable
from betavae.study.report import write_report
from betavae.study.spec import Cell, StudySpec, load_study

POLL_SECONDS = 1.0


def run_cell(run_dir: str, config: dict, evaluate: dict, threads: int) -> None:
    """Trains (or resumes) and evaluates one cell; calling it again after a crash continues the work.

    Runs inside a Ray worker; ``config`` is a resolved run config, ``evaluate`` an ``EvaluateSpec`` dict.
    """
    import torch

    from betavae.config import validate_config
    from betavae.evaluation.run_eval import evaluate_run
    from betavae.study.spec import EvaluateSpec
    from betavae.training import train_or_resume

    torch.set_num_threads(max(1, int(threads)))
    paths = RunPaths(Path(run_dir))
    _stage(paths, "training")
    train_or_resume(validate_config(config), paths.root)
    metrics_path = paths.root / "eval" / "metrics.json"
    if not metrics_path.is_file():
        _stage(paths, "evaluating")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        evaluate_run(paths.root, EvaluateSpec.model_validate(evaluate).options(device))


def _stage(paths: RunPaths, stage: str) -> None:
    """Records what a cell is doing in its ``run.json`` (the driver's table reads it); a fresh run
    folder is left for training to create."""
    if paths.config.is_file():
        update_info(paths, stage=stage, stage_since=time.time())


def run_study(study_file: str | Path, out: str | Path | None = None, address: str | None = None,
              num_cpus: int | None = None, retries: int = 1, live: bool = True) -> dict:
    """Runs every unfinished cell of a study on Ray, writes ``study.json`` and the report; returns the state.

    ``address``: an existing Ray cluster (``ray://host:10001`` or ``auto``); without it a local
    instance with ``num_cpus`` cores (default: all) is started and stopped again.
    """
    spec, cells = load_study(study_file)
    paths = StudyPaths(Path(out or Path("runs") / f"study-{spec.name}").resolve())
    configs = {cell.name: _resolved(cell.config) for cell in cells}
    _check_inputs(cells, configs, paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.spec, Path(study_file).read_text())
    state = _initial_state(spec, cells, paths, Path(study_file))
    write_state(paths, state)
    todo = [cell for cell in cells if state["cells"][cell.name]["state"] != "finished"]
    table = LiveTable(paths, live=live)
    if todo:
        with _ray(address, num_cpus, spec) as ray:
            _execute(ray, spec, todo, configs, paths, state, table, retries)
    table.show(state)
    write_report(paths.root)
    return state


def _resolved(config: RunConfig) -> dict:
    """The cell's config as sent to a worker: data paths absolute, no progress bars."""
    raw = config.to_dict()
    if raw["data"].get("path"):
        raw["data"]["path"] = str(Path(raw["data"]["path"]).expanduser().resolve())
    raw["train"]["progress"] = False
    return raw


def _evaluation(spec: StudySpec, cell: Cell) -> dict:
    """The cell's evaluation settings as sent to a worker: its dataset's outside images, path absolute."""
    images = str(Path(cell.images).expanduser().resolve()) if cell.images else None
    return {**spec.evaluate.model_dump(), "images": images}


def _check_inputs(cells: list[Cell], configs: dict[str, dict], paths: StudyPaths) -> None:
    """Fails before any work when prepared data or outside-image folders are missing, or a cell folder
    holds another config."""
    missing = sorted({(c.dataset, configs[c.name]["data"]["path"]) for c in cells
                      if configs[c.name]["data"]["name"] == "prepared" and not Path(configs[c.name]["data"]["path"]).is_dir()})
    if missing:
        raise ConfigError(f"prepared data not found:{_listing(missing)}\nprepare each with `betavae prepare` "
                          "(the dataset's config file in configs/ gives the command) or set its data.path "
                          "in the study file")
    folders = sorted({(c.dataset, c.images) for c in cells if c.images and not Path(c.images).expanduser().is_dir()})
    if folders:
        raise ConfigError(f"outside-image folders not found (datasets.*.images / evaluate.images):{_listing(folders)}")
    _check_cell_folders(cells, configs, paths)


def _listing(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"\n  - {dataset}: {path}" for dataset, path in pairs)


def _check_cell_folders(cells: list[Cell], configs: dict[str, dict], paths: StudyPaths) -> None:
    """A cell folder trained with another config is never silently reused."""
    for cell in cells:
        run = paths.cell(cell.name)
        if not RunPaths(run).config.is_file():
            continue
        saved, wanted = read_config(run).to_dict(), configs[cell.name]
        changed = _differences(saved, wanted)
        if changed:
            raise ConfigError(f"{run} was trained with another config (differs in {', '.join(changed)}); "
                              "delete that cell folder to retrain it, or pass another --out")


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    ignored = {"train.progress", "data.path"}  # display only / may be written relative or absolute
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
            "name": cell.name, "dataset": cell.dataset, "label": cell.label, "article": cell.article,
            "group": cell.group, "values": cell.values, "describe": cell.describe(),
            "run": f"cells/{cell.name}", "state": "finished" if done else "pending",
            "attempts": 0, "error": None, "seconds": None, "skipped": done,
            "headline": _headline(paths.cell(cell.name)) if done else None,
        }
    return {"name": spec.name, "description": spec.description, "study_file": str(study_file.resolve()),
            "folder": str(paths.root),
            "grid_keys": list(spec.grid), "evaluate": spec.evaluate.model_dump(), "cells": entries}


def _headline(run_dir: Path) -> dict:
    """A finished cell's PSNR, SSIM and FID (when computed), from its ``eval/metrics.json``."""
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    return {key: metrics[key] for key in ("psnr_val", "ssim_val", "fid") if key in metrics}


@contextmanager
def _ray(address: str | None, num_cpus: int | None, spec: StudySpec) -> Iterator:
    """A connected Ray: the cluster at ``address`` or a local instance started (and stopped) here."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage reporting
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    try:
        _check_resources(ray.cluster_resources(), spec)
        yield ray
    finally:
        if started_here:
            ray.shutdown()


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
                           spec.resources.cpus)

    running = {submit(cell): cell for cell in _round_robin(todo)}
    write_state(paths, state)
    try:
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
                        entry["state"] = "failed"
            _refresh_stages(paths, state, running.values())
            write_state(paths, state)
            table.show(state)
    except KeyboardInterrupt:
        for ref, cell in running.items():
            ray.cancel(ref, force=True)
            state["cells"][cell.name]["state"] = "interrupted"
        write_state(paths, state)
        raise


def _round_robin(cells: list[Cell]) -> list[Cell]:
    """Cells ordered one dataset at a time in turn, so that the cells running together mostly use
    different datasets and later cells of a dataset find its FID reference statistics cached."""
    by_dataset: dict[str, list[Cell]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.dataset, []).append(cell)
    turns = itertools.zip_longest(*by_dataset.values())
    return [cell for turn in turns for cell in turn if cell is not None]


def _record_failure(paths: StudyPaths, entry: dict, exc: BaseException) -> None:
    """Keeps a failed attempt's error: one line in ``study.json``, the traceback in the cell's ``error.txt``."""
    cause = getattr(exc, "cause", None) or exc
    entry["error"] = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    text = "".join(traceback.format_exception(exc))
    write_text(paths.cell(entry["name"]) / "error.txt", f"attempt {entry['attempts']}\n{text}")


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
    return yaml.safe_dump(listing, sort_keys=False, allow_unicode=True)
