"""Fidelity and diversity of generated samples from k-nearest-neighbour balls in a feature space.

- Improved precision and recall (Kynkäänniemi et al. 2019, k = 3): precision is the share of
  generated points inside the union of the real points' k-NN balls; recall is the share of real
  points inside the union of the generated points' k-NN balls.
- Density and coverage (Naeem et al. 2020, k = 5): density counts, per generated point, how many
  real k-NN balls hold it, divided by k (≈ 1 when both sets come from one distribution; above 1
  when samples crowd where the real data are dense); coverage is the share of real points whose
  k-NN ball holds at least one generated point (expected 1 − (N−1)…(N−k) / ((N+M−1)…(N+M−k)) for
  N real and M generated points of one distribution, → 1 − 2⁻ᵏ at M = N → ∞).

A point's k-NN radius is the distance to its k-th nearest neighbour in its own set, itself
excluded; a ball holds the points at a distance ≤ its radius. Distances are Euclidean, computed
in float64 in row blocks (memory O(block × N)).
"""
from __future__ import annotations

import numpy as np
import torch

PR_K = 3  # Kynkäänniemi et al. 2019
DC_K = 5  # Naeem et al. 2020
_BLOCK = 1024


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """The distance of every point to its ``k``-th nearest other point of the same set."""
    x = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    if not 1 <= k < len(x):
        raise ValueError(f"k = {k} needs more than k points (got {len(x)})")
    radii = [_distances(x[s:s + _BLOCK], x).kthvalue(k + 1, dim=1).values for s in range(0, len(x), _BLOCK)]
    return torch.cat(radii).numpy()  # k + 1: each point's nearest is itself at distance 0


def _ball_counts(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query: how many balls (centres, radii) hold it; per centre: whether any query lies in its ball."""
    q = torch.as_tensor(np.asarray(queries), dtype=torch.float64)
    c = torch.as_tensor(np.asarray(centres), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(radii), dtype=torch.float64)
    counts, covered = [], torch.zeros(len(c), dtype=torch.bool)
    for s in range(0, len(q), _BLOCK):
        inside = _distances(q[s:s + _BLOCK], c) <= r
        counts.append(inside.sum(1))
        covered |= inside.any(0)
    return torch.cat(counts).numpy(), covered.numpy()


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real`` features."""
    in_real, _ = _ball_counts(fake, real, knn_radii(real, k))
    in_fake, _ = _ball_counts(real, fake, knn_radii(fake, k))
    return float((in_real > 0).mean()), float((in_fake > 0).mean())


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DC_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of ``fake`` against ``real`` features."""
    counts, covered = _ball_counts(fake, real, knn_radii(real, k))
    return float(counts.sum() / (k * len(fake))), float(covered.mean())


def prdc(real: np.ndarray, fake: np.ndarray, pr_k: int = PR_K, dc_k: int = DC_K) -> dict[str, float]:
    """Precision, recall (k = ``pr_k``), density and coverage (k = ``dc_k``) in one mapping."""
    precision, recall = precision_recall(real, fake, pr_k)
    density, coverage = density_coverage(real, fake, dc_k)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def expected_coverage(n_real: int, n_fake: int, k: int = DC_K) -> float:
    """Coverage's expectation when real and generated points come from one distribution (Naeem et al. 2020)."""
    miss = 1.0
    for i in range(1, k + 1):
        miss *= (n_real - i) / (n_real + n_fake - i)
    return 1.0 - miss
