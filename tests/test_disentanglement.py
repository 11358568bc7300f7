"""Disentanglement metrics: known answers on hand-built codes, definitions recomputed, the report."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from betavae.evaluation.disentanglement import disentanglement_report
from betavae.data.base import ImageData
from betavae.data.groundtruth import GroundTruthData
from betavae.metrics import (
    active_units,
    beta_vae_score,
    dci,
    factor_vae_score,
    gaussian_total_correlation,
    mig,
    sap,
)
from betavae.metrics import disentanglement
from betavae.metrics.disentanglement import (
    FactorCodes,
    caught_convergence_warnings,
    completeness_from_importance,
    disentanglement_from_importance,
)

SIZES = (3, 4, 5)


class FactorPixels(GroundTruthData):
    """A 2×2 grey "image" whose first three pixels are the factor values: rendering is exact."""

    factor_names = ("shape", "scale", "position")
    image_size = 2
    channels = 1

    def full_factor_sizes(self) -> tuple[int, ...]:
        return SIZES

    def factor_values(self, name: str) -> np.ndarray:
        return np.arange(SIZES[self.factor_index(name)], dtype=float)

    def render(self, factors: np.ndarray) -> np.ndarray:
        pixels = np.zeros((len(factors), 4), dtype=np.uint8)
        pixels[:, :3] = factors
        return pixels.reshape(-1, 2, 2, 1)


def read_factors(images: np.ndarray) -> np.ndarray:
    """The perfect representation: each latent is one factor."""
    return images.reshape(len(images), -1)[:, :3].astype(np.float64)


def noise_representation(seed: int = 1):
    noise = np.random.default_rng(seed)
    return lambda images: noise.normal(size=(len(images), 3))


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, size, 400) for size in SIZES], axis=1)


@pytest.fixture(scope="module")
def perfect_dci(factors) -> dict:
    return dci(perfect_codes(factors), factors)


def perfect_codes(factors: np.ndarray) -> np.ndarray:
    return factors + 0.01 * np.random.default_rng(2).normal(size=factors.shape)


def without_importance(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k != "importance_matrix"}


# --- array metrics: known answers -------------------------------------------------------------


def test_codes_equal_to_factors_score_high(factors, perfect_dci):
    codes = perfect_codes(factors)
    assert mig(codes, factors) > 0.95
    scores = perfect_dci
    assert scores["disentanglement"] > 0.95 and scores["completeness"] > 0.95
    assert scores["informativeness_test"] > 0.95
    # A one-feature linear classifier cannot separate the middle values of a many-valued factor,
    # so SAP stays well below 1 even here; its gap over irrelevant latents is still large.
    assert sap(codes, factors) > 0.3


def test_sap_is_the_gap_between_the_two_best_latents():
    rng = np.random.default_rng(3)
    binary = rng.integers(0, 2, size=(900, 2))
    codes = np.column_stack([binary[:, 0], binary[:, 1], rng.normal(size=900)])
    codes += 0.01 * rng.normal(size=codes.shape)
    # best latent: accuracy 1; runner-up (an unrelated latent, balanced classes): about 0.5
    assert sap(codes, binary) == pytest.approx(0.5, abs=0.06)


def test_permuting_latents_leaves_scores_unchanged(factors, perfect_dci):
    codes = perfect_codes(factors)
    permuted = codes[:, [2, 0, 1]]
    assert mig(permuted, factors) == pytest.approx(mig(codes, factors), abs=1e-12)
    assert sap(permuted, factors) == pytest.approx(sap(codes, factors), abs=1e-12)
    assert without_importance(dci(permuted, factors)) == pytest.approx(
        without_importance(perfect_dci), abs=0.02)


def test_independent_noise_scores_near_zero(factors):
    codes = np.random.default_rng(4).normal(size=(len(factors), 5))
    assert mig(codes, factors) < 0.05
    assert sap(codes, factors) < 0.05
    scores = dci(codes, factors)
    assert scores["disentanglement"] < 0.1
    assert scores["informativeness_test"] < 0.45  # chance is 1/3 to 1/5


def test_latents_mixing_two_factors_give_low_mig_but_stay_informative():
    rng = np.random.default_rng(5)
    two = rng.integers(0, 5, size=(600, 2))
    mixed = np.column_stack([two[:, 0] + two[:, 1], two[:, 0] - two[:, 1]]).astype(float)
    assert mig(mixed, two) < 0.1
    assert dci(mixed, two)["informativeness_test"] > 0.95


def test_one_latent_encoding_two_factors_is_not_disentangled_by_dci():
    rng = np.random.default_rng(6)
    two = rng.integers(0, 4, size=(600, 2))
    codes = np.column_stack([4 * two[:, 0] + two[:, 1], rng.normal(size=600)])
    scores = dci(codes, two)
    assert scores["disentanglement"] < 0.3
    assert scores["completeness"] > 0.8
    assert scores["informativeness_test"] > 0.95
    # MIG only asks that each factor have one dominant latent, so it does not see this.
    assert mig(codes, two) > 0.9


def test_array_metrics_are_deterministic_under_a_seed(factors):
    factors = factors[:200]
    codes = perfect_codes(factors) + np.random.default_rng(7).normal(size=factors.shape)
    assert sap(codes, factors, random_state=3) == sap(codes, factors, random_state=3)
    first, second = dci(codes, factors, random_state=3), dci(codes, factors, random_state=3)
    assert without_importance(first) == without_importance(second)
    np.testing.assert_array_equal(first["importance_matrix"], second["importance_matrix"])


def test_constant_factor_is_rejected(factors):
    constant = factors.copy()
    constant[:, 1] = 2
    with pytest.raises(ValueError, match="single value"):
        mig(perfect_codes(factors), constant)


# --- definitions recomputed directly --------------------------------------------------------------


def entropy(labels: np.ndarray) -> float:
    p = np.unique(labels, return_counts=True)[1] / len(labels)
    return float(-np.sum(p * np.log(p)))


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    joint = np.unique(np.column_stack([a, b]), axis=0, return_counts=True)[1] / len(a)
    return entropy(a) + entropy(b) - float(-np.sum(joint * np.log(joint)))


def test_mig_matches_explicit_entropy_sums():
    rng = np.random.default_rng(8)
    factors = rng.integers(0, 4, size=(400, 2))
    codes = np.column_stack([factors[:, 0] + rng.normal(0, 0.7, 400), rng.normal(size=400),
                             factors[:, 1] * 0.5 + factors[:, 0] * 0.3 + rng.normal(0, 0.3, 400)])
    gaps = []
    for k in range(2):
        mi = []
        for j in range(3):
            edges = np.linspace(codes[:, j].min(), codes[:, j].max(), 21)  # 20 equal-width bins
            mi.append(mutual_information(np.digitize(codes[:, j], edges[:-1]), factors[:, k]))
        top1, top2 = sorted(mi)[::-1][:2]
        gaps.append((top1 - top2) / entropy(factors[:, k]))
    assert mig(codes, factors) == pytest.approx(np.mean(gaps), abs=1e-10)


def row_entropies(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of a matrix of probabilities; 0 log 0 = 0."""
    return -np.array([sum(q * np.log(q) for q in row if q > 0) for row in p])


