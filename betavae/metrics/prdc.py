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
    return _radii(points, (k,))[0]


def _radii(points: np.ndarray, ks: tuple[int, ...]) -> list[np.ndarray]:
    """:func:`knn_radii` for each of ``ks``, from one pass over the distances."""
    x = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    for k in ks:
        if not 1 <= k < len(x):
            raise ValueError(f"k = {k} needs more than k points (got {len(x)})")
    # k + 1: each point's nearest is itself at distance 0
    nearest = torch.cat([_distances(x[s:s + _BLOCK], x).topk(max(ks) + 1, dim=1, largest=False).values
                         for s in range(0, len(x), _BLOCK)])
    return [nearest[:, k].numpy() for k in ks]


def _ball_counts(queries: np.ndarray, centres: np.ndarray,
                 radii: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each set of ``radii`` of the balls around ``centres``: per query, how many balls hold it; per
    centre, whether any query lies in its ball (the query-centre distances computed once for all)."""
    q = torch.as_tensor(np.asarray(queries), dtype=torch.float64)
    c = torch.as_tensor(np.asarray(centres), dtype=torch.float64)
    rs = [torch.as_tensor(np.asarray(r), dtype=torch.float64) for r in radii]
    counts = [[] for _ in rs]
    covered = [torch.zeros(len(c), dtype=torch.bool) for _ in rs]
    for s in range(0, len(q), _BLOCK):
        distances = _distances(q[s:s + _BLOCK], c)
        for i, r in enumerate(rs):
            inside = distances <= r
            counts[i].append(inside.sum(1))
            covered[i] |= inside.any(0)
    return [(torch.cat(n).numpy(), hit.numpy()) for n, hit in zip(counts, covered)]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake`` against ``real`` features."""
    return _scores(real, fake, k, None)[:2]


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DC_K) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of ``fake`` against ``real`` features."""
    return _scores(real, fake, None, k)[2:]


def prdc(real: np.ndarray, fake: np.ndarray, pr_k: int = PR_K, dc_k: int = DC_K) -> dict[str, float]:
    """Precision, recall (k = ``pr_k``), density and coverage (k = ``dc_k``) in one mapping; each
    set of distances (real-real, fake-real, fake-fake) is computed once for all four."""
    precision, recall, density, coverage = _scores(real, fake, pr_k, dc_k)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def _scores(real: np.ndarray, fake: np.ndarray, pr_k: int | None, dc_k: int | None) -> tuple[float, ...]:
    """Precision and recall (when ``pr_k``), density and coverage (when ``dc_k``); None where not asked."""
    ks = tuple(k for k in (pr_k, dc_k) if k is not None)
    in_real = dict(zip(ks, _ball_counts(fake, real, _radii(real, ks))))
    precision = recall = density = coverage = None
    if pr_k is not None:
        (in_fake, _), = _ball_counts(real, fake, _radii(fake, (pr_k,)))
        precision, recall = float((in_real[pr_k][0] > 0).mean()), float((in_fake > 0).mean())
    if dc_k is not None:
        counts, covered = in_real[dc_k]
        density, coverage = float(counts.sum() / (dc_k * len(fake))), float(covered.mean())
    return precision, recall, density, coverage


def expected_coverage(n_real: int, n_fake: int, k: int = DC_K) -> float:
    """Coverage's expectation when real and generated points come from one distribution (Naeem et al. 2020)."""
    miss = 1.0
    for i in range(1, k + 1):
        miss *= (n_real - i) / (n_real + n_fake - i)
    return 1.0 - miss
