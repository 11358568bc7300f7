"""The training loop: a plain PyTorch loop (nanoGPT-style) with exact resume.

Why not Lightning: resuming *exactly* (same batches, same noise, same loss curve) from a
mid-epoch checkpoint needs the data order, RNG and objective state under our control, and a
plain loop keeps that visible in one file. Data order is a pure function of (seed, epoch), flips
of (seed, step); the learning rate of the epoch; the reparameterisation noise comes from the
torch RNG, whose state is checkpointed.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from betavae.checkpoint import (
    load_checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    save_checkpoint,
    strip_prefix,
    with_prefix,
)
from betavae.config import ConfigError, RunConfig, apply_overrides, validate_config
from betavae.data import ImageData, build_data
from betavae.data.base import fingerprint_array
from betavae.data.device_images import DeviceImages, flip_seed
from betavae.data.transforms import Normalizer, random_hflip, uint8_to_unit
from betavae.distributed import launched_rank, start_workers
from betavae.hardware import choose_precision
from betavae.interrupts import DeferredStop, Terminated
from betavae.model import build_model, count_parameters
from betavae.objectives import Objective, ObjectiveResult, build_objective
from betavae.runs import (
    CsvLog,
    RunPaths,
    check_new_run_folder,
    create_run,
    environment,
    read_config,
    read_csv,
    read_info,
    remove_temporary_files,
    run_lock,
    update_info,
    write_config,
)
from betavae.tracking import Trackers

# Settings a user may change when resuming (`train --resume RUN --set KEY=VALUE`): they change how
# the remaining steps run, not what the saved state means. Everything else is fixed by the run.
RESUME_OVERRIDES = (
    "train.lr", "train.lr_decay", "train.lr_warmup_steps", "train.max_steps", "train.epochs", "train.precision",
    "train.device", "train.checkpoint_every", "train.val_every", "train.progress", "train.compile",
    "train.divergence_factor", "train.factor_metrics_every", "train.factor_metrics_points",
)
# A loss more than `divergence_factor` times the median of the last LOSS_WINDOW losses is an explosion.
LOSS_WINDOW = 100
MIN_LOSS_HISTORY = 20


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite or exploded; no bad checkpoint is written."""


class DataChangedError(ValueError):
    """The data a run was trained on differs from the data found when resuming it."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device is {name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return device


@dataclass
class TrainState:
    """What advances during training and is saved with every checkpoint."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = -1