def test_dci_disentanglement_and_completeness_from_an_importance_matrix():
    importance = np.array([[0.6, 0.2, 0.0], [0.0, 0.1, 0.5], [0.05, 0.05, 0.05], [0.3, 0.0, 0.0]])
    p_factors_given_code = importance / importance.sum(axis=1, keepdims=True)
    code_weight = importance.sum(axis=1) / importance.sum()
    expected_d = np.sum((1 - row_entropies(p_factors_given_code) / np.log(3)) * code_weight)
    p_codes_given_factor = (importance / importance.sum(axis=0, keepdims=True)).T
    factor_weight = importance.sum(axis=0) / importance.sum()
    expected_c = np.sum((1 - row_entropies(p_codes_given_factor) / np.log(4)) * factor_weight)
    assert disentanglement_from_importance(importance) == pytest.approx(expected_d, abs=1e-6)
    assert completeness_from_importance(importance) == pytest.approx(expected_c, abs=1e-6)
    assert disentanglement_from_importance(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    assert disentanglement_from_importance(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)


# --- label-free statistics ------------------------------------------------------------------------


def test_gaussian_total_correlation():
    rng = np.random.default_rng(9)
    independent = rng.normal(size=(4000, 3)) * [1.0, 5.0, 0.2]
    assert abs(gaussian_total_correlation(independent)) < 0.01
    rho = 0.8
    correlated = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=4000)
    assert gaussian_total_correlation(correlated) == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.05)


