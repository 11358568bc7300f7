"""Reading a folder written by `betavae prepare` (the decode-once cache).

A prepared folder holds ``images.npy`` (uint8 ``(N, H, W, C)``, memory-mapped on load),
``split.npz`` (``train``/``val`` row indices), ``names.txt`` (the source file of each row),
optionally ``attributes.npz`` (per-row labels, e.g. CelebA's 40 attributes) and
``manifest.json`` (written last; how the data was made). A folder without a complete manifest
is not a cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from betavae.data.base import ImageData

FORMAT = "betavae-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IMAGES = "images.npy"
SPLIT = "split.npz"
NAMES = "names.txt"
ATTRIBUTES = "attributes.npz"


class PrepareError(ValueError):
    """Source data or a prepared folder that cannot be used; the message says what was expected."""


def _not_prepared(path: Path, why: str) -> PrepareError:
    return PrepareError(
        f"{path} is not a complete prepared dataset ({why}); "
        f"run `betavae prepare <recipe> --source <your images> --out {path}` first"
    )


def read_manifest(path: str | Path) -> dict:
    """The manifest of a complete prepared folder, or :class:`PrepareError`."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise _not_prepared(path, f"no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise _not_prepared(path, f"unreadable {MANIFEST}: {exc}") from None
    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        raise _not_prepared(path, f"{MANIFEST} is not a finished {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise _not_prepared(
            path, f"format version {manifest.get('version')}, this betavae reads {FORMAT_VERSION}"
        )
    return manifest


def load_prepared(path: str | Path) -> ImageData:
    """The prepared images (memory-mapped, read-only) with the split fixed at prepare time."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        images = np.load(path / IMAGES, mmap_mode="r")
        with np.load(path / SPLIT) as split:
            train, val = split["train"].astype(np.int64), split["val"].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise _not_prepared(path, f"{type(exc).__name__}: {exc}") from None
    if list(images.shape) != manifest["shape"] or images.dtype != np.uint8:
        found = f"{IMAGES} has shape {images.shape}, the manifest says {manifest['shape']}"
        raise _not_prepared(path, found)
    if len(train) + len(val) != images.shape[0] or min(train.min(), val.min()) < 0 or max(
        train.max(), val.max()
    ) >= images.shape[0]:
        raise _not_prepared(path, f"{SPLIT} does not match the {images.shape[0]} images")
    return ImageData(
        images=images,
        train_indices=train,
        val_indices=val,
        fingerprint=manifest["fingerprint"],
        info=summary(manifest, path),
    )


def summary(manifest: dict, path: Path) -> dict:
    """The few manifest facts a run records about its data."""
    counts = manifest["counts"]
    return {
        "path": str(path),
        "recipe": manifest["recipe"],
        "image_size": manifest["shape"][1],
        "channels": manifest["shape"][3],
        "images": counts["kept"],
        "skipped": counts["skipped"],
        "split": {key: manifest["split"][key] for key in ("method", "train", "val")},
        "source_fingerprint": manifest["source"]["fingerprint"],
    }


def load_attributes(path: str | Path) -> tuple[tuple[str, ...], np.ndarray]:
    """Per-row labels kept at prepare time (CelebA's attributes, Stanford Cars' class).

    Returns the attribute names and an integer array ``(N, K)`` aligned with the image rows."""
    path = Path(path)
    manifest = read_manifest(path)
    if not (path / ATTRIBUTES).is_file():
        recipe = manifest["recipe"]
        raise PrepareError(f"{path} ({recipe}) was prepared without per-image attributes")
    with np.load(path / ATTRIBUTES) as data:
        return tuple(str(n) for n in data["names"]), data["values"]


def load_names(path: str | Path) -> list[str]:
    """The source file (relative to ``--source``) of each row; ``#patchK`` marks batik patches."""
    path = Path(path)
    read_manifest(path)
    return (path / NAMES).read_text(encoding="utf-8").splitlines()
