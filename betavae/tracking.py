"""Experiment tracking: where a run's parameters, metric rows and figures go (``train.trackers``).

``csv`` (always on) writes the run's own logs, ``RUN/metrics/*.csv``; ``tensorboard`` writes the
same rows as scalars to ``RUN/tensorboard``; ``mlflow`` logs them to an MLflow run (a local file
store, ``./mlruns``, unless ``train.mlflow_tracking_uri`` or ``MLFLOW_TRACKING_URI`` names another
store), with the flattened config as parameters and the figures as artefacts. The training loop
talks to one :class:`Trackers` fan-out; a new tracker is a class with the :class:`Tracker` methods
and one :data:`TRACKERS` entry.

Metric rows are the CSV rows: ``split`` is ``train``, ``val`` or ``val_kl`` and every row holds
``step``; a tracker names a metric ``split/column`` (``train/loss``, ``val_kl/z3``).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from betavae.config import ConfigError
from betavae.runs import CsvLog, RunPaths, read_config, read_info, update_info

if TYPE_CHECKING:
    from betavae.config import RunConfig

logger = logging.getLogger(__name__)

DEFAULT_MLFLOW_STORE = "mlruns"  # relative to the working folder, as MLflow's own default was
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call


class TrackerUnavailable(ConfigError):
    """``train.trackers`` names a tracker whose package is not installed (raised before training)."""


class Tracker(Protocol):
    """One destination of a run's parameters, metric rows and artefacts."""

    def open(self, step: int = 0) -> None:
        """Starts (or, for a resumed run, continues) logging; called once when training starts at
        ``step`` (0, or the step of the checkpoint a resumed run restarts from)."""

    def log_params(self, params: dict[str, str]) -> None:
        """The flattened run config (``{"train.lr": "0.0005", ...}``)."""

    def log_metrics(self, split: str, rows: list[dict[str, float]]) -> None:
        """Metric rows of one log, each with its ``step``."""

    def log_artifacts(self, folder: Path, name: str) -> None:
        """Every file under ``folder``, stored as ``name``."""

    def close(self, status: str | None = "FINISHED") -> None:
        """Ends logging: FINISHED, KILLED (interrupted, resumable), FAILED, or None (status unchanged)."""


def _unavailable(name: str, package: str, install: str) -> TrackerUnavailable:
    return TrackerUnavailable(f"train.trackers has '{name}' but {package} is not installed: {install}, "
                              f"or drop it from train.trackers")


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 5e-4}}`` → ``{"train.lr": "0.0005"}`` (lists and None as text)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def metric_items(split: str, row: dict[str, float]) -> list[tuple[str, float]]:
    """A row's metrics as ``(split/column, value)``; ``step`` is the row's position, not a metric."""
    return [(f"{split}/{name}", float(value)) for name, value in row.items() if name != "step"]


class CsvTracker:
    """The run's own metric logs (``RUN/metrics/*.csv``); its config and figures are files already."""

    def __init__(self, config: RunConfig, paths: RunPaths, logs: dict[str, CsvLog]):
        self.logs = logs

    def open(self, step: int = 0) -> None:
        pass

    def log_params(self, params: dict[str, str]) -> None:
        pass  # config.yaml holds them

    def log_metrics(self, split: str, rows: list[dict[str, float]]) -> None:
        if rows:
            self.logs[split].append(rows)

    def log_artifacts(self, folder: Path, name: str) -> None:
        pass  # already in the run folder

    def close(self, status: str | None = "FINISHED") -> None:
        pass


