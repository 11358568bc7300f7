"""What every recipe produces (a :class:`Listing` of :class:`Item`) and how an item becomes pixels.

A recipe only lists: which source images, under which names, with which square crop region or
how many random patches. :func:`process_chunk` (run in worker processes) turns items into uint8
arrays with :mod:`betavae.data.imageio`.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from betavae.data import imageio
from betavae.data.prepared import PrepareError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
NOT_IN_INCLUDE_LIST = "listed in --include but not found"
UNEXPECTED = "unexpected error"  # an exception nobody foresaw, while decoding one image

# Why a directory entry was left out when the source folder was listed (see scan_folder). A
# folder's name ends with "/"; a name that is not valid UTF-8 is written with \xNN escapes.
BAD_NAME = "file name not valid UTF-8"
BROKEN_LINK = "broken symlink"
LINK_LOOP = "symlink loop"
DUPLICATE_FOLDER = "folder already listed"  # a link to a folder that is read under another name
UNREADABLE = imageio.UNREADABLE
CANNOT_READ = "cannot read"
NOT_REGULAR = imageio.NOT_REGULAR
NOT_IMAGE_FILE = "not an image file"
HIDDEN_FOLDER = "hidden folder"
_HARMLESS = (NOT_IMAGE_FILE, HIDDEN_FOLDER)  # not part of the source fingerprint


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
    warnings: list[str] = field(default_factory=list)  # printed, and kept in the manifest


@dataclass(frozen=True)
class ItemResult:
    """What a worker returns for one item: arrays (one per row) or the reason it was skipped."""

    arrays: tuple[np.ndarray, ...] = ()
    skip: Skip | None = None
    notes: tuple[str, ...] = ()


def display_name(name: str) -> str:
    """A file name as text that is always valid UTF-8: undecodable bytes as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _valid_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # undecodable bytes come as lone surrogates (surrogateescape)
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class Scan:
    """What :func:`scan_folder` found: every entry is in exactly one of the three lists."""

    images: list[Path]  # regular files with an image extension, sorted by relative name
    others: list[Path]  # other regular files (a recipe may use some, e.g. landmark files)
    skipped: list[Skip]  # everything else, with the reason
    root: Path

    def unused(self, used: set[Path] = frozenset()) -> list[Skip]:
        """:attr:`skipped` plus the ``others`` not in ``used``, as skips."""
        others = [p for p in self.others if p not in used]
        extra = [Skip(relative_name(p, self.root), NOT_IMAGE_FILE) for p in others]
        return sorted(self.skipped + extra, key=lambda skip: skip.name)

    def fingerprint(self, paths: list[Path] | None = None) -> str:
        """Of ``paths`` (default: the images) and the problem entries (a fixed link rebuilds)."""
        files = fingerprint_files(self.root, self.images if paths is None else paths)
        problems = [f"{s.name}\t{s.reason}" for s in self.skipped if s.reason not in _HARMLESS]
        return combine_fingerprints(files, *problems) if problems else files


