"""CelebA aligned faces from a local folder or zip (the official download is unreliable).

Layouts found:

- the official download as it unpacks: ``Img/img_align_celeba.zip`` (or that zip unpacked,
  ``Img/img_align_celeba/``) beside ``Anno/list_attr_celeba.txt`` and
  ``Eval/list_eval_partition.txt``, given as the top folder or as the zip itself;
- ``img_align_celeba/*.jpg`` at the top, one level down or nested twice (Kaggle), or a zip
  holding ``img_align_celeba/``;
- ``list_eval_partition`` and ``list_attr_celeba`` as ``.txt`` (official) or ``.csv`` (Kaggle),
  beside the image folder or zip, one level down (``Eval/``, ``Anno/``), inside the zip, or, for a
  zip in a folder called ``Img/``, in the folder above and its ``Anno/`` and ``Eval/``.

Both lists are optional: without the partition the split is random; without the attributes no
``attributes.npz`` is written; either missing is a printed warning, kept in the manifest.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from betavae.data.prepared import PrepareError
from betavae.data.recipes.base import (
    IMAGE_EXTENSIONS,
    Item,
    Listing,
    Skip,
    combine_fingerprints,
    display_name,
    fingerprint_files,
    is_folder,
    is_regular_file,
    read_text_file,
    relative_name,
    scan_folder,
    select_items,
    subfolders,
    write_example_image,
)

HELP = "CelebA: img_align_celeba/ (+ list_eval_partition, list_attr_celeba) in a folder or zip"
IMAGE_FOLDER = "img_align_celeba"
IMAGE_ZIP = "img_align_celeba.zip"
PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
EXPECTED = (
    f"a folder or zip holding {IMAGE_FOLDER}/ with the aligned JPEGs (000001.jpg …), or the "
    f"official download's folder with Img/{IMAGE_ZIP}, optionally with {PARTITION_FILES[0]} and "
    f"{ATTRIBUTE_FILES[0]} (or Kaggle's .csv) beside it or in Eval/ and Anno/"
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
    if is_regular_file(source) and zipfile.is_zipfile(source):
        folders = _folders_around_zip(source)
        found = _from_zip(source, folders, Path(os.path.commonpath(folders)))
    elif is_folder(source):
        found = _from_folder(source)
    else:
        raise PrepareError(f"CelebA source {source} is no folder and no zip; expected {EXPECTED}")
    if found is None or not found.items:
        raise PrepareError(f"no {IMAGE_FOLDER}/ with images found in {source}; expected {EXPECTED}")
    items = found.items
    (partition_text, partition_from), (attribute_text, attribute_from) = found.lists
    listing = Listing(items=items, fingerprint=found.fingerprint, skipped=list(found.skipped))
    listing.notes.update(layout=found.layout)
    listing.notes["partition_file"] = partition_text is not None
    listing.notes["attribute_file"] = attribute_text is not None
    if partition_text is not None:
        listing.notes["partition_source"] = partition_from
    if attribute_text is not None:
        listing.notes["attribute_source"] = attribute_from
    looked_in = ", ".join(found.looked_in)
    if partition_text is None and options["split"] == "partition":
        listing.warnings.append(
            f"no {PARTITION_FILES[0]} (or .csv) found in {looked_in}: "
            "the split is random (--val-fraction)"
        )
    if attribute_text is None:
        listing.warnings.append(
            f"no {ATTRIBUTE_FILES[0]} (or .csv) found in {looked_in}: no attributes are kept"
        )
    if partition_text is not None and options["split"] == "partition":
        listing.partition = parse_partition(partition_text)
        unlisted = [i for i in items if i.name not in listing.partition]
        listing.skipped += [Skip(i.name, NOT_IN_PARTITION) for i in unlisted]
        items = [i for i in items if i.name in listing.partition]
    if attribute_text is not None:
        listing.attribute_names, listing.attributes = parse_attributes(attribute_text)
    listing.items, listing.skipped = select_items(items, options, listing.skipped)
    return listing


@dataclass
class _Found:
    """The images of one layout, the two lists (text and where it came from) and what to record."""

    items: list[Item]
    fingerprint: str
    lists: tuple[tuple[str | None, str], tuple[str | None, str]]
    looked_in: list[str]  # where the lists were looked for, for the warning
    layout: str
    skipped: list[Skip] = field(default_factory=list)


def _from_folder(source: Path) -> _Found | None:
    candidates = [source, *subfolders(source)]
    image_dir = next((d / IMAGE_FOLDER for d in candidates if is_folder(d / IMAGE_FOLDER)), None)
    if image_dir is None:  # the official download: Img/img_align_celeba.zip, not unpacked
        archive = next((d / IMAGE_ZIP for d in candidates if _is_zip(d / IMAGE_ZIP)), None)
        if archive is None:
            return None
        return _from_zip(archive, _unique([*candidates, archive.parent]), source)
    if is_folder(image_dir / IMAGE_FOLDER):  # Kaggle's img_align_celeba/img_align_celeba/
        image_dir = image_dir / IMAGE_FOLDER
    scan = scan_folder(image_dir)
    items = [Item(name=relative_name(p, image_dir), path=str(p)) for p in scan.images]
    meta_dirs = _unique([*candidates, image_dir.parent])
    found = [_first_file(meta_dirs, names) for names in (PARTITION_FILES, ATTRIBUTE_FILES)]
    present = [f for f in found if f is not None]
    fingerprint = combine_fingerprints(
        scan.fingerprint(), *(fingerprint_files(f.parent, [f]) for f in present)
    )
    lists = tuple(
        (read_text_file(f, "the CelebA list") if f else None, _shown(f, source)) for f in found
    )
    return _Found(
        items, fingerprint, lists, [_shown(d, source) for d in meta_dirs],
        layout=f"folder {_shown(image_dir, source)}", skipped=scan.unused(),
    )  # fmt: skip


def _folders_around_zip(archive: Path) -> list[Path]:
    """Where the lists of a zip given as --source may be: beside it and in Anno/ and Eval/ there;
    for a zip in Img/ (the official download), also in the folder above and its Anno/ and Eval/."""
    tops = [archive.parent]
    if archive.parent.name.lower() == "img":
        tops.append(archive.parent.parent)
    folders = []
    for top in tops:
        folders.append(top)
        folders += [d for d in subfolders(top) if d.name.lower() in ("anno", "eval")]
    return _unique(folders)


def _from_zip(source: Path, meta_dirs: list[Path], shown_from: Path) -> _Found:
    digest = hashlib.blake2b(digest_size=16)
    items = []
    lists: list[tuple[str | None, str]] = [(None, ""), (None, "")]
    try:
        with zipfile.ZipFile(source) as archive:
            members = [
                m for m in archive.infolist() if not m.is_dir() and "__MACOSX" not in m.filename
            ]
            for member in sorted(members, key=lambda m: m.filename):
                path = PurePosixPath(member.filename)
                if path.parent.name == IMAGE_FOLDER and path.suffix.lower() in IMAGE_EXTENSIONS:
                    items.append(Item(name=path.name, path=str(source), member=member.filename))
                    digest.update(f"{member.filename}\t{member.file_size}\t{member.CRC}\n".encode())
                for k, names in enumerate((PARTITION_FILES, ATTRIBUTE_FILES)):
                    if path.name in names and lists[k][0] is None:
                        where = f"{_shown(source, shown_from)}:{member.filename}"
                        lists[k] = (archive.read(member).decode("utf-8"), where)
    except (OSError, EOFError, RuntimeError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise PrepareError(f"cannot read the zip {source}: {exc}") from None
    for k, names in enumerate((PARTITION_FILES, ATTRIBUTE_FILES)):
        beside = _first_file(meta_dirs, names)
        if lists[k][0] is None and beside is not None:
            lists[k] = (read_text_file(beside, "the CelebA list"), _shown(beside, shown_from))
    for text, _ in lists:
        digest.update(hashlib.blake2b((text or "").encode(), digest_size=16).digest())
    shown = _shown(source, shown_from)
    looked_in = [f"the zip {shown}", *(_shown(d, shown_from) for d in meta_dirs)]
    layout = f"zip {shown}"
    return _Found(items, digest.hexdigest(), (lists[0], lists[1]), looked_in, layout)


def _first_file(folders: list[Path], names: tuple[str, ...]) -> Path | None:
    return next((d / n for d in folders for n in names if is_regular_file(d / n)), None)


def _is_zip(path: Path) -> bool:
    return is_regular_file(path) and zipfile.is_zipfile(path)


def _unique(folders: list[Path]) -> list[Path]:
    return list(dict.fromkeys(folders))


def _shown(path: Path | None, base: Path) -> str:
    """``path`` relative to ``base`` when inside it (``.`` for base itself), else in full."""
    if path is None:
        return ""
    try:
        shown = path.relative_to(base).as_posix() or "."
    except ValueError:
        shown = str(path)
    return display_name(shown)


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


def write_example(root: Path) -> Path:
    """A minimal CelebA folder under ``root`` (four tiny faces, partition and two attributes);
    returns ``--source``."""
    source = root / "celeba"
    names = [f"{k:06d}.jpg" for k in range(1, 5)]
    for k, name in enumerate(names):
        write_example_image(source / IMAGE_FOLDER / name, seed=k, size=(18, 22))
    partition = [f"{name} {p}" for name, p in zip(names, (0, 0, 1, 2))]
    attributes = [str(len(names)), "Smiling Male", *(f"{n} 1 -1" for n in names)]
    (source / PARTITION_FILES[0]).write_text("\n".join(partition) + "\n")
    (source / ATTRIBUTE_FILES[0]).write_text("\n".join(attributes) + "\n")
    return source
