"""``betavae evaluate RUN``: reconstruction and sample quality, latent figures → ``RUN/eval/``.

Writes ``eval/metrics.json`` (every number with its settings), ``eval/reconstruction_per_image.csv``
and the figures below, then rebuilds the run's ``index.html``.
"""
from __future__ import annotations

import csv
import inspect
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from betavae import __version__
from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.figures import traversal_gif, traversal_sheet
from betavae.evaluation.latent_meaning import attribute_analysis, factor_analysis
from betavae.evaluation.reconstruction import (
    CONVENTION,
    load_folder,
    reconstruction_scores,
    summarize,
    uint8_chunks,
)
from betavae.evaluation.sample_quality import sample_quality
from betavae.figures import image_grid, plot_kl_per_dim, reconstruction_pairs, save_png
from betavae.fileio import write_json, write_text
from betavae.inference import TrainedModel, load, rank_dimensions
from betavae.metrics.disentanglement import DCI_BACKENDS, progress_bar
from betavae.metrics.fid import FeatureExtractor, inception_extractor
from betavae.report import write_run_index

ACTIVE_KL = 0.01  # nats: a dimension with more mean KL than this is counted as active
SHOWN_IMAGES = 16
FID_PRECISIONS = ("fp32", "bf16")
# disentanglement_lib's counts (10,000 training / 5,000 test points for every metric, DCI included):
# ``betavae evaluate --disentanglement-lib-counts``.
LIBRARY_POINTS = 10_000


@dataclass
class EvalOptions:
    """What ``betavae evaluate`` computes; the defaults are the CLI's."""

    checkpoint: str = "best"
    device: str = "cpu"
    max_images: int | None = None
    images: Path | None = None
    fid: bool = True
    fid_samples: int = 2400
    fid_reference: str | int = "all"
    kid: bool = False
    fid_weights: Path | None = None
    fid_batch_size: int = 50
    fid_precision: str = "fp32"
    cache_dir: Path | None = None
    top_k: int = 8
    traversal_range: tuple[float, float] = (-3.0, 3.0)
    traversal_steps: int = 7
    index: int = 0
    seed: int = 0
    progress: bool = True
    disentanglement: bool = True
    disentanglement_points: int = 10_000
    dci_points: int = 10_000
    rendered_points: int | None = None  # None: disentanglement_points, at most 1,000
    dci_backend: str = "hist"


def evaluate_run(run_dir: str | Path, options: EvalOptions | None = None,
                 extractor: FeatureExtractor | None = None) -> dict:
    """Evaluates a run into ``run_dir/eval/`` and returns the contents of ``metrics.json``.

    ``extractor`` replaces the FID Inception network (tests use a small stand-in).
    """
    options = options or EvalOptions()
    started = time.perf_counter()
    _check_choices(options)
    if options.fid and extractor is None:  # find the weights before any long computation
        extractor = _inception(options)
    trained = load(run_dir, options.checkpoint, options.device)
    _check_options(trained, options)
    out = Path(run_dir) / "eval"
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    val_rows, selection = _validation_rows(trained, options)
    reconstruction, per_image, outside, kl = _reconstruction(trained, val_rows, selection, options)
    write_text(out / "reconstruction_per_image.csv", per_image)
    seconds["reconstruction"] = round(time.perf_counter() - tick, 2)

    tick = time.perf_counter()
    factors = None
    if options.disentanglement:
        factors = factor_analysis(trained, out, options.disentanglement_points, options.dci_points, options.seed,
                                  options.dci_backend, options.progress, options.rendered_points)
    attributes = attribute_analysis(trained, out, val_rows, progress=options.progress)
    seconds["latent_meaning"] = round(time.perf_counter() - tick, 2)

    tick = time.perf_counter()
    labels = {d: label for d, label in enumerate(factors["labels"]) if label != "—"} if factors else {}
    figures = _figures(trained, out, val_rows, outside, kl, options, labels)
    seconds["figures"] = round(time.perf_counter() - tick, 2)

    quality = {"skipped": "--no-fid"}
    if options.fid:
        tick = time.perf_counter()
        quality = sample_quality(trained, extractor, options.fid_samples, options.fid_reference, options.kid,
                                 options.seed, options.cache_dir)
        seconds["sample_quality"] = round(time.perf_counter() - tick, 2)
    seconds["total"] = round(time.perf_counter() - started, 2)

    metrics = {
        **_headline(reconstruction, quality, kl),
        **(factors["summary"] if factors else {}),
        "reconstruction": reconstruction,
        "sample_quality": quality,
        "disentanglement": factors or {"skipped": "the data have no ground-truth factors" if options.disentanglement
                                       else "--no-disentanglement"},
        "attributes": attributes or {"skipped": "the data have no per-image attributes"},
        "latents": _latents(kl, options),
        "files": {"figures": [str(path.relative_to(run_dir)) for path in figures],
                  "per_image": "eval/reconstruction_per_image.csv"},
        "evaluated": {
            "run": str(Path(run_dir).resolve()),
            "checkpoint": options.checkpoint,
            "options": {k: _plain(v) for k, v in asdict(options).items()},
            "betavae_version": __version__,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": seconds,
        },
    }
    write_json(out / "metrics.json", metrics)
    write_run_index(run_dir)
    return metrics


