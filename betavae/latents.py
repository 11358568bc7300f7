"""One ranking of a model's latent dimensions, computed once per checkpoint and stored with the run.

The mean KL(q(z_j|x) ‖ N(0, 1)) of each dimension over a fixed validation sample (the first
:data:`RANKING_IMAGES` of a seeded draw) orders the dimensions, most informative first, and counts
those above :data:`ACTIVE_KL_NATS` as active. ``RUN/latents.json`` keeps it with the checkpoint's
digest, so the run's figures, ``evaluate``, ``traverse`` and the explorer all show the same top
dimensions for one model; a new checkpoint (training resumed) gets a new ranking.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from betavae.fileio import write_json
from betavae.objectives import kl_per_dim
from betavae.runs import RunPaths

ACTIVE_KL_NATS = 0.01  # a dimension whose mean KL exceeds this is active (everywhere in betavae)
RANKING_IMAGES = 1024
RANKING_SEED = 0
UNKNOWN = "unknown"  # a model not loaded from a file: ranked afresh every time


@dataclass(frozen=True)
class LatentRanking:
    """Mean KL per dimension on the ranking sample, the dimensions by decreasing KL, and the active ones."""

    kl_per_dim: list[float]
    order: list[int]
    active: list[int]
    images: int
    checkpoint_sha256: str
    active_threshold_nats: float = ACTIVE_KL_NATS

    def top(self, k: int) -> list[int]:
        """The ``k`` dimensions of highest mean KL."""
        return self.order[:k]

    @property
    def kl(self) -> np.ndarray:
        return np.asarray(self.kl_per_dim)


def rank_by_kl(kl: np.ndarray) -> list[int]:
    """Latent dimensions ordered by decreasing mean KL (ties keep the lower index first)."""
    return [int(d) for d in np.argsort(-np.asarray(kl), kind="stable")]


def active_dimensions(kl: np.ndarray) -> list[int]:
    """The dimensions whose mean KL exceeds :data:`ACTIVE_KL_NATS`."""
    return [int(d) for d in np.flatnonzero(np.asarray(kl) > ACTIVE_KL_NATS)]


def latent_ranking(trained) -> LatentRanking:
    """The stored ranking of ``trained``'s checkpoint, computed and stored first when missing or stale.

    A run folder that cannot be written (read-only copy) still gets its ranking, just not stored.
    """
    path = RunPaths(Path(trained.run_dir)).latents
    digest = weights_digest(trained)
    stored = _read(path)
    if stored is not None and stored.checkpoint_sha256 == digest != UNKNOWN:
        return stored
    rows = trained.validation_sample(RANKING_IMAGES, RANKING_SEED)
    kl = kl_per_dim(trained.encode(trained.images(rows))).numpy()
    ranking = LatentRanking([round(float(v), 6) for v in kl], rank_by_kl(kl), active_dimensions(kl), len(rows), digest)
    try:
        write_json(path, asdict(ranking))
    except OSError:
        pass
    return ranking


def weights_digest(trained) -> str:
    """The sha256 of the checkpoint file ``trained`` was loaded from (:data:`UNKNOWN` when none): what
    every file stored for one checkpoint (this ranking, :mod:`betavae.samplers`' fits) is keyed to."""
    return getattr(trained, "weights_sha256", None) or UNKNOWN


def _read(path: Path) -> LatentRanking | None:
    """The stored ranking, or None when there is none or it cannot be read (then it is recomputed)."""
    try:
        return LatentRanking(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
