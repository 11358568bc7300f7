"""Robust image decoding for `betavae prepare`: one source image → uint8 ``(H, W, C)`` arrays.

Every problem with a file becomes :class:`SkipImage` with a short reason (the category counted in
the summary) and a detail; nothing here lets a bad file crash a build. What each image went
through beyond the dataset-wide transforms (a CMYK conversion, an alpha composite, an upscale …)
is returned as a list of notes, counted in the manifest.

The dataset-wide transforms, in order: EXIF orientation → conversion to RGB or grayscale → the
item's square crop (bounding box, face, patch) if any → resize of the shorter side to ``size``
(bilinear, as torchvision's ``Resize`` on PIL images) → centre crop to ``size × size``.
"""
from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Skip reasons (the categories of the printed summary).
EMPTY = "empty file"
NOT_AN_IMAGE = "not an image"
CORRUPT = "truncated or corrupt"
BOMB = "decompression bomb"
TOO_SMALL = "smaller than target"
UNSUPPORTED = "unsupported pixel format"
BAD_REGION = "crop region outside the image"
NOT_REGULAR = "not a regular file"  # named pipe, socket, device: never opened
UNREADABLE = "not readable"  # permission denied
ANIMATED = "animated image"  # detail: the frame count; only still images are used

# Notes: per-image conversions, counted in the manifest.
NOTE_CMYK = "CMYK converted to RGB"
NOTE_16BIT = "16-bit scaled to 8-bit"
NOTE_PALETTE = "palette converted"
NOTE_ALPHA = "alpha composited on background"
NOTE_GRAY_TO_RGB = "grayscale converted to RGB"
NOTE_OTHER_MODE = "other colour mode converted"
NOTE_EXIF_ROTATED = "EXIF orientation applied"
NOTE_EXIF_UNREADABLE = "EXIF unreadable, orientation ignored"
NOTE_UPSCALED = "upscaled (smaller than target)"

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


class SkipImage(Exception):
    """A source image that cannot be used; ``reason`` is a category, ``detail`` the specifics."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageOptions:
    """The dataset-wide transforms, as every worker applies them."""

    size: int
    channels: int  # 3 (RGB) or 1 (grayscale)
    background: tuple[int, int, int] = (255, 255, 255)
    small: str = "upscale"  # images whose shorter side is below ``size``: "upscale" or "skip"
    max_pixels: int | None = Image.MAX_IMAGE_PIXELS  # Pillow's decompression-bomb limit

    def describe(self) -> list[str]:
        """The transforms in words, for the manifest."""
        colour = "grayscale (ITU-R 601-2 luma)" if self.channels == 1 else "RGB"
        return [
            "EXIF orientation applied",
            f"converted to {colour}; transparent pixels composited on RGB {list(self.background)}",
            "16-bit images scaled to 8-bit as value / 257 (32-bit integer ones clipped to 16 bits)",
            "square crop of the item's region when the recipe gives one",
            f"shorter side resized to {self.size} (bilinear, antialiased), smaller images "
            + ("upscaled" if self.small == "upscale" else "skipped"),
            f"centre crop to {self.size}x{self.size}",
        ]


_archives: dict[str, zipfile.ZipFile] = {}  # open zip handles of this process, by path


def _open_zip(path: str) -> zipfile.ZipFile:
    """One open handle per archive and process (workers read many members of the same zip)."""
    if path not in _archives:
        _archives[path] = zipfile.ZipFile(path)
    return _archives[path]


def close_archives() -> None:
    """Closes this process's zip handles (a later build in this process then sees a new archive)."""
    while _archives:
        _archives.popitem()[1].close()


