"""Multi-process data parallelism (DDP) under ``torchrun``; a single process needs none of it.

``torchrun --nproc_per_node=4 .venv/bin/betavae train --config …`` starts one process per GPU.
Every rank builds the same global batch order and trains on its own slice of each batch; DDP
averages the gradients. Rank 0 alone validates and writes logs, checkpoints and figures.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Workers:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch."""
        return indices[self.rank :: self.world_size]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model DDP-wrapped when several processes train, else unchanged."""
        if not self.parallel:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()


def launched_rank() -> int:
    """The rank torchrun gave this process (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def start_workers(device: torch.device) -> Workers:
    """Joins the process group when torchrun started several processes."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Workers()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(_leave_process_group)
    return Workers(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def _leave_process_group() -> None:
    """Destroys the process group while the interpreter is still whole. Left to interpreter
    shutdown, gloo's worker threads can abort a rank (SIGABRT) after its run has finished."""
    if dist.is_initialized():
        dist.destroy_process_group()