class Trainer:
    """Trains one run folder; :meth:`fit` runs until the step budget is spent."""

    def __init__(self, config: RunConfig, paths: RunPaths, data: ImageData | None = None):
        self.config, self.paths = config, paths
        self.data = data if data is not None else build_data(config.data)
        self._check_data()
        train = config.train
        self.device = resolve_device(train.device)
        self.workers = start_workers(self.device)
        if self.workers.parallel and self.device.type == "cuda":
            self.device = torch.device("cuda", self.workers.local_rank)
        self.precision, self.precision_reason = choose_precision(train.precision, self.device)
        self.normalizer = Normalizer(config.data.normalization, self.data.channels)
        self.device_images, self.placement = DeviceImages.if_it_fits(
            self.data.images, self.device, self.normalizer, seed=train.seed, hflip=config.data.hflip,
            channels_last=train.channels_last)
        # weights and noise (DDP copies rank 0's weights); a resumed run restores the RNG state
        torch.manual_seed(train.seed + self.workers.rank)
        self.model = build_model(config, self.data.channels).to(self.device)
        if train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = self.workers.wrap(self.model, self.device)
        if train.compile:
            self.forward = torch.compile(self.forward)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.objective: Objective = build_objective(config.objective, len(self.data.train_indices))
        self.steps_per_epoch = len(self.data.train_indices) // train.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train.batch_size {train.batch_size} is larger than the {len(self.data.train_indices)} training images"
            )
        self.total_steps = train.max_steps or train.epochs * self.steps_per_epoch
        self.val_every = train.val_every or self.steps_per_epoch
        self.state = TrainState()
        self._order_epoch, self._order = -1, np.empty(0, dtype=np.int64)
        term_names = list(self.objective.TERMS)
        self.train_log = CsvLog(paths.train_log, ["step", "epoch", "lr", "loss", *term_names, "images_per_s"])
        self.val_log = CsvLog(paths.val_log, ["step", "epoch", "loss", *term_names])
        self.kl_log = CsvLog(paths.val_kl_log, ["step"] + [f"z{j}" for j in range(config.model.latent_dim)])
        self.factor_log = CsvLog(paths.factor_log, ["step", *_factor_score_keys(train.factor_metrics_every)])
        # csv, tensorboard, mlflow (train.trackers): checked here, opened by fit(), so building a
        # Trainer touches no file and a tracker that is not installed stops it before training
        self.trackers = Trackers.for_run(
            config, paths, {"train": self.train_log, "val": self.val_log, "val_kl": self.kl_log,
                            "factors": self.factor_log})
        self.recent_losses: deque[float] = deque(maxlen=LOSS_WINDOW)
        self._in_step = False

    def _check_data(self) -> None:
        if self.data.image_size != self.config.data.image_size:
            raise ValueError(f"data are {self.data.image_size} px but data.image_size is {self.config.data.image_size}")
        if self.config.train.factor_metrics_every and self.data.factors is None:
            raise ValueError(f"train.factor_metrics_every needs data with ground-truth factors (dsprites, shapes-rgb, "
                             f"...), and {self.config.data.name!r} has none: drop the setting")

    # ----- data -------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Training indices in the order of ``epoch`` (a pure function of seed and epoch)."""
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.config.train.seed, epoch])
            self._order, self._order_epoch = rng.permutation(self.data.train_indices), epoch
        return self._order

    def batch(self, indices: np.ndarray, step: int | None = None) -> torch.Tensor:
        """Images at ``indices`` in model space; training batches (``step`` given) may be flipped.

        Drawn on the device from :class:`DeviceImages` when the dataset fits there; the same values
        either way (the flips come from the same seeded generator)."""
        if self.device_images is not None:
            return self.device_images.batch(indices, step)
        x = uint8_to_unit(self.data.images[np.sort(indices)], self.device)
        if step is not None and self.config.data.hflip:
            x = random_hflip(x, torch.Generator().manual_seed(flip_seed(self.config.train.seed, step)))
        x = self.normalizer.from_unit(x)
        if self.config.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # ----- one step ---------------------------------------------------------------------------
    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def lr_at(self, step: int, epoch: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based): a linear warm-up over
        ``lr_warmup_steps``, then ExponentialLR by epoch. Stateless, so resume needs nothing."""
        train = self.config.train
        warmup = min(1.0, (step + 1) / train.lr_warmup_steps) if train.lr_warmup_steps else 1.0
        return train.lr * train.lr_decay**epoch * warmup

    def train_step(self, x: torch.Tensor, lr: float) -> ObjectiveResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            output = self.forward(x)
            result = self.objective(x, output, training=True)
        self._check_loss(result)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(result.loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.objective.after_step(x, output)  # e.g. FactorVAE's discriminator step (on detached codes)
        return result

    def _check_loss(self, result: ObjectiveResult) -> None:
        """Stops before an update with a non-finite loss, or a loss that exploded (many times its
        running median), so no such update reaches the weights or a checkpoint."""
        loss, step = result.loss.item(), self.state.step + 1
        if not math.isfinite(loss):
            bad = [name for name, value in result.terms.items() if not torch.isfinite(value).all().item()]
            self._diverged(f"loss became {loss} at step {step} (non-finite term: {', '.join(bad) or 'loss'})")
        factor = self.config.train.divergence_factor
        if factor and len(self.recent_losses) >= MIN_LOSS_HISTORY:
            median = float(np.median(np.abs(self.recent_losses)))
            if median > 0 and abs(loss) > factor * median:
                self._diverged(f"loss exploded to {loss:.4g} at step {step}, {abs(loss) / median:.3g}× the "
                               f"median {median:.4g} of the last {len(self.recent_losses)} steps "
                               f"(train.divergence_factor {factor:g})")
        self.recent_losses.append(loss)

    def _diverged(self, what: str) -> None:
        raise TrainingDiverged(f"{what}; {self._last_good_checkpoint()}. {RECOVERY_HINT}")

    def _last_good_checkpoint(self) -> str:
        """Names the checkpoints that exist (every written one was checked finite)."""
        last, best = self.paths.last, self.paths.best
        if last.is_file():
            _, state = load_checkpoint(last)
            return f"the last good checkpoint is {last} (step {state['step']})"
        if best.is_file():
            return f"no resumable checkpoint was written yet; the best weights so far are in {best}"
        return "no checkpoint was written yet"

    def check_weights_finite(self) -> None:
        """Raises :class:`TrainingDiverged` when a weight, BatchNorm statistic or optimiser state is
        NaN or infinite (so that no such checkpoint is ever written)."""
        named = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for index, state in self.optimizer.state.items():
            named.update({f"optimizer.{index}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
        named.update({f"objective.{k}": v for k, v in self.objective.tensors().items()})
        bad = [name for name, value in named.items()
               if value.is_floating_point() and not torch.isfinite(value).all().item()]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            self._diverged(f"non-finite values in {shown} at step {self.state.step}; not saving them")

    # ----- validation -------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], list[float]]:
        """Mean loss and terms, and mean KL per dimension, over (up to ``val_max_images``) validation
        images, μ used as the code."""
        indices = self.data.val_indices[: self.config.train.val_max_images]
        self.model.eval()
        totals: dict[str, float] = {}
        kl_sum = torch.zeros(self.config.model.latent_dim)
        for start in range(0, len(indices), self.config.train.batch_size):
            chunk = indices[start : start + self.config.train.batch_size]
            x = self.batch(chunk)
            with self.autocast():
                result = self.objective(x, self.model(x), training=False)
            for name, value in {"loss": result.loss, **result.terms}.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(chunk)
            kl_sum += result.kl_per_dim.float().cpu() * len(chunk)
        self.model.train()
        return {name: total / len(indices) for name, total in totals.items()}, (kl_sum / len(indices)).tolist()

    # ----- checkpoints ------------------------------------------------------------------------
    def save(self, path: Path, with_training_state: bool = True) -> None:
        """Writes model weights (and, for ``last``, everything needed to resume); never non-finite ones."""
        self.check_weights_finite()
        tensors = with_prefix("model", self.model.state_dict())
        state = {
            "step": self.state.step,
            "epoch": self.state.step // self.steps_per_epoch,
            "best_val_loss": self.state.best_val_loss,
            "best_step": self.state.best_step,
            "objective": self.objective.state_dict(),
            "config": self.config.to_dict(),
        }
        if with_training_state:
            optimizer_tensors, optimizer_plain = optimizer_to_flat(self.optimizer)
            tensors.update(optimizer_tensors)
            tensors.update(with_prefix("objective", self.objective.tensors()))
            tensors["rng.torch"] = torch.get_rng_state()
            if self.device.type == "cuda":
                tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
            state.update(optimizer=optimizer_plain, scaler=self.scaler.state_dict())
        save_checkpoint(path, tensors, state)

    def restore(self, path: Path) -> None:
        """Loads a ``last`` checkpoint written by :meth:`save` and drops log rows past its step."""
        tensors, state = load_checkpoint(path)
        self.model.load_state_dict(strip_prefix("model", tensors))
        optimizer_from_flat(self.optimizer, tensors, state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.objective.load_state_dict(state["objective"])
        self.objective.load_tensors(strip_prefix("objective", tensors))
        self.state = TrainState(state["step"], state["best_val_loss"], state["best_step"])
        if self.workers.is_main:
            self.truncate_logs()
        self.recent_losses.extend(row["loss"] for row in read_csv(self.paths.train_log)[-LOSS_WINDOW:])

    def truncate_logs(self) -> None:
        """Drops logged rows past the current step (each log is replaced atomically)."""
        for log in (self.train_log, self.val_log, self.kl_log, self.factor_log):
            log.truncate_after(self.state.step)

    # ----- the loop ---------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Trains from ``state.step`` to the budget, validating and checkpointing on the way.

        Ctrl-C and SIGTERM take effect only between steps (:class:`DeferredStop`): the loop then
        writes the pending log rows and ``last``, so a resumed run continues exactly. Any other
        exception inside a step leaves the last periodic checkpoint as the state to resume from.
        """
        self.model.train()
        writes = self.workers.is_main  # other DDP ranks only train
        if writes:
            self.trackers.open(self.config, self.state.step)
        progress = tqdm(
            total=self.total_steps, initial=self.state.step,
            disable=not (self.config.train.progress and self.workers.is_main),
            desc=self.config.name, unit="step", dynamic_ncols=True,
        )
        pending: list[dict] = []
        status = "FAILED"  # what the trackers record unless the loop ends or is interrupted
        with DeferredStop() as stop:  # also shields the final save from a second Ctrl-C
            try:
                while self.state.step < self.total_steps:
                    stop.check()
                    self._in_step = True
                    pending.append(self._one_step(progress))
                    if writes:
                        pending = self._after_step(pending)
                    self._in_step = False
                stop.check()
                status = "FINISHED"
            except KeyboardInterrupt:
                status = "KILLED"  # resumable: `train --resume` continues the same tracked run
                if writes and not self._in_step:
                    self._log_train(pending)
                    self.save(self.paths.last)  # between steps: a consistent state to resume from
                raise
            finally:
                progress.close()
                if writes:
                    self.trackers.close(status)
        self.workers.barrier()
        return self.state

    def _after_step(self, pending: list[dict]) -> list[dict]:
        """Validates and checkpoints when due; returns the train rows not yet written."""
        step = self.state.step
        last_step = step == self.total_steps
        if step % self.val_every == 0 or last_step:
            self._log_train(pending)
            pending = []
            self._validate_and_keep_best()
        every = self.config.train.factor_metrics_every
        if every and (step % every == 0 or last_step):
            self._log_factor_metrics()
        if step % self.config.train.checkpoint_every == 0 or last_step:
            self._log_train(pending)
            pending = []
            self.save(self.paths.last)
        return pending

    def _one_step(self, progress: tqdm) -> dict:
        step = self.state.step
        epoch, position = divmod(step, self.steps_per_epoch)
        size = self.config.train.batch_size
        indices = self.workers.shard(self.epoch_order(epoch)[position * size : (position + 1) * size])
        started = time.perf_counter()
        x = self.batch(indices, step)
        lr = self.lr_at(step, epoch)
        result = self.train_step(x, lr)
        self.state.step += 1
        row = {"step": self.state.step, "epoch": epoch, "lr": lr, "loss": result.loss.item()}
        row.update({name: float(value.detach()) for name, value in result.terms.items()})
        row["images_per_s"] = size / max(time.perf_counter() - started, 1e-9)
        progress.update(1)
        progress.set_postfix(loss=f"{row['loss']:.4g}", img_s=f"{row['images_per_s']:.0f}", refresh=False)
        return row

    def _log_train(self, rows: list[dict]) -> None:
        self.trackers.log_metrics("train", rows)

    def _log_factor_metrics(self) -> None:
        """One row of disentanglement scores (the same points at every check; no training RNG used)."""
        from betavae.evaluation.latent_meaning import factor_summary  # scikit-learn: only when asked for

        scores = factor_summary(self.model, self.normalizer, self.device, self.data,
                                self.config.train.factor_metrics_points)
        self.trackers.log_metrics("factors", [{"step": self.state.step, **scores}])

    def _validate_and_keep_best(self) -> None:
        values, kl = self.validate()
        epoch = (self.state.step - 1) // self.steps_per_epoch
        self.trackers.log_metrics("val", [{"step": self.state.step, "epoch": epoch, **values}])
        self.trackers.log_metrics("val_kl", [{"step": self.state.step, **{f"z{j}": v for j, v in enumerate(kl)}}])
        if values["loss"] < self.state.best_val_loss:
            self.state.best_val_loss, self.state.best_step = values["loss"], self.state.step
            self.save(self.paths.best, with_training_state=False)


