"""The run folder: where a run's config, metadata, metric logs, checkpoints and figures live."""
from __future__ import annotations

import csv
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from betavae import __version__
from betavae.config import RunConfig, validate_config
from betavae.fileio import write_json, write_text


class RunExistsError(FileExistsError):
    """Raised instead of silently overwriting an existing run folder."""


@dataclass(frozen=True)
class RunPaths:
    """Every file of a run folder, by what it holds."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def info(self) -> Path:
        return self.root / "run.json"

    @property
    def train_log(self) -> Path:
        return self.root / "metrics" / "train.csv"

    @property
    def val_log(self) -> Path:
        return self.root / "metrics" / "val.csv"

    @property
    def val_kl_log(self) -> Path:
        return self.root / "metrics" / "val_kl_per_dim.csv"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.safetensors"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def index(self) -> Path:
        return self.root / "index.html"


def create_run(root: str | Path, config: RunConfig, overwrite: bool = False) -> RunPaths:
    """Makes a fresh run folder holding the resolved config; an existing one needs ``overwrite``."""
    paths = RunPaths(Path(root))
    if paths.root.exists() and any(paths.root.iterdir()):
        if not overwrite:
            raise RunExistsError(
                f"{paths.root} already exists; continue it with --resume {paths.root}, "
                "pick another folder with --out, or replace it with --overwrite"
            )
        shutil.rmtree(paths.root)
    (paths.root / "metrics").mkdir(parents=True, exist_ok=True)
    (paths.root / "checkpoints").mkdir(exist_ok=True)
    write_text(paths.config, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return paths


def read_config(root: str | Path) -> RunConfig:
    """The resolved config saved in a run folder."""
    paths = RunPaths(Path(root))
    if not paths.config.is_file():
        raise FileNotFoundError(f"{paths.root} is not a run folder (no config.yaml)")
    return validate_config(yaml.safe_load(paths.config.read_text()))


def environment() -> dict:
    """Versions and machine facts recorded with every run."""
    return {
        "betavae": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def update_info(paths: RunPaths, **fields) -> dict:
    """Merges ``fields`` into ``run.json`` (atomically) and returns the result."""
    info = read_info(paths)
    info.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(paths.info, info)
    return info


def read_info(paths: RunPaths) -> dict:
    return json.loads(paths.info.read_text()) if paths.info.is_file() else {}


class CsvLog:
    """An append-only CSV of metric rows keyed by ``step``; rows past a step can be dropped on resume."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns

    def truncate_after(self, step: int) -> None:
        """Keeps only the rows with ``step <= step`` (work after the last checkpoint is redone)."""
        if not self.path.is_file():
            return
        with self.path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
        self._write(rows, mode="w")

    def append(self, rows: list[dict]) -> None:
        self._write(rows, mode="a")

    def _write(self, rows: list[dict], mode: str) -> None:
        new_file = mode == "w" or not self.path.exists()
        with self.path.open(mode, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, float]]:
    """A metric log as a list of rows of floats (empty if the file is missing)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
