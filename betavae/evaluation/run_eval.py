"""``betavae evaluate RUN``: reconstruction and sample quality, latent meaning and every figure.

Writes ``eval/metrics.json`` (the typed headline, then every number with its settings),
``eval/reconstruction_per_image.csv``, the disentanglement and attribute reports when the data
have factors or attributes, every figure of :data:`betavae.evaluation.figure_set.FIGURES` into
``figures/``, and the run page. Every path comes from :class:`betavae.runs.RunPaths`.
"""
from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator

from betavae import __version__
from betavae.evaluation.figure_set import FigureInputs, write_figures
from betavae.evaluation.headline import Headline
from betavae.evaluation.latent_meaning import attribute_analysis, factor_analysis
from betavae.evaluation.naming import name_labels, stored_dimension_names
from betavae.evaluation.reconstruction import (
    CONVENTION,
    IMAGE_METRICS,
    load_folder,
    reconstruction_scores,
    summarize,
    uint8_chunks,
)
from betavae.evaluation.sample_quality import sample_quality
from betavae.fileio import write_json, write_text
from betavae.inference import TrainedModel, load
from betavae.latents import LatentRanking, latent_ranking
from betavae.metrics.disentanglement import progress_bar
from betavae.metrics.fid import FeatureExtractor, inception_extractor
from betavae.run_page import write_run_page
from betavae.runs import RunPaths
from betavae.strict import StrictModel

# disentanglement_lib's counts (10,000 training / 5,000 test points for every metric, DCI included):
# ``betavae evaluate --disentanglement-lib-counts``.
LIBRARY_POINTS = 10_000


class EvalOptions(StrictModel):
    """What ``betavae evaluate`` computes: the one options model of the command. The CLI's flags and
    a study's ``evaluate:`` section are validated into it; the defaults are the CLI's."""

    checkpoint: str = "best"
    device: str = "cpu"
    max_images: PositiveInt | None = None
    images: Path | None = None
    fid: bool = True
    fid_samples: int = Field(2400, ge=2)
    fid_reference: Literal["all"] | PositiveInt = "all"
    kid: bool = False
    fid_weights: Path | None = None
    fid_batch_size: PositiveInt = 50
    fid_precision: Literal["fp32", "bf16"] = "fp32"
    cache_dir: Path | None = None
    top_k: PositiveInt = 8
    traversal_range: tuple[float, float] = (-3.0, 3.0)
    traversal_steps: int = Field(7, ge=2)
    index: int = Field(0, ge=0)
    seed: int = Field(0, ge=0)
    progress: bool = True
    disentanglement: bool = True
    disentanglement_points: PositiveInt = 10_000
    dci_points: PositiveInt = 10_000
    rendered_points: PositiveInt | None = None  # None: disentanglement_points, at most 1,000
    dci_backend: Literal["hist", "exact"] = "hist"
    # Samplers whose sample quality is compared (betavae.samplers.SAMPLERS); the prior is always one,
    # and the headline's. Fitted ones are fitted and stored in RUN/samplers/ first when missing.
    samplers: list[str] = Field(["prior"], min_length=1)

    @field_validator("samplers")
    @classmethod
    def _known_samplers(cls, value: list[str]) -> list[str]:
        from betavae.samplers import check_kind

        return ["prior", *(check_kind(kind) for kind in dict.fromkeys(value) if kind != "prior")]