def test_active_units_counts_dims_whose_kl_exceeds_the_threshold():
    rng = np.random.default_rng(10)
    means = np.column_stack([rng.normal(size=500), np.zeros(500), rng.normal(size=500), np.zeros(500)])
    logvars = np.tile([-4.0, 0.0, -4.0, -0.05], (500, 1))
    mask = active_units(means=means, logvars=logvars)
    assert mask.tolist() == [True, False, True, False]  # dim 3: KL ≈ 0.0012 nats
    assert active_units(np.array([0.5, 0.005, 0.02])).sum() == 2
    assert active_units(np.array([[0.0, 0.03], [0.03, 0.0]]), threshold=0.02).tolist() == [False, False]


# --- metrics that render observations ---------------------------------------------------------


RENDERED = dict(batch_size=32, num_train=300, num_eval=200)


def factor_vae(data, represent, seed: int = 0, num_variance_estimate: int = 500, **options) -> dict:
    return factor_vae_score(data, represent, np.random.default_rng(seed),
                            num_variance_estimate=num_variance_estimate, **RENDERED, **options)


def test_beta_vae_score_perfect_and_noise():
    data = FactorPixels()
    perfect = beta_vae_score(data, read_factors, np.random.default_rng(0), **RENDERED)
    assert perfect["eval_accuracy"] > 0.97
    noise = beta_vae_score(data, noise_representation(), np.random.default_rng(0), **RENDERED)
    assert noise["eval_accuracy"] < 0.5  # chance: 1/3


def test_factor_vae_score_perfect_noise_and_pruning():
    data = FactorPixels()
    perfect = factor_vae(data, read_factors)
    assert perfect["eval_accuracy"] == 1.0 and perfect["num_active_dims"] == 3
    assert factor_vae(data, noise_representation())["eval_accuracy"] < 0.5
    with_dead_dim = lambda images: np.column_stack([read_factors(images), np.full(len(images), 0.3)])  # noqa: E731
    pruned = factor_vae(data, with_dead_dim)
    assert pruned["num_active_dims"] == 3 and pruned["eval_accuracy"] == 1.0
    collapsed = factor_vae(data, lambda images: np.zeros((len(images), 3)))
    assert collapsed == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_rendered_metrics_are_deterministic_and_independent_of_chunking():
    data = FactorPixels()
    mixing = np.array([[1.0, 0.4, 0.0], [0.3, 1.0, 0.5], [0.0, 0.6, 1.0]])
    blurred = lambda images: read_factors(images) @ mixing  # noqa: E731
    scores = [beta_vae_score(data, blurred, np.random.default_rng(4), images_per_call=chunk, **RENDERED)
              for chunk in (1024, 1024, 100)]
    assert scores[0] == scores[1] == scores[2]
    votes = [factor_vae(data, blurred, seed=4, images_per_call=chunk) for chunk in (1024, 70)]
    assert votes[0] == votes[1]


def test_rendered_metrics_never_fix_a_factor_with_one_value():
    data = FactorPixels().restrict(scale=[2])
    scores = factor_vae(data, read_factors)
    assert scores["num_active_dims"] == 2 and scores["eval_accuracy"] == 1.0


# --- the report ----------------------------------------------------------------------------------------


