"""Latent figures: labelled traversal sheets, an image's traversal strip, an animated GIF.

Grids, labels and PNG writing come from :mod:`betavae.figures`.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from betavae.figures import enlarge, image_grid, traversal_grid, traversal_images, with_row_labels

_PAD = 2  # the gap image_grid leaves between tiles


def traversal_sheet(trained, z_base: torch.Tensor, dims: Sequence[int], values: Sequence[float],
                    kl: np.ndarray, factor_labels: dict[int, str] | None = None, scale: int = 2) -> Image.Image:
    """One row per dimension, labelled with its mean KL (and the factor it captures, when known),
    one column per value, enlarged ``scale``×."""
    factor_labels = factor_labels or {}
    labels = [f"z{d} {kl[d]:.2f}" + (f"\n{factor_labels[d]}" if d in factor_labels else "") for d in dims]
    return enlarge(traversal_grid(trained, z_base, list(dims), list(values), labels=labels), scale)


def image_traversal(trained, x01: torch.Tensor, dims: Sequence[int], values: Sequence[float],
                    scale: int = 2) -> Image.Image:
    """The study's Fig. 11: an input image (first column), then μ with each of ``dims`` swept over ``values``."""
    z = trained.encode(x01[:1]).mean[0]
    swept = traversal_images(trained, z, list(dims), list(values))
    rows = [torch.cat([x01[:1], swept[r * len(values):(r + 1) * len(values)]]) for r in range(len(dims))]
    grid = image_grid(torch.cat(rows), nrow=len(values) + 1)
    return enlarge(with_row_labels(grid, [f"z{d}" for d in dims], trained.image_size + _PAD), scale)


def traversal_gif(trained, z_base: torch.Tensor, dims: Sequence[int], low: float, high: float,
                  frames: int = 16, scale: int = 3, frame_ms: int = 120) -> bytes:
    """Animated GIF: the top ``dims`` side by side, each swept low → high → low in ``frames`` steps."""
    values = np.linspace(low, high, frames)
    sweep = np.concatenate([values, values[-2:0:-1]])  # there and back, endpoints once
    tiles = traversal_images(trained, z_base, list(dims), list(sweep))  # (dims·steps, C, H, W)
    tiles = tiles.reshape(len(dims), len(sweep), *tiles.shape[1:])
    images = [image_grid(tiles[:, step], nrow=len(dims), scale=scale) for step in range(len(sweep))]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()
