"""A prepared dataset's images held as one uint8 tensor on the training device, batches drawn there.

Today's ``Trainer.batch`` gathers each batch from the (memory-mapped) uint8 array on the host,
converts it to float, uploads it and flips it. :class:`DeviceImages` uploads the uint8 images
once (4× smaller than float) and does all of that on the device: index → optional horizontal flip
→ uint8 → float in [0, 1] → normalise → channels_last. The only per-step host work left is
sorting the batch's indices and copying them (a few hundred bytes) to the device; the flip
decisions are drawn on the host exactly as before, but for :data:`FLIP_BLOCK` steps at a time, and
uploaded once per block.

The result is bit for bit the tensor ``Trainer.batch`` builds for the same indices and step:
the same rows in the same (sorted) order, the same flips (the same seeded ``torch.Generator``
per step, :func:`flip_mask`), and the same float operations in the same order (``u8 / 255``,
then ``(x - mean) / std``).

Whether the images fit is decided by :func:`placement`: at most :data:`DEFAULT_FRACTION` of the
device's free memory (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of
``/proc/meminfo``). When they do not, the caller keeps the host path and reports
:meth:`Placement.message`. On the CPU an array already in memory (the built-in generated data) is
shared, not copied, so it always fits; a prepared cache (a read-only memmap) is copied into RAM.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from betavae.data.transforms import Normalizer

FLIP_SEED_STRIDE = 1_000_003  # Trainer.batch: Generator().manual_seed(train.seed * 1_000_003 + step)
FLIP_BLOCK = 512  # flip masks drawn and uploaded this many steps at a time
DEFAULT_FRACTION = 0.25  # of the device's free memory the images may take
UPLOAD_CHUNK_BYTES = 64 << 20  # a memmap is copied to the device in slices of this size


def flip_seed(seed: int, step: int) -> int:
    """The seed of the flip generator of training step ``step`` (as ``Trainer.batch`` seeds it)."""
    return seed * FLIP_SEED_STRIDE + step


def flip_mask(seed: int, step: int, count: int) -> torch.Tensor:
    """Which of ``count`` images step ``step`` flips: bool ``(count,)`` on the CPU, exactly
    :func:`betavae.data.transforms.random_hflip`'s draw with ``Generator().manual_seed(flip_seed)``."""
    generator = torch.Generator().manual_seed(flip_seed(seed, step))
    return torch.rand(count, generator=generator) < 0.5


# ----- will it fit ------------------------------------------------------------------------------
def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA ``mem_get_info``; CPU ``MemAvailable`` (else free pages);
    None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class Placement:
    """Whether ``needed_bytes`` of images may live on ``device``: at most ``fraction`` of its free memory."""

    device: str
    needed_bytes: int  # what holding the images adds (0 when an in-memory array is shared)
    free_bytes: int | None
    fraction: float
    images_bytes: int = 0

    @property
    def budget_bytes(self) -> int:
        return 0 if self.free_bytes is None else int(self.free_bytes * self.fraction)

    @property
    def fits(self) -> bool:
        return self.needed_bytes == 0 or (self.free_bytes is not None and self.needed_bytes <= self.budget_bytes)

    def message(self) -> str:
        """One line for the log / run.json, e.g. why the host path is kept."""
        if self.needed_bytes == 0:
            return f"images ({_gib(self.images_bytes)}) used in place on {self.device} (an in-memory array, not copied)"
        need = _gib(self.needed_bytes)
        if self.free_bytes is None:
            return f"images ({need}) kept on the host: free memory of {self.device} unknown"
        where = "free device memory" if self.device.startswith("cuda") else "available RAM"
        share = f"{self.fraction:.0%} of {_gib(self.free_bytes)} {where} = {_gib(self.budget_bytes)}"
        if self.fits:
            return f"images ({need}) held on {self.device} as uint8 (limit {share})"
        return f"images ({need}) do not fit on {self.device} (limit {share}); batches are built on the host"

    def to_dict(self) -> dict:
        return {"device": self.device, "fits": self.fits, "images_bytes": self.images_bytes,
                "needed_bytes": self.needed_bytes,
                "free_bytes": self.free_bytes, "budget_bytes": self.budget_bytes, "fraction": self.fraction}


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.1f} MiB"


def placement(images: np.ndarray, device: torch.device | str, fraction: float = DEFAULT_FRACTION) -> Placement:
    """Whether ``images`` (uint8 ``(N, H, W, C)``) may be held on ``device`` (:class:`Placement`)."""
    device = torch.device(device)
    needed = 0 if _shareable(images, device) else int(images.nbytes)
    return Placement(str(device), needed, free_memory_bytes(device), fraction, int(images.nbytes))


