"""Naming latent dimensions: factor × latent MI, labels, attribute association, the heatmap."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from betavae.evaluation.dimensions import (
    attribute_correlations,
    attribute_dimensions,
    mi_heatmap,
    name_dimensions,
    normalized_mi_matrix,
)
from betavae.figures import figure_png

FACTOR_NAMES = ("shape", "scale", "orientation")


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, size, 1500) for size in (3, 6, 10)], axis=1)


def test_latent_equal_to_a_factor_is_labelled_with_it(factors):
    rng = np.random.default_rng(1)
    # latent 0: noise, latent 1: orientation, latent 2: shape, latent 3: scale (monotone transform)
    noise = rng.normal(size=len(factors))
    codes = np.column_stack([noise, factors[:, 2], factors[:, 0], np.exp(factors[:, 1])])
    matrix = normalized_mi_matrix(codes, factors)
    assert matrix.shape == (3, 4)
    assert matrix[2, 1] == pytest.approx(1.0) and matrix[0, 2] == pytest.approx(1.0)
    names = name_dimensions(matrix, FACTOR_NAMES)
    assert [n["factor"] for n in names] == [None, "orientation", "shape", "scale"]
    assert names[0]["label"] == "—" and names[2]["label"] == "shape (1.00)"
    assert names[0]["score"] < 0.1


def test_normalized_mi_is_mutual_information_over_factor_entropy(factors):
    rng = np.random.default_rng(2)
    noisy_shape = factors[:, 0] + rng.normal(0, 0.8, len(factors))
    codes = np.column_stack([noisy_shape, rng.normal(size=len(factors))])
    matrix = normalized_mi_matrix(codes, factors[:, :1])
    edges = np.histogram(codes[:, 0], 20)[1]
    binned = np.digitize(codes[:, 0], edges[:-1])
    counts = np.histogram2d(binned, factors[:, 0], bins=[np.arange(22) + 0.5, np.arange(4) - 0.5])[0]
    joint = counts / len(codes)
    marginals = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    mi = np.sum(joint[joint > 0] * np.log(joint[joint > 0] / marginals[joint > 0]))
    p = joint.sum(axis=0)
    assert matrix[0, 0] == pytest.approx(mi / -np.sum(p * np.log(p)), abs=1e-10)
    assert 0.2 < matrix[0, 0] < 0.9


def test_attribute_association_finds_the_planted_dimensions():
    rng = np.random.default_rng(3)
    attributes = rng.choice([-1, 1], size=(2000, 3))
    codes = rng.normal(size=(2000, 8))
    codes[:, 5] += 2.0 * attributes[:, 0]
    codes[:, 2] -= 1.5 * attributes[:, 1]
    codes[:, 6] += 0.5 * attributes[:, 1]
    found = attribute_dimensions(codes, attributes, ["Male", "Long_Hair", "Young"])
    assert found["Male"][0]["dim"] == 5 and found["Male"][0]["sign"] == 1
    assert [d["dim"] for d in found["Long_Hair"][:2]] == [2, 6]
    assert found["Long_Hair"][0]["sign"] == -1 and found["Long_Hair"][1]["sign"] == 1
    assert len(found["Young"]) == 3 and found["Young"][0]["score"] < 0.1


def test_attribute_correlation_is_the_point_biserial_correlation():
    rng = np.random.default_rng(4)
    attributes = rng.choice([-1, 1], size=(300, 2))
    codes = rng.normal(size=(300, 3)) + attributes[:, :1]
    codes[:, 2] = 0.7  # constant latent: no association
    correlations = attribute_correlations(codes, attributes)
    for a in range(2):
        for d in range(2):
            expected = scipy.stats.pointbiserialr(attributes[:, a] > 0, codes[:, d]).statistic
            assert correlations[a, d] == pytest.approx(expected, abs=1e-10)
    assert np.all(correlations[:, 2] == 0)


def test_heatmap_has_a_row_per_factor_and_a_column_per_latent():
    matrix = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]])
    figure = mi_heatmap(matrix, ["shape", "scale"])
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["shape", "scale"]
    assert len(axes.get_xticks()) == 3
    assert figure_png(figure)[:8] == b"\x89PNG\r\n\x1a\n"