def evaluate_run(run_dir: str | Path, options: EvalOptions | None = None,
                 extractor: FeatureExtractor | None = None) -> dict:
    """Evaluates a run (see the module docstring) and returns the contents of ``metrics.json``.

    ``extractor`` replaces the FID Inception network (tests use a small stand-in).
    """
    options = options or EvalOptions()
    started = time.perf_counter()
    if options.fid and extractor is None:  # find the weights before any long computation
        extractor = inception_extractor(options.fid_weights, options.fid_batch_size, options.device,
                                        options.progress, precision=options.fid_precision)
    trained = load(run_dir, options.checkpoint, options.device)
    _check_options(trained, options)
    paths = RunPaths(Path(run_dir))
    ranking = latent_ranking(trained)
    seconds: dict[str, float] = {}
    stage = functools.partial(_timed, seconds)

    with stage("reconstruction"):
        val_rows, selection = _validation_rows(trained, options)
        reconstruction, per_image, outside = _reconstruction(trained, val_rows, selection, options)
        write_text(paths.per_image, per_image)

    with stage("latent_meaning"):
        factors = None
        if options.disentanglement:
            factors = factor_analysis(trained, paths, options.disentanglement_points, options.dci_points,
                                      options.seed, options.dci_backend, options.progress, options.rendered_points)
        attributes = attribute_analysis(trained, paths, val_rows, progress=options.progress)
        for report, made in ((paths.disentanglement, factors), (paths.attributes, attributes)):
            if made is None:
                report.unlink(missing_ok=True)  # an earlier evaluation's, which no longer applies
    with stage("dimension_names"):
        names = stored_dimension_names(trained, ranking)  # named from decoded traversals, no labels needed

    with stage("figures"):
        labels = {d: label for d, label in enumerate(factors["labels"]) if label != "—"} if factors else {}
        labels = labels or name_labels(names)  # without factor labels, the unsupervised names
        values = np.linspace(*options.traversal_range, options.traversal_steps)
        inputs = FigureInputs(trained, ranking, options.top_k, values, options.seed, options.index, outside, labels)
        figures = write_figures(inputs, progress=options.progress)

    quality = {"skipped": "--no-fid"}
    if options.fid:
        with stage("sample_quality"):
            quality = sample_quality(trained, extractor, options.fid_samples, options.fid_reference, options.kid,
                                     options.seed, options.cache_dir, options.samplers)
    seconds["total"] = round(time.perf_counter() - started, 2)

    headline = Headline(**_headline_values(reconstruction, quality, ranking, factors))
    metrics = {
        "headline": headline.computed(),
        "reconstruction": reconstruction,
        "sample_quality": quality,
        "disentanglement": factors or {"skipped": "the data have no ground-truth factors" if options.disentanglement
                                       else "--no-disentanglement"},
        "attributes": attributes or {"skipped": "the data have no per-image attributes"},
        "latents": _latents(ranking, options),
        "dimension_names": names,
        "files": {"figures": [path.relative_to(paths.root).as_posix() for path in figures],
                  "per_image": paths.per_image.relative_to(paths.root).as_posix()},
        "evaluated": {
            "run": str(paths.root.resolve()),
            "checkpoint": options.checkpoint,
            "options": options.model_dump(mode="json"),
            "betavae_version": __version__,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds,
        },
    }
    write_json(paths.eval_metrics, metrics)
    write_run_page(paths.root)
    return metrics


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Records the wall time of the block in ``seconds[name]`` (metrics.json ``evaluated.seconds``)."""
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 2)


def _check_options(trained: TrainedModel, options: EvalOptions) -> None:
    """Rejects settings that depend on the run, before the long computations."""
    n_val = len(trained.data().val_indices)
    if options.index >= n_val:
        raise ValueError(f"--index {options.index} is not a validation image (0..{n_val - 1})")


def _validation_rows(trained: TrainedModel, options: EvalOptions) -> tuple[np.ndarray, str]:
    """All validation indices, or a seeded random ``max_images`` of them (sorted), and how they were chosen."""
    total = len(trained.data().val_indices)
    rows = trained.validation_sample(options.max_images, options.seed)
    if len(rows) == total:
        return rows, f"validation split, all {total} images"
    return rows, f"validation split, seeded random subset (seed {options.seed}) of {len(rows)} of {total}"


def _dataset_chunks(trained: TrainedModel, rows: np.ndarray, size: int = 256):
    for start in range(0, len(rows), size):
        yield trained.images(rows[start:start + size])


def _reconstruction(trained: TrainedModel, val_rows: np.ndarray, selection: str,
                    options: EvalOptions) -> tuple[dict, str, np.ndarray | None]:
    """Every :data:`IMAGE_METRICS` value per image on the validation split (and an outside folder):
    summaries, a CSV, and the outside images."""
    with progress_bar(options.progress, len(val_rows), "reconstruction (validation)", "img") as bar:
        scores = reconstruction_scores(trained, _counted(_dataset_chunks(trained, val_rows), bar))
    result = {"convention": CONVENTION,
              "validation": {**_summaries(scores), "n": len(val_rows), "images": selection}}
    table = [("validation", int(i), *row) for i, row in zip(val_rows, zip(*scores.values()))]
    outside = None
    if options.images is not None:
        folder = load_folder(options.images, trained.image_size, trained.channels, options.max_images)
        with progress_bar(options.progress, len(folder.images), "reconstruction (outside images)", "img") as bar:
            scores = reconstruction_scores(trained, _counted(uint8_chunks(folder.images), bar))
        colour = "grayscale" if trained.channels == 1 else "RGB"
        result["outside"] = {**_summaries(scores), "n": len(folder.names),
                             "folder": str(Path(options.images).resolve()), "skipped": folder.skipped,
                             "images": f"{colour}, shorter side resized to {trained.image_size} (bilinear), centre crop"}
        table += [("outside", name, *row) for name, row in zip(folder.names, zip(*scores.values()))]
        outside = folder.images
    return result, _per_image_csv(table), outside


def _summaries(scores: dict[str, np.ndarray]) -> dict[str, dict]:
    return {name: summarize(values) for name, values in scores.items()}


def _counted(batches, bar):
    """Yields the batches, advancing ``bar`` by each batch's length once it has been used."""
    for batch in batches:
        yield batch
        bar.update(len(batch))


