"""The run folder: where a run's config, metadata, metric logs, checkpoints and figures live."""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import platform
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from betavae import __version__
from betavae.config import RunConfig, read_yaml, validate_config
from betavae.fileio import write_json, write_text


class RunExistsError(FileExistsError):
    """Raised instead of silently overwriting an existing run folder (or any other folder)."""


class RunLockedError(RuntimeError):
    """Another process is training this run folder right now."""


@dataclass(frozen=True)
class RunPaths:
    """Every file of a run folder, by what it holds."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str root works as well

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
    def factor_log(self) -> Path:
        return self.root / "metrics" / "factor_metrics.csv"

    @property
    def last(self) -> Path:
        return self.root / "checkpoints" / "last.safetensors"

    @property
    def best(self) -> Path:
        return self.root / "checkpoints" / "best.safetensors"

    @property
    def figures(self) -> Path:
        """Every figure of the run: training writes the cheap ones, ``evaluate`` all of them."""
        return self.root / "figures"

    def figure(self, file: str) -> Path:
        return self.figures / file

    @property
    def latents(self) -> Path:
        """The stored ranking of the latent dimensions (:mod:`betavae.latents`)."""
        return self.root / "latents.json"

    def sampler(self, kind: str) -> Path:
        """A latent sampler fitted after training (:mod:`betavae.samplers`): its parameters."""
        return self.root / "samplers" / f"{kind}.safetensors"

    def sampler_info(self, kind: str) -> Path:
        """A fitted sampler's settings and the checkpoint digest it was fitted to."""
        return self.root / "samplers" / f"{kind}.json"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def eval_metrics(self) -> Path:
        """Every number of the last ``evaluate``, with its settings; its ``headline`` is typed
        (:class:`betavae.evaluation.headline.Headline`)."""
        return self.eval / "metrics.json"

    @property
    def per_image(self) -> Path:
        return self.eval / "reconstruction_per_image.csv"

    @property
    def disentanglement(self) -> Path:
        return self.eval / "disentanglement.json"

    @property
    def attributes(self) -> Path:
        return self.eval / "attribute_dimensions.json"

    @property
    def dimension_names(self) -> Path:
        """Each dimension named from its decoded traversals (:mod:`betavae.evaluation.naming`)."""
        return self.eval / "dimension_names.json"

    @property
    def starts(self) -> Path:
        """The short starts this run was chosen from, and their judgements (:mod:`betavae.starts`)."""
        return self.root / "starts.json"

    @property
    def index(self) -> Path:
        return self.root / "index.html"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


# What a run folder may hold at its top level: `--overwrite` deletes a folder only if it holds
# config.yaml and nothing outside this list, so it can never wipe a user's data by a typo.
RUN_ENTRIES = frozenset({
    "config.yaml", "run.json", "metrics", "checkpoints", "figures", "index.html", "eval",
    "latents.json", "samplers", "tensorboard", ".lock", "error.txt", "starts.json",
})


def is_run_folder(root: str | Path) -> bool:
    """True for a folder betavae made for a run: config.yaml and only run files beside it."""
    root = Path(root)
    if root.is_symlink() or not (root / "config.yaml").is_file():
        return False
    return all(entry.name in RUN_ENTRIES or _is_temporary(entry) for entry in root.iterdir())


def _is_temporary(entry: Path) -> bool:
    """A file an interrupted atomic write left behind (``.<name>.<random>.tmp``)."""
    return entry.name.startswith(".") and entry.name.endswith(".tmp")


