"""`betavae prepare`: decode an image dataset once into a memory-mapped cache for training.

A recipe (:mod:`betavae.data.recipes`) lists the source images; worker processes decode,
orient, convert, crop and resize each one (:mod:`betavae.data.imageio`); the main process
streams the rows into ``images.npy`` in listing order, so memory stays flat however many
images there are. The cache is built in a hidden folder beside ``--out`` and renamed into place
only when complete; re-running with the same source files and options does nothing.

Stopping: Ctrl-C or SIGTERM kills the workers at once, removes the hidden folder and leaves any
earlier cache at ``--out`` as it was; the workers (:mod:`betavae.data.workers`) also end when the
process is killed outright (SIGKILL, the OOM killer).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image, ImageColor

from betavae.cliargs import positive_int
from betavae.data.prepared import PrepareError
from betavae.data.recipes import RECIPES


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def _pixel_limit(text: str) -> int:
    """--max-pixels: 0 (no limit) or a positive whole number."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 (no limit) or a positive whole number")
    return value


def _colour(text: str) -> tuple[int, int, int]:
    try:
        return tuple(ImageColor.getrgb(text)[:3])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a colour: {text!r} (try white, #808080)") from None


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--source", required=True, type=Path, help="the dataset as you have it (folder or file)")
    add("--out", required=True, type=Path, help="folder to write the prepared data to")
    add("--size", type=positive_int, default=64, help="side of the square images (default: 64)")
    add(
        "--grayscale",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="one channel (ITU-R 601-2 luma) instead of RGB",
    )
    add(
        "--background",
        type=_colour,
        default=(255, 255, 255),
        help="colour that transparent pixels are composited on (default: white)",
    )
    add(
        "--small",
        choices=["upscale", "skip"],
        default="upscale",
        help="images whose shorter side is below --size: upscale or skip them (default: upscale)",
    )
    add(
        "--val-fraction",
        type=_fraction,
        default=0.25,
        help="share of the source images kept for validation (default: 0.25)",
    )
    add("--seed", type=int, default=0, help="seed of --limit, the split and patches (default: 0)")
    add("--include", help="file of relative paths, one a line: only these images are used")
    add("--limit", type=positive_int, help="use a seeded random choice of this many images")
    add(
        "--max-pixels",
        type=_pixel_limit,
        default=Image.MAX_IMAGE_PIXELS,
        help="larger images are skipped as decompression bombs; 0: no limit "
        f"(default: Pillow's {Image.MAX_IMAGE_PIXELS})",
    )
    add(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="decoding processes (default: one per CPU)",
    )
    add("--force", action="store_true", help="rebuild even if the prepared data is up to date")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``prepare RECIPE --source … --out …`` (one RECIPE per entry of ``RECIPES``)."""
    parser = subparsers.add_parser(
        "prepare",
        help="decode an image dataset once into a cache that training reads",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recipes = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    for name, module in RECIPES.items():
        recipe_parser = recipes.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_common_arguments(recipe_parser)
        module.add_arguments(recipe_parser)
        recipe_parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """The ``prepare`` command: builds the cache and prints the summary; 2 on a PrepareError."""
    from betavae.data.prepare import PrepareOptions, prepare

    options = PrepareOptions(
        size=args.size,
        grayscale=args.grayscale,
        background=args.background,
        small=args.small,
        val_fraction=args.val_fraction,
        seed=args.seed,
        include=str(Path(args.include).expanduser().resolve()) if args.include else None,
        limit=args.limit,
        max_pixels=args.max_pixels or None,
        recipe={name: getattr(args, name) for name in RECIPES[args.recipe].DEFAULTS},
    )
    try:
        prepare(args.recipe, args.source, args.out, options, workers=args.workers, force=args.force)
    except PrepareError as exc:
        print(f"betavae prepare: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