def _per_image_csv(rows: list[tuple]) -> str:
    """CSV text of (set, item, one value per image metric) rows; item is a dataset index or a file name."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["set", "item", *IMAGE_METRICS])
    writer.writerows((kind, item, *(f"{v:.6f}" for v in values)) for kind, item, *values in rows)
    return text.getvalue()


def _headline_values(reconstruction: dict, quality: dict, ranking: LatentRanking, factors: dict | None) -> dict:
    """The values of the headline's scores (see :mod:`betavae.evaluation.headline`)."""
    values = {}
    for short, key in (("val", "validation"), ("outside", "outside")):
        if key in reconstruction:
            values |= {f"{name}_{short}": reconstruction[key][name]["mean"] for name in IMAGE_METRICS}
            values[f"n_{short}"] = reconstruction[key]["n"]
    if "fid" in quality:
        values.update(fid=quality["fid"], fid_n_samples=quality["n_samples"], fid_n_reference=quality["reference"]["n"])
    if "kid" in quality:
        values.update(kid=quality["kid"], kid_std=quality["kid_std"])
    values.update({key: quality[key] for key in ("precision", "recall", "density", "coverage") if key in quality})
    values["active_dims"] = len(ranking.active)
    return values | (factors["summary"] if factors else {})


def _latents(ranking: LatentRanking, options: EvalOptions) -> dict:
    return {
        "kl_per_dim": ranking.kl_per_dim,
        "kl_images": f"the ranking sample: {ranking.images} validation images (betavae.latents; RUN/latents.json)",
        "active_threshold_nats": ranking.active_threshold_nats,
        "active_dims": ranking.active,
        "ranked_dims": ranking.order,
        "traversal": {"top_k": min(options.top_k, len(ranking.order)), "range": list(options.traversal_range),
                      "steps": options.traversal_steps, "image": f"validation image {options.index}",
                      "prior_code_seed": options.seed},
    }
