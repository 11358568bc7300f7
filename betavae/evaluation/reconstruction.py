"""Reconstruction quality: PSNR and SSIM of images against their reconstructions from μ.

Everything is computed on images in [0, 1] (model outputs mapped back from the model's
normalisation) with data range 1. Outside images are brought to the model's input the way
``betavae prepare`` treats training images: EXIF orientation, RGB or grayscale, shorter side
resized to the model's size (bilinear, antialiased), centre crop.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from betavae.data import imageio
from betavae.data.recipes.base import IMAGE_EXTENSIONS
from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.scores import Score
from betavae.metrics.image import SSIM_CONVENTION, psnr, ssim

_BATCH = 256


@dataclass(frozen=True)
class ImageMetric:
    """A full-reference metric computed per image (float ``(N, C, H, W)`` in [0, 1], data range 1)."""

    per_image: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    label: str
    description: str
    digits: int


# Every per-image metric of ``evaluate``: a column of the per-image CSV, a mean ± std in
# metrics.json and the headline scores ``<name>_val`` (and ``<name>_outside``).
IMAGE_METRICS: dict[str, ImageMetric] = {
    "psnr": ImageMetric(psnr, "PSNR (dB)", "peak signal-to-noise ratio of reconstructions from μ", 2),
    "ssim": ImageMetric(ssim, "SSIM", "structural similarity of reconstructions from μ", 3),
}
IMAGE_SETS = {"val": "validation images", "outside": "outside images (evaluate --images)"}


def image_scores() -> list[Score]:
    """The headline scores of :data:`IMAGE_METRICS` on each image set, and each set's image count."""
    scores = [Score(f"{name}_{short}", metric.label, f"mean {metric.description} on the {where}", better=1,
                    digits=metric.digits) for short, where in IMAGE_SETS.items() for name, metric in IMAGE_METRICS.items()]
    return scores + [Score(f"n_{short}", "n", f"number of {where} scored", integer=True) for short, where in IMAGE_SETS.items()]
CONVENTION = {
    "images": "float in [0, 1]: data mapped back from the model's normalisation, reconstructions clamped",
    "reconstruction": "decoder(mu), the posterior mean (no sampling)",
    "data_range": 1.0,
    "psnr": "10*log10(L^2 / MSE) per image (MSE over pixels and channels), then mean/std over images",
    "ssim": SSIM_CONVENTION,
    "std": "sample standard deviation over images (N-1)",
}


@dataclass
class ImageFolder:
    """Images read from a folder: uint8 ``(N, H, W, C)``, their names, and why others were skipped."""

    images: np.ndarray
    names: list[str]
    skipped: dict[str, int] = field(default_factory=dict)


def load_image(path: str | Path, size: int, channels: int) -> np.ndarray:
    """One image file → uint8 ``(size, size, channels)``, transformed like the training data
    (:func:`betavae.data.imageio.outside_image`); raises ``SkipImage`` for a file that is not one."""
    return imageio.outside_image(Path(path).read_bytes(), size, channels)


def load_folder(folder: str | Path, size: int, channels: int, max_images: int | None = None) -> ImageFolder:
    """Every image under ``folder`` (sorted, recursive), unreadable files skipped and counted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    arrays, names, skipped = [], [], Counter()
    for path in files:
        if max_images is not None and len(arrays) >= max_images:
            break
        try:
            arrays.append(load_image(path, size, channels))
            names.append(path.relative_to(folder).as_posix())
        except imageio.SkipImage as exc:
            skipped[exc.reason] += 1
    if not arrays:
        raise ValueError(f"no usable images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)}; skipped: {dict(skipped)})")
    return ImageFolder(np.stack(arrays), names, dict(skipped))


def reconstruction_scores(trained, batches: Iterable[torch.Tensor]) -> dict[str, np.ndarray]:
    """Every :data:`IMAGE_METRICS` value per image of each [0, 1] image batch against its
    reconstruction from μ."""
    values: dict[str, list[np.ndarray]] = {name: [] for name in IMAGE_METRICS}
    for x01 in batches:
        recon = trained.reconstruct(x01)
        for name, metric in IMAGE_METRICS.items():
            values[name].append(metric.per_image(x01, recon).numpy())
    return {name: np.concatenate(parts) for name, parts in values.items()}


def uint8_chunks(images: np.ndarray, batch_size: int = _BATCH) -> Iterable[torch.Tensor]:
    """uint8 ``(N, H, W, C)`` → float [0, 1] ``(B, C, H, W)`` batches."""
    for start in range(0, len(images), batch_size):
        yield uint8_to_unit(images[start:start + batch_size])


def summarize(values: np.ndarray) -> dict:
    """Mean, sample std (N − 1; 0 for one value), min, max and n of per-image values."""
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "n": int(len(values)),
    }