def _factor_score_keys(enabled: int | None) -> list[str]:
    """The disentanglement scores ``train.factor_metrics_every`` logs (none when it is off, so that
    training imports no scikit-learn)."""
    if not enabled:
        return []
    from betavae.evaluation.disentanglement import factor_scores

    return [score.key for score in factor_scores()]


RECOVERY_HINT = ("Continue from the last checkpoint with a lower learning rate, e.g. "
                 "`betavae train --resume RUN --set train.lr=1e-4`, or try another train.precision.")


def train(
    config: RunConfig, run_dir: str | Path, overwrite: bool = False, data: ImageData | None = None,
    keep: tuple[str, ...] = (),
) -> RunPaths:
    """Trains a new run into ``run_dir``: it must be missing or empty, or (with ``overwrite``) a run
    folder; top-level entries named in ``keep`` survive and do not count as content. Every setting
    is checked before the folder is made."""
    main = launched_rank() == 0
    paths = RunPaths(Path(run_dir))
    if main:
        check_new_run_folder(paths.root, overwrite, keep)
    trainer = Trainer(config, paths, data)  # fails on any bad setting before a file is written
    if not main:
        return _fit(trainer)
    with run_lock(paths):
        create_run(paths.root, config, overwrite=overwrite, keep=keep)
        _record_start(trainer)
        return _fit(trainer)


