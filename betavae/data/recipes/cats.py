"""Cat faces: a flat folder of face images (Kaggle's 64×64 set), or the Cat Dataset with landmarks.

Cat Dataset layout: ``CAT_00/ … CAT_06/`` with ``00000001_000.jpg`` and beside each a
``00000001_000.jpg.cat`` text file: ``9 x1 y1 … x9 y9`` (left eye, right eye, mouth, left ear ×3,
right ear ×3). The face crop is the square around the landmarks' bounding box, its side
``FACE_MARGIN`` times the box's longer side, kept inside the photo. The layout is recognised by
the presence of ``.jpg.cat`` files; otherwise every image is used whole.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from betavae.data.recipes.base import (
    Item,
    Listing,
    Skip,
    combine_fingerprints,
    fingerprint_files,
    relative_name,
    require_folder,
    scan_folder,
    select_items,
    write_example_image,
)

HELP = "cat faces: a flat folder, or the Cat Dataset (CAT_00…/ + .jpg.cat landmarks → face crops)"
LANDMARK_SUFFIX = ".cat"
LANDMARK_COUNT = 9
FACE_MARGIN = 1.1
NO_LANDMARKS = "no landmark file"
BAD_LANDMARKS = "bad landmark file"

DEFAULTS: dict = {}  # recipe options: none


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options beyond the common ones."""


def list_items(source: Path, options: dict) -> Listing:
    """Face crops when landmark files exist, whole images otherwise."""
    require_folder(source, "a folder of cat faces, or the Cat Dataset (CAT_00…/ with .cat files)")
    scan = scan_folder(source)
    landmark_files = [p for p in scan.others if p.name.endswith(LANDMARK_SUFFIX)]
    if not landmark_files:
        items = [Item(name=relative_name(p, source), path=str(p)) for p in scan.images]
        items, skipped = select_items(items, options, scan.unused())
        return Listing(items, scan.fingerprint(), skipped, notes={"layout": "flat folder"})
    regular_landmarks = set(landmark_files)
    left_out = {skip.name: skip for skip in scan.skipped}  # e.g. a .cat that is a named pipe
    items, skipped, used = [], [], set()
    for path in scan.images:
        name = relative_name(path, source)
        landmarks = Path(f"{path}{LANDMARK_SUFFIX}")
        if landmarks not in regular_landmarks:
            problem = left_out.get(f"{name}{LANDMARK_SUFFIX}")
            if problem is None:
                skipped.append(Skip(name, NO_LANDMARKS))
            else:
                detail = f"{problem.name}: {problem.reason}"
                skipped.append(Skip(name, BAD_LANDMARKS, detail))
            continue
        used.add(landmarks)
        try:
            square = face_square(read_landmarks(landmarks))
        except (OSError, ValueError) as exc:
            skipped.append(Skip(name, BAD_LANDMARKS, str(exc)))
            continue
        items.append(Item(name=name, path=str(path), square=square))
    items, skipped = select_items(items, options, [*skipped, *scan.unused(used)])
    landmarks_fingerprint = fingerprint_files(source, landmark_files)
    fingerprint = combine_fingerprints(scan.fingerprint(), landmarks_fingerprint)
    notes = {"layout": "cat-dataset", "face_crop": f"square, {FACE_MARGIN} x the landmarks' extent"}
    return Listing(items, fingerprint, skipped, notes=notes)


def read_landmarks(path: Path) -> np.ndarray:
    """The 9 (x, y) points of a ``.jpg.cat`` file; ``ValueError`` when it is not one."""
    fields = path.read_text(encoding="utf-8", errors="replace").split()
    try:
        numbers = [float(f) for f in fields]
    except ValueError:
        raise ValueError("non-numeric content") from None
    if not numbers or numbers[0] != LANDMARK_COUNT or len(numbers) < 1 + 2 * LANDMARK_COUNT:
        raise ValueError(f"expected '{LANDMARK_COUNT}' then {LANDMARK_COUNT} x y pairs")
    return np.array(numbers[1 : 1 + 2 * LANDMARK_COUNT]).reshape(LANDMARK_COUNT, 2)


def face_square(points: np.ndarray) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the square face crop around the landmarks."""
    low, high = points.min(axis=0), points.max(axis=0)
    center = (low + high) / 2
    side = FACE_MARGIN * float((high - low).max())
    if side <= 0:
        raise ValueError("all landmarks at one point")
    return float(center[0]), float(center[1]), side


def write_example(root: Path) -> Path:
    """A minimal Cat Dataset under ``root`` (four tiny photos with landmark files); returns
    ``--source``."""
    source = root / "cats"
    points = [(8, 8), (16, 8), (12, 14), (6, 4), (7, 2), (9, 3), (15, 3), (17, 2), (18, 4)]
    for k in range(4):
        photo = write_example_image(source / f"CAT_0{k % 2}" / f"{k:08d}_000.jpg", seed=k)
        landmarks = " ".join(f"{x + k} {y}" for x, y in points)
        Path(f"{photo}{LANDMARK_SUFFIX}").write_text(f"{LANDMARK_COUNT} {landmarks} ")
    return source
