"""Shared helpers for the benchmarks: timing loops, interleaved repeats, stats, tables and JSON output.

Every bench measures several variants of one job, interleaved repeat by repeat (the machine is
noisy), and reports min/median/max throughput plus the ratio of medians against a baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from betavae.hardware import choose_precision, cpu_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the common ``--quick`` option, described by the module docstring."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps (a smoke run)")
    return parser


def throughput(step: Callable[[], None], items_per_step: int, steps: int, warmup: int = 0) -> float:
    """Items per second over ``steps`` calls of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return items_per_step * steps / (time.perf_counter() - started)


def seconds(job: Callable[[], object]) -> tuple[float, object]:
    """Wall-clock seconds of one call of ``job`` and its result."""
    started = time.perf_counter()
    result = job()
    return time.perf_counter() - started, result


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Runs each variant's measurement once per repeat, variants interleaved; the values per variant."""
    values: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, measure in variants.items():
            values[name].append(measure())
    return values


def summary(values: list[float]) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "values": values}


def table(title: str, values: dict[str, list[float]], baseline: str, unit: str = "images/s",
          higher_is_better: bool = True) -> str:
    """A Markdown table: variant | unit min/median/max | ratio of medians vs ``baseline`` (>1 = faster)."""
    base = statistics.median(values[baseline])
    lines = [f"### {title}", "", f"| variant | {unit} min / median / max | ratio vs baseline |", "|---|---|---|"]
    for name, vals in values.items():
        s = summary(vals)
        median = s["median"]
        ratio = median / base if higher_is_better else base / median
        lines.append(f"| {name} | {_fmt(s['min'])} / {_fmt(median)} / {_fmt(s['max'])} | {ratio:.2f}× |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def load_average() -> float | None:
    """The 1-minute load average (other processes on the cores slow every variant), None if unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine() -> dict:
    """What the numbers were measured on: the CPU and its relevant flags, what ``precision: auto``
    picks here, threads, the load average when written, and the GPU if any."""
    cpu = cpu_info()
    precision, reason = choose_precision("auto", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": cpu.describe(), "cpu_info": cpu.to_dict(),
            "auto_precision": precision, "auto_precision_reason": reason, "load_average": load_average(),
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_line() -> str:
    """One line naming the CPU, its flags, torch threads and the current load."""
    cpu = cpu_info()
    return (f"Machine: {cpu.describe()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"1-min load average {load_average()} on {cpu.logical_cpus} CPUs"
            + (f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"))


def write_results(name: str, payload: dict) -> Path:
    """Writes ``payload`` (plus the machine description) to ``bench/results/<name>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    return path


def report(name: str, tables: list[str], payload: dict) -> None:
    """Prints the tables (after a line naming the machine) and writes the JSON results."""
    print(machine_line() + "\n")
    print("\n\n".join(tables))
    print(f"\n(results: {write_results(name, payload)})")
