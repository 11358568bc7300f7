"""The standard disentanglement datasets, read from the files users have (never downloaded).

Each file becomes a :class:`~betavae.data.groundtruth.GroundTruthData` whose ``render(factors)``
reads the images of those factor combinations from disk, so the BetaVAE/FactorVAE scores can ask
for any point of the grid. No format is ever loaded whole: uncompressed image data are read in place
with positioned reads (:class:`RawRows`, one ``preadv`` per run of consecutive rows, nothing mapped),
so a process holds only the rows it asked for:

- **dSprites** (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``): ``imgs`` ``(N, 64, 64)`` uint8
  0/1, ``latents_values`` and ``latents_classes`` ``(N, 6)``, grid color × shape × scale ×
  orientation × posX × posY (row-major). The real file's ``imgs`` is deflate-compressed (26 MB
  for 3 GB), which ``np.load`` can only decompress whole into memory; betavae streams the member
  through ``zipfile`` once into a bit-packed ``.npy`` cache (8 pixels a byte: 360 MiB for the
  real file) under ``$BETAVAE_CACHE/datasets`` (default ``~/.cache/betavae/datasets``), written
  to a temporary name and renamed, then reads rows from it. The constant color factor is dropped (as
  disentanglement_lib does), leaving the built-in ``dsprites`` factors.
- **Shapes3D** (``3dshapes.h5``): ``images`` ``(480000, 64, 64, 3)`` uint8 and ``labels``
  ``(480000, 6)`` float, grid floor hue 10 × wall hue 10 × object hue 10 × scale 8 × shape 4 ×
  orientation 15. A contiguous, unfiltered ``images`` dataset is read in place at its offset in the
  file; a chunked or compressed one is read through h5py, one read per run of increasing rows.
- **MPI3D** (``mpi3d_toy.npz``, ``mpi3d_realistic.npz``, ``mpi3d_real.npz``): ``images``
  ``(1036800, 64, 64, 3)`` uint8 on the grid 6×6×2×3×3×40×40 of
  :data:`MPI3D_FACTOR_NAMES`. An uncompressed (stored) member is read in place inside the
  zip; a compressed one is streamed once into a ``.npy`` cache as for dSprites.

The grids of dSprites and Shapes3D are read from their label arrays, so a smaller file in the same
layout (the tests write such files) is accepted; MPI3D has no labels, so its grid is the published
one (:data:`MPI3D_FACTOR_SIZES`), or ``factor_sizes`` given to :class:`MPI3DFile`. A file that is
missing, truncated or of another layout raises :class:`DatasetFileError` with one line naming the
expected arrays and what was found.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from betavae.data.groundtruth import GroundTruthData
from betavae.data.sprites import canvas_samples, count_covered, to_grey
from betavae.fileio import atomic_path

CACHE_ENV = "BETAVAE_CACHE"  # as betavae.metrics.inception: one cache root for the package
READ_ROWS = 4096  # rows read (and resized) per step
_COPY_BYTES = 16 << 20  # decompressed per step when a member is written to the cache

DSPRITES_FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
SHAPES3D_FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
MPI3D_FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                      "horizontal_axis", "vertical_axis")
MPI3D_FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)

DSPRITES_EXPECTED = ("'imgs' uint8 (737280, 64, 64) of 0/1, 'latents_values' float (737280, 6) and "
                     "'latents_classes' int (737280, 6) (dSprites' grid 1×3×6×40×32×32, row-major)")
SHAPES3D_EXPECTED = ("'images' uint8 (480000, 64, 64, 3) and 'labels' float (480000, 6) (floor hue 10 × "
                     "wall hue 10 × object hue 10 × scale 8 × shape 4 × orientation 15, row-major)")
MPI3D_EXPECTED = "'images' uint8 (1036800, 64, 64, 3) (grid 6×6×2×3×3×40×40, row-major)"


class DatasetFileError(ValueError):
    """A dataset file that cannot be read as its format; the message names what was expected and found."""


def cache_dir() -> Path:
    """Where converted members are kept: ``$BETAVAE_CACHE/datasets``, else ``~/.cache/betavae/datasets``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "betavae").expanduser() / "datasets"


