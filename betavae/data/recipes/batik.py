"""Batik: a few large photos expanded to many seeded random square patches (study: 48 → 2,400).

Patches are spread evenly over the photos (the first ``patches % photos`` get one more), each
photo's positions drawn from its own seeded generator, then resized to ``--size``. The train/val
split is made per photo (all patches of a photo on one side), so validation patches never
overlap training ones. Grayscale by default, as in the study.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from betavae.cliargs import positive_int
from betavae.data.recipes.base import (
    Item,
    Listing,
    relative_name,
    require_folder,
    scan_folder,
    select_items,
    write_example_image,
)

HELP = "batik: a folder of large photos → N seeded random square patches (grayscale by default)"
DEFAULTS = {"patches": 2400, "patch_size": 128}  # recipe options and their defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--patches",
        type=positive_int,
        default=DEFAULTS["patches"],
        help="patches in all, spread evenly over the photos (default: 2400)",
    )
    parser.add_argument(
        "--patch-size",
        type=positive_int,
        default=DEFAULTS["patch_size"],
        help="side of each square patch in photo pixels, before resizing to --size (default: 128); "
        "photos smaller than this are skipped",
    )
    parser.set_defaults(grayscale=True)


def list_items(source: Path, options: dict) -> Listing:
    """One item per photo, carrying its share of the patches."""
    require_folder(source, "a folder of batik photos")
    scan = scan_folder(source)
    photos = [Item(name=relative_name(p, source), path=str(p)) for p in scan.images]
    photos, skipped = select_items(photos, options, scan.unused())
    total, patch_size, seed = options["patches"], options["patch_size"], options["seed"]
    items = []
    if photos:
        per_photo, extra = divmod(total, len(photos))
        for k, photo in enumerate(photos):
            count = per_photo + (1 if k < extra else 0)
            if count:
                patches = {"patches": count, "patch_size": patch_size, "patch_seed": (seed, k)}
                items.append(replace(photo, **patches))
    notes = {"photos": len(photos), "patches_requested": total, "split_unit": "photo"}
    return Listing(items, scan.fingerprint(), skipped, notes=notes)


def write_example(root: Path) -> Path:
    """A minimal source for this recipe under ``root`` (two photos the size of a default patch);
    returns ``--source``."""
    source = root / "batik"
    side = DEFAULTS["patch_size"]
    for k in range(2):
        write_example_image(source / f"photo_{k}.png", seed=k, size=(side + 8, side))
    return source
