"""Disentanglement metrics with disentanglement_lib's definitions and defaults (docs/metrics.md).

Two kinds of metric:

* on given arrays — ``codes`` float ``(N, D)`` (encoder means) and ``factors`` int ``(N, F)``:
  :func:`mig`, :func:`sap`, :func:`dci`, plus the label-free :func:`gaussian_total_correlation`
  and :func:`active_units`;
* on a ground-truth generator that renders observations for chosen factor values
  (:class:`betavae.data.groundtruth.GroundTruthData`) and a ``represent`` function mapping uint8
  images ``(N, H, W, C)`` to codes ``(N, D)``: :func:`beta_vae_score`, :func:`factor_vae_score`.

Every factor passed to the array metrics must take at least two values (a constant factor has no
entropy; disentanglement_lib never exposes one). The rendered metrics only ever fix factors that
take at least two values. Randomness comes from a seed or a ``np.random.Generator``, so a result
is reproducible from its settings.

Speed: DCI's gradient boosting has two backends (``backend="hist"``, the default, or ``"exact"``,
disentanglement_lib's own ``GradientBoostingClassifier()``); the rendered metrics encode each
distinct grid cell once (:class:`FactorCodes`, exact for a deterministic ``represent``). Every slow
step can show a tqdm bar (``progress=True``). scikit-learn's ``ConvergenceWarning`` (the BetaVAE
score's ``LogisticRegression`` stops at its default 100 iterations, as disentanglement_lib's did) is
caught where it is raised and reported in the result instead of on the terminal.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import scipy.stats
import sklearn
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits
from tqdm import tqdm

Represent = Callable[[np.ndarray], np.ndarray]

NUM_BINS = 20
IMAGES_PER_CALL = 4096
TEST_FRACTION = 1 / 3  # disentanglement_lib: 10,000 train and 5,000 test points
DCI_BACKENDS = ("hist", "exact")
# The hist backend mirrors GradientBoostingClassifier()'s defaults (100 stages, learning rate 0.1,
# depth 3, leaves of one sample, no early stopping) on 255 quantile bins per latent.
HIST_SETTINGS = {"max_iter": 100, "learning_rate": 0.1, "max_depth": 3, "min_samples_leaf": 1,
                 "l2_regularization": 0.0, "max_bins": 255, "early_stopping": False}
MAX_CODE_TABLE_BYTES = 512 * 2**20  # FactorCodes keeps one row per grid cell below this size


# ---------------------------------------------------------------------------------------------
# Progress bars and library warnings


def progress_bar(progress: bool, total: int, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar with ETA (a disabled one when ``progress`` is false)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True, leave=True)


CONVERGENCE = (ConvergenceWarning, "")
# scikit-learn's classifiers warn when a factor has more values than half the points (tiny samples).
FEW_POINTS_PER_CLASS = (UserWarning, "The number of unique classes is greater than 50%")


@contextmanager
def caught_warnings(*known: tuple[type[Warning], str]) -> Iterator[list[str]]:
    """Catches the ``known`` warnings (category, message prefix) raised in the block; yields the list
    that holds their messages once the block ends. Any other warning is issued again unchanged."""
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    for warning in caught:
        text = str(warning.message).strip()
        if any(issubclass(warning.category, category) and text.startswith(prefix) for category, prefix in known):
            messages.append(text)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno,
                                   source=warning.source)


def caught_convergence_warnings() -> AbstractContextManager[list[str]]:
    """:func:`caught_warnings` for scikit-learn's ``ConvergenceWarning`` (an optimiser stopped at
    its iteration limit)."""
    return caught_warnings(CONVERGENCE)


# ---------------------------------------------------------------------------------------------
# Input checks and discretisation


def _check_codes_factors(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes = np.asarray(codes, dtype=np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"need codes (N, D) and factors (N, F); got {codes.shape} and {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integers (value indices), got {factors.dtype}")
    if codes.shape[1] < 2:
        raise ValueError("the metric compares latent dimensions: codes need at least 2 columns")
    constant = [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size < 2]
    if constant:
        raise ValueError(f"factor columns {constant} take a single value; drop them first")
    return codes, factors


def discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Each column binned into ``num_bins`` equal-width histogram bins (disentanglement_lib's way)."""
    codes = np.asarray(codes, dtype=np.float64)
    binned = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        binned[:, j] = np.digitize(codes[:, j], edges[:-1])
    return binned