def _plain(value):
    """An option value as JSON writes and reads it back."""
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _check_choices(options: EvalOptions) -> None:
    """Rejects unknown option values before anything is loaded."""
    if options.dci_backend not in DCI_BACKENDS:
        raise ValueError(f"--dci-backend must be one of {', '.join(DCI_BACKENDS)}, got {options.dci_backend!r}")
    if options.fid_precision not in FID_PRECISIONS:
        raise ValueError(f"--fid-precision must be one of {', '.join(FID_PRECISIONS)}, got {options.fid_precision!r}")


def _inception(options: EvalOptions) -> FeatureExtractor:
    """The FID network; ``precision`` is passed only when it is not fp32, so that this works with an
    ``inception_extractor`` that predates the argument (then bf16 is refused here, clearly)."""
    extra = {}
    if options.fid_precision != "fp32":
        if "precision" not in inspect.signature(inception_extractor).parameters:
            raise ValueError(f"--fid-precision {options.fid_precision}: this version's FID network "
                             "(betavae.metrics.fid.inception_extractor) runs in fp32 only")
        extra["precision"] = options.fid_precision
    return inception_extractor(options.fid_weights, options.fid_batch_size, options.device, options.progress,
                               **extra)


def _check_options(trained: TrainedModel, options: EvalOptions) -> None:
    """Rejects settings that would fail late, before the long computations."""
    n_val = len(trained.data().val_indices)
    if not 0 <= options.index < n_val:
        raise ValueError(f"--index {options.index} is not a validation image (0..{n_val - 1})")
    if options.traversal_steps < 2:
        raise ValueError(f"--steps must be at least 2, got {options.traversal_steps}")
    if options.fid and options.fid_samples < 2:
        raise ValueError(f"--fid-samples must be at least 2, got {options.fid_samples}")


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
                    options: EvalOptions) -> tuple[dict, str, np.ndarray | None, np.ndarray]:
    """Per-image PSNR/SSIM on the validation split (and an outside folder): summaries, a CSV, the
    outside images, and the validation images' mean KL per dimension (from the same encoding)."""
    with progress_bar(options.progress, len(val_rows), "reconstruction (validation)", "img") as bar:
        psnrs, ssims, kl = reconstruction_scores(trained, _counted(_dataset_chunks(trained, val_rows), bar))
    result = {"convention": CONVENTION,
              "validation": {"psnr": summarize(psnrs), "ssim": summarize(ssims), "n": len(val_rows), "images": selection}}
    table = [("validation", int(i), p, s) for i, p, s in zip(val_rows, psnrs, ssims)]
    outside = None
    if options.images is not None:
        folder = load_folder(options.images, trained.image_size, trained.channels, options.max_images)
        with progress_bar(options.progress, len(folder.images), "reconstruction (outside images)", "img") as bar:
            psnrs, ssims, _ = reconstruction_scores(trained, _counted(uint8_chunks(folder.images), bar))
        colour = "grayscale" if trained.channels == 1 else "RGB"
        result["outside"] = {"psnr": summarize(psnrs), "ssim": summarize(ssims), "n": len(folder.names),
                             "folder": str(Path(options.images).resolve()), "skipped": folder.skipped,
                             "images": f"{colour}, shorter side resized to {trained.image_size} (bilinear), centre crop"}
        table += [("outside", name, p, s) for name, p, s in zip(folder.names, psnrs, ssims)]
        outside = folder.images
    return result, _per_image_csv(table), outside, kl


def _counted(batches, bar):
    """Yields the batches, advancing ``bar`` by each batch's length once it has been used."""
    for batch in batches:
        yield batch
        bar.update(len(batch))