def _shareable(images: np.ndarray, device: torch.device) -> bool:
    """A writable C-contiguous array (an in-memory one; a prepared cache is a read-only memmap) that
    a CPU tensor can share without a copy."""
    return device.type == "cpu" and images.flags.c_contiguous and images.flags.writeable


# ----- the images on the device -----------------------------------------------------------------
class DeviceImages:
    """All images as one uint8 ``(N, H, W, C)`` tensor on ``device``; :meth:`batch` draws a batch there.

    Args:
        images: uint8 ``(N, H, W, C)`` (a read-only ``np.memmap`` is fine: it is copied in slices).
        device: the training device.
        normalizer: maps [0, 1] to model space (``Normalizer(config.data.normalization, C)``).
        seed: ``config.train.seed`` (the flip generator is seeded from it and the step).
        hflip: ``config.data.hflip``: flip training batches (``step`` given) at random.
        channels_last: ``config.train.channels_last``: return channels_last tensors (else NCHW
            contiguous; the values are the same either way).
    """

    def __init__(self, images: np.ndarray, device: torch.device | str, normalizer: Normalizer, *,
                 seed: int, hflip: bool = False, channels_last: bool = True):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        self.device = torch.device(device)
        self.seed, self.hflip, self.channels_last = seed, hflip, channels_last
        self.images = _upload(images, self.device)
        self.mean = normalizer.mean.to(self.device)
        self.std = normalizer.std.to(self.device)
        self._flips: dict[tuple[int, int], torch.Tensor] = {}

    @classmethod
    def if_it_fits(cls, images: np.ndarray, device: torch.device | str, normalizer: Normalizer, *,
                   seed: int, hflip: bool = False, channels_last: bool = True,
                   fraction: float = DEFAULT_FRACTION) -> tuple[DeviceImages | None, Placement]:
        """``(DeviceImages, placement)`` when the images fit (:func:`placement`), else ``(None, placement)``."""
        plan = placement(images, device, fraction)
        if not plan.fits:
            return None, plan
        return cls(images, device, normalizer, seed=seed, hflip=hflip, channels_last=channels_last), plan

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def flips(self, step: int, count: int) -> torch.Tensor:
        """Bool ``(count,)`` on the device: :func:`flip_mask` of ``step``, from a per-block upload."""
        block = step // FLIP_BLOCK
        key = (block, count)
        masks = self._flips.get(key)
        if masks is None:
            first = block * FLIP_BLOCK
            host = torch.stack([flip_mask(self.seed, first + i, count) for i in range(FLIP_BLOCK)])
            masks = host.to(self.device)
            self._flips = {key: masks}  # one block kept: steps only move forward
        return masks[step - block * FLIP_BLOCK]

    def batch(self, indices: np.ndarray | torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Images at ``indices`` (taken in sorted order, as ``Trainer.batch`` does) in model space,
        float32 ``(n, C, H, W)`` on the device; a training batch (``step`` given) is flipped as
        ``Trainer.batch`` flips it when ``hflip`` is on."""
        if isinstance(indices, torch.Tensor):
            rows = indices.to(self.device, torch.long).sort().values
        else:
            rows = torch.from_numpy(np.sort(np.asarray(indices, dtype=np.int64))).to(self.device, non_blocking=True)
        u8 = self.images.index_select(0, rows)  # (n, H, W, C)
        if step is not None and self.hflip:
            flip = self.flips(step, u8.shape[0]).view(-1, 1, 1, 1)
            u8 = torch.where(flip, u8.flip(2), u8)  # W is dim 2 of NHWC; a flip moves values only
        x = u8.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC memory: already channels_last
        x = x.sub_(self.mean).div_(self.std)  # Normalizer.from_unit: (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


def _upload(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """One uint8 tensor on ``device`` with the rows of ``images``: an in-memory array on the CPU is
    shared; otherwise copied (a memmap in slices, so that it is never all in host memory twice)."""
    if _shareable(images, device):
        return torch.from_numpy(images)
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    row_bytes = max(1, int(np.prod(images.shape[1:])))
    rows = max(1, UPLOAD_CHUNK_BYTES // row_bytes)
    for start in range(0, images.shape[0], rows):
        chunk = np.ascontiguousarray(images[start:start + rows])
        if not chunk.flags.writeable:
            chunk = chunk.copy()
        out[start:start + rows].copy_(torch.from_numpy(chunk))
    return out