def factor_image_data(with_source: bool) -> ImageData:
    source = FactorPixels()
    factors = source.sample_factors(400, np.random.default_rng(11))
    return ImageData(images=source.render(factors), train_indices=np.arange(300),
                     val_indices=np.arange(300, 400), fingerprint="test", factors=factors,
                     factor_names=source.factor_names, source=source if with_source else None)


def test_report_on_rendered_data(tmp_path):
    report = disentanglement_report(read_factors, factor_image_data(True), tmp_path / "report.json", num_train=300,
                                    num_eval=150, batch_size=16, dci_num_train=120)
    assert report["summary"]["mig"] > 0.95 and report["summary"]["dci_disentanglement"] > 0.95
    assert report["summary"]["beta_vae"] > 0.95 and report["summary"]["factor_vae"] == 1.0
    assert [d["factor"] for d in report["dimensions"]] == ["shape", "scale", "position"]
    assert report["beta_vae"]["num_train"] == 300 and report["points"]["seed"] == 0
    assert report["dci"]["num_train"] == 120 and report["dci"]["num_test"] == 150
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))


def test_report_on_stored_images_with_log_variances(tmp_path):
    represent = lambda images: (read_factors(images), np.full((len(images), 3), -3.0))  # noqa: E731
    report = disentanglement_report(represent, factor_image_data(False), tmp_path / "report.json", num_train=200,
                                    num_eval=100)
    assert "beta_vae" not in report and "factor_vae" not in report
    assert report["points"]["origin"] == "drawn from the stored images"
    assert report["active_units"]["count"] == 3
    assert report["summary"]["mig"] > 0.95


def test_report_needs_factors(tmp_path):
    data = factor_image_data(True)
    data.factors = None
    with pytest.raises(ValueError, match="factors"):
        disentanglement_report(read_factors, data, tmp_path / "report.json")


# --- DCI backends ---------------------------------------------------------------------------------

# The hist backend (HistGradientBoostingClassifier, split-gain importance) against disentanglement_lib's
# GradientBoostingClassifier() on codes of known structure. Tolerances: D and C within 0.05, I within
# 0.03 (bench/disentanglement.py measures the same on dSprites-sized factors, README "Evaluation").
HIST_TOLERANCE = {"disentanglement": 0.05, "completeness": 0.05, "informativeness_test": 0.03}