def resume(run_dir: str | Path, data: ImageData | None = None, overrides: list[str] | None = None,
           allow_data_change: bool = False) -> RunPaths:
    """Continues a run from its ``last`` checkpoint exactly where it stopped.

    ``overrides`` (``"train.lr=1e-4"``) change settings listed in :data:`RESUME_OVERRIDES`; the
    data must be the data the run was trained on unless ``allow_data_change``.
    """
    paths = RunPaths(Path(run_dir))
    config = read_config(run_dir)
    if overrides:
        config = _with_resume_overrides(config, overrides)
    trainer = Trainer(config, paths, data)
    if not trainer.workers.is_main:
        if paths.last.is_file():
            trainer.restore(paths.last)
        return _fit(trainer)
    with run_lock(paths):
        _check_same_data(paths, trainer.data, allow_data_change)
        remove_temporary_files(paths)
        if overrides:
            write_config(paths, config)
            history = read_info(paths).get("resume_overrides", [])
            update_info(paths, resume_overrides=[*history, {"at_step": _saved_step(paths), "set": overrides}])
        if paths.last.is_file():
            trainer.restore(paths.last)
            update_info(paths, status="running", device=str(trainer.device), precision=trainer.precision,
                        precision_reason=trainer.precision_reason, total_steps=trainer.total_steps)
        else:  # died before its first checkpoint: start again, keeping nothing of that attempt
            trainer.truncate_logs()
            paths.best.unlink(missing_ok=True)
            _record_start(trainer)
        return _fit(trainer)


