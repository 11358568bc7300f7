"""The in-memory form every dataset takes before training: uint8 images, a split, optional factors."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ImageData:
    """Images as uint8 ``(N, H, W, C)`` (a ``np.memmap`` is fine) with a fixed train/val split.

    ``factors`` (int ``(N, F)``) and ``factor_names`` are set for ground-truth data;
    ``source`` is the generator (``GroundTruthData``) when the images were rendered, so metrics
    can render fresh observations for chosen factor values. ``info`` is recorded in the run.
    """

    images: np.ndarray
    train_indices: np.ndarray
    val_indices: np.ndarray
    fingerprint: str
    factors: np.ndarray | None = None
    factor_names: tuple[str, ...] = ()
    source: Any = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, reproducible split of ``range(n)`` into sorted train and validation indices."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise ValueError(f"{n} images are too few for a validation fraction of {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fingerprint_array(array: np.ndarray, *extra: object) -> str:
    """A short content hash of an array (and any extra identifying values)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((array.shape, str(array.dtype), extra)).encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()
