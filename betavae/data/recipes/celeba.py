"""CelebA aligned faces from a local folder or zip (the official download is unreliable).

Layouts found: ``img_align_celeba/*.jpg`` at the top, one level down (``Img/``) or nested twice
(Kaggle); ``list_eval_partition`` and ``list_attr_celeba`` as ``.txt`` (official) or ``.csv``
(Kaggle), beside the image folder, one level down (``Eval/``, ``Anno/``), inside the zip or next
to it. Both lists are optional: without the partition the split is random; without the
attributes no ``attributes.npz`` is written.
"""
from __future__ import annotations

import argparse
import hashlib
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from betavae.data.prepared import PrepareError
from betavae.data.recipes.base import (
    IMAGE_EXTENSIONS,
    Item,
    Listing,
    Skip,
    combine_fingerprints,
    fingerprint_files,
    relative_name,
    scan_images,
    select_items,
)

HELP = "CelebA: img_align_celeba/ (+ list_eval_partition, list_attr_celeba) in a folder or zip"
IMAGE_FOLDER = "img_align_celeba"
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
EXPECTED = (
    f"a folder or zip holding {IMAGE_FOLDER}/ with the aligned JPEGs (000001.jpg …), optionally "
    f"with {PARTITION_FILES[0]} and {ATTRIBUTE_FILES[0]} (or Kaggle's .csv) beside it"
)
NOT_IN_PARTITION = "not in the partition file"
DEFAULTS = {"split": "partition"}  # recipe options and their defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        choices=["partition", "random"],
        default=DEFAULTS["split"],
        help="partition: CelebA's own list (train = 0, val = 1 valid + 2 test) when the file is "
        "present; random: a seeded --val-fraction split, as the study's 75/25 (default: partition)",
    )


def list_items(source: Path, options: dict) -> Listing:
    """The aligned images, with partition and attributes read when present."""
    if source.is_file() and zipfile.is_zipfile(source):
        items, fingerprint, texts = _from_zip(source)
    elif source.is_dir():
        items, fingerprint, texts = _from_folder(source)
    else:
        raise PrepareError(f"CelebA source {source} is no folder and no zip; expected {EXPECTED}")
    if not items:
        raise PrepareError(f"no {IMAGE_FOLDER}/ with images found in {source}; expected {EXPECTED}")
    partition_text, attribute_text = texts
    listing = Listing(items=items, fingerprint=fingerprint)
    listing.notes["partition_file"] = partition_text is not None
    listing.notes["attribute_file"] = attribute_text is not None
    if partition_text is not None and options["split"] == "partition":
        listing.partition = parse_partition(partition_text)
        unlisted = [i for i in items if i.name not in listing.partition]
        listing.skipped = [Skip(i.name, NOT_IN_PARTITION) for i in unlisted]
        items = [i for i in items if i.name in listing.partition]
    if attribute_text is not None:
        listing.attribute_names, listing.attributes = parse_attributes(attribute_text)
    listing.items, listing.skipped = select_items(items, options, listing.skipped)
    return listing


def _from_folder(source: Path) -> tuple[list[Item], str, tuple[str | None, str | None]]:
    candidates = [source, *sorted(p for p in source.iterdir() if p.is_dir())]
    image_dir = next((d / IMAGE_FOLDER for d in candidates if (d / IMAGE_FOLDER).is_dir()), None)
    if image_dir is None:
        return [], "", (None, None)
    if (image_dir / IMAGE_FOLDER).is_dir():  # Kaggle's img_align_celeba/img_align_celeba/
        image_dir = image_dir / IMAGE_FOLDER
    paths = scan_images(image_dir)
    items = [Item(name=relative_name(p, image_dir), path=str(p)) for p in paths]
    meta_dirs = [source, *candidates[1:], image_dir.parent]
    meta_files = [_first_file(meta_dirs, names) for names in (PARTITION_FILES, ATTRIBUTE_FILES)]
    present = [f for f in meta_files if f is not None]
    fingerprint = combine_fingerprints(
        fingerprint_files(image_dir, paths), *(fingerprint_files(f.parent, [f]) for f in present)
    )
    texts = tuple(f.read_text(encoding="utf-8") if f else None for f in meta_files)
    return items, fingerprint, texts


def _first_file(folders: list[Path], names: tuple[str, ...]) -> Path | None:
    return next((d / n for d in folders for n in names if (d / n).is_file()), None)


def _from_zip(source: Path) -> tuple[list[Item], str, tuple[str | None, str | None]]:
    digest = hashlib.blake2b(digest_size=16)
    items, texts = [], [None, None]
    with zipfile.ZipFile(source) as archive:
        members = [m for m in archive.infolist() if not m.is_dir() and "__MACOSX" not in m.filename]
        for member in sorted(members, key=lambda m: m.filename):
            path = PurePosixPath(member.filename)
            if path.parent.name == IMAGE_FOLDER and path.suffix.lower() in IMAGE_EXTENSIONS:
                items.append(Item(name=path.name, path=str(source), member=member.filename))
                digest.update(f"{member.filename}\t{member.file_size}\t{member.CRC}\n".encode())
            for k, names in enumerate((PARTITION_FILES, ATTRIBUTE_FILES)):
                if path.name in names and texts[k] is None:
                    texts[k] = archive.read(member).decode("utf-8")
    for k, names in enumerate((PARTITION_FILES, ATTRIBUTE_FILES)):
        beside = _first_file([source.parent], names)
        if texts[k] is None and beside is not None:
            texts[k] = beside.read_text(encoding="utf-8")
    for text in texts:
        digest.update(hashlib.blake2b((text or "").encode(), digest_size=16).digest())
    return items, digest.hexdigest(), (texts[0], texts[1])


def _rows(text: str) -> list[list[str]]:
    return [line.replace(",", " ").split() for line in text.splitlines() if line.strip()]


def parse_partition(text: str) -> dict[str, int]:
    """``000001.jpg 0`` lines (or Kaggle's ``image_id,partition`` csv) → {name: 0 | 1 | 2}."""
    rows = _rows(text)
    if rows and not rows[0][-1].isdigit():
        rows = rows[1:]  # csv header
    try:
        partition = {name: int(value) for name, value in rows}
    except ValueError:
        raise PrepareError(
            f"{PARTITION_FILES[0]} must hold lines 'NAME.jpg PARTITION' with PARTITION 0, 1 or 2"
        ) from None
    if set(partition.values()) - {0, 1, 2}:
        raise PrepareError(f"{PARTITION_FILES[0]}: partitions are 0 (train), 1 (valid) or 2 (test)")
    return partition


def parse_attributes(text: str) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """``list_attr_celeba`` (count, names, ``NAME ±1 …``; or the csv) → (names, {name: values})."""
    rows = _rows(text)
    if rows and len(rows[0]) == 1 and rows[0][0].isdigit():
        rows = rows[1:]  # the count line of the .txt
    if not rows:
        raise PrepareError(f"{ATTRIBUTE_FILES[0]} is empty")
    names = rows[0][1:] if rows[0][0] == "image_id" else rows[0]
    values = {}
    for line_number, row in enumerate(rows[1:], start=3):
        try:
            if len(row) != len(names) + 1:
                raise ValueError(f"{len(row)} fields")
            values[row[0]] = np.array([int(v) for v in row[1:]], dtype=np.int8)
        except ValueError as exc:
            raise PrepareError(
                f"{ATTRIBUTE_FILES[0]} line {line_number}: expected a name and {len(names)} values "
                f"(1 or -1), found {exc}"
            ) from None
    return tuple(names), values
