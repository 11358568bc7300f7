"""Every disentanglement metric for a model on data with ground-truth factors, as one JSON report.

The metrics run from the :data:`FACTOR_METRICS` registry; the pure scores live in
:mod:`betavae.metrics.disentanglement`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn

from betavae.evaluation.dimensions import name_dimensions, normalized_mi_matrix
from betavae.evaluation.scores import Score
from betavae.fileio import write_json
from betavae.latents import ACTIVE_KL_NATS
from betavae.metrics.disentanglement import (
    IMAGES_PER_CALL,
    NUM_BINS,
    FactorCodes,
    active_units,
    beta_vae_score,
    dci,
    dci_classifier,
    factor_vae_score,
    gaussian_total_correlation,
    mig,
    progress_bar,
    sap_details,
)

FACTOR_VAE_PRUNE_THRESHOLD = 0.05


def _split_output(output) -> tuple[np.ndarray, np.ndarray | None]:
    """``represent`` may return the means, or a pair (means, log-variances)."""
    if isinstance(output, tuple):
        means, logvars = output
        return np.asarray(means, dtype=np.float64), np.asarray(logvars, dtype=np.float64)
    return np.asarray(output, dtype=np.float64), None


def _sample_points(data, num_points: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, Callable[[slice], np.ndarray], str]:
    """Factors of ``num_points`` points and a getter of their images by slice: freshly rendered
    when the data has a generator (disentanglement_lib's protocol), else drawn from the stored
    images (without replacement when there are enough)."""
    if data.source is not None:
        factors = data.source.sample_factors(num_points, rng)
        return (factors, lambda part: data.source.render(factors[part]),
                "rendered from the ground-truth generator")
    indices = rng.choice(len(data.images), num_points, replace=num_points > len(data.images))
    return (np.asarray(data.factors)[indices], lambda part: np.asarray(data.images[indices[part]]),
            "drawn from the stored images")


def _encode(represent: Callable, images: Callable[[slice], np.ndarray], num_points: int,
            images_per_call: int, progress: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Means (and log-variances when ``represent`` gives them) of the points, in chunks."""
    parts = []
    with progress_bar(progress, num_points, "encoding MIG/SAP/DCI points", "img") as bar:
        for start in range(0, num_points, images_per_call):
            parts.append(_split_output(represent(images(slice(start, start + images_per_call)))))
            bar.update(len(parts[-1][0]))
    means = np.concatenate([m for m, _ in parts])
    logvars = None if parts[0][1] is None else np.concatenate([v for _, v in parts])
    return means, logvars


@dataclass(frozen=True)
class FactorPoints:
    """What a factor metric reads: the codes and (varying) factors of the sampled training and test
    points, the generator (None for stored images) and the settings of the report."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    source: object | None
    seed: int
    dci_num_train: int
    dci_backend: str
    batch_size: int
    rendered_num_train: int
    rendered_num_eval: int
    progress: bool
    rendered_codes: FactorCodes | None  # the BetaVAE/FactorVAE scores' shared codes of generator images


@dataclass(frozen=True)
class FactorMetric:
    """A disentanglement metric as the report runs it: ``compute`` gives its JSON section, ``scores``
    the headline numbers read from that section (``Score``, field), ``notes`` what a reader should
    know about how its optimisers ended."""

    compute: Callable[[FactorPoints], dict]
    scores: tuple[tuple[Score, str], ...]
    needs_generator: bool = False
    notes: Callable[[dict], list[str]] = lambda result: []


def _mig(points: FactorPoints) -> dict:
    return {"score": mig(*points.train), "num_points": len(points.train[0]), "num_bins": NUM_BINS}


def _sap(points: FactorPoints) -> dict:
    details = sap_details(*points.train, *points.test, progress=points.progress)
    scores = {"score": details["score"], "num_train": len(points.train[0]), "num_test": len(points.test[0]),
              "classifier": f"sklearn {sklearn.__version__} LinearSVC(C=0.01, class_weight='balanced')"}
    if details["unconverged_fits"]:
        scores["unconverged_fits"] = details["unconverged_fits"]
    return scores


def _sap_notes(result: dict) -> list[str]:
    unconverged = result.get("unconverged_fits", [])
    return [f"SAP: {len(unconverged)} LinearSVC fits stopped at their iteration limit "
            "(scikit-learn's default max_iter=1000, as in disentanglement_lib)"] if unconverged else []


def _dci(points: FactorPoints) -> dict:
    """DCI on the first ``dci_num_train`` training points (gradient boosting dominates the report's cost)."""
    train = tuple(array[:points.dci_num_train] for array in points.train)
    notes: list[str] = []
    scores = dci(*train, *points.test, random_state=points.seed, backend=points.dci_backend,
                 progress=points.progress, notes=notes)
    scores = {**scores, "importance_matrix": scores["importance_matrix"].tolist(),
              "num_train": len(train[0]), "num_test": len(points.test[0]), "backend": points.dci_backend,
              "classifier": dci_classifier(points.dci_backend)}
    return scores | ({"warnings": notes} if notes else {})


def _dci_notes(result: dict) -> list[str]:
    if not result.get("warnings"):
        return []
    return [f"DCI: scikit-learn warned while fitting (dci.warnings: {len(result['warnings'])}); "
            "a factor with more values than half the points needs more --dci-points"]


def _rendered_settings(points: FactorPoints) -> dict:
    return {"batch_size": points.batch_size, "num_train": points.rendered_num_train,
            "num_eval": points.rendered_num_eval}


def _beta_vae(points: FactorPoints) -> dict:
    counts = _rendered_settings(points)
    scores = beta_vae_score(points.source, points.rendered_codes, np.random.default_rng(points.seed),
                            progress=points.progress, **counts)
    classifier = f"sklearn {sklearn.__version__} LogisticRegression() defaults (as disentanglement_lib)"
    return {**scores, **counts, "seed": points.seed, "classifier": classifier}


def _beta_vae_notes(result: dict) -> list[str]:
    if result["converged"]:
        return []
    return [f"BetaVAE score: LogisticRegression (lbfgs) stopped at its iteration limit "
            f"(max_iter={result['max_iter']}, scikit-learn's default as in disentanglement_lib) "
            "before converging; the score is that classifier's accuracy"]


def _factor_vae(points: FactorPoints) -> dict:
    counts = _rendered_settings(points)
    scores = factor_vae_score(points.source, points.rendered_codes, np.random.default_rng(points.seed),
                              num_variance_estimate=points.rendered_num_train,
                              prune_threshold=FACTOR_VAE_PRUNE_THRESHOLD, progress=points.progress, **counts)
    return {**scores, **counts, "seed": points.seed, "num_variance_estimate": points.rendered_num_train,
            "prune_threshold": FACTOR_VAE_PRUNE_THRESHOLD}


# Every disentanglement metric of the report, in the order it runs. A new metric is a pure score in
# betavae/metrics/, a compute function here and one entry: the report, metrics.json's headline, the
# study's disentanglement table and the conformance tests pick it up from this registry.
FACTOR_METRICS: dict[str, FactorMetric] = {
    "mig": FactorMetric(_mig, ((Score("mig", "MIG", "mutual information gap (Chen et al. 2018)", better=1), "score"),)),
    "sap": FactorMetric(_sap, ((Score("sap", "SAP", "separated attribute predictability (Kumar et al. 2018)",
                                      better=1), "score"),), notes=_sap_notes),
    "dci": FactorMetric(_dci, (
        (Score("dci_disentanglement", "DCI D", "DCI disentanglement (Eastwood & Williams 2018)", better=1),
         "disentanglement"),
        (Score("dci_completeness", "DCI C", "DCI completeness", better=1), "completeness"),
        (Score("dci_informativeness", "DCI I", "DCI informativeness: test accuracy of the factor classifiers",
               better=1), "informativeness_test")), notes=_dci_notes),
    "beta_vae": FactorMetric(_beta_vae, ((Score("beta_vae", "BetaVAE", "BetaVAE score (Higgins et al. 2017): "
                                                "evaluation accuracy", better=1), "eval_accuracy"),),
                             needs_generator=True, notes=_beta_vae_notes),
    "factor_vae": FactorMetric(_factor_vae, ((Score("factor_vae", "FactorVAE", "FactorVAE score (Kim & Mnih "
                                                    "2018): evaluation accuracy", better=1), "eval_accuracy"),),
                               needs_generator=True),
}


def factor_scores() -> list[Score]:
    """The headline scores of every :data:`FACTOR_METRICS` entry."""
    return [score for metric in FACTOR_METRICS.values() for score, _ in metric.scores]


def _summary(results: dict) -> dict:
    """The headline number of each metric computed."""
    return {score.key: results[name][field] for name, metric in FACTOR_METRICS.items() if name in results
            for score, field in metric.scores}


def disentanglement_report(represent: Callable, data, out_path: str | Path | None, rng_seed: int = 0,
                           num_train: int = 10_000, num_eval: int = 5_000, batch_size: int = 64,
                           dci_num_train: int | None = None, images_per_call: int = IMAGES_PER_CALL,
                           dci_backend: str = "hist", progress: bool = False,
                           rendered_num_train: int | None = None, rendered_num_eval: int | None = None) -> dict:
    """Every :data:`FACTOR_METRICS` score (MIG, SAP, DCI, BetaVAE, FactorVAE), Gaussian TC and latent names.

    ``represent(images_uint8_NHWC)`` returns the encoder means ``(N, D)``, or a pair
    (means, log-variances) to add active-unit counts. ``data`` is an ``ImageData`` with factors;
    the BetaVAE and FactorVAE scores need its ``source`` generator and are skipped without one.
    ``num_train``/``num_eval`` are the points of every metric (disentanglement_lib: 10,000 / 5,000;
    MIG uses the training points); ``rendered_num_train``/``rendered_num_eval`` replace them for the
    BetaVAE and FactorVAE scores, whose every point renders and encodes a batch (or two) of
    ``batch_size`` images (the FactorVAE variance estimate uses ``rendered_num_train`` samples).
    ``dci_num_train`` caps DCI's training points; ``dci_backend`` is ``"hist"`` (default) or
    ``"exact"`` (disentanglement_lib's ``GradientBoostingClassifier``: ~10 minutes at 10,000 points on
    2 cores for dSprites' factors). ``images_per_call`` bounds each ``represent`` call. ``progress``
    shows a tqdm bar for each slow step. Library convergence warnings are caught and listed under
    ``notes``. Writes the report (JSON) to ``out_path`` (unless None) and returns it.
    """
    if data.factors is None:
        raise ValueError("the data has no ground-truth factors: disentanglement metrics need them")
    factor_names = list(data.factor_names)
    num_points = num_train + num_eval
    factors, images, origin = _sample_points(data, num_points, np.random.default_rng(rng_seed))
    start = time.perf_counter()
    means, logvars = _encode(represent, images, num_points, images_per_call, progress)
    seconds = {"encode_points": round(time.perf_counter() - start, 3)}
    codes, train_factors = means[:num_train], factors[:num_train]
    varying = [k for k in range(factors.shape[1]) if np.unique(train_factors[:, k]).size > 1]
    if not varying:
        raise ValueError("no factor varies among the sampled points")
    train, test = (codes, train_factors[:, varying]), (means[num_train:], factors[num_train:, varying])

    rendered_num_train = rendered_num_train or num_train
    rendered = FactorCodes(data.source, represent, images_per_call) if data.source is not None else None
    points = FactorPoints(train, test, data.source, rng_seed, dci_num_train or num_train, dci_backend, batch_size,
                          rendered_num_train, rendered_num_eval or num_eval, progress, rendered)
    results = {}
    for name, metric in FACTOR_METRICS.items():
        if metric.needs_generator and data.source is None:
            continue
        start = time.perf_counter()
        results[name] = metric.compute(points)
        seconds[name] = round(time.perf_counter() - start, 3)

    results["gaussian_total_correlation"] = {"value": gaussian_total_correlation(codes),
                                             "num_points": num_train}
    if logvars is not None:
        active = active_units(means=codes, logvars=logvars[:num_train], threshold=ACTIVE_KL_NATS)
        results["active_units"] = {"count": int(active.sum()), "dims": np.flatnonzero(active).tolist(),
                                   "threshold_nats": ACTIVE_KL_NATS}
    normalized_mi = normalized_mi_matrix(codes, train_factors)
    report = {
        "summary": _summary(results),
        "notes": [note for name, result in results.items() if name in FACTOR_METRICS
                  for note in FACTOR_METRICS[name].notes(result)],
        "factor_names": factor_names,
        "factors_used": [factor_names[k] for k in varying],
        "points": {"origin": origin, "num_train": num_train, "num_test": num_eval, "seed": rng_seed},
        **results,
        "latent_std": codes.std(axis=0, ddof=1).tolist(),
        "normalized_mi": normalized_mi.tolist(),
        "dimensions": name_dimensions(normalized_mi, factor_names),
        "seconds": seconds,
    }
    if rendered is not None:
        report["rendered_images"] = {"requested": rendered.requested, "encoded": rendered.encoded,
                                     "how": "BetaVAE and FactorVAE scores together; each distinct image "
                                            "of the generator's grid encoded once (deterministic encoder means)"}
    if out_path is not None:
        write_json(Path(out_path), report)
    return report