_FILE_KINDS = (
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISDIR, "folder"),
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for the skip detail)."""
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "special file")


def read_source(path: str, member: str | None = None) -> bytes:
    """The bytes of a file, or of ``member`` inside the zip archive at ``path``.

    Only regular files are read: a named pipe, socket or device (or a link to one) raises
    :class:`SkipImage` without being opened for reading; the file is opened non-blocking and
    checked again, so one swapped in after the first look cannot block the worker either.
    """
    if member is not None:
        return _open_zip(path).read(member)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise SkipImage(NOT_REGULAR, file_kind(mode))
    with open(os.open(path, _OPEN_FLAGS), "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise SkipImage(NOT_REGULAR, file_kind(mode))
        return handle.read()


def _frames(image: Image.Image) -> int:
    """The frame count of an animated GIF, PNG (APNG) or WebP; 1 for every other image.

    (Multi-frame TIFF and MPO files hold pages or previews beside one main picture: the first
    frame is used, as Pillow loads it.)"""
    if image.format not in ("GIF", "PNG", "WEBP") or not getattr(image, "is_animated", False):
        return 1
    return int(image.n_frames)


def decode(data: bytes, max_pixels: int | None) -> tuple[Image.Image, list[str]]:
    """Decodes fully and applies the EXIF orientation; raises :class:`SkipImage` for bad data."""
    if not data:
        raise SkipImage(EMPTY, "0 bytes")
    notes: list[str] = []
    frames = 1
    default_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            frames = _frames(image)
            if frames == 1:
                image.load()
    except UnidentifiedImageError:
        raise SkipImage(NOT_AN_IMAGE, "format not recognised") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SkipImage(BOMB, str(exc)) from None
    except Exception as exc:  # Pillow raises many types on damaged data (OSError, SyntaxError …)
        raise SkipImage(CORRUPT, f"{type(exc).__name__}: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = default_limit
    if frames > 1:
        raise SkipImage(ANIMATED, f"{frames} frames; only still images are used")
    try:
        if image.getexif().get(0x0112, 1) in range(2, 9):  # 1: as stored; 2…8: flips and turns
            image = ImageOps.exif_transpose(image)
            notes.append(NOTE_EXIF_ROTATED)
    except Exception:  # a damaged EXIF block does not make the pixels unusable
        notes.append(NOTE_EXIF_UNREADABLE)
    return image, notes


def to_channels(
    image: Image.Image, channels: int, background: tuple[int, int, int]
) -> tuple[Image.Image, list[str]]:
    """Converts any Pillow mode to ``RGB`` (3 channels) or ``L`` (1); notes say what was done."""
    notes: list[str] = []
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        image = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), "L")
        notes.append(NOTE_16BIT)
    elif mode == "F":
        raise SkipImage(UNSUPPORTED, "32-bit floating-point pixels (no known value range)")
    elif mode == "CMYK":
        image = image.convert("RGB")
        notes.append(NOTE_CMYK)
    elif mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        notes.append(NOTE_PALETTE)
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("RGB", "L", *_ALPHA_MODES):  # YCbCr, LAB, HSV, RGBX …
        image = image.convert("RGB")
        notes.append(NOTE_OTHER_MODE)
    if image.mode in _ALPHA_MODES:
        canvas = Image.new("RGBA", image.size, (*background, 255))
        image = Image.alpha_composite(canvas, image.convert("RGBA")).convert("RGB")
        notes.append(NOTE_ALPHA)
    if channels == 3 and image.mode == "L":
        image = image.convert("RGB")
        notes.append(NOTE_GRAY_TO_RGB)
    elif channels == 1 and image.mode == "RGB":
        image = image.convert("L")
    return image, notes


def crop_square(image: Image.Image, center_x: float, center_y: float, side: float) -> Image.Image:
    """Square crop around a centre, shrunk to fit the image and shifted inside it."""
    width, height = image.size
    if side < 1 or not (0 <= center_x <= width and 0 <= center_y <= height):
        where = f"square at ({center_x:.0f}, {center_y:.0f}), side {side:.0f}"
        raise SkipImage(BAD_REGION, f"{where}, image {width}x{height}")
    side = int(round(min(side, width, height)))
    left = int(round(min(max(center_x - side / 2, 0), width - side)))
    top = int(round(min(max(center_y - side / 2, 0), height - side)))
    return image.crop((left, top, left + side, top + side))


def resize_center_crop(image: Image.Image, size: int, small: str) -> tuple[Image.Image, list[str]]:
    """Shorter side → ``size`` (torchvision's rounding), then a centre crop to ``size`` square."""
    width, height = image.size
    shorter = min(width, height)
    notes: list[str] = []
    if shorter < size:
        if small == "skip":
            raise SkipImage(TOO_SMALL, f"shorter side {shorter} px < {size} px")
        notes.append(NOTE_UPSCALED)
    if width <= height:
        new_size = (size, int(size * height / width))
    else:
        new_size = (int(size * width / height), size)
    image = image.resize(new_size, Image.BILINEAR)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return image.crop((left, top, left + size, top + size)), notes


def to_array(image: Image.Image) -> np.ndarray:
    """A Pillow ``RGB``/``L`` image → uint8 ``(H, W, C)``."""
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def outside_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """One encoded image that is not part of a prepared dataset (``evaluate --images``,
    ``traverse --image``, an explorer upload) → uint8 ``(size, size, channels)``, transformed as
    ``prepare`` transforms training images: EXIF orientation, 16-bit scaled, transparency on white,
    RGB or grayscale, shorter side resized (small images enlarged) and centre-cropped.

    Raises :class:`SkipImage` for data that is not a usable still image.
    """
    image, _ = decode(data, Image.MAX_IMAGE_PIXELS)
    image, _ = to_channels(image, channels, (255, 255, 255))
    image, _ = resize_center_crop(image, size, small="upscale")
    return to_array(image).copy()  # writable, as torch expects


def load_converted(
    path: str, member: str | None, options: ImageOptions
) -> tuple[Image.Image, list[str]]:
    """Reads, decodes, orients and converts one source image (no crop or resize yet)."""
    try:
        data = read_source(path, member)
    except FileNotFoundError:
        raise SkipImage(CORRUPT, "file disappeared during the build") from None
    except PermissionError as exc:
        raise SkipImage(UNREADABLE, exc.strerror or str(exc)) from None
    except SkipImage:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise SkipImage(CORRUPT, f"cannot read: {exc}") from None
    except (RuntimeError, NotImplementedError, ValueError) as exc:  # zip: encrypted, odd method
        raise SkipImage(CORRUPT, f"cannot read: {type(exc).__name__}: {exc}") from None
    image, notes = decode(data, options.max_pixels)
    image, convert_notes = to_channels(image, options.channels, options.background)
    return image, notes + convert_notes