def _saved_step(paths: RunPaths) -> int:
    return load_checkpoint(paths.last)[1]["step"] if paths.last.is_file() else 0


def _with_resume_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """``config`` with the resumable settings in ``overrides`` changed; others are refused."""
    from betavae.config import parse_override

    for text in overrides:
        key = ".".join(parse_override(text)[0])
        if key not in RESUME_OVERRIDES:
            raise ConfigError(f"--resume cannot change {key!r} (it would not match the saved state); "
                              f"settings it can change: {', '.join(RESUME_OVERRIDES)}")
    return validate_config(apply_overrides(config.to_dict(), overrides))


def _check_same_data(paths: RunPaths, data: ImageData, allow_change: bool) -> None:
    """Refuses to resume on data other than the run's (another split or other images)."""
    saved = read_info(paths).get("data", {})
    now = _data_identity(data)
    changed = [key for key in ("fingerprint", "val_indices_hash") if saved.get(key) and saved[key] != now[key]]
    if not changed:
        return
    if not allow_change:
        what = " and ".join({"fingerprint": "the images", "val_indices_hash": "the train/val split"}[k] for k in changed)
        raise DataChangedError(
            f"{paths.root} was trained on other data: {what} changed since "
            f"(fingerprint {saved.get('fingerprint')} → {now['fingerprint']}, split "
            f"{saved.get('val_indices_hash')} → {now['val_indices_hash']}); resuming would mix two datasets. "
            "Train a new run, or pass --allow-data-change to continue anyway"
        )
    history = read_info(paths).get("data_changes", [])
    update_info(paths, data={**saved, **now}, data_changes=[*history, {"from": saved, "to": now}])