def _describe(arrays: dict[str, tuple[tuple[int, ...], str]]) -> str:
    return ", ".join(f"'{k}' {dtype} {tuple(shape)}" for k, (shape, dtype) in arrays.items()) or "no arrays"


# ----- rows of an uncompressed array at a known offset ------------------------------------------
def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Sorted unique rows as runs of consecutive rows: (first row, count, position in ``rows``)."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(rows)]])
    return [(int(rows[a]), int(b - a), int(a)) for a, b in zip(starts, ends)]


class RawRows:
    """Rows of a C-order array stored uncompressed at ``offset`` in a file, read with positioned
    reads (one per run of consecutive rows) straight into the output: nothing is mapped or cached
    by the process, so its memory is the rows asked for (the kernel's page cache does the rest)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype=np.uint8):
        self.path, self.offset, self.shape, self.dtype = Path(path), int(offset), tuple(shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def end(self) -> int:
        """The file size the array needs."""
        return self.offset + self.shape[0] * self.row_bytes

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0)), os.getpid()
        return self._fd

    def __getitem__(self, rows) -> np.ndarray:
        """Sorted, unique row indices → ``(len(rows), *shape[1:])``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        flat = out.reshape(-1).view(np.uint8)
        fd = self._file()
        for first, count, at in _runs(rows):
            want = count * self.row_bytes
            view = memoryview(flat[at * self.row_bytes:at * self.row_bytes + want])
            got = _read_at(fd, view, self.offset + first * self.row_bytes)
            if got != want:
                raise DatasetFileError(f"{self.path} ends inside row {first + got // self.row_bytes} of "
                                       f"{self.shape[0]}: the file is truncated")
        return out

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass


def _read_at(fd: int, view: memoryview, offset: int) -> int:
    """Fills ``view`` from ``offset`` (fewer bytes only at the end of the file); returns the count."""
    done = 0
    while done < len(view):
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [view[done:]], offset + done)
        elif hasattr(os, "pread"):
            data = os.pread(fd, len(view) - done, offset + done)
            view[done:done + len(data)], got = data, len(data)
        else:  # no positioned reads (Windows): seek and read, one process per descriptor
            os.lseek(fd, offset + done, os.SEEK_SET)
            data = os.read(fd, len(view) - done)
            view[done:done + len(data)], got = data, len(data)
        if got == 0:
            break
        done += got
    return done


