"""Stanford Cars from a local copy: ``cars_train/`` (+ ``cars_test/``) and the devkit annotations.

The devkit's ``cars_train_annos.mat`` (and ``cars_test_annos_withlabels.mat`` or
``cars_test_annos.mat`` for the test images, used when present) holds a struct array
``annotations`` with ``bbox_x1, bbox_y1, bbox_x2, bbox_y2`` (1-based, inclusive), ``class``
(1-based; missing in the unlabelled test file) and ``fname``. Rows are named
``cars_train/00001.jpg``; the study's viewpoint filter is an ``--include`` list of such names.
"""
from __future__ import annotations

import argparse
import os
import stat
from pathlib import Path

import numpy as np
import scipy.io

from betavae.data import imageio
from betavae.data.prepared import PrepareError
from betavae.data.recipes.base import (
    UNREADABLE,
    Item,
    Listing,
    Skip,
    fingerprint_files,
    is_folder,
    is_regular_file,
    require_folder,
    select_items,
    subfolders,
    write_example_image,
)

HELP = "Stanford Cars: cars_train/ (+ cars_test/) with the devkit's cars_train_annos.mat"
SUBSETS = (
    (("cars_train_annos.mat",), "cars_train"),
    (("cars_test_annos_withlabels.mat", "cars_test_annos.mat"), "cars_test"),
)
FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname")
EXPECTED = (
    "the devkit file cars_train_annos.mat (in devkit/ or at the top; struct 'annotations' with "
    "bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname) and the images in cars_train/"
)
MISSING_IMAGE = "annotated image not found"
DEFAULTS = {"bbox_crop": False}  # recipe options and their defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bbox-crop",
        action="store_true",
        help="crop each car to its annotated box, widened to a square around the box centre "
        "(kept inside the photo), before resizing (default: the whole photo)",
    )


def list_items(source: Path, options: dict) -> Listing:
    """Annotated images of every subset found, with their class as a per-row attribute."""
    require_folder(source, EXPECTED)
    folders = _search_folders(source)
    items, skipped, files, labels, used = [], [], [], {}, []
    for annotation_names, image_folder_name in SUBSETS:
        candidates = (d / n for d in folders for n in annotation_names)
        annotation_file = next((f for f in candidates if is_regular_file(f)), None)
        if annotation_file is None:
            continue
        image_folder = _image_folder(folders, image_folder_name)
        if image_folder is None:
            raise PrepareError(
                f"{annotation_file} found but no {image_folder_name}/ folder in {source}"
            )
        used.append(image_folder_name)
        files.append(annotation_file)
        for record in read_annotations(annotation_file):
            name = f"{image_folder_name}/{record['fname']}"
            path = image_folder / record["fname"]
            problem = _file_problem(path)
            if problem is not None:
                skipped.append(Skip(name, *problem))
                continue
            files.append(path)
            labels[name] = np.array([record["class"]], dtype=np.int16)
            square = _square_around(record["box"]) if options["bbox_crop"] else None
            items.append(Item(name=name, path=str(path), square=square))
    if not used:
        raise PrepareError(f"Stanford Cars layout not found in {source}; expected {EXPECTED}")
    items, skipped = select_items(items, options, skipped)
    return Listing(
        items=items,
        fingerprint=fingerprint_files(source, files),
        skipped=skipped,
        attribute_names=("class",),
        attributes=labels,
        notes={"subsets": used, "class": "1-based devkit class, 0 where the annotations have none"},
    )


def _file_problem(path: Path) -> tuple[str, str] | None:
    """(reason, detail) when an annotated image cannot be used as a file; None when it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return MISSING_IMAGE, str(path)
    except PermissionError as exc:
        return UNREADABLE, exc.strerror or "permission denied"
    except OSError as exc:  # a link loop, an unreadable folder on the way …
        return MISSING_IMAGE, f"{path}: {exc.strerror or exc}"
    if not stat.S_ISREG(mode):
        return imageio.NOT_REGULAR, imageio.file_kind(mode)
    return None


def _search_folders(source: Path) -> list[Path]:
    top = [source, *subfolders(source)]
    return [*top, *(d / "devkit" for d in top if is_folder(d / "devkit"))]


def _image_folder(folders: list[Path], name: str) -> Path | None:
    folder = next((d / name for d in folders if is_folder(d / name)), None)
    if folder is not None and is_folder(folder / name):  # copies nesting cars_train/cars_train/
        folder = folder / name
    return folder


def read_annotations(path: Path) -> list[dict]:
    """The ``annotations`` struct of a devkit .mat file as dicts (fname, box, class)."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy raises several types for a damaged or foreign file
        raise PrepareError(
            f"cannot read {path} as a MATLAB file ({exc}); expected {EXPECTED}"
        ) from None
    annotations = mat.get("annotations")
    fields = getattr(getattr(annotations, "dtype", None), "names", None) or ()
    missing = [f for f in FIELDS if f not in fields]
    if missing:
        raise PrepareError(
            f"{path} has no struct 'annotations' with {', '.join(missing)}; expected {EXPECTED}"
        )
    records = []
    for entry in np.atleast_1d(annotations):
        box = tuple(float(entry[f]) for f in FIELDS[:4])
        label = int(entry["class"]) if "class" in fields else 0
        records.append({"fname": str(entry["fname"]), "box": box, "class": label})
    return records


def _square_around(box: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the square around a 1-based inclusive box, 0-based."""
    x1, y1, x2, y2 = box
    return ((x1 - 1 + x2) / 2, (y1 - 1 + y2) / 2, max(x2 - x1 + 1, y2 - y1 + 1))


def write_example(root: Path) -> Path:
    """A minimal Stanford Cars copy under ``root`` (four tiny photos and the devkit annotations);
    returns ``--source``."""
    source = root / "stanford_cars"
    fields = (*FIELDS[:4], "class", "fname")
    annotations = np.zeros((1, 4), dtype=[(f, "O") for f in fields])
    for k in range(4):
        fname = f"{k + 1:05d}.jpg"
        write_example_image(source / "cars_train" / fname, seed=k, size=(30, 20))
        annotations[0, k] = (2 + k, 3, 20 + k, 15, k % 2 + 1, fname)
    (source / "devkit").mkdir(parents=True)
    scipy.io.savemat(source / "devkit" / SUBSETS[0][0][0], {"annotations": annotations})
    return source
