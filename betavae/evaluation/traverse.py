"""``betavae traverse RUN``: encode one image, sweep chosen latent dimensions, save the strip."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from betavae.data.imageio import SkipImage
from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.figures import image_traversal
from betavae.evaluation.reconstruction import load_image
from betavae.figures import save_png
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
                    checkpoint: str = "best", scale: int = 2) -> tuple[Path, list[int]]:
    """Writes the traversal strip of ``image`` (or validation image ``index``); returns its path and the dims.

    Without ``dims`` the run's 8 top dimensions (its stored ranking, :mod:`betavae.latents`) are swept.
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
    if dims is None:
        chosen = latent_ranking(trained).top(DEFAULT_TOP_K)
    else:
        chosen = parse_dims(dims, trained.latent_dim)
    strip = image_traversal(trained, x01, chosen, np.linspace(low, high, steps), scale=scale)
    return save_png(strip, out), chosen
