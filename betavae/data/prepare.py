"""Building a prepared dataset; the ``betavae prepare`` command is :mod:`betavae.data.cli`.

:func:`prepare` lists the source with a recipe, decodes the items in worker processes
(:func:`decode_items`), streams the rows into ``images.npy`` (:mod:`betavae.data.rows`), splits
them (:mod:`betavae.data.split`) and writes the manifest last, in a hidden folder that is renamed
onto ``--out`` only when complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from betavae.data import imageio, workers as worker_processes
from betavae.data.prepared import (
    ATTRIBUTES,
    FORMAT,
    FORMAT_VERSION,
    IMAGES,
    MANIFEST,
    NAMES,
    SPLIT,
    PrepareError,
    read_manifest,
)
from betavae.data.recipes import RECIPES
from betavae.data.recipes.base import (
    IMAGE_EXTENSIONS,
    Item,
    ItemResult,
    Listing,
    Skip,
    process_chunk,
)
from betavae.data.rows import RowWriter
from betavae.data.split import make_split
from betavae.fileio import write_json

__all__ = ["PrepareError", "PrepareOptions", "prepare"]


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that decides the cache's content (``--workers`` and ``--force`` do not)."""

    size: int = 64
    grayscale: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    small: str = "upscale"
    val_fraction: float = 0.25
    seed: int = 0
    include: str | Path | None = None  # an --include list file
    limit: int | None = None
    max_pixels: int | None = Image.MAX_IMAGE_PIXELS
    recipe: dict = field(default_factory=dict)  # the recipe's own options (see its DEFAULTS)

    def __post_init__(self) -> None:
        if self.include is not None:  # a Path is fine too; recorded as text
            object.__setattr__(self, "include", str(self.include))
        object.__setattr__(self, "background", tuple(self.background))
        if self.size < 1:
            raise PrepareError(f"size must be a positive number of pixels, got {self.size}")
        if self.small not in ("upscale", "skip"):
            raise PrepareError(f"small must be 'upscale' or 'skip', got {self.small!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise PrepareError(f"val_fraction must lie between 0 and 1, got {self.val_fraction}")

    def image_options(self) -> imageio.ImageOptions:
        return imageio.ImageOptions(
            size=self.size,
            channels=1 if self.grayscale else 3,
            background=self.background,
            small=self.small,
            max_pixels=self.max_pixels,
        )


def prepare(
    recipe: str,
    source: str | Path,
    out: str | Path,
    options: PrepareOptions = PrepareOptions(),
    *,
    workers: int | None = None,
    force: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Builds (or finds up to date) the cache of ``source`` at ``out``; returns its manifest.

    ``workers`` defaults to every CPU; ``progress`` None shows a bar only on a terminal.
    """
    started = time.perf_counter()
    if recipe not in RECIPES:
        raise PrepareError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    try:
        source, out = Path(source).expanduser().resolve(), Path(out).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise PrepareError(f"cannot resolve --source {source} or --out {out}: {exc}") from None
    if not source.exists():
        raise PrepareError(f"--source {source} does not exist")
    if out == source:
        raise PrepareError("--out must differ from --source")
    options = replace(options, recipe={**RECIPES[recipe].DEFAULTS, **options.recipe})
    listing = RECIPES[recipe].list_items(source, {**asdict(options), **options.recipe})
    for warning in listing.warnings:
        log(f"warning: {warning}")
    if not listing.items:
        raise PrepareError(_nothing_usable(recipe, source, listing.skipped))
    key = cache_key(recipe, options, listing.fingerprint)
    existing = _existing_cache(out)
    if existing is not None and existing.get("cache_key") == key and not force:
        kept = existing["counts"]["kept"]
        log(f"{out} is up to date ({kept} images, recipe {recipe}); nothing to do")
        return existing
    _remove_leftovers(out, log)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        workers = max(1, workers or os.cpu_count() or 1)
        manifest = _build(build_dir, recipe, source, listing, options, workers, progress)
        manifest.update(cache_key=key, workers=workers)
        manifest["seconds"] = round(time.perf_counter() - started, 2)
        with _stop_signals_held():  # a stop now would lose both the new and the old cache
            write_json(build_dir / MANIFEST, manifest)  # last: its presence marks a complete cache
            os.chmod(build_dir, 0o755)
            _move_into_place(build_dir, out)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    log(format_summary(manifest, out))
    return read_manifest(out)


def cache_key(recipe: str, options: PrepareOptions, source_fingerprint: str) -> str:
    """Identifies a build: recipe, options (with the include list's content) and source files."""
    include = Path(options.include).read_bytes() if options.include else b""
    identity = {
        "version": FORMAT_VERSION,
        "recipe": recipe,
        "options": asdict(options),
        "include_list": hashlib.blake2b(include, digest_size=16).hexdigest(),
        "source": source_fingerprint,
    }
    encoded = json.dumps(identity, sort_keys=True).encode()
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


def _nothing_usable(recipe: str, source: Path, skipped: list[Skip]) -> str:
    message = f"no usable image found in {source} for recipe {recipe!r}"
    if skipped:
        message += f" ({len(skipped)} left out, e.g. {skipped[0].name}: {skipped[0].reason})"
    return message + "; expected image files (" + ", ".join(e[1:] for e in IMAGE_EXTENSIONS) + ")"


def _existing_cache(out: Path) -> dict | None:
    """The manifest at ``out`` if it holds a complete cache; refuses to overwrite other folders."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise PrepareError(f"--out {out} is a file; give a folder for the prepared data")
    if not (out / MANIFEST).exists() and any(out.iterdir()):
        raise PrepareError(f"--out {out} exists and is not a prepared dataset; give a new folder")
    try:
        return read_manifest(out)
    except PrepareError:
        return None  # an old or broken cache of ours: rebuilt


def _remove_leftovers(out: Path, log: Callable[[str], None]) -> None:
    """Deletes the hidden build folders an interrupted earlier run left beside ``out``.

    (Two builds into the same ``--out`` at once are not supported.)"""
    out.parent.mkdir(parents=True, exist_ok=True)
    for pattern in (f".{out.name}.building-*", f".{out.name}.old-*"):
        for leftover in out.parent.glob(pattern):
            log(f"removing {leftover} (left by an interrupted build)")
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back during the block; one that came meanwhile acts after it."""
    held = {signal.SIGINT, signal.SIGTERM}
    main_thread = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "pthread_sigmask") or not main_thread:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _move_into_place(build_dir: Path, out: Path) -> None:
    """Renames the finished build onto ``out`` (an old cache there is moved aside, then deleted)."""
    if not out.exists():
        os.rename(build_dir, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old)  # onto the empty folder just made
    os.rename(build_dir, out)
    shutil.rmtree(old, ignore_errors=True)


def decode_items(
    items: list[Item], options: imageio.ImageOptions, workers: int
) -> Iterator[ItemResult]:
    """Results in item order; at most ``2 × workers`` chunks in flight, so memory stays bounded.

    Close the generator (or let it finish) to stop the workers: stopping early (Ctrl-C, SIGTERM,
    an error) kills them at once, as nothing they hold is worth finishing."""
    chunk_size = max(1, min(64, len(items) // (workers * 8)))
    chunks = (items[i : i + chunk_size] for i in range(0, len(items), chunk_size))
    if workers == 1:
        try:
            for chunk in chunks:
                yield from process_chunk(chunk, options)
        finally:
            imageio.close_archives()
        return
    pool = worker_processes.worker_pool(workers)
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(process_chunk, chunk, options))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        raise PrepareError(
            "a decoding worker process died (killed, or out of memory?); nothing was written"
        ) from None
    except BaseException:
        worker_processes.kill_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Decoded:
    """What streaming the items into ``images.npy`` leaves to record."""

    rows: int
    row_items: np.ndarray  # the item index of each row
    skipped: list[Skip]
    conversions: Counter
    digest: bytes  # of the pixel bytes, in row order


def _decode_into(
    build_dir: Path,
    recipe: str,
    items: list[Item],
    options: PrepareOptions,
    workers: int,
    progress: bool | None,
) -> _Decoded:
    """Decodes every item, writing ``images.npy`` and ``names.txt`` in item order."""
    image_options = options.image_options()
    rows = sum(max(item.patches, 1) for item in items)
    shape = (rows, options.size, options.size, image_options.channels)
    skipped, conversions, row_items = [], Counter(), []
    results = decode_items(items, image_options, workers)
    hide = None if progress is None else not progress  # None: tqdm hides the bar off a terminal
    bar = tqdm(total=len(items), unit="img", desc=f"prepare {recipe}", disable=hide)
    names = open(build_dir / NAMES, "w", encoding="utf-8")
    with RowWriter(build_dir / IMAGES, shape) as writer, bar, names, closing(results):
        for index, (item, result) in enumerate(zip(items, results)):
            bar.update(1)
            if result.skip is not None:
                skipped.append(result.skip)
                continue
            conversions.update(result.notes)
            for k, row in enumerate(result.arrays):
                writer.write(row)
                row_items.append(index)
                names.write(f"{item.name}#patch{k}\n" if item.patches else f"{item.name}\n")
    writer.finish()
    row_items = np.asarray(row_items, dtype=np.int64)
    return _Decoded(writer.rows, row_items, skipped, conversions, writer.digest.digest())


def _build(
    build_dir: Path,
    recipe: str,
    source: Path,
    listing: Listing,
    options: PrepareOptions,
    workers: int,
    progress: bool | None,
) -> dict:
    """Writes the images, split and attributes into ``build_dir``; returns the manifest."""
    decoded = _decode_into(build_dir, recipe, listing.items, options, workers, progress)
    skipped = listing.skipped + decoded.skipped
    if decoded.rows == 0:
        raise PrepareError(_nothing_usable(recipe, source, skipped))
    train, val, split_info = make_split(
        decoded.row_items, listing, options.val_fraction, options.seed
    )
    np.savez(build_dir / SPLIT, train=train, val=val)
    files = [IMAGES, SPLIT, NAMES]
    if listing.attributes is not None:
        _save_attributes(build_dir / ATTRIBUTES, decoded.row_items, listing)
        files.append(ATTRIBUTES)
    shape = [decoded.rows, options.size, options.size, options.image_options().channels]
    fingerprint = hashlib.blake2b(digest_size=16)
    for part in (decoded.digest, repr(shape).encode(), train.tobytes(), val.tobytes()):
        fingerprint.update(part)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "complete": True,
        "recipe": recipe,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": fingerprint.hexdigest(),
        "shape": shape,
        "options": asdict(options),
        "transforms": options.image_options().describe(),
        "source": {
            "path": str(source),
            "fingerprint": listing.fingerprint,
            **listing.notes,
            **({"warnings": listing.warnings} if listing.warnings else {}),
        },
        "counts": {
            "listed": len(listing.items) + len(listing.skipped),
            "kept": decoded.rows,
            "skipped": len(skipped),
            "skipped_by_reason": dict(Counter(s.reason for s in skipped).most_common()),
            "converted": dict(decoded.conversions.most_common()),
        },
        "split": split_info,
        "files": files,
        "skipped": [s.to_dict() for s in skipped],
    }


def _save_attributes(path: Path, row_items: np.ndarray, listing: Listing) -> None:
    """Per-row attribute values as int16 (0 where the attribute list has no line for an image)."""
    values = np.zeros((len(row_items), len(listing.attribute_names)), dtype=np.int16)
    for row, index in enumerate(row_items):
        found = listing.attributes.get(listing.items[index].name)
        if found is not None:
            values[row] = found
    np.savez(path, names=np.array(listing.attribute_names), values=values)


def format_summary(manifest: dict, out: Path) -> str:
    """A few lines: kept and skipped counts by reason, conversions, output path, time."""
    counts, shape, split = manifest["counts"], manifest["shape"], manifest["split"]
    seconds = manifest.get("seconds", 0.0)
    size = "x".join(str(n) for n in shape[1:])
    lines = [
        f"prepared {manifest['recipe']}: {counts['kept']} images {size} → {out} "
        f"(train {split['train']} / val {split['val']}, split: {split['method']})",
        f"skipped {counts['skipped']}"
        + "".join(f"; {reason}: {n}" for reason, n in counts["skipped_by_reason"].items())
        + (f" (each file and reason in {out / MANIFEST})" if counts["skipped"] else ""),
    ]
    if counts["converted"]:
        converted = "; ".join(f"{what}: {n}" for what, n in counts["converted"].items())
        lines.append(f"converted: {converted}")
    rate = counts["kept"] / seconds if seconds else 0.0
    lines.append(f"{seconds:.1f} s ({rate:.0f} images/s)")
    return "\n".join(lines)