# ----- npz members without loading them ---------------------------------------------------------
class _Npz:
    """An ``.npz`` whose members are read lazily: headers without data, small arrays whole, large
    ones by rows (stored members in place, compressed ones via a converted cache file)."""

    def __init__(self, path: Path, kind: str, expected: str):
        self.path, self.kind, self.expected = path, kind, expected
        if not path.is_file():
            raise DatasetFileError(f"{path} does not exist or is not a file (expected the {kind} file: {expected})")
        try:
            self.zip = zipfile.ZipFile(path)
            self.members = {info.filename[:-4]: info for info in self.zip.infolist() if info.filename.endswith(".npy")}
            self.headers = {key: self._header(info) for key, info in self.members.items()}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
            raise DatasetFileError(f"{path} is not a readable {kind} .npz ({exc}: truncated, or another format); "
                                   f"expected {expected}") from None

    def _header(self, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, bool]:
        with self.zip.open(info) as stream:
            return _read_npy_header(stream)

    def found(self) -> str:
        return _describe({k: (shape, str(dtype)) for k, (shape, dtype, _) in self.headers.items()})

    def fail(self, problem: str) -> DatasetFileError:
        return DatasetFileError(f"{self.path} is not a {self.kind} file: {problem}; expected {self.expected}; "
                                f"found {self.found()}")

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.headers:
            raise self.fail(f"no '{key}' array")
        return self.headers[key][0]

    def dtype(self, key: str) -> np.dtype:
        return self.headers[key][1]

    def load(self, key: str) -> np.ndarray:
        """A small member read whole."""
        self.shape(key)
        try:
            with self.zip.open(self.members[key]) as stream:
                return np.lib.format.read_array(stream)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
            raise self.fail(f"'{key}' cannot be read ({exc})") from None

    def stored_offset(self, key: str) -> int | None:
        """Byte offset of an uncompressed member's array data in the file, or None when compressed."""
        info = self.members[key]
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(self.path, "rb") as handle:
            handle.seek(info.header_offset)
            local = handle.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04":
                raise self.fail(f"the zip entry of '{key}' is damaged")
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_length + extra_length
            handle.seek(start)
            _read_npy_header(handle)
            return handle.tell()

    def rows(self, key: str, convert=None, suffix: str = "") -> tuple[RawRows, str]:
        """The member's rows and how they are read: in place when stored, else from a cache file
        written once (``convert`` maps each chunk of rows to what the cache holds; default: unchanged)."""
        shape, dtype, fortran = self.headers[key]
        if fortran:
            raise self.fail(f"'{key}' is stored in Fortran order")
        offset = self.stored_offset(key) if convert is None else None
        if offset is not None:
            rows = RawRows(self.path, offset, shape, dtype)
            if rows.end > self.path.stat().st_size:
                raise self.fail(f"'{key}' is truncated (the file ends before its data)")
            return rows, "read in place from the file (uncompressed zip member)"
        target = self._cache_path(key, suffix)
        if not target.is_file():
            self._convert(key, target, convert)
        with open(target, "rb") as handle:
            cached_shape, cached_dtype, _ = _read_npy_header(handle)
            offset = handle.tell()
        rows = RawRows(target, offset, cached_shape, cached_dtype)
        size = target.stat().st_size
        if cached_shape[0] != shape[0] or rows.end != size:
            raise DatasetFileError(f"the cache {target} of {self.path} is damaged (expected {shape[0]} rows in "
                                   f"{rows.end} bytes, found {cached_shape[0]} rows in {size}); delete the cache file")
        return rows, f"read from the cache {target}"

    def _cache_path(self, key: str, suffix: str) -> Path:
        info = self.members[key]
        identity = repr((self.path.name, key, info.CRC, info.file_size, info.compress_size, suffix))
        digest = hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()
        return cache_dir() / f"{self.path.stem}-{key}{suffix}-{digest}.npy"

    def _convert(self, key: str, target: Path, convert) -> None:
        """Streams the member into ``target`` chunk by chunk (written to a temporary name, then renamed)."""
        shape, dtype, _ = self.headers[key]
        convert = convert or (lambda rows: rows)
        row_shape, row_bytes = shape[1:], int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        step = max(1, _COPY_BYTES // max(row_bytes, 1))
        sample = convert(np.zeros((1, *row_shape), dtype=dtype))
        header = {"descr": np.lib.format.dtype_to_descr(sample.dtype), "fortran_order": False,
                  "shape": (shape[0], *sample.shape[1:])}
        try:  # plain writes, not a writable memmap: only one chunk is ever held
            with atomic_path(target) as temporary, self.zip.open(self.members[key]) as stream, \
                    open(temporary, "wb") as out:
                _read_npy_header(stream)
                np.lib.format.write_array_header_2_0(out, header)
                for start in range(0, shape[0], step):
                    count = min(step, shape[0] - start)
                    raw = _read_exactly(stream, count * row_bytes)
                    if raw is None:
                        raise self.fail(f"'{key}' is truncated (its data end after {start} rows)")
                    rows = np.frombuffer(raw, dtype=dtype).reshape(count, *row_shape)
                    out.write(np.ascontiguousarray(convert(rows)).data)
                while stream.read(1 << 20):  # reaching the end makes zipfile check the member's CRC
                    pass
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise self.fail(f"'{key}' cannot be decompressed ({exc})") from None
        except OSError as exc:  # mostly the cache: not writable, full, or not a folder
            raise DatasetFileError(f"cannot convert '{key}' of {self.path} into the cache {target} ({exc}); "
                                   f"point {CACHE_ENV} at a writable folder with room") from None


def _read_npy_header(stream) -> tuple[tuple[int, ...], np.dtype, bool]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran)


