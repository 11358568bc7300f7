"""What the latent dimensions mean: disentanglement metrics and factor names on ground-truth data,
and the dimensions most associated with each attribute on data with per-image attributes (CelebA)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.dimensions import attribute_dimensions
from betavae.evaluation.disentanglement import disentanglement_report
from betavae.fileio import write_json
from betavae.inference import TrainedModel
from betavae.metrics.disentanglement import progress_bar
from betavae.runs import RunPaths

ENCODE_BATCH = 2048
ENCODER_BATCH = 256  # images per encoder call for the metrics (measured: metric_represent)
# Default cap on the BetaVAE/FactorVAE scores' points: each renders and encodes 64 or 128 images,
# so these two scores cost ~190× the images of MIG/SAP/DCI per point (README "Evaluation").
RENDERED_POINTS = 1000


def metric_represent(trained: TrainedModel) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``trained.represent`` (uint8 images → posterior means and log-variances) for the metrics."""
    return encoder_represent(trained.model, trained.normalizer, trained.device)


def encoder_represent(model, normalizer, device) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """uint8 images → the model's posterior means and log-variances, for the metrics: each batch of
    :data:`ENCODER_BATCH` images converted to float on its own (no float copy of a whole render
    chunk), no autograd bookkeeping (``inference_mode``).

    Larger batches were slower here (demo model, 2 threads, 8,192 images): 8,200 images/s at 256,
    5,600 at 1,024, 4,600 at 4,096 — their activations no longer fit the caches, and each call's
    fresh multi-megabyte buffers cost page faults (system time)."""

    @torch.inference_mode()
    def represent(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        means, logvars = [], []
        for start in range(0, len(images), ENCODER_BATCH):
            x = normalizer.from_unit(uint8_to_unit(images[start:start + ENCODER_BATCH], device))
            posterior = model.encode(x)
            means.append(posterior.mean.float().cpu().numpy())
            logvars.append(posterior.logvar.float().cpu().numpy())
        return np.concatenate(means), np.concatenate(logvars)

    return represent


def _rendered_points(points: int, rendered_points: int | None) -> int:
    """The BetaVAE/FactorVAE points: as given, else ``points`` up to :data:`RENDERED_POINTS`."""
    return min(points, RENDERED_POINTS) if rendered_points is None else rendered_points


def _factor_report(represent, data, out_path, points: int, seed: int, dci_points: int | None = None,
                   dci_backend: str = "hist", progress: bool = False, rendered_points: int | None = None) -> dict:
    """:func:`disentanglement_report` with ``points // 2`` test points and :func:`_rendered_points`."""
    rendered_points = _rendered_points(points, rendered_points)
    return disentanglement_report(represent, data, out_path, rng_seed=seed, num_train=points,
                                  num_eval=max(points // 2, 1), dci_num_train=min(dci_points or points, points),
                                  dci_backend=dci_backend, progress=progress, rendered_num_train=rendered_points,
                                  rendered_num_eval=max(rendered_points // 2, 1))


def factor_summary(model: torch.nn.Module, normalizer, device, data, points: int, seed: int = 0) -> dict[str, float]:
    """The headline disentanglement scores of a model being trained (``train.factor_metrics_every``),
    on ``points`` points sampled with ``seed`` (the same points at every check); the model is put in
    eval mode for the check and back after. Writes nothing."""
    was_training = model.training
    model.eval()
    try:
        report = _factor_report(encoder_represent(model, normalizer, device), data, None, points, seed)
    finally:
        model.train(was_training)
    return report["summary"]


def factor_analysis(trained: TrainedModel, paths: RunPaths, points: int, dci_points: int, seed: int,
                    dci_backend: str = "hist", progress: bool = False,
                    rendered_points: int | None = None) -> dict | None:
    """disentanglement_lib's metrics and per-dimension factor names, or None without factors.

    ``points`` training points (``points // 2`` test points) for MIG, SAP and DCI, DCI on at most
    ``dci_points`` of them with ``dci_backend``; ``rendered_points`` for the BetaVAE and FactorVAE
    scores (default: ``points``, at most :data:`RENDERED_POINTS`). ``notes`` say where an optimiser stopped at its iteration limit
    (instead of scikit-learn's warnings)."""
    data = trained.data()
    if data.factors is None:
        return None
    rendered_points = _rendered_points(points, rendered_points)
    report = _factor_report(metric_represent(trained), data, paths.disentanglement, points, seed, dci_points,
                            dci_backend, progress, rendered_points)
    labels = [entry["label"] for entry in sorted(report["dimensions"], key=lambda entry: entry["dim"])]
    return {"summary": report["summary"], "labels": labels, "notes": report["notes"],
            "points": {"num_train": points, "num_test": max(points // 2, 1),
                       "dci_num_train": report["dci"]["num_train"], "dci_backend": dci_backend,
                       **({"rendered_num_train": rendered_points, "rendered_num_eval": max(rendered_points // 2, 1)}
                          if data.source is not None else {})},
            "seconds": report["seconds"], "file": _relative(paths, paths.disentanglement)}


def attribute_analysis(trained: TrainedModel, paths: RunPaths, rows: np.ndarray, top_k: int = 3,
                       progress: bool = False) -> dict | None:
    """The ``top_k`` dimensions most correlated with each per-image attribute, or None without attributes."""
    config = trained.config.data
    if config.name != "prepared":
        return None
    from betavae.data.prepared import PrepareError, load_attributes

    try:
        names, values = load_attributes(config.path)
    except PrepareError:
        return None
    parts, represent = [], metric_represent(trained)
    with progress_bar(progress, len(rows), "encoding for attributes", "img") as bar:
        for start in range(0, len(rows), ENCODE_BATCH):
            parts.append(represent(trained.data().images[rows[start:start + ENCODE_BATCH]])[0])
            bar.update(len(parts[-1]))
    codes = np.concatenate(parts)
    binary = [k for k in range(values.shape[1]) if np.unique(values[rows, k]).size == 2]
    if not binary:
        return None
    result = attribute_dimensions(codes, values[rows][:, binary], [names[k] for k in binary], top_k=top_k)
    report = {"method": "absolute point-biserial correlation of the encoder mean with the attribute",
              "images": int(len(rows)), "attributes": result}
    write_json(paths.attributes, report)
    return {"file": _relative(paths, paths.attributes),
            "top_dims": {name: [e["dim"] for e in entries] for name, entries in result.items()}}


def _relative(paths: RunPaths, path) -> str:
    return path.relative_to(paths.root).as_posix()
