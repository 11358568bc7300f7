"""``betavae traverse RUN``: encode one image, sweep chosen latent dimensions, save the strip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from betavae.data.imageio import SkipImage
from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.naming import dimension_labels
from betavae.evaluation.reconstruction import load_image
from betavae.figures import enlarge, image_grid, save_png, traversal_images, with_row_labels
from betavae.inference import load
from betavae.latents import latent_ranking

DEFAULT_TOP_K = 8


def parse_dims(text: str, latent_dim: int) -> list[int]:
    """``"11,16"`` → [11, 16], each checked against the model's latent size."""
    try:
        dims = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--dims {text!r} must be comma-separated integers, e.g. 11,16") from None
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if not dims or bad:
        raise ValueError(f"--dims {text!r}: this model has latent dimensions 0..{latent_dim - 1}")
    return dims


def write_traversal(run_dir: str | Path, out: str | Path, image: str | Path | None = None, index: int = 0,
                    dims: str | None = None, low: float = -3.0, high: float = 3.0, steps: int = 7,
                    checkpoint: str = "best", scale: int = 2, labels: bool = False) -> tuple[Path, list[int]]:
    """Writes the traversal strip of ``image`` (or validation image ``index``); returns its path and the dims.

    Without ``dims`` the run's 8 top dimensions (its stored ranking, :mod:`betavae.latents`) are swept.
    With ``labels`` each row also names its dimension: the factor it captures (disentanglement report),
    else its name from decoded traversals (:mod:`betavae.evaluation.naming`).
    """
    if steps < 2:
        raise ValueError(f"--steps must be at least 2, got {steps}")
    trained = load(run_dir, checkpoint)
    if image is not None:
        try:
            x01 = uint8_to_unit(load_image(image, trained.image_size, trained.channels)[None])
        except SkipImage as exc:
            raise ValueError(f"--image {image}: not a usable image ({exc})") from None
    else:
        val = np.sort(trained.data().val_indices)
        if not 0 <= index < len(val):
            raise ValueError(f"--index {index} is not a validation image (0..{len(val) - 1})")
        x01 = trained.images(val[[index]])
    ranking = latent_ranking(trained) if dims is None or labels else None
    chosen = ranking.top(DEFAULT_TOP_K) if dims is None else parse_dims(dims, trained.latent_dim)
    named = dimension_labels(trained, ranking) if labels else {}
    rows = [f"z{d}" + (f"\n{named[d]}" if d in named else "") for d in chosen]
    strip = _image_traversal(trained, x01, chosen, np.linspace(low, high, steps), rows, scale)
    return save_png(strip, out), chosen


def _image_traversal(trained, x01, dims: list[int], values: np.ndarray, labels: list[str], scale: int):
    """The input image (first column), then μ with each of ``dims`` swept over ``values``; rows labelled."""
    z = trained.encode(x01[:1]).mean[0]
    swept = traversal_images(trained, z, dims, list(values))
    rows = [torch.cat([x01[:1], swept[r * len(values):(r + 1) * len(values)]]) for r in range(len(dims))]
    grid = image_grid(torch.cat(rows), nrow=len(values) + 1)
    return enlarge(with_row_labels(grid, labels, trained.image_size + 2), scale)
