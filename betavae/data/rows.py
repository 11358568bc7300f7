"""Writing ``images.npy`` one row at a time, so a prepared dataset never has to fit in memory."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


class RowWriter:
    """Streams uint8 rows into an ``.npy`` file with plain writes, so rows never pile up in memory.

    The file is created full size by ``open_memmap`` (header and a sparse body); :meth:`finish`
    shortens it to the rows written when some items were skipped.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
        self.offset, self.path, self.shape = header.offset, path, shape
        del header
        self.file = open(path, "r+b")
        self.file.seek(self.offset)
        self.rows = 0
        self.digest = hashlib.blake2b(digest_size=16)

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()

    def write(self, row: np.ndarray) -> None:
        if row.shape != self.shape[1:] or row.dtype != np.uint8:
            raise ValueError(f"row {row.shape} {row.dtype}, expected {self.shape[1:]} uint8")
        data = np.ascontiguousarray(row).tobytes()
        self.file.write(data)
        self.digest.update(data)
        self.rows += 1

    def finish(self) -> None:
        """Shortens the array to the rows written (copying block by block into a new file)."""
        if self.rows == self.shape[0]:
            return
        shape = (self.rows, *self.shape[1:])
        shorter = self.path.with_name(self.path.name + ".short")
        header = np.lib.format.open_memmap(shorter, mode="w+", dtype=np.uint8, shape=shape)
        new_offset = header.offset
        del header
        remaining = int(np.prod(shape))
        with open(self.path, "rb") as src, open(shorter, "r+b") as dst:
            src.seek(self.offset)
            dst.seek(new_offset)
            while remaining:
                block = src.read(min(remaining, 64 << 20))
                dst.write(block)
                remaining -= len(block)
        os.replace(shorter, self.path)
