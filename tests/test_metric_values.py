"""Every disentanglement score on a fixed small code set, against a value worked out by hand
(written in the test), never by calling the function under test. docs/metrics.md §4 gives the
conventions these cases pin down (MIG's binning, SAP's classifier, DCI's entropies)."""
import itertools
import math

import numpy as np
import pytest

from betavae.data.groundtruth import GroundTruthData
from betavae.metrics import beta_vae_score, dci, factor_vae_score, mig, sap
from betavae.metrics.disentanglement import (
    NUM_BINS,
    completeness_from_importance,
    disentanglement_from_importance,
    discretize,
)

LN2 = math.log(2)


# --------------------------------------------------------------------------------------------- MIG

def test_mig_bins_each_latent_into_20_equal_width_bins_over_its_range():
    assert NUM_BINS == 20
    z = np.array([[0.0], [0.05], [0.0999], [0.5], [1.0]])
    # edges 0, 0.05, …, 1.0; np.digitize(z, edges[:-1]): bins numbered 1..20, the maximum in bin 20
    assert discretize(z).ravel().tolist() == [1, 2, 2, 11, 20]


def test_mig_by_hand():
    # f0 = z0 exactly; z1 = [0, 1, 1, 1] shares m nats with f0 and with f1 = [0, 1, 0, 1]:
    # m = ¼ ln 2 + ¼ ln(2/3) + ½ ln(4/3) (joint ¼, ¼, ½ against marginals (¼, ¾) × (½, ½)).
    factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    codes = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    m = 0.25 * LN2 + 0.25 * math.log(2 / 3) + 0.5 * math.log(4 / 3)
    assert m == pytest.approx(0.2157616, abs=1e-7)
    # f0: (ln 2 − m) / ln 2;  f1: (m − 0) / ln 2;  mean = ½
    expected = ((LN2 - m) / LN2 + (m - 0) / LN2) / 2
    assert mig(codes, factors) == pytest.approx(expected, abs=1e-12) == pytest.approx(0.5, abs=1e-12)


# --------------------------------------------------------------------------------------------- SAP

def test_sap_by_hand():
    # 8 points: every (f0, f1, e) ∈ {0,1}³. z0 = f0, z1 = f1 and z2 = f0 XOR (e AND f1), which equals
    # f0 on 6 of the 8 points and is independent of f1. Codes are ±100 so that LinearSVC(C=0.01) separates.
    points = np.array(list(itertools.product((0, 1), repeat=3)))
    f0, f1, e = points.T
    factors = np.column_stack([f0, f1])
    codes = 100.0 * (2 * np.column_stack([f0, f1, f0 ^ (e & f1)]) - 1)
    # Accuracies S_jk (latent × factor): a latent independent of the factor gets ½ whatever it predicts.
    S = np.array([[1.0, 0.5], [0.5, 1.0], [0.75, 0.5]])
    expected = np.mean([S[0, 0] - S[2, 0], S[1, 1] - S[0, 1]])  # gaps .25 and .5
    assert sap(codes, factors, codes, factors) == pytest.approx(expected) == pytest.approx(0.375)


# --------------------------------------------------------------------------------------------- DCI

def test_dci_from_an_importance_matrix_by_hand():
    R = np.array([[1.0, 1.0], [2.0, 0.0]])  # latents × factors
    # D: z0 splits evenly (1 − H₂(½, ½) = 0), z1 is pure (1); weights ρ = (2/4, 2/4)
    assert disentanglement_from_importance(R) == pytest.approx(0.5 * 0 + 0.5 * 1, abs=1e-9)
    # C: f0 over latents (1/3, 2/3): 1 − H₂ = 1 + ⅓log₂⅓ + ⅔log₂⅔ = 0.0817042; f1 pure; weights (¾, ¼)
    h = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert completeness_from_importance(R) == pytest.approx(0.75 * (1 - h) + 0.25 * 1, abs=1e-9)
    assert completeness_from_importance(R) == pytest.approx(0.3112781, abs=1e-7)


@pytest.mark.parametrize("backend", ["hist", "exact"])
def test_dci_end_to_end_by_hand(backend):
    grid = np.array(list(itertools.product(range(3), range(4))) * 5)  # 60 points, two factors
    separate = np.column_stack([grid, np.zeros(len(grid))]).astype(float)  # z0 = f0, z1 = f1, z2 constant
    scores = dci(separate, grid, separate, grid, backend=backend)
    # only z_k can split for factor k: R = [[1, 0], [0, 1], [0, 0]] → D = C = 1; perfect prediction → I = 1
    assert (scores["disentanglement"], scores["completeness"], scores["informativeness_test"]) == pytest.approx(
        (1.0, 1.0, 1.0), abs=1e-6)
    together = np.column_stack([4 * grid[:, 0] + grid[:, 1], np.zeros(len(grid))]).astype(float)
    scores = dci(together, grid, together, grid, backend=backend)
    # one latent holds both factors: R = [[a, b], [0, 0]] → z0 splits evenly (D = 0), each factor is pure (C = 1)
    assert (scores["disentanglement"], scores["completeness"], scores["informativeness_test"]) == pytest.approx(
        (0.0, 1.0, 1.0), abs=1e-6)


# ---------------------------------------------------------------------------- BetaVAE and FactorVAE

SIZES = (4, 5, 6)


class Factors(GroundTruthData):
    """A 1×3 "image" whose pixels are the factor values (rendering is exact)."""

    factor_names = ("a", "b", "c")
    image_size = 1
    channels = 3

    def full_factor_sizes(self):
        return SIZES

    def factor_values(self, name):
        return np.arange(SIZES[self.factor_index(name)], dtype=float)

    def render(self, factors):
        return np.asarray(factors, dtype=np.uint8).reshape(-1, 1, 1, 3)


def _all_factors(images):
    return images.reshape(len(images), 3).astype(np.float64)


def _first_factor_only(images):
    """Factor a and a constant: factors b and c are not represented at all."""
    return np.column_stack([images.reshape(len(images), 3)[:, 0], np.zeros(len(images))]).astype(np.float64)


def _two_factors(images):
    return images.reshape(len(images), 3)[:, :2].astype(np.float64)


def test_beta_vae_score_by_hand():
    options = {"batch_size": 16, "num_train": 600, "num_eval": 3000}
    # the perfect code: the fixed factor's feature is exactly 0, every other is > 0 → separable → 1
    assert beta_vae_score(Factors(), _all_factors, np.random.default_rng(0), **options)["eval_accuracy"] == 1.0
    # only factor a represented: k = a gives feature 0, k = b and k = c give the same distribution, so a
    # classifier names b-or-c right half the time: accuracy ⅓ + ⅓·½·2 = ⅔ in expectation (± sampling)
    score = beta_vae_score(Factors(), _first_factor_only, np.random.default_rng(0), **options)["eval_accuracy"]
    assert score == pytest.approx(2 / 3, abs=0.03)


def test_factor_vae_score_by_hand():
    options = {"batch_size": 16, "num_train": 600, "num_eval": 3000, "num_variance_estimate": 2000}
    # the perfect code: fixing k zeroes latent k's variance, so every vote is (k, k) → 1
    assert factor_vae_score(Factors(), _all_factors, np.random.default_rng(0), **options)["eval_accuracy"] == 1.0
    # factor c not represented: its votes split between z0 (majority a) and z1 (majority b), all wrong;
    # a and b vote right every time → accuracy ⅔ in expectation (± sampling)
    score = factor_vae_score(Factors(), _two_factors, np.random.default_rng(0), **options)["eval_accuracy"]
    assert score == pytest.approx(2 / 3, abs=0.03)
