"""Every disentanglement metric for a model on data with ground-truth factors, as one JSON report."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sklearn

from betavae.analysis.dimensions import name_dimensions, normalized_mi_matrix, plot_mi_heatmap
from betavae.fileio import write_json
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

REPORT_NAME = "disentanglement.json"
HEATMAP_NAME = "mi_heatmap.png"
FACTOR_VAE_PRUNE_THRESHOLD = 0.05
ACTIVE_UNIT_THRESHOLD = 0.01


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


def _sap_scores(train: tuple, test: tuple, progress: bool) -> dict:
    details = sap_details(*train, *test, progress=progress)
    scores = {"score": details["score"], "num_train": len(train[0]), "num_test": len(test[0]),
              "classifier": f"sklearn {sklearn.__version__} LinearSVC(C=0.01, class_weight='balanced')"}
    if details["unconverged_fits"]:
        scores["unconverged_fits"] = details["unconverged_fits"]
    return scores


def _dci_scores(train: tuple, test: tuple, seed: int, num_train: int, backend: str, progress: bool) -> dict:
    """DCI on the first ``num_train`` training points (gradient boosting dominates the report's cost)."""
    train = tuple(array[:num_train] for array in train)
    notes: list[str] = []
    scores = dci(*train, *test, random_state=seed, backend=backend, progress=progress, notes=notes)
    scores = {**scores, "importance_matrix": scores["importance_matrix"].tolist(),
              "num_train": len(train[0]), "num_test": len(test[0]), "backend": backend,
              "classifier": dci_classifier(backend)}
    return scores | ({"warnings": notes} if notes else {})


def _rendered_metrics(represent: Callable, source, seed: int, batch_size: int, num_train: int, num_eval: int,
                      images_per_call: int, progress: bool) -> tuple[dict[str, Callable[[], dict]], FactorCodes]:
    """The BetaVAE and FactorVAE scores, each with its settings, as deferred computations, and the
    :class:`FactorCodes` both read their codes from (each grid cell encoded once)."""
    codes = FactorCodes(source, represent, images_per_call)
    counts = {"batch_size": batch_size, "num_train": num_train, "num_eval": num_eval}
    settings = {**counts, "seed": seed}

    def beta_vae() -> dict:
        scores = beta_vae_score(source, codes, np.random.default_rng(seed), progress=progress, **counts)
        classifier = f"sklearn {sklearn.__version__} LogisticRegression() defaults (as disentanglement_lib)"
        return {**scores, **settings, "classifier": classifier}

    def factor_vae() -> dict:
        scores = factor_vae_score(source, codes, np.random.default_rng(seed),
                                  num_variance_estimate=num_train,
                                  prune_threshold=FACTOR_VAE_PRUNE_THRESHOLD, progress=progress, **counts)
        return {**scores, **settings, "num_variance_estimate": num_train,
                "prune_threshold": FACTOR_VAE_PRUNE_THRESHOLD}

    return {"beta_vae": beta_vae, "factor_vae": factor_vae}, codes


def _notes(results: dict) -> list[str]:
    """What a reader should know about how the optimisers ended (instead of library warnings)."""
    notes = []
    beta_vae = results.get("beta_vae")
    if beta_vae is not None and not beta_vae["converged"]:
        notes.append(f"BetaVAE score: LogisticRegression (lbfgs) stopped at its iteration limit "
                     f"(max_iter={beta_vae['max_iter']}, scikit-learn's default as in disentanglement_lib) "
                     "before converging; the score is that classifier's accuracy")
    unconverged = results["sap"].get("unconverged_fits", [])
    if unconverged:
        notes.append(f"SAP: {len(unconverged)} LinearSVC fits stopped at their iteration limit "
                     "(scikit-learn's default max_iter=1000, as in disentanglement_lib)")
    if results["dci"].get("warnings"):
        notes.append(f"DCI: scikit-learn warned while fitting (dci.warnings: {len(results['dci']['warnings'])}); "
                     "a factor with more values than half the points needs more --dci-points")
    return notes


def _summary(results: dict) -> dict:
    """The headline number of each metric computed."""
    summary = {"mig": results["mig"]["score"], "sap": results["sap"]["score"],
               "dci_disentanglement": results["dci"]["disentanglement"],
               "dci_completeness": results["dci"]["completeness"],
               "dci_informativeness": results["dci"]["informativeness_test"]}
    if "beta_vae" in results:
        summary["beta_vae"] = results["beta_vae"]["eval_accuracy"]
        summary["factor_vae"] = results["factor_vae"]["eval_accuracy"]
    return summary


def disentanglement_report(represent: Callable, data, out_dir: str | Path, rng_seed: int = 0,
                           num_train: int = 10_000, num_eval: int = 5_000, batch_size: int = 64,
                           dci_num_train: int | None = None, images_per_call: int = IMAGES_PER_CALL,
                           dci_backend: str = "hist", progress: bool = False,
                           rendered_num_train: int | None = None, rendered_num_eval: int | None = None) -> dict:
    """MIG, SAP, DCI, BetaVAE and FactorVAE scores, Gaussian TC and latent names for ``data``.

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
    ``notes``. Writes ``disentanglement.json`` and ``mi_heatmap.png`` into ``out_dir``; returns the report.
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

    metrics = {
        "mig": lambda: {"score": mig(*train), "num_points": num_train, "num_bins": NUM_BINS},
        "sap": lambda: _sap_scores(train, test, progress),
        "dci": lambda: _dci_scores(train, test, rng_seed, dci_num_train or num_train, dci_backend, progress),
    }
    rendered = None
    if data.source is not None:
        deferred, rendered = _rendered_metrics(represent, data.source, rng_seed, batch_size,
                                               rendered_num_train or num_train, rendered_num_eval or num_eval,
                                               images_per_call, progress)
        metrics |= deferred
    results = {}
    for name, compute in metrics.items():
        start = time.perf_counter()
        results[name] = compute()
        seconds[name] = round(time.perf_counter() - start, 3)

    results["gaussian_total_correlation"] = {"value": gaussian_total_correlation(codes),
                                             "num_points": num_train}
    if logvars is not None:
        active = active_units(means=codes, logvars=logvars[:num_train], threshold=ACTIVE_UNIT_THRESHOLD)
        results["active_units"] = {"count": int(active.sum()), "dims": np.flatnonzero(active).tolist(),
                                   "threshold_nats": ACTIVE_UNIT_THRESHOLD}
    normalized_mi = normalized_mi_matrix(codes, train_factors)
    plot_mi_heatmap(normalized_mi, factor_names, Path(out_dir) / HEATMAP_NAME)
    report = {
        "summary": _summary(results),
        "notes": _notes(results),
        "factor_names": factor_names,
        "factors_used": [factor_names[k] for k in varying],
        "points": {"origin": origin, "num_train": num_train, "num_test": num_eval, "seed": rng_seed},
        **results,
        "latent_std": codes.std(axis=0, ddof=1).tolist(),
        "normalized_mi": normalized_mi.tolist(),
        "dimensions": name_dimensions(normalized_mi, factor_names),
        "mi_heatmap": HEATMAP_NAME,
        "seconds": seconds,
    }
    if rendered is not None:
        report["rendered_images"] = {"requested": rendered.requested, "encoded": rendered.encoded,
                                     "how": "BetaVAE and FactorVAE scores together; each distinct image "
                                            "of the generator's grid encoded once (deterministic encoder means)"}
    write_json(Path(out_dir) / REPORT_NAME, report)
    return report