def mutual_info_matrix(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Mutual information (nats) between each discretised latent and each factor, shape ``(D, F)``."""
    binned = discretize(codes, num_bins)
    factors = np.asarray(factors)
    return np.array(
        [[mutual_info_score(factors[:, k], binned[:, j]) for k in range(factors.shape[1])]
         for j in range(binned.shape[1])]
    )


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor column's empirical distribution, shape ``(F,)``."""
    factors = np.asarray(factors)
    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def _top_two_gap(scores: np.ndarray) -> np.ndarray:
    """Per column of ``scores`` (latents × factors): largest minus second largest entry."""
    ordered = np.sort(scores, axis=0)
    return ordered[-1] - ordered[-2]


def _train_test(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None,
    factors_test: np.ndarray | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The given test set, or a seeded split keeping ``TEST_FRACTION`` of the points for testing."""
    if (codes_test is None) != (factors_test is None):
        raise ValueError("give both codes_test and factors_test, or neither")
    if codes_test is not None:
        return codes, factors, np.asarray(codes_test, dtype=np.float64), np.asarray(factors_test)
    order = np.random.default_rng(seed).permutation(len(codes))
    n_test = int(round(len(codes) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return codes[train], factors[train], codes[test], factors[test]


# ---------------------------------------------------------------------------------------------
# Metrics on given arrays


def mig(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> float:
    """Mutual Information Gap (Chen et al. 2018): mean over factors of (top1 − top2 MI) / H(v_k)."""
    codes, factors = _check_codes_factors(codes, factors)
    gaps = _top_two_gap(mutual_info_matrix(codes, factors, num_bins))
    return float(np.mean(gaps / factor_entropies(factors)))


def sap_score_matrix(
    codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
    progress: bool = False, unconverged: list[str] | None = None,
) -> np.ndarray:
    """Test accuracy ``(D, F)`` of a one-feature ``LinearSVC(C=0.01, class_weight="balanced")``
    per (latent, factor). Fits that stop at ``max_iter`` (scikit-learn's ``ConvergenceWarning``)
    are appended to ``unconverged`` as ``"z{j}/factor {k}"`` instead of warning."""
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    with progress_bar(progress, scores.size, "SAP (LinearSVC fits)", "fit") as bar:
        for j in range(codes.shape[1]):
            for k in range(factors.shape[1]):
                classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
                with caught_convergence_warnings() as caught:
                    classifier.fit(codes[:, [j]], factors[:, k])
                if caught and unconverged is not None:
                    unconverged.append(f"z{j}/factor {k}")
                scores[j, k] = np.mean(classifier.predict(codes_test[:, [j]]) == factors_test[:, k])
                bar.update()
    return scores


def sap_details(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    *,
    random_state: int = 0,
    progress: bool = False,
) -> dict:
    """:func:`sap` with its score matrix and the fits that stopped at their iteration limit:
    ``score``, ``score_matrix`` (latents × factors), ``unconverged_fits`` (list of ``"z{j}/factor {k}"``)."""
    codes, factors = _check_codes_factors(codes, factors)
    split = _train_test(codes, factors, codes_test, factors_test, random_state)
    unconverged: list[str] = []
    matrix = sap_score_matrix(*split, progress=progress, unconverged=unconverged)
    return {"score": float(np.mean(_top_two_gap(matrix))), "score_matrix": matrix,
            "unconverged_fits": unconverged}


def sap(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    *,
    random_state: int = 0,
) -> float:
    """SAP score (Kumar et al. 2018, discrete factors): mean over factors of top1 − top2 accuracy.

    Without a test set, a third of the points (seeded by ``random_state``) is held out.
    :func:`sap_details` also lists the ``LinearSVC`` fits that hit their iteration limit.
    """
    return sap_details(codes, factors, codes_test, factors_test, random_state=random_state)["score"]


def _normalized_entropy(distributions: np.ndarray) -> np.ndarray:
    """Entropy of each column (normalised to sum 1) in base = number of rows; 0 when one row."""
    if distributions.shape[0] == 1:
        return np.zeros(distributions.shape[1])
    return scipy.stats.entropy(distributions + 1e-11, base=distributions.shape[0])


def disentanglement_from_importance(importance: np.ndarray) -> float:
    """DCI disentanglement Σ_i ρ_i (1 − H_F(P_i)) of an importance matrix ``(D latents, F factors)``."""
    per_code = 1.0 - _normalized_entropy(importance.T)
    if importance.sum() == 0:
        importance = np.ones_like(importance)
    code_weight = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_weight))


def completeness_from_importance(importance: np.ndarray) -> float:
    """DCI completeness: the mirror of disentanglement, per factor over latents (entropy base D)."""
    per_factor = 1.0 - _normalized_entropy(importance)
    if importance.sum() == 0:
        importance = np.ones_like(importance)
    factor_weight = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_weight))


def trees_per_stage(labels: np.ndarray) -> int:
    """Trees a gradient-boosting stage grows for these labels: 1 for two classes, else one per class."""
    classes = np.unique(labels).size
    return 1 if classes <= 2 else classes


def hist_gain_importance(model: HistGradientBoostingClassifier, num_features: int) -> np.ndarray:
    """Split-gain importance of a fitted ``HistGradientBoostingClassifier``: the loss reduction of
    every split, summed per feature over all trees (LightGBM's ``importance_type="gain"``),
    normalised to sum 1 (zeros when no tree split)."""
    importance = np.zeros(num_features)
    for stage in model._predictors:  # one TreePredictor per class and stage (scikit-learn ≥ 0.21)
        for tree in stage:
            splits = tree.nodes[tree.nodes["is_leaf"] == 0]
            np.add.at(importance, splits["feature_idx"], splits["gain"])
    total = importance.sum()
    return importance / total if total > 0 else importance


def _fit_exact(codes, labels, random_state: int, bar) -> tuple[object, np.ndarray]:
    """disentanglement_lib's ``GradientBoostingClassifier()`` and its impurity importances."""
    per_stage = trees_per_stage(labels)

    def monitor(stage, model, local_variables) -> bool:
        bar.update(per_stage)
        return False  # never stop early

    model = GradientBoostingClassifier(random_state=random_state)
    model.fit(codes, labels, monitor=monitor)
    return model, np.abs(model.feature_importances_)


def _fit_hist(codes, labels, random_state: int, bar) -> tuple[object, np.ndarray]:
    """``HistGradientBoostingClassifier`` with :data:`HIST_SETTINGS` and its gain importances.

    One OpenMP thread: the trees are small (10,000 points), and two threads spinning on a busy
    2-core machine were measured 10–30× slower than one.
    """
    model = HistGradientBoostingClassifier(**HIST_SETTINGS, random_state=random_state)
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(codes, labels)
    bar.update(trees_per_stage(labels) * HIST_SETTINGS["max_iter"])
    return model, hist_gain_importance(model, codes.shape[1])


def _dci_factor(backend: str, codes, labels, codes_test, labels_test, random_state: int,
                bar) -> tuple[np.ndarray, float, float, list[str]]:
    """One factor's classifier: importance ``(D,)``, train and test accuracy, caught warnings."""
    fit = _fit_hist if backend == "hist" else _fit_exact
    with caught_warnings(CONVERGENCE, FEW_POINTS_PER_CLASS) as caught:
        model, importance = fit(codes, labels, random_state, bar)
    # Predictions on one OpenMP thread as well (row by row, the same labels on any number of threads):
    # the hist model's predict runs an OpenMP loop per tree, and on a busy 2-core machine two threads
    # took 36–62 s to predict 10,000 rows with the 40-class factor's 4,000 trees against 6–7 s on one.
    with threadpool_limits(limits=1, user_api="openmp"):
        train_accuracy = float(np.mean(model.predict(codes) == labels))
        test_accuracy = float(np.mean(model.predict(codes_test) == labels_test))
    return importance, train_accuracy, test_accuracy, caught


def dci_classifier(backend: str) -> str:
    """The classifier of a DCI backend, in words (for reports)."""
    if backend == "exact":
        return (f"sklearn {sklearn.__version__} GradientBoostingClassifier() defaults (disentanglement_lib), "
                "impurity importance")
    settings = ", ".join(f"{k}={v}" for k, v in HIST_SETTINGS.items())
    return (f"sklearn {sklearn.__version__} HistGradientBoostingClassifier({settings}), "
            "split-gain importance")


def dci_importance(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    random_state: int = 0,
    backend: str = "hist",
    progress: bool = False,
    notes: list[str] | None = None,
) -> tuple[np.ndarray, float, float]:
    """One gradient-boosted classifier per factor → importance ``(D, F)``, mean train and test
    accuracy. ``backend``: ``"hist"`` (fast, :data:`HIST_SETTINGS`) or ``"exact"``. scikit-learn's
    warnings while fitting (e.g. a factor with more values than half the points) are appended to
    ``notes`` as ``"factor k: message"``."""
    if backend not in DCI_BACKENDS:
        raise ValueError(f"unknown DCI backend {backend!r}; choose one of {', '.join(DCI_BACKENDS)}")
    num_factors = factors.shape[1]
    trees = [trees_per_stage(factors[:, k]) * HIST_SETTINGS["max_iter"] for k in range(num_factors)]
    with progress_bar(progress, sum(trees), f"DCI ({backend} gradient boosting)", "tree") as bar:
        results = [_dci_factor(backend, codes, factors[:, k], codes_test, factors_test[:, k], random_state, bar)
                   for k in range(num_factors)]
    importance = np.column_stack([results[k][0] for k in range(num_factors)])
    if notes is not None:
        for k in range(num_factors):
            notes.extend(f"factor {k}: {message}" for message in dict.fromkeys(results[k][3]))
    return (importance, float(np.mean([results[k][1] for k in range(num_factors)])),
            float(np.mean([results[k][2] for k in range(num_factors)])))


def dci(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    *,
    random_state: int = 0,
    backend: str = "hist",
    progress: bool = False,
    notes: list[str] | None = None,
) -> dict:
    """DCI (Eastwood & Williams 2018) from gradient-boosted-tree importances.

    Returns ``disentanglement``, ``completeness``, ``informativeness_train`` and
    ``informativeness_test`` (mean classification accuracy over factors) and the
    ``importance_matrix`` (latents × factors). Without a test set a third of the points is held out.
    ``backend="exact"`` is disentanglement_lib's ``GradientBoostingClassifier()`` (impurity
    importances); the default ``"hist"`` is scikit-learn's histogram gradient boosting with the same
    stages, rate and depth (split-gain importances), several times faster (README: differences
    measured). Warnings scikit-learn raises while fitting are appended to ``notes``, not printed.
    """
    codes, factors = _check_codes_factors(codes, factors)
    split = _train_test(codes, factors, codes_test, factors_test, random_state)
    importance, train_accuracy, test_accuracy = dci_importance(*split, random_state=random_state,
                                                               backend=backend, progress=progress, notes=notes)
    return {
        "disentanglement": disentanglement_from_importance(importance),
        "completeness": completeness_from_importance(importance),
        "informativeness_train": train_accuracy,
        "informativeness_test": test_accuracy,
        "importance_matrix": importance,
    }


# ---------------------------------------------------------------------------------------------
# Label-free statistics of the codes


def gaussian_total_correlation(codes: np.ndarray) -> float:
    """Total correlation of a Gaussian fitted to the codes, ½(Σ_j log Σ_jj − log det Σ) nats.

    Dimensions of zero variance are left out.
    """
    codes = np.asarray(codes, dtype=np.float64)
    codes = codes[:, codes.var(axis=0) > 0]
    if codes.shape[1] < 2:
        return 0.0
    covariance = np.cov(codes, rowvar=False)
    return float(0.5 * (np.sum(np.log(np.diag(covariance))) - np.linalg.slogdet(covariance)[1]))


def active_units(
    kl: np.ndarray | None = None,
    *,
    means: np.ndarray | None = None,
    logvars: np.ndarray | None = None,
    threshold: float = 0.01,
) -> np.ndarray:
    """Boolean mask of latent dims whose KL to the prior, averaged over data, exceeds ``threshold`` nats.

    Give ``kl`` per dimension, ``(D,)`` or ``(N, D)``, or the posterior ``means`` and ``logvars``
    ``(N, D)`` (KL_j = −½(1 + log σ_j² − μ_j² − σ_j²)). ``mask.sum()`` is the number of active units.
    """
    if (kl is None) == (means is None or logvars is None):
        raise ValueError("give either kl, or both means and logvars")
    if kl is None:
        means, logvars = np.asarray(means, dtype=np.float64), np.asarray(logvars, dtype=np.float64)
        kl = -0.5 * (1.0 + logvars - means**2 - np.exp(logvars))
    kl = np.asarray(kl, dtype=np.float64)
    mean_kl = kl.mean(axis=0) if kl.ndim == 2 else kl
    return mean_kl > threshold


# ---------------------------------------------------------------------------------------------
# Metrics that render observations for chosen factor values


class FactorCodes:
    """Codes of rendered factor vectors, each distinct grid cell rendered and encoded once.

    ``represent`` must be deterministic (disentanglement_lib's representation is the encoder mean),
    so an image drawn twice has one code: at disentanglement_lib's point counts the BetaVAE and
    FactorVAE scores draw ~2.9 million dSprites images from a grid of 737,280, and most are repeats.
    Codes are kept in a table with one row per grid cell when it fits in
    :data:`MAX_CODE_TABLE_BYTES`; for larger grids only the repeats within one call are saved.
    ``represent`` may return the means or a pair (means, log-variances). ``requested`` and ``encoded``
    count the images asked for and actually encoded.
    """

    def __init__(self, ground_truth, represent: Callable, images_per_call: int = IMAGES_PER_CALL):
        self.ground_truth, self.represent, self.images_per_call = ground_truth, represent, images_per_call
        self.requested = self.encoded = 0
        self._table: np.ndarray | None = None
        self._known: np.ndarray | None = None

    def _encode(self, index: np.ndarray) -> np.ndarray:
        """Codes of the grid cells ``index``, rendered and encoded ``images_per_call`` at a time."""
        codes = []
        for start in range(0, len(index), self.images_per_call):
            factors = self.ground_truth.index_to_factors(index[start:start + self.images_per_call])
            output = self.represent(self.ground_truth.render(factors))
            codes.append(np.asarray(output[0] if isinstance(output, tuple) else output, dtype=np.float64))
        self.encoded += len(index)
        return np.concatenate(codes)

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        """Codes ``(N, D)`` of the images of ``factors`` ``(N, F)`` (full-grid value indices)."""
        self.requested += len(factors)
        index = self.ground_truth.factors_to_index(factors)
        if self._known is None:
            unique, inverse = np.unique(index, return_inverse=True)
            codes = self._encode(unique)
            if len(self.ground_truth) * codes.shape[1] * 8 > MAX_CODE_TABLE_BYTES:
                return codes[inverse]
            self._table = np.empty((len(self.ground_truth), codes.shape[1]))
            self._known = np.zeros(len(self.ground_truth), dtype=bool)
        else:
            unique = np.unique(index[~self._known[index]])
            codes = self._encode(unique) if unique.size else None
        if codes is not None:
            self._table[unique] = codes
            self._known[unique] = True
        return self._table[index]


def represent_factors(ground_truth, represent: Represent, factors: np.ndarray,
                      images_per_call: int = IMAGES_PER_CALL) -> np.ndarray:
    """Renders ``factors`` with the generator and encodes them, ``images_per_call`` images at a time
    (each distinct image once: :class:`FactorCodes`)."""
    return FactorCodes(ground_truth, represent, images_per_call)(factors)


def _varying_factors(ground_truth) -> np.ndarray:
    """Indices of the factors that take at least two values (the only ones worth fixing)."""
    varying = np.flatnonzero(np.asarray(ground_truth.factor_sizes) > 1)
    if varying.size == 0:
        raise ValueError("the ground-truth data has no factor with more than one value")
    return varying


def _point_chunks(num_points: int, images_per_point: int, images_per_call: int) -> list[int]:
    """Sizes of the groups of points handled together, each rendering about ``images_per_call``
    images."""
    per_chunk = max(1, images_per_call // images_per_point)
    return [min(per_chunk, num_points - start) for start in range(0, num_points, per_chunk)]


def _beta_vae_points(ground_truth, codes_of: FactorCodes, rng: np.random.Generator, batch_size: int,
                     num_points: int, bar) -> tuple[np.ndarray, np.ndarray]:
    """Features (mean |z¹ − z²| over a pair of batches sharing factor k) and labels k."""
    varying = _varying_factors(ground_truth)
    features, labels = [], []
    for chunk in _point_chunks(num_points, 2 * batch_size, codes_of.images_per_call):
        first, second = [], []
        for _ in range(chunk):
            k = varying[rng.integers(len(varying))]
            factors1 = ground_truth.sample_factors(batch_size, rng)
            factors2 = ground_truth.sample_factors(batch_size, rng)
            factors2[:, k] = factors1[:, k]
            first.append(factors1)
            second.append(factors2)
            labels.append(k)
        pairs = np.concatenate(first + second)
        codes = codes_of(pairs)
        bar.update(len(pairs))
        codes1, codes2 = np.split(codes.reshape(2 * chunk, batch_size, -1), 2)
        features.append(np.abs(codes1 - codes2).mean(axis=1))
    return np.concatenate(features), np.asarray(labels)


def _factor_codes(ground_truth, represent, images_per_call: int) -> FactorCodes:
    if isinstance(represent, FactorCodes):
        return represent
    return FactorCodes(ground_truth, represent, images_per_call)


def beta_vae_score(ground_truth, represent: Represent | FactorCodes, rng: np.random.Generator,
                   batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                   images_per_call: int = IMAGES_PER_CALL, progress: bool = False) -> dict:
    """BetaVAE score (Higgins et al. 2017): accuracy of a ``LogisticRegression`` naming the fixed factor.

    Each point: pick factor k, draw two batches of ``batch_size`` factor vectors sharing k, feature
    = mean |z¹ − z²|, label k. Returns ``train_accuracy``, ``eval_accuracy`` (the score) and the
    classifier's ``iterations``, ``max_iter`` and ``converged``: scikit-learn's ``LogisticRegression()``
    defaults (as disentanglement_lib) often stop at ``max_iter`` = 100 on these unscaled features;
    its ``ConvergenceWarning`` is recorded there instead of printed. ``represent`` may be a
    :class:`FactorCodes` shared with other metrics.
    """
    codes_of = _factor_codes(ground_truth, represent, images_per_call)
    total = 2 * batch_size * (num_train + num_eval)
    with progress_bar(progress, total, "BetaVAE score (images)", "img") as bar:
        args = (ground_truth, codes_of, rng, batch_size)
        train_x, train_y = _beta_vae_points(*args, num_train, bar)
        model = LogisticRegression()
        with caught_convergence_warnings() as caught:
            model.fit(train_x, train_y)
        eval_x, eval_y = _beta_vae_points(*args, num_eval, bar)
    iterations = int(np.max(model.n_iter_))
    return {
        "train_accuracy": float(np.mean(model.predict(train_x) == train_y)),
        "eval_accuracy": float(np.mean(model.predict(eval_x) == eval_y)),
        "iterations": iterations,
        "max_iter": int(model.max_iter),
        "converged": not caught and iterations < model.max_iter,
    }


def _factor_vae_votes(ground_truth, codes_of: FactorCodes, rng: np.random.Generator, batch_size: int,
                      num_points: int, global_variances: np.ndarray, active: np.ndarray, bar) -> np.ndarray:
    """Vote counts ``(F, D)``: fixed factor k × latent of least normalised variance."""
    varying = _varying_factors(ground_truth)
    active_dims = np.flatnonzero(active)
    votes = np.zeros((ground_truth.num_factors, len(global_variances)), dtype=np.int64)
    for chunk in _point_chunks(num_points, batch_size, codes_of.images_per_call):
        batches, fixed = [], []
        for _ in range(chunk):
            k = varying[rng.integers(len(varying))]
            factors = ground_truth.sample_factors(batch_size, rng)
            factors[:, k] = factors[0, k]
            batches.append(factors)
            fixed.append(k)
        codes = codes_of(np.concatenate(batches))
        bar.update(chunk * batch_size)
        local_variances = codes.reshape(chunk, batch_size, -1).var(axis=1, ddof=1)
        ratio = local_variances[:, active_dims] / global_variances[active_dims]
        np.add.at(votes, (np.asarray(fixed), active_dims[np.argmin(ratio, axis=1)]), 1)
    return votes


def _majority_vote_accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Share of votes whose latent's majority factor (``classifier[d]``) is the fixed factor."""
    return float(votes[classifier, np.arange(votes.shape[1])].sum() / votes.sum())


def factor_vae_score(ground_truth, represent: Represent | FactorCodes, rng: np.random.Generator,
                     batch_size: int = 64, num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000, prune_threshold: float = 0.05,
                     images_per_call: int = IMAGES_PER_CALL, progress: bool = False) -> dict:
    """FactorVAE score (Kim & Mnih 2018): accuracy of a majority-vote classifier.

    Global variances (ddof 1) from ``num_variance_estimate`` samples; latents with std below
    ``prune_threshold`` are dropped. Each point fixes factor k over ``batch_size`` samples and votes
    for the latent of least variance / global variance. Returns ``train_accuracy``,
    ``eval_accuracy`` (the score) and ``num_active_dims``. ``represent`` may be a
    :class:`FactorCodes` shared with other metrics.
    """
    codes_of = _factor_codes(ground_truth, represent, images_per_call)
    total = num_variance_estimate + batch_size * (num_train + num_eval)
    with progress_bar(progress, total, "FactorVAE score (images)", "img") as bar:
        factors = ground_truth.sample_factors(num_variance_estimate, rng)
        codes = codes_of(factors)
        bar.update(len(factors))
        global_variances = codes.var(axis=0, ddof=1)
        active = np.sqrt(global_variances) >= prune_threshold
        if not active.any():
            return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
        args = (ground_truth, codes_of, rng, batch_size)
        train_votes = _factor_vae_votes(*args, num_train, global_variances, active, bar)
        classifier = np.argmax(train_votes, axis=0)
        eval_votes = _factor_vae_votes(*args, num_eval, global_variances, active, bar)
    return {
        "train_accuracy": _majority_vote_accuracy(train_votes, classifier),
        "eval_accuracy": _majority_vote_accuracy(eval_votes, classifier),
        "num_active_dims": int(active.sum()),
    }