def structured_codes(structure: str, seed: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Five latents for the three factors of SIZES: three informative (one per factor, or mixed by
    a rotation) plus two near-constant noise latents (inactive dimensions)."""
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, size, 600) for size in SIZES], axis=1)
    informative = factors / (np.asarray(SIZES) - 1) * 2 + 0.15 * rng.normal(size=factors.shape)
    if structure == "rotated":
        informative = informative @ np.linalg.qr(np.random.default_rng(99).normal(size=(3, 3)))[0]
    return np.column_stack([informative, 0.05 * rng.normal(size=(600, 2))]), factors


@pytest.mark.parametrize("structure", ["disentangled", "rotated"])
def test_hist_backend_agrees_with_the_exact_one(structure):
    codes, factors = structured_codes(structure)
    exact = dci(codes, factors, backend="exact")
    hist = dci(codes, factors, backend="hist")
    for key, tolerance in HIST_TOLERANCE.items():
        assert abs(hist[key] - exact[key]) <= tolerance, (key, hist[key], exact[key])
    # both see the structure: one latent per factor, or every factor spread over mixed latents
    if structure == "disentangled":
        assert min(exact["disentanglement"], hist["disentanglement"]) > 0.8
    else:
        assert max(exact["disentanglement"], hist["disentanglement"]) < 0.6
    assert hist["importance_matrix"][3:].sum() < 0.05 * hist["importance_matrix"].sum()  # noise latents


def test_unknown_dci_backend_is_rejected(factors):
    with pytest.raises(ValueError, match="hist, exact"):
        dci(perfect_codes(factors), factors, backend="lightgbm")


# --- progress bars and library warnings ----------------------------------------------------------


def scaled_factors(images: np.ndarray) -> np.ndarray:
    """Latents of very different scales: LogisticRegression's lbfgs stops at max_iter=100 on them."""
    return read_factors(images) * [1e-3, 1.0, 1e3]


def test_convergence_warnings_are_recorded_not_printed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        scores = beta_vae_score(FactorPixels(), scaled_factors, np.random.default_rng(0), **RENDERED)
    assert scores["converged"] is False and scores["iterations"] == scores["max_iter"] == 100
    assert scores["eval_accuracy"] > 0.9
    converged = beta_vae_score(FactorPixels(), read_factors, np.random.default_rng(0), **RENDERED)
    assert converged["converged"] is True and converged["iterations"] < 100


def test_other_warnings_pass_through_the_convergence_catcher():
    with pytest.warns(UserWarning, match="unrelated"):
        with caught_convergence_warnings() as caught:
            warnings.warn("fit stopped", ConvergenceWarning)
            warnings.warn("unrelated", UserWarning)
    assert caught == ["fit stopped"]


def test_report_notes_an_unconverged_classifier_and_lets_no_warning_out(tmp_path, recwarn):
    report = disentanglement_report(scaled_factors, factor_image_data(True), tmp_path / "report.json", num_train=300,
                                    num_eval=150, batch_size=16, dci_num_train=120)
    assert not recwarn.list, [str(w.message) for w in recwarn.list]
    assert report["beta_vae"]["converged"] is False
    assert any("LogisticRegression" in note and "max_iter=100" in note for note in report["notes"])
    assert report["dci"]["backend"] == "hist" and "HistGradientBoostingClassifier" in report["dci"]["classifier"]


def test_progress_bars_only_when_asked(capsys):
    codes, factors = structured_codes("disentangled")
    dci(codes[:200], factors[:200], progress=True)
    sap(codes[:200], factors[:200])
    beta_vae_score(FactorPixels(), read_factors, np.random.default_rng(0), progress=True, **RENDERED)
    factor_vae(FactorPixels(), read_factors, progress=True)
    err = capsys.readouterr().err
    for desc in ("DCI (hist gradient boosting)", "BetaVAE score (images)", "FactorVAE score (images)"):
        assert desc in err and "100%" in err, desc
    assert "SAP" not in err  # sap() is quiet by default
    dci(codes[:200], factors[:200])
    beta_vae_score(FactorPixels(), read_factors, np.random.default_rng(0), **RENDERED)
    assert capsys.readouterr().err == ""


# --- each distinct image encoded once -----------------------------------------------------------


class CountingRepresent:
    def __init__(self, represent=read_factors):
        self.represent, self.images = represent, 0

    def __call__(self, images):
        self.images += len(images)
        return self.represent(images)


def test_factor_codes_encode_each_grid_cell_once_and_change_nothing(monkeypatch):
    data = FactorPixels()  # 60 grid cells
    mixing = np.array([[1.0, 0.4, 0.0], [0.3, 1.0, 0.5], [0.0, 0.6, 1.0]])
    counting = CountingRepresent(lambda images: read_factors(images) @ mixing)
    codes = FactorCodes(data, counting)
    factors = data.sample_factors(500, np.random.default_rng(13))
    expected = read_factors(data.render(factors)) @ mixing
    np.testing.assert_array_equal(codes(factors), expected)
    np.testing.assert_array_equal(codes(factors[::-1]), expected[::-1])
    assert counting.images == codes.encoded == len(np.unique(data.factors_to_index(factors))) <= 60
    assert codes.requested == 1000
    shared = beta_vae_score(data, codes, np.random.default_rng(4), **RENDERED)
    assert shared == beta_vae_score(data, lambda images: read_factors(images) @ mixing,
                                    np.random.default_rng(4), **RENDERED)
    assert counting.images == 60  # 2·32·500 images asked for, the 60 cells encoded once
    monkeypatch.setattr(disentanglement, "MAX_CODE_TABLE_BYTES", 0)  # a grid too large for the table
    uncached = CountingRepresent()
    np.testing.assert_array_equal(FactorCodes(data, uncached)(factors), read_factors(data.render(factors)))
    assert uncached.images == len(np.unique(data.factors_to_index(factors)))