class TensorBoardTracker:
    """Scalars in ``RUN/tensorboard`` (``tensorboard --logdir RUN``); the config as text."""

    def __init__(self, config: RunConfig, paths: RunPaths, logs: dict[str, CsvLog]):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _unavailable("tensorboard", "the tensorboard package", "`pip install tensorboard`") from None
        self._writer_class, self.log_dir, self.writer = SummaryWriter, paths.root / "tensorboard", None

    def open(self, step: int = 0) -> None:
        # a resumed run redoes the steps after its checkpoint: TensorBoard drops their old events
        self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=step + 1 if step else None)

    def log_params(self, params: dict[str, str]) -> None:
        table = "\n".join(f"| {key} | {value} |" for key, value in params.items())
        self.writer.add_text("config", "| setting | value |\n|---|---|\n" + table)

    def log_metrics(self, split: str, rows: list[dict[str, float]]) -> None:
        for row in rows:
            for name, value in metric_items(split, row):
                self.writer.add_scalar(name, value, int(row["step"]))

    def log_artifacts(self, folder: Path, name: str) -> None:
        pass  # figures are PNG/GIF files beside the run; the run page shows them

    def close(self, status: str | None = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def mlflow_tracking_uri(config: RunConfig) -> str:
    """The store a new MLflow run goes to: ``train.mlflow_tracking_uri``, else the environment's
    ``MLFLOW_TRACKING_URI``, else ``./mlruns``; a plain path becomes an absolute ``file:`` URI (so a
    run resumed from another folder finds its store)."""
    uri = config.train.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_STORE
    if ":" in uri.split("/")[0] or uri in ("databricks", "databricks-uc"):
        return uri  # a URI (file:, sqlite:, http:, databricks, ...)
    return Path(uri).expanduser().resolve().as_uri()


class MlflowTracker:
    """One MLflow run per betavae run; its id is kept in ``run.json`` (``mlflow``), so a resumed run
    continues the same MLflow run in the same store. Experiment: ``train.tracker_experiment``, else
    the config's name (a study names it after itself)."""

    def __init__(self, config: RunConfig, paths: RunPaths, logs: dict[str, CsvLog]):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _unavailable("mlflow", "MLflow", "`pip install 'betavae[mlflow]'` (mlflow-skinny)") from None
        self._client_class, self._metric, self._param = MlflowClient, Metric, Param
        self.config, self.paths = config, paths
        self.client, self.run_id, self.continued = None, None, False

    def open(self, step: int = 0, create: bool = True, running: bool = True) -> None:
        """Continues the run named in ``run.json`` when its store still has it, else (``create``)
        starts a new one in :func:`mlflow_tracking_uri`'s store."""
        saved = read_info(self.paths).get("mlflow") or {}
        if saved.get("run_id"):
            self._connect(saved["tracking_uri"])
            try:
                self.client.get_run(saved["run_id"])
                self.run_id, self.continued = saved["run_id"], True
            except Exception as exc:  # the store was moved or deleted: log to a new run
                logger.warning("MLflow run %s not found in %s (%s); starting a new MLflow run",
                               saved["run_id"], saved["tracking_uri"], str(exc).splitlines()[0])
        if self.run_id is None:
            if not create:
                return
            uri = mlflow_tracking_uri(self.config)
            self._connect(uri)
            name = self.config.train.tracker_experiment or self.config.name
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run = self.client.create_run(experiment_id, run_name=self.paths.root.name,
                                         tags={"betavae.run_dir": str(self.paths.root.resolve())})
            self.run_id = run.info.run_id
            update_info(self.paths, mlflow={"tracking_uri": uri, "experiment": name, "run_id": self.run_id})
        elif running:
            self.client.update_run(self.run_id, status="RUNNING")
        if running:
            what = "continuing" if self.continued else "logging to"
            logger.info("mlflow: %s run %s in %s", what, self.run_id, self.client.tracking_uri)

    def _connect(self, uri: str) -> None:
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store only on request; it is what works offline with no server
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = self._client_class(tracking_uri=uri)

    def log_params(self, params: dict[str, str]) -> None:
        if self.continued:
            return  # MLflow parameters are fixed once logged; resume overrides are in run.json
        items = [self._param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow's limit of parameters per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, split: str, rows: list[dict[str, float]]) -> None:
        now = int(time.time() * 1000)
        metrics = [self._metric(name, value, now, int(row["step"]))
                   for row in rows for name, value in metric_items(split, row)]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + MLFLOW_BATCH])

    def log_artifacts(self, folder: Path, name: str) -> None:
        self.client.log_artifacts(self.run_id, str(folder), name)

    def close(self, status: str | None = "FINISHED") -> None:
        if self.run_id is not None and status is not None:
            self.client.set_terminated(self.run_id, status=status)


TRACKERS: dict[str, type] = {"csv": CsvTracker, "tensorboard": TensorBoardTracker, "mlflow": MlflowTracker}


class Trackers:
    """Every tracker of a run behind one object; building it only checks that each is installed."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    @classmethod
    def for_run(cls, config: RunConfig, paths: RunPaths, logs: dict[str, CsvLog]) -> "Trackers":
        return cls([TRACKERS[name](config, paths, logs) for name in config.train.trackers])

    def open(self, config: RunConfig, step: int = 0) -> None:
        params = flatten(config.to_dict())
        for tracker in self.trackers:
            tracker.open(step)
            tracker.log_params(params)

    def log_metrics(self, split: str, rows: list[dict[str, float]]) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(split, rows)

    def log_artifacts(self, folder: Path, name: str) -> None:
        for tracker in self.trackers:
            tracker.log_artifacts(folder, name)

    def close(self, status: str | None = "FINISHED") -> None:
        """Closes every tracker; one that fails is reported and does not hide the others (or the
        exception that ended training)."""
        for tracker in self.trackers:
            try:
                tracker.close(status)
            except Exception as exc:
                logger.warning("closing the %s tracker failed: %s", type(tracker).__name__, exc)


def log_figures(run_dir: str | Path) -> None:
    """Logs ``RUN/figures`` as artefacts (``figures/``) of the run's MLflow run, if it has one;
    called after the figures are drawn (``betavae train``, a study cell)."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        return
    config = read_config(paths.root)
    if "mlflow" not in config.train.trackers or not paths.figures.is_dir():
        return
    try:
        tracker = MlflowTracker(config, paths, {})
        tracker.open(create=False, running=False)
        if tracker.run_id is not None:
            tracker.log_artifacts(paths.figures, "figures")
    except Exception as exc:  # the figures are in the run folder either way
        logger.warning("mlflow: could not log %s as artefacts: %s", paths.figures, str(exc).splitlines()[0])