def _read_exactly(stream, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            return None
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


# ----- the grid of a labelled file --------------------------------------------------------------
def _grid_from_classes(classes: np.ndarray) -> tuple[int, ...] | None:
    """Factor sizes of integer classes ``(N, F)`` laid out as a full row-major grid, else None."""
    classes = np.asarray(classes, dtype=np.int64)
    if classes.ndim != 2 or len(classes) == 0 or classes.min() < 0:
        return None
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    if int(np.prod(sizes, dtype=np.int64)) != len(classes):
        return None
    for k, size in enumerate(sizes):  # column k must equal (i // stride_k) % size_k for every row i
        stride = int(np.prod(sizes[k + 1:], dtype=np.int64))
        if not np.array_equal(classes[:, k], (np.arange(len(classes)) // stride) % size):
            return None
    return sizes


def _resize(images: np.ndarray, size: int, binary: bool) -> np.ndarray:
    """uint8 ``(n, S, S, C)`` → ``(n, size, size, C)``: binary images as the built-in dsprites (the
    mean over the area each pixel covers when shrinking, the pixel under each centre when growing),
    antialiased bilinear otherwise."""
    native = images.shape[1]
    if size == native:
        return images
    if binary:
        sample, per_pixel = canvas_samples(native, size)
        return to_grey(count_covered(images[:, sample][:, :, sample], per_pixel), per_pixel * per_pixel)
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# ----- readers ----------------------------------------------------------------------------------
class _Store:
    """An opened file: factor grid, value of each factor index, and ``read(rows)`` of sorted unique rows."""

    binary = False

    def __init__(self, path: Path):
        self.path = path
        self.factor_sizes: tuple[int, ...] = ()
        self.values: list[np.ndarray] = []
        self.native_size, self.channels, self.access = 64, 3, ""

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def read(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __reduce__(self):  # reopen instead of pickling file handles (an h5py file cannot be pickled)
        return type(self), (self.path,)


class _DSpritesStore(_Store):
    binary = True

    def __init__(self, path: Path):
        super().__init__(path)
        npz = _Npz(path, "dSprites", DSPRITES_EXPECTED)
        shape = npz.shape("imgs")
        n = shape[0]
        if len(shape) != 3 or shape[1] != shape[2] or npz.dtype("imgs") != np.uint8:
            raise npz.fail("'imgs' must be uint8 (N, S, S)")
        if npz.shape("latents_classes") != (n, 6) or npz.shape("latents_values") != (n, 6):
            raise npz.fail("'latents_classes' and 'latents_values' must be (N, 6) for N images")
        classes = npz.load("latents_classes")
        sizes = _grid_from_classes(classes)
        if sizes is None or sizes[0] != 1:
            raise npz.fail("'latents_classes' is not a full row-major grid with one color")
        latents = npz.load("latents_values")
        strides = [int(np.prod(sizes[k + 1:], dtype=np.int64)) for k in range(6)]
        self.factor_sizes = sizes[1:]
        self.values = [latents[np.arange(sizes[k]) * strides[k], k].astype(np.float64) for k in range(1, 6)]
        self.native_size, self.channels = shape[1], 1
        if npz.stored_offset("imgs") is not None:
            self.images, self.access = npz.rows("imgs")
            self.packed = False
        else:  # the real file: deflated; stream once into a bit-packed cache (8 pixels a byte)
            self.images, self.access = npz.rows("imgs", convert=lambda rows: np.packbits(rows != 0, axis=-1),
                                                suffix="-packbits")
            self.packed = True
            if self.images.shape != (n, shape[1], (shape[2] + 7) // 8):
                raise npz.fail(f"the cache {self.access} does not match; delete it")

    def read(self, rows: np.ndarray) -> np.ndarray:
        block = self.images[rows]
        if self.packed:
            block = np.unpackbits(block, axis=-1, count=self.native_size)
        return ((block != 0).astype(np.uint8) * np.uint8(255))[..., None]


def _check_rgb(shape: tuple[int, ...], dtype) -> bool:
    return len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3 and np.dtype(dtype) == np.uint8


class _Shapes3DStore(_Store):
    def __init__(self, path: Path):
        super().__init__(path)
        import h5py

        if not path.is_file():
            raise DatasetFileError(f"{path} does not exist or is not a file (expected the Shapes3D file: "
                                   f"{SHAPES3D_EXPECTED})")
        try:
            self.file = h5py.File(path, "r")
            found = {k: (v.shape, str(v.dtype)) for k, v in self.file.items() if isinstance(v, h5py.Dataset)}
        except OSError as exc:
            raise DatasetFileError(f"{path} is not a readable Shapes3D .h5 ({exc}); "
                                   f"expected {SHAPES3D_EXPECTED}") from None

        def fail(problem: str) -> DatasetFileError:
            return DatasetFileError(f"{path} is not a Shapes3D file: {problem}; expected {SHAPES3D_EXPECTED}; "
                                    f"found {_describe(found)}")

        if "images" not in found or "labels" not in found:
            raise fail("no 'images' and 'labels' arrays")
        images, labels = self.file["images"], self.file["labels"]
        if not _check_rgb(images.shape, images.dtype) or labels.shape != (images.shape[0], 6):
            raise fail("'images' must be uint8 (N, S, S, 3) and 'labels' (N, 6)")
        try:
            values = np.asarray(labels[()], dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise fail(f"'labels' cannot be read ({exc})") from None
        # a factor's value index: its rank among the column's distinct values (rounded: float noise)
        uniques = [np.unique(np.round(values[:, k], 6), return_index=True, return_inverse=True) for k in range(6)]
        sizes = _grid_from_classes(np.stack([inverse.ravel() for _, _, inverse in uniques], axis=1))
        if sizes is None:
            raise fail("'labels' is not a full row-major grid")
        self.factor_sizes, self.values = sizes, [values[first, k] for k, (_, first, _) in enumerate(uniques)]
        self.native_size = images.shape[1]
        offset = images.id.get_offset()
        if images.chunks is None and offset is not None and images.compression is None:
            if offset + images.size > path.stat().st_size:
                raise fail("'images' is truncated (the file ends before its data)")
            self.images = RawRows(path, offset, images.shape)
            self.access = "read in place from the file (contiguous HDF5 dataset, no h5py per read)"
        else:
            self.images, self.access = images, f"read through h5py (chunks {images.chunks}, {images.compression})"
        self._pid = os.getpid()

    def read(self, rows: np.ndarray) -> np.ndarray:
        if isinstance(self.images, RawRows):
            return self.images[rows]
        if self._pid != os.getpid():  # an HDF5 handle must not be shared with a forked process
            import h5py

            self.file, self._pid = h5py.File(self.path, "r"), os.getpid()
            self.images = self.file["images"]
        # h5py: one read per run of consecutive rows, in increasing order (measured ~20× faster than
        # one fancy-index selection of the same rows on a chunked, compressed file)
        out = np.empty((len(rows), *self.images.shape[1:]), dtype=np.uint8)
        try:
            for first, count, at in _runs(rows):
                self.images.read_direct(out, np.s_[first:first + count], np.s_[at:at + count])
        except (OSError, ValueError) as exc:
            raise DatasetFileError(f"{self.path}: 'images' cannot be read ({exc})") from None
        return out


class _MPI3DStore(_Store):
    def __init__(self, path: Path, factor_sizes: Sequence[int] | None = None):
        super().__init__(path)
        self.factor_sizes = tuple(int(s) for s in (factor_sizes or MPI3D_FACTOR_SIZES))
        if len(self.factor_sizes) != 7:
            raise ValueError("MPI3D has 7 factors")
        npz = _Npz(path, "MPI3D", MPI3D_EXPECTED)
        shape = npz.shape("images")
        if not _check_rgb(shape, npz.dtype("images")) or shape[0] != len(self):
            raise npz.fail(f"'images' must be uint8 ({len(self)}, S, S, 3) for the grid "
                           f"{'×'.join(map(str, self.factor_sizes))}")
        self.values = [np.arange(s, dtype=np.float64) for s in self.factor_sizes]
        self.native_size = shape[1]
        self.images, self.access = npz.rows("images")

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.images[rows]

    def __reduce__(self):
        return type(self), (self.path, self.factor_sizes)


class FileGroundTruth(GroundTruthData):
    """A ground-truth dataset read from its file: ``render`` reads the images of the given factors
    (resized to ``image_size`` when it is not the file's)."""

    kind = ""
    default_file = ""
    store_type: type[_Store] = _Store  # opens the file; ``open_options`` go to it

    def __init__(self, path: str | Path | None = None, factor_values=None, image_size: int = 64,
                 store: _Store | None = None, **open_options):
        if store is None:
            if path is None:
                raise ValueError(f"{type(self).__name__} needs the path of the {self.kind} file")
            store = self.store_type(Path(path).expanduser(), **open_options)
        self.store, self.image_size, self.channels = store, int(image_size), store.channels
        if self.image_size < 8:
            raise ValueError("image_size must be at least 8")
        super().__init__(factor_values)

    def _options(self) -> dict:
        return {"store": self.store, "image_size": self.image_size}

    def full_factor_sizes(self) -> tuple[int, ...]:
        return self.store.factor_sizes

    def factor_values(self, name: str) -> np.ndarray:
        return self.store.values[self.factor_index(name)]

    def render(self, factors: np.ndarray) -> np.ndarray:
        factors = np.atleast_2d(np.asarray(factors, dtype=np.int64))
        return self.read(np.ravel_multi_index(tuple(factors.T), self.full_factor_sizes()))

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images of file rows (any order, repeats allowed), read in increasing order ``READ_ROWS`` at a time."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        unique, inverse = np.unique(rows, return_inverse=True)
        out = np.empty((len(unique), self.image_size, self.image_size, self.channels), dtype=np.uint8)
        for start in range(0, len(unique), READ_ROWS):
            part = unique[start:start + READ_ROWS]
            out[start:start + len(part)] = _resize(self.store.read(part), self.image_size, self.store.binary)
        return out if len(unique) == len(rows) and np.array_equal(unique, rows) else out[inverse.ravel()]

    def describe(self) -> dict:
        return {**super().describe(), "file": str(self.store.path), "file_images": len(self.store),
                "file_image_size": self.store.native_size, "access": self.store.access}


class DSpritesFile(FileGroundTruth):
    """dSprites from ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``: 1 channel, values 0 or 255."""

    factor_names = DSPRITES_FACTOR_NAMES
    kind, default_file, store_type = "dSprites", "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz", _DSpritesStore


class Shapes3DFile(FileGroundTruth):
    """DeepMind's 3D Shapes from ``3dshapes.h5`` (RGB)."""

    factor_names = SHAPES3D_FACTOR_NAMES
    kind, default_file, store_type = "Shapes3D", "3dshapes.h5", _Shapes3DStore


class MPI3DFile(FileGroundTruth):
    """MPI3D (toy, realistic or real) from its ``.npz`` (RGB); ``factor_sizes=`` replaces the published
    grid for a smaller file in the same layout."""

    factor_names = MPI3D_FACTOR_NAMES
    kind, default_file, store_type = "MPI3D", "mpi3d_toy.npz", _MPI3DStore


# The dataset files betavae reads (``data.name`` → reader); config choices derive from this registry.
FILE_DATASETS: dict[str, type[FileGroundTruth]] = {
    "dsprites-file": DSpritesFile,
    "shapes3d-file": Shapes3DFile,
    "mpi3d-file": MPI3DFile,
}


class FileImages:
    """The images of some file rows as a read-only uint8 ``(N, H, W, C)`` array-like: indexing
    (an int, a slice, an index array in any order) reads just those rows from disk."""

    dtype = np.dtype(np.uint8)
    ndim = 4
    flags = SimpleNamespace(c_contiguous=False, writeable=False)  # never shared in place (device_images)

    def __init__(self, source: FileGroundTruth, rows: np.ndarray):
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), source.image_size, source.image_size, source.channels)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first = self[key[0]]
            rest = key[1:] if np.ndim(key[0]) == 0 and not isinstance(key[0], slice) else (slice(None), *key[1:])
            return first[rest]
        if isinstance(key, (int, np.integer)):
            return self.source.read(self.rows[[key]])[0]
        return self.source.read(self.rows[key])

    def __array__(self, dtype=None, copy=None):
        images = self[:]
        return images if dtype is None else images.astype(dtype)

    def __repr__(self) -> str:
        return f"FileImages({self.source.kind}, shape={self.shape})"