def check_new_run_folder(root: str | Path, overwrite: bool = False, keep: tuple[str, ...] = ()) -> None:
    """Raises :class:`RunExistsError` unless ``root`` may become a new run folder.

    An empty or missing folder may (one holding only the entries named in ``keep`` counts as
    empty); an existing run folder only with ``overwrite``; any other non-empty folder never
    (``--overwrite`` only ever replaces a betavae run folder).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunExistsError(f"{root} exists and is not a folder; pick another folder with --out")
    if not _run_contents(root, keep):
        return
    if not is_run_folder(root):
        raise RunExistsError(
            f"{root} is not empty and is not a betavae run folder (no config.yaml, or files a run does "
            "not write); betavae never deletes it — pick another folder with --out"
        )
    if not overwrite:
        raise RunExistsError(
            f"{root} already holds a run; continue it with --resume {root}, "
            "pick another folder with --out, or replace it with --overwrite"
        )


def _run_contents(root: Path, keep: tuple[str, ...] = ()) -> list[Path]:
    """What a folder holds apart from the lock file, a study cell's error log and the entries named
    in ``keep`` (all of which a new run keeps); nothing when it does not exist."""
    kept = (".lock", "error.txt", *keep)
    return [entry for entry in root.iterdir() if entry.name not in kept] if root.is_dir() else []


def create_run(root: str | Path, config: RunConfig, overwrite: bool = False,
               keep: tuple[str, ...] = ()) -> RunPaths:
    """Makes a fresh run folder holding the resolved config; an existing run folder needs
    ``overwrite`` (its entries named in ``keep`` stay), any other non-empty folder is refused. The
    caller holds :func:`run_lock`."""
    paths = RunPaths(Path(root))
    check_new_run_folder(paths.root, overwrite, keep)
    for entry in _run_contents(paths.root, keep):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (paths.root / "metrics").mkdir(parents=True, exist_ok=True)
    (paths.root / "checkpoints").mkdir(exist_ok=True)
    write_config(paths, config)
    return paths


def write_config(paths: RunPaths, config: RunConfig) -> None:
    """Saves ``config`` as the run's ``config.yaml`` (atomically)."""
    write_text(paths.config, yaml.safe_dump(config.to_dict(), sort_keys=False))


@contextmanager
def run_lock(paths: RunPaths) -> Iterator[None]:
    """Holds an exclusive lock on the run folder while a process trains it.

    The lock is an ``flock`` on ``RUN/.lock``, so the operating system releases it when the holder
    dies, however it dies; the file says who holds it. Raises :class:`RunLockedError` naming the
    holder when another process has it.
    """
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunLockedError(
                f"{paths.root} is being trained by {holder}; wait for it to finish or stop it first"
            ) from None
        holder = (f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')} "
                  f"({' '.join(sys.argv[:3])})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def remove_temporary_files(paths: RunPaths) -> list[Path]:
    """Deletes what interrupted atomic writes left in the run folder (``.*.tmp``); returns them."""
    found = [p for folder in (paths.root, paths.root / "checkpoints", paths.root / "metrics")
             if folder.is_dir() for p in folder.iterdir() if _is_temporary(p) and p.is_file()]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def read_config(root: str | Path) -> RunConfig:
    """The resolved config saved in a run folder."""
    paths = RunPaths(Path(root))
    if not paths.config.is_file():
        raise FileNotFoundError(f"{paths.root} is not a run folder (no config.yaml)")
    return validate_config(read_yaml(paths.config))


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
    """An append-only CSV of metric rows keyed by ``step``; rows past a step can be dropped on resume.

    Dropping rows rewrites the file atomically (a new file renamed over the old), so an interruption
    at any moment leaves either the old log or the new one, never a truncated one. A row cut short
    by a crash during an append is dropped when the log is next read or truncated.
    """

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns

    def truncate_after(self, step: int) -> None:
        """Keeps only the complete rows with ``step <= step`` (work after the last checkpoint is redone)."""
        if not self.path.is_file():
            return
        columns, rows = _read_log(self.path)
        rows = [row for row in rows if int(float(row["step"])) <= step]
        text = io.StringIO(newline="")
        # a log keeps its own columns (a setting turned off on resume must not drop them)
        writer = csv.DictWriter(text, fieldnames=columns or self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path, text.getvalue())

    def append(self, rows: list[dict]) -> None:
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerows(rows)


def _read_log(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A metric log's columns and its rows that have every column and a numeric step (a torn last
    row does not)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            if None in row or sum(v is not None for v in row.values()) != len(columns):
                continue
            try:
                float(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            rows.append(row)
    return columns, rows


def read_csv(path: Path) -> list[dict[str, float]]:
    """A metric log as a list of rows of floats (empty if the file is missing)."""
    if not path.is_file():
        return []
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in _read_log(path)[1]]
