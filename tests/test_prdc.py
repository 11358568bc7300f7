"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020): betavae.metrics.prdc."""
from __future__ import annotations

import numpy as np
import pytest

from betavae.metrics.prdc import density_coverage, expected_coverage, knn_radii, prdc, precision_recall


def _column(values):
    return np.asarray(values, dtype=np.float64)[:, None]


def test_radii_exclude_the_point_itself():
    assert knn_radii(_column([0, 1, 3]), 1) == pytest.approx([1, 1, 2])
    assert knn_radii(_column([0, 1, 3]), 2) == pytest.approx([3, 2, 3])
    with pytest.raises(ValueError, match="more than k points"):
        knn_radii(_column([0, 1]), 2)


def test_hand_computed_one_dimensional_case():
    real, fake = _column([0, 1, 3]), _column([0.5, 2.5, 10])
    # Real radii (k = 1): 1, 1, 2. 0.5 lies in the balls of 0 and 1; 2.5 in that of 3; 10 in none.
    # Fake radii (k = 1): 2, 2, 7.5: every real point lies within one of them.
    assert precision_recall(real, fake, k=1) == pytest.approx((2 / 3, 1.0))
    assert density_coverage(real, fake, k=1) == pytest.approx(((2 + 1 + 0) / 3, 1.0))


def test_crowded_samples_have_density_above_one_and_miss_recall():
    real, fake = _column([0, 5]), _column([0, 0.1, 0.2])
    # Real radii (k = 1): 5, 5 → each sample lies in both balls (density 6 / 3); fake radii 0.1 hold only real 0.
    assert prdc(real, fake, pr_k=1, dc_k=1) == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "density": 2.0, "coverage": 1.0})


def test_expected_coverage_formula():
    assert expected_coverage(2000, 2000, 5) == pytest.approx(0.96887, abs=1e-5)
    assert expected_coverage(10**7, 10**7, 5) == pytest.approx(1 - 0.5**5, abs=1e-6)


def test_two_standard_normal_sets_in_64_dimensions():
    """Reference behaviour for one distribution (N = M = 2,000, d = 64).

    Density's expectation is exactly 1 and coverage's 1 − (N−1)…(N−5)/((2N−1)…(2N−5)) ≈ 0.9689
    (Naeem et al. 2020, → 1 − 2⁻⁵ as N → ∞); tolerances ±0.08 and ±0.02 are several seed-to-seed
    standard deviations (measured over seeds 0–2: density 0.97–1.03, coverage 0.963–0.975).
    Precision and recall have no closed form here; by symmetry their expectations are equal, and
    at this N and d they sit near 0.61 (measured 0.60–0.63) — far below 1 because k-NN balls of
    2,000 points cover little of a 64-dimensional Gaussian; asserted within 0.52–0.70.
    """
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((2000, 64)), rng.standard_normal((2000, 64))
    scores = prdc(real, fake)
    assert scores["density"] == pytest.approx(1.0, abs=0.08)
    assert scores["coverage"] == pytest.approx(expected_coverage(2000, 2000, 5), abs=0.02)
    assert 0.52 <= scores["precision"] <= 0.70 and 0.52 <= scores["recall"] <= 0.70
    assert abs(scores["precision"] - scores["recall"]) < 0.06
    shifted = prdc(real, fake + 1.0)  # a shifted sample: worse on every count
    assert all(shifted[key] < scores[key] for key in scores)
