"""UDR (Duan et al. 2020): identical, permuted and sign-flipped codes score 1, unrelated codes low,
and a tiny case computed by hand."""
import itertools

import numpy as np
import pytest
import scipy.stats

from betavae.metrics.udr import similarity_matrix, udr, udr_pair


def _factorial_code(levels=10, dims=3):
    """A disentangled code whose dimensions are exactly uncorrelated (a full factorial design)."""
    return np.array(list(itertools.product(*[np.linspace(-1, 1, levels)] * dims)))


def test_a_model_with_itself_and_with_permuted_sign_flipped_copies_scores_one():
    code = _factorial_code()
    copy = -code[:, [2, 0, 1]] * np.array([1.0, -2.0, 0.5]) + 3.0  # permuted, flipped, rescaled, shifted
    # Lasso shrinks a standardised coefficient of 1 to 1 − α = 0.9, so its best pair scores 0.9² / 0.9
    for method, best in (("spearman", 1.0), ("lasso", 0.9)):
        assert udr_pair(similarity_matrix(code, code, method)) == pytest.approx(best, abs=1e-6)
        result = udr([code, copy, code[:, ::-1]], method=method)
        assert result["model_scores"] == pytest.approx([best] * 3, abs=1e-6)


def test_a_monotone_distortion_keeps_spearman_udr_at_one():
    code = _factorial_code()
    warped = np.column_stack([np.exp(code[:, 1]), code[:, 0] ** 3, -np.tanh(code[:, 2])])
    assert udr([code, warped])["model_scores"] == pytest.approx([1.0, 1.0], abs=1e-9)


def test_unrelated_random_codes_score_low_and_a_rotated_code_in_between():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 6)), rng.normal(size=(1000, 6))
    assert udr([a, b])["model_scores"][0] < 0.1
    code = rng.normal(size=(1000, 2))
    rotated = code @ np.array([[1, 1], [-1, 1]]) / np.sqrt(2)  # 45°: every dimension is half of each
    score = udr([code, rotated])["model_scores"][0]
    assert 0.3 < score < 0.4  # R ≈ ρ everywhere (Spearman ρ ≈ 0.69) → max²/sum = ρ/2 ≈ 0.35


def test_hand_computed_pair():
    R = np.array([[0.8, 0.2], [0.1, 0.5]])
    # columns: .64/.9 + .25/.7 ; rows: .64/1.0 + .25/.6 ; divided by d_a + d_b = 4
    expected = (0.64 / 0.9 + 0.25 / 0.7 + 0.64 / 1.0 + 0.25 / 0.6) / 4
    assert udr_pair(R) == pytest.approx(expected, abs=1e-12) == pytest.approx(0.531230, abs=1e-6)
    # dropping b's second dimension (inactive): R = [[.8], [.1]] → column .64/.9; rows .64/.8 + .01/.1; over 3
    assert udr_pair(R, active_b=[True, False]) == pytest.approx((0.64 / 0.9 + 0.8 + 0.1) / 3, abs=1e-12)
    assert udr_pair(R, active_a=[False, False]) == 0.0
    assert udr_pair(np.zeros((2, 2))) == 0.0  # lines of zeros contribute 0


def test_spearman_similarity_is_scipys_spearman_and_lasso_is_sparse():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3))
    b = np.column_stack([a[:, 0] + 0.3 * rng.normal(size=50), rng.normal(size=50)])
    R = similarity_matrix(a, b)
    expected = np.abs(scipy.stats.spearmanr(a, b).statistic[:3, 3:])
    np.testing.assert_allclose(R, expected, atol=1e-12)
    L = similarity_matrix(a, b, "lasso")
    assert L.shape == (3, 2) and L[0, 0] > 0.5 and L[1:, 0].max() < 0.1


def test_inactive_dimensions_are_dropped_and_model_scores_are_medians():
    code = _factorial_code()
    noise = np.random.default_rng(2).normal(size=(len(code), 1))
    with_dead = np.column_stack([code, noise])  # a 4th dimension that is noise but marked inactive
    kl = [np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 0.005])]
    assert udr([code, with_dead], kl)["model_scores"] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert udr([code, with_dead])["model_scores"][0] < 0.95  # counted, the noise dimension lowers it
    result = udr([code, code, np.random.default_rng(3).normal(size=code.shape)])
    pairwise = np.array(result["pairwise"])
    assert np.isnan(np.diag(pairwise)).all()
    assert result["model_scores"][0] == pytest.approx(np.median([pairwise[1, 0], pairwise[2, 0]]))
    with pytest.raises(ValueError, match="at least 2"):
        udr([code])
    with pytest.raises(ValueError, match="unknown similarity"):
        similarity_matrix(code, code, "pearson")


@pytest.mark.parametrize("method", ["spearman", "lasso"])
def test_models_without_active_dimensions_score_zero_without_warnings(method):
    code = _factorial_code(levels=4)
    constant = np.zeros_like(code)  # a collapsed posterior: every mean the same
    with np.errstate(all="raise"):
        result = udr([code, constant, code], [np.full(3, 1e-3), np.full(3, 1e-3), np.ones(3)], method=method)
    assert result["active_dims"] == [0, 0, 3]
    assert result["model_scores"] == [0.0, 0.0, 0.0]
    assert udr([code, constant], method=method)["model_scores"] == [0.0, 0.0]  # constant codes: R all 0
