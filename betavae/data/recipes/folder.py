"""Any folder of images (recursive), optionally narrowed by an ``--include`` list."""
from __future__ import annotations

import argparse
from pathlib import Path

from betavae.data.recipes.base import (
    IMAGE_EXTENSIONS,
    Item,
    Listing,
    relative_name,
    require_folder,
    scan_folder,
    select_items,
    write_example_image,
)

HELP = "any folder of images (recursive: " + ", ".join(e[1:] for e in IMAGE_EXTENSIONS) + ")"

DEFAULTS: dict = {}  # recipe options: none


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options beyond the common ones."""


def list_items(source: Path, options: dict) -> Listing:
    """Every image file under ``source``, named by its relative path; every other entry skipped."""
    require_folder(source, "a folder of images")
    scan = scan_folder(source)
    items = [Item(name=relative_name(p, source), path=str(p)) for p in scan.images]
    items, skipped = select_items(items, options, scan.unused())
    return Listing(items=items, fingerprint=scan.fingerprint(), skipped=skipped)


def write_example(root: Path) -> Path:
    """A minimal source for this recipe under ``root`` (four tiny images); returns ``--source``."""
    source = root / "images"
    for k, name in enumerate(["a.png", "b.jpg", "more/c.png", "more/d.jpg"]):
        write_example_image(source / name, seed=k)
    return source
