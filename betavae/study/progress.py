"""The live table of a running study: one row per cell with its state, progress, time and result."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from betavae.evaluation.headline import SCORES, Headline
from betavae.runs import RunPaths, read_info
from betavae.study.folder import StudyPaths

COLUMNS = ("cell", "state", "try", "progress", "time", "result")
RESULT_SCORES = ("psnr_val", "ssim_val", "fid")  # a finished cell's headline scores shown (when computed)


class LiveTable:
    """Redraws the table in place on a terminal; elsewhere (logs, CI) prints it when a state changes."""

    def __init__(self, paths: StudyPaths, live: bool = True, stream: TextIO | None = None):
        self.paths, self.live, self.stream = paths, live, stream or sys.stdout
        self._drawn_lines = 0
        self._last_states: tuple = ()

    def show(self, state: dict) -> None:
        if not self.live:
            return
        states = tuple((name, entry["state"]) for name, entry in state["cells"].items())
        in_place = self.stream.isatty()
        if not in_place and states == self._last_states:
            return
        self._last_states = states
        text = render(table_rows(self.paths, state))
        if in_place and self._drawn_lines:
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn_lines = text.count("\n") + 1


def table_rows(paths: StudyPaths, state: dict) -> list[tuple[str, ...]]:
    """One row of strings per cell, in the order of ``COLUMNS``."""
    now = time.time()
    rows = []
    for name, entry in state["cells"].items():
        run = RunPaths(paths.cell(name))
        elapsed = entry["seconds"] if entry.get("seconds") is not None else (
            now - entry["started"] if entry.get("started") else None)
        rows.append((name, entry["state"] + (" (earlier)" if entry.get("skipped") else ""), str(entry["attempts"]),
                     _progress(run, entry["state"]), _duration(elapsed), _result(entry)))
    return rows


def render(rows: list[tuple[str, ...]]) -> str:
    """A plain-text table with a header and aligned columns."""
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    line = lambda row: "  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths]), *map(line, rows)])


def _progress(run: RunPaths, cell_state: str) -> str:
    if cell_state != "training":
        return ""
    total = read_info(run).get("total_steps")
    step = _last_logged_step(run.train_log)
    return f"step {step}/{total}" if total else ""


def _last_logged_step(path: Path) -> int:
    """The step of the last row of a training log (0 when there is none), reading only its end."""
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 512))
        last = handle.read().decode("utf-8", "replace").strip().splitlines()[-1:]
    head = last[0].split(",", 1)[0] if last else ""
    return int(head) if head.isdigit() else 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _result(entry: dict) -> str:
    if entry["state"] in ("failed", "retrying"):
        return entry.get("error") or ""
    if entry["state"] != "finished" or not entry.get("headline"):
        return ""
    headline = Headline.model_validate(entry["headline"])
    return "  ".join(f"{SCORES[key].label} {SCORES[key].format(value)}" for key in RESULT_SCORES
                     if (value := headline.value(key)) is not None)
