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
    active_units,
    beta_vae_score,
    dci,
    factor_vae_score,
    gaussian_total_correlation,
    mig,
    sap,
)

REPORT_NAME = "disentanglement.json"
HEATMAP_NAME = "mi_heatmap.png"


def _split_output(output) -> tuple[np.ndarray, np.ndarray | None]:
    """``represent`` may return the means, or a pair (means, log-variances)."""
    if isinstance(output, tuple):
        means, logvars = output
        return np.asarray(means, dtype=np.float64), np.asarray(logvars, dtype=np.float64)
    return np.asarray(output, dtype=np.float64), None


def _encode(represent: Callable, images: np.ndarray, images_per_call: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Means (and log-variances when ``represent`` gives them) of ``images``, in chunks."""
    parts = [_split_output(represent(images[i:i + images_per_call])) for i in range(0, len(images), images_per_call)]
    means = np.concatenate([m for m, _ in parts])
    logvars = None if parts[0][1] is None else np.concatenate([v for _, v in parts])
    return means, logvars


def _sample_points(represent: Callable, data, num_points: int, rng: np.random.Generator,
                   images_per_call: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """Codes and factors of ``num_points`` points: freshly rendered when the data has a generator
    (disentanglement_lib's protocol), else drawn from the stored images (without replacement when
    there are enough)."""
    if data.source is not None:
        factors = data.source.sample_factors(num_points, rng)
        images = np.concatenate([data.source.render(factors[i:i + images_per_call])
                                 for i in range(0, num_points, images_per_call)])
        origin = "rendered from the ground-truth generator"
    else:
        indices = rng.choice(len(data.images), num_points, replace=num_points > len(data.images))
        factors = np.asarray(data.factors)[indices]
        images = np.asarray(data.images[indices])
        origin = "drawn from the stored images"
    means, logvars = _encode(represent, images, images_per_call)
    return means, logvars, factors, origin


def _timed(results: dict, seconds: dict, name: str, compute: Callable[[], dict]) -> None:
    start = time.perf_counter()
    results[name] = compute()
    seconds[name] = round(time.perf_counter() - start, 3)


def disentanglement_report(represent: Callable, data, out_dir: str | Path, rng_seed: int = 0,
                           num_train: int = 10_000, num_eval: int = 5_000, batch_size: int = 64,
                           images_per_call: int = IMAGES_PER_CALL) -> dict:
    """MIG, SAP, DCI, BetaVAE and FactorVAE scores, Gaussian TC and latent names for ``data``.

    ``represent(images_uint8_NHWC)`` returns the encoder means ``(N, D)``, or a pair
    (means, log-variances) to add active-unit counts. ``data`` is an ``ImageData`` with factors;
    the BetaVAE and FactorVAE scores need its ``source`` generator and are skipped without one.
    ``num_train``/``num_eval`` are the points of every metric (disentanglement_lib: 10,000 / 5,000;
    MIG uses the training points; the FactorVAE variance estimate uses ``num_train`` samples).
    Writes ``disentanglement.json`` and ``mi_heatmap.png`` into ``out_dir``; returns the report.
    """
    if data.factors is None:
        raise ValueError("the data has no ground-truth factors: disentanglement metrics need them")
    out_dir = Path(out_dir)
    factor_names = list(data.factor_names)
    means, logvars, factors, origin = _sample_points(
        represent, data, num_train + num_eval, np.random.default_rng(rng_seed), images_per_call)
    train, test = slice(0, num_train), slice(num_train, None)
    varying = [k for k in range(factors.shape[1]) if np.unique(factors[train, k]).size > 1]
    codes, used = means[train], factors[train][:, varying]
    held_out = (means[test], factors[test][:, varying])

    results: dict = {}
    seconds: dict = {}
    _timed(results, seconds, "mig", lambda: {"score": mig(codes, used), "num_points": num_train,
                                             "num_bins": NUM_BINS})
    _timed(results, seconds, "sap", lambda: {"score": sap(codes, used, *held_out, random_state=rng_seed),
                                             "num_train": num_train, "num_test": num_eval})
    _timed(results, seconds, "dci", lambda: _dci_entry(dci(codes, used, *held_out, random_state=rng_seed),
                                                       num_train, num_eval))
    results["gaussian_total_correlation"] = {"value": gaussian_total_correlation(codes), "num_points": num_train}
    if logvars is not None:
        mask = active_units(means=means[train], logvars=logvars[train])
        results["active_units"] = {"count": int(mask.sum()), "dims": np.flatnonzero(mask).tolist(),
                                   "threshold_nats": 0.01}
    results["latent_std"] = means[train].std(axis=0, ddof=1).tolist()

    if data.source is not None:
        mean_only = lambda images: _split_output(represent(images))[0]  # noqa: E731
        rendered = dict(batch_size=batch_size, num_train=num_train, num_eval=num_eval,
                        images_per_call=images_per_call)
        _timed(results, seconds, "beta_vae", lambda: {
            **beta_vae_score(data.source, mean_only, np.random.default_rng(rng_seed), **rendered),
            "batch_size": batch_size, "num_train": num_train, "num_eval": num_eval, "seed": rng_seed,
            "classifier": f"sklearn {sklearn.__version__} LogisticRegression() defaults"})
        _timed(results, seconds, "factor_vae", lambda: {
            **factor_vae_score(data.source, mean_only, np.random.default_rng(rng_seed),
                               num_variance_estimate=num_train, **rendered),
            "batch_size": batch_size, "num_train": num_train, "num_eval": num_eval,
            "num_variance_estimate": num_train, "prune_threshold": 0.05, "seed": rng_seed})

    normalized_mi = normalized_mi_matrix(codes, factors[train])
    plot_mi_heatmap(normalized_mi, factor_names, out_dir / HEATMAP_NAME)
    report = {
        "summary": _summary(results),
        "factor_names": factor_names,
        "factors_used": [factor_names[k] for k in varying],
        "points": {"origin": origin, "num_train": num_train, "num_test": num_eval, "seed": rng_seed},
        **results,
        "normalized_mi": normalized_mi.tolist(),
        "dimensions": name_dimensions(normalized_mi, factor_names),
        "mi_heatmap": HEATMAP_NAME,
        "seconds": seconds,
    }
    write_json(out_dir / REPORT_NAME, report)
    return report


def _dci_entry(scores: dict, num_train: int, num_test: int) -> dict:
    return {**scores, "importance_matrix": scores["importance_matrix"].tolist(),
            "num_train": num_train, "num_test": num_test}


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
