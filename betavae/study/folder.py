"""The study folder: the study file's copy, ``study.json`` (every cell and its state), one run folder per cell.

::

    runs/study-NAME/
      study.yaml          the study file as it was run
      study.json          cells: identity (spec.CellIdentity), state, attempts, error, seconds, headline
      cells/CELL/         a run folder per cell (config.yaml, metrics/, checkpoints/, eval/), and
                          error.txt: every failed attempt's traceback, headed with its number and time
      report.html         the comparison report (``betavae report``)
      udr.json            per setting with ≥ 2 seeds: its cells' UDR, pair scores, active dims (report)
      tables/             the report's tables as CSV and Markdown
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from betavae.evaluation.headline import HeadlineError, read_headline
from betavae.fileio import write_json
from betavae.runs import RunPaths, read_info

# A cell's states; "finished" cells are skipped when the study runs again.
STATES = ("pending", "queued", "training", "evaluating", "retrying", "finished", "failed", "interrupted")


@dataclass(frozen=True)
class StudyPaths:
    """Every file of a study folder, by what it holds."""

    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "study.yaml"

    @property
    def state(self) -> Path:
        return self.root / "study.json"

    @property
    def udr(self) -> Path:
        return self.root / "udr.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    def cell(self, name: str) -> Path:
        return self.root / "cells" / name


# What every cell entry of ``study.json`` must hold for the report to read it.
_ENTRY_KEYS = ("name", "dataset", "run")


def read_state(root: str | Path) -> dict:
    """The contents of a study folder's ``study.json``; ValueError (naming the file) when it is not
    JSON or has no ``cells`` object."""
    path = StudyPaths(Path(root)).state
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a study folder (no study.json); run `betavae study FILE` first")
    try:
        state = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rerun `betavae study FILE` to rewrite it") from None
    cells = state.get("cells") if isinstance(state, dict) else None
    if not isinstance(cells, dict):
        raise ValueError(f"{path} is not a study's state: no \"cells\" object; rerun `betavae study FILE` to rewrite it")
    return state


def check_entries(root: str | Path, state: dict) -> None:
    """ValueError (naming ``study.json``) when a cell entry of ``state`` lacks what the report reads."""
    for key, entry in state["cells"].items():
        missing = [k for k in _ENTRY_KEYS if k not in entry] if isinstance(entry, dict) else list(_ENTRY_KEYS)
        if missing:
            raise ValueError(f"{StudyPaths(Path(root)).state}: cell {key!r} lacks {', '.join(missing)}; "
                             "rerun `betavae study FILE` to rewrite it")


def write_state(paths: StudyPaths, state: dict) -> None:
    """Atomically rewrites ``study.json``."""
    write_json(paths.state, {**state, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})


def cell_finished(run_dir: Path) -> bool:
    """True once a cell's training finished and this version's evaluation was written."""
    return read_info(RunPaths(run_dir)).get("status") == "finished" and cell_evaluated(run_dir)


def cell_evaluated(run_dir: Path) -> bool:
    """True when the cell's ``eval/metrics.json`` holds a headline this version reads (an evaluation
    written by another version is redone)."""
    try:
        return read_headline(run_dir) is not None
    except HeadlineError:
        return False