def _per_image_csv(rows: list[tuple]) -> str:
    """CSV text of (set, item, psnr, ssim) rows; item is a dataset index or a file name."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["set", "item", "psnr", "ssim"])
    writer.writerows((kind, item, f"{p:.6f}", f"{s:.6f}") for kind, item, p, s in rows)
    return text.getvalue()


def _figures(trained: TrainedModel, out: Path, val_rows: np.ndarray, outside: np.ndarray | None, kl: np.ndarray,
             options: EvalOptions, labels: dict[int, str]) -> list[Path]:
    """Samples, reconstructions, KL bars, traversals (image, prior, all dims) and the traversal GIF;
    traversal rows carry the factor a dimension captures when ``labels`` has it."""
    low, high = options.traversal_range
    values = np.linspace(low, high, options.traversal_steps)
    top = [int(d) for d in rank_dimensions(kl)[: options.top_k]]
    shown = trained.images(val_rows[:SHOWN_IMAGES])
    image = trained.images(np.sort(trained.data().val_indices)[[options.index]])
    z_image = trained.encode(image).mean[0]
    z_prior = torch.randn(trained.latent_dim, generator=torch.Generator().manual_seed(options.seed))

    def png(name: str, draw) -> Callable[[], Path]:
        return lambda: save_png(draw(), out / name)

    steps = [
        png("random_samples.png", lambda: _enlarge(image_grid(trained.sample(64, options.seed)[1], nrow=8))),
        png("reconstructions_validation.png", lambda: _enlarge(reconstruction_pairs(shown, trained.reconstruct(shown)))),
        lambda: plot_kl_per_dim(kl, out / "kl_per_dimension.png", threshold=ACTIVE_KL),
        png("traversals_top_dims_from_image.png", lambda: traversal_sheet(trained, z_image, top, values, kl, labels)),
        png("traversals_top_dims_from_prior.png", lambda: traversal_sheet(trained, z_prior, top, values, kl, labels)),
        png("traversals_all_dims.png",
            lambda: traversal_sheet(trained, z_image, range(trained.latent_dim), values, kl, labels, scale=1)),
        lambda: traversal_gif(trained, z_image, top, low, high, out / "traversals_top_dims.gif"),
    ]
    if outside is not None:
        outside_shown = uint8_to_unit(outside[:SHOWN_IMAGES])
        steps.append(png("reconstructions_outside_images.png",
                         lambda: _enlarge(reconstruction_pairs(outside_shown, trained.reconstruct(outside_shown)))))
    figures = []
    with progress_bar(options.progress, len(steps), "figures", "figure") as bar:
        for draw in steps:
            figures.append(draw())
            bar.update()
    return figures


def _enlarge(image: Image.Image, scale: int = 2) -> Image.Image:
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def _headline(reconstruction: dict, quality: dict, kl: np.ndarray) -> dict:
    """The top-level numbers (shown in index.html)."""
    headline = {"psnr_val": reconstruction["validation"]["psnr"]["mean"],
                "ssim_val": reconstruction["validation"]["ssim"]["mean"],
                "n_val": reconstruction["validation"]["n"]}
    if "outside" in reconstruction:
        outside = reconstruction["outside"]
        headline.update(psnr_outside=outside["psnr"]["mean"], ssim_outside=outside["ssim"]["mean"], n_outside=outside["n"])
    if "fid" in quality:
        headline.update(fid=quality["fid"], fid_n_samples=quality["n_samples"], fid_n_reference=quality["reference"]["n"])
    if "kid" in quality:
        headline.update(kid=quality["kid"], kid_std=quality["kid_std"])
    headline["active_dims"] = int((kl > ACTIVE_KL).sum())
    return headline


def _latents(kl: np.ndarray, options: EvalOptions) -> dict:
    ranked = rank_dimensions(kl)
    return {
        "kl_per_dim": [round(float(v), 6) for v in kl],
        "kl_images": "the validation images of the reconstruction metrics",
        "active_threshold_nats": ACTIVE_KL,
        "active_dims": [int(d) for d in np.flatnonzero(kl > ACTIVE_KL)],
        "ranked_dims": [int(d) for d in ranked],
        "traversal": {"top_k": min(options.top_k, len(kl)), "range": list(options.traversal_range),
                      "steps": options.traversal_steps, "image": f"validation image {options.index}",
                      "prior_code_seed": options.seed},
    }