def _data_identity(data: ImageData) -> dict:
    return {"fingerprint": data.fingerprint,
            "val_indices_hash": fingerprint_array(np.asarray(data.val_indices, dtype=np.int64))}


def train_or_resume(config: RunConfig, run_dir: str | Path) -> tuple[RunPaths, str]:
    """Trains ``config`` into ``run_dir``, resumes it if interrupted, or leaves it if finished.

    Returns the run's paths and what was done: ``"trained"``, ``"resumed"`` or ``"finished earlier"``.
    A run folder that stopped otherwise (diverged, or died before its first record) is trained
    anew; a non-empty folder that is not a run folder is left alone (:class:`RunExistsError`).
    """
    paths = RunPaths(Path(run_dir))
    is_run = paths.config.is_file()
    status = read_info(paths).get("status") if is_run else None
    if status == "finished":
        return paths, "finished earlier"
    if status in ("running", "interrupted"):
        return resume(paths.root), "resumed"
    return train(config, paths.root, overwrite=is_run), "trained"


def _record_start(trainer: Trainer) -> None:
    data = trainer.data
    update_info(
        trainer.paths,
        status="running",
        environment=environment(),
        seed=trainer.config.train.seed,
        device=str(trainer.device),
        precision=trainer.precision,
        precision_reason=trainer.precision_reason,
        data_placement=trainer.placement.message(),
        parameters=count_parameters(trainer.model),
        data={
            **_data_identity(data),
            "images": len(data.images),
            "train": len(data.train_indices),
            "val": len(data.val_indices),
            **data.info,
        },
        steps_per_epoch=trainer.steps_per_epoch,
        total_steps=trainer.total_steps,
    )


def _fit(trainer: Trainer) -> RunPaths:
    if not trainer.workers.is_main:
        trainer.fit()
        return trainer.paths
    try:
        state = trainer.fit()
    except KeyboardInterrupt as exc:
        signal_name = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
        update_info(trainer.paths, status="interrupted", step=_saved_step(trainer.paths), stopped_by=signal_name)
        raise
    except TrainingDiverged as exc:
        update_info(trainer.paths, status="diverged", step=trainer.state.step, error=str(exc))
        raise
    update_info(trainer.paths, status="finished", step=state.step, best_step=state.best_step,
                best_val_loss=state.best_val_loss)
    return trainer.paths
