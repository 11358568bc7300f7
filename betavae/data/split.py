"""The train/val split of a prepared dataset: the source's own partition, or a seeded one."""
from __future__ import annotations

import numpy as np

from betavae.data.base import split_indices
from betavae.data.prepared import SPLIT, PrepareError
from betavae.data.recipes.base import Listing


def make_split(
    row_items: np.ndarray, listing: Listing, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train and val row indices, with a description for the manifest.

    CelebA's partition when the listing has one (train = 0, val = 1 and 2); otherwise a seeded
    split of the source images, so every row cut from one image (batik patches) is on one side.
    """
    if listing.partition is not None:
        partition = np.array([listing.partition[listing.items[i].name] for i in row_items])
        train, val = np.flatnonzero(partition == 0), np.flatnonzero(partition > 0)
        if len(train) == 0 or len(val) == 0:
            raise PrepareError(
                "the CelebA partition leaves no training or no validation image; use --split random"
            )
        info = {"method": "partition", "rule": "train: partition 0; val: 1 (valid) and 2 (test)"}
    else:
        sources = np.unique(row_items)
        try:
            _, val_sources = split_indices(len(sources), val_fraction, seed)
        except ValueError as exc:
            raise PrepareError(f"cannot split the prepared images: {exc}") from None
        is_val = np.isin(row_items, sources[val_sources])
        train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
        info = {"method": "random", "unit": "source image", "val_fraction": val_fraction}
        info["seed"] = seed
    return train, val, {**info, "train": int(len(train)), "val": int(len(val)), "file": SPLIT}
