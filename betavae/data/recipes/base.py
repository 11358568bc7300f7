"""What every recipe produces (a :class:`Listing` of :class:`Item`) and how an item becomes pixels.

A recipe only lists: which source images, under which names, with which square crop region or
how many random patches. :func:`process_chunk` (run in worker processes) turns items into uint8
arrays with :mod:`betavae.data.imageio`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from betavae.data import imageio
from betavae.data.prepared import PrepareError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
NOT_IN_INCLUDE_LIST = "listed in --include but not found"


@dataclass(frozen=True)
class Item:
    """One source image. ``name`` is its path relative to the source (recorded per cache row)."""

    name: str
    path: str  # the file, or the zip archive holding ``member``
    member: str | None = None
    square: tuple[float, float, float] | None = None  # crop (centre x, centre y, side), in pixels
    patches: int = 0  # > 0: cut this many random square patches of ``patch_size`` instead
    patch_size: int = 0
    patch_seed: tuple[int, ...] = ()


@dataclass(frozen=True)
class Skip:
    """A source file left out, with the summary category and the specifics."""

    name: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {"file": self.name, "reason": self.reason, "detail": self.detail}


@dataclass
class Listing:
    """A recipe's answer: the items to decode plus what the build must record about the source."""

    items: list[Item]
    fingerprint: str  # of the source files the items come from (paths, sizes, mtimes)
    skipped: list[Skip] = field(default_factory=list)
    partition: dict[str, int] | None = None  # item name → 0 train / 1 val / 2 test (CelebA)
    attribute_names: tuple[str, ...] = ()
    attributes: dict[str, np.ndarray] | None = None  # item name → int8/int16 values per attribute
    notes: dict = field(default_factory=dict)  # recipe facts for the manifest (layout found, …)


@dataclass(frozen=True)
class ItemResult:
    """What a worker returns for one item: arrays (one per row) or the reason it was skipped."""

    arrays: tuple[np.ndarray, ...] = ()
    skip: Skip | None = None
    notes: tuple[str, ...] = ()


def scan_images(root: Path) -> list[Path]:
    """Image files under ``root``: recursive, sorted, any case of extension, dot-folders skipped."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(Path(folder) / f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def require_folder(source: Path, expected: str) -> None:
    """Raises :class:`PrepareError` unless ``source`` is a folder."""
    if not source.is_dir():
        raise PrepareError(f"--source {source} is not a folder; expected {expected}")


def relative_name(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def fingerprint_files(root: Path, paths: list[Path]) -> str:
    """Hash of each file's path relative to ``root``, size and modification time."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        stat = path.stat()
        digest.update(f"{relative_name(path, root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def combine_fingerprints(*parts: str) -> str:
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def read_include_list(path: Path) -> list[str]:
    """Relative paths, one a line; blank lines and ``#`` comments ignored; ``\\`` read as ``/``."""
    if not path.is_file():
        raise PrepareError(f"--include file {path} does not exist")
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip().replace("\\", "/")
        if line:
            names.append(line.removeprefix("./"))
    return names


def select_items(
    items: list[Item], options: dict, skipped: list[Skip] = ()
) -> tuple[list[Item], list[Skip]]:
    """Applies ``--include`` (a list file of item names) and ``--limit`` (a seeded choice).

    Returns the items kept and ``skipped`` plus the listed names found nowhere (a name the
    recipe already skipped keeps its first reason)."""
    skipped = list(skipped)
    if options.get("include"):
        wanted = read_include_list(Path(options["include"]))
        by_name = {item.name: item for item in items}
        known = set(by_name) | {skip.name for skip in skipped}
        unknown = [name for name in dict.fromkeys(wanted) if name not in known]
        skipped += [Skip(name, NOT_IN_INCLUDE_LIST) for name in unknown]
        items = [by_name[name] for name in sorted(set(wanted)) if name in by_name]
    limit = options.get("limit")
    if limit is not None and limit < len(items):
        chosen = np.random.default_rng(options["seed"]).choice(len(items), limit, replace=False)
        items = [items[i] for i in sorted(chosen)]
    return items, skipped


def process_item(item: Item, options: imageio.ImageOptions) -> ItemResult:
    """Decodes one item into its rows; a bad image yields a :class:`Skip`, never an exception."""
    try:
        image, notes = imageio.load_converted(item.path, item.member, options)
        if item.patches:
            crops = _random_patches(image, item)
        elif item.square is not None:
            crops = [imageio.crop_square(image, *item.square)]
        else:
            crops = [image]
        arrays = []
        for crop in crops:
            resized, resize_notes = imageio.resize_center_crop(crop, options.size, options.small)
            arrays.append(imageio.to_array(resized))
            notes += resize_notes
    except imageio.SkipImage as exc:
        return ItemResult(skip=Skip(item.name, exc.reason, exc.detail))
    return ItemResult(arrays=tuple(arrays), notes=tuple(sorted(set(notes))))


def _random_patches(image: Image.Image, item: Item) -> list[Image.Image]:
    """``item.patches`` square crops of ``item.patch_size`` at seeded random positions."""
    width, height = image.size
    if min(width, height) < item.patch_size:
        detail = f"{width}x{height} px is smaller than the patch size {item.patch_size}"
        raise imageio.SkipImage(imageio.TOO_SMALL, detail)
    rng = np.random.default_rng(item.patch_seed)
    lefts = rng.integers(0, width - item.patch_size + 1, size=item.patches)
    tops = rng.integers(0, height - item.patch_size + 1, size=item.patches)
    side = item.patch_size
    return [image.crop((int(x), int(y), int(x) + side, int(y) + side)) for x, y in zip(lefts, tops)]


def process_chunk(items: list[Item], options: imageio.ImageOptions) -> list[ItemResult]:
    """Worker entry point (a top-level function, so it pickles under fork and spawn)."""
    return [process_item(item, options) for item in items]