def scan_folder(root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> Scan:
    """Every entry under ``root`` (recursive), sorted by relative name, never blocking on any.

    Symlinks are followed, to files and to folders, except a link back to a folder above it (a
    loop) and a link to a folder listed under another name (real folders are listed first, so they
    keep their own names); dot-folders are not entered. Nothing is opened: a named pipe, socket or
    device (or a link to one), a broken link, an unreadable folder and a name that is not UTF-8 are
    listed in ``skipped`` with the reason. An unreadable ``root`` is a :class:`PrepareError`.
    """
    images: list[tuple[str, Path]] = []
    others: list[tuple[str, Path]] = []
    skipped: list[Skip] = []
    try:
        info = os.stat(root)
    except OSError as exc:
        raise PrepareError(f"cannot read --source {root}: {exc.strerror or exc}") from None
    key = (info.st_dev, info.st_ino)
    seen = {key: ""}  # every folder listed → its name ("" the source)
    stack = [(root, "", (key,))]  # folders to list: (path, name + "/", the folders above and it)
    linked: list[tuple[Path, str, tuple, tuple]] = []  # links to folders, listed after the rest
    while stack or linked:
        if not stack:  # every real folder is listed: follow the first link not yet seen
            path, name, ancestors, key = linked.pop(0)
            if key in ancestors:
                where = f"{seen[key]}/" if seen[key] else "the source folder"
                skipped.append(Skip(name + "/", LINK_LOOP, f"links back to {where}"))
            elif key in seen:
                detail = f"same folder as {seen[key]}/"
                skipped.append(Skip(name + "/", DUPLICATE_FOLDER, detail))
            else:
                seen[key] = name
                stack.append((path, name + "/", (*ancestors, key)))
            continue
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda e: e.name)
        except OSError as exc:
            if not prefix:
                raise PrepareError(f"cannot read --source {root}: {exc.strerror or exc}") from None
            skipped.append(_error_skip(prefix, exc))
            continue
        subfolders = []
        for entry in entries:
            name = prefix + entry.name
            if not _valid_utf8(entry.name):
                is_folder = _is_dir(entry)
                detail = "rename it to use it" + ("; folder not read" if is_folder else "")
                skipped.append(Skip(display_name(name) + "/" * is_folder, BAD_NAME, detail))
                continue
            try:
                info = entry.stat()  # follows links
            except OSError as exc:
                skipped.append(_error_skip(name, exc, entry))
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if entry.name.startswith("."):
                    skipped.append(Skip(name + "/", HIDDEN_FOLDER, "not read"))
                elif entry.is_symlink():
                    linked.append((Path(entry.path), name, ancestors, key))
                elif key in seen:  # a bind mount, or a folder hard link on odd file systems
                    detail = f"same folder as {seen[key]}/"
                    skipped.append(Skip(name + "/", DUPLICATE_FOLDER, detail))
                else:
                    seen[key] = name
                    subfolders.append((Path(entry.path), name + "/", (*ancestors, key)))
            elif stat.S_ISREG(info.st_mode):
                is_image = entry.name.lower().endswith(extensions)
                (images if is_image else others).append((name, Path(entry.path)))
            else:
                skipped.append(Skip(name, NOT_REGULAR, imageio.file_kind(info.st_mode)))
        stack.extend(reversed(subfolders))  # depth first, in name order
    images.sort(key=lambda found: found[0])
    others.sort(key=lambda found: found[0])
    skipped.sort(key=lambda skip: skip.name)
    return Scan([p for _, p in images], [p for _, p in others], skipped, root)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _error_skip(name: str, exc: OSError, entry: os.DirEntry | None = None) -> Skip:
    """The skip for an entry (or a folder, ``name`` ending in "/") that could not be read."""
    detail = exc.strerror or str(exc)
    if entry is not None and entry.is_symlink():
        try:
            detail = f"points to {display_name(os.readlink(entry.path))}"
        except OSError:
            pass
        if exc.errno == errno.ENOENT:
            return Skip(name, BROKEN_LINK, detail)
    if exc.errno == errno.ELOOP:
        return Skip(name, LINK_LOOP, "too many levels of symbolic links")
    if isinstance(exc, PermissionError):
        return Skip(name, UNREADABLE, detail or "permission denied")
    return Skip(name, CANNOT_READ, detail)


def is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder (or a link to one); False when it cannot even be looked at."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (or a link to one): never a pipe, socket or device."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def subfolders(path: Path) -> list[Path]:
    """The folders directly in ``path`` (links to folders too), sorted; none if it is unreadable."""
    try:
        with os.scandir(path) as entries:
            names = sorted(e.name for e in entries if _is_dir(e) and _valid_utf8(e.name))
    except OSError:
        return []
    return [path / name for name in names]


def read_text_file(path: Path, what: str) -> str:
    """A small text file of the source (a list, annotations), or one clear :class:`PrepareError`."""
    if not is_regular_file(path):
        raise PrepareError(f"{what} {path} is not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrepareError(f"cannot read {what} {path}: {exc}") from None


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
        try:
            info = path.stat()
            state = f"{info.st_size}\t{info.st_mtime_ns}"
        except OSError as exc:  # gone since it was listed: the worker will skip it
            state = f"error {exc.errno}"
        name = display_name(relative_name(path, root))
        digest.update(f"{name}\t{state}\n".encode())
    return digest.hexdigest()


def combine_fingerprints(*parts: str) -> str:
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def read_include_list(path: Path) -> list[str]:
    """Relative paths, one a line; blank lines and ``#`` comments ignored; ``\\`` read as ``/``."""
    if not path.is_file():
        raise PrepareError(f"--include file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrepareError(f"cannot read the --include file {path}: {exc}") from None
    names = []
    for line in text.splitlines():
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
    except Exception as exc:  # one odd file must not stop the build; the manifest says what it was
        return ItemResult(skip=Skip(item.name, UNEXPECTED, f"{type(exc).__name__}: {exc}"))
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


def write_example_image(path: Path, seed: int, size: tuple[int, int] = (24, 20)) -> Path:
    """A small smooth RGB image (``size`` = width, height) for a recipe's ``write_example``."""
    width, height = size
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None] * rng.uniform(-80, 80, 3)
    pixels = rng.uniform(60, 190, 3) + ramp + np.zeros((height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path
