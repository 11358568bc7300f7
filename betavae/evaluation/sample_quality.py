"""Sample quality: FID (and KID), precision/recall and density/coverage of decoded samples against the
run's training data, for the prior and every other chosen sampler (:mod:`betavae.samplers`).

One set of Inception features per sampler serves every score: FID and KID from the features,
precision/recall (k = 3) and density/coverage (k = 5) from the same features against a seeded
subset of the reference features (:data:`PRDC_MAX_REFERENCE` at most: their k-NN search is
quadratic), so no image goes through the network twice.

The reference set's features are cached by data fingerprint, chosen rows, network weights and
preprocessing (:func:`betavae.metrics.fid.cached_reference`), so a second model trained on the
same data only computes the features of its own samples.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from betavae.metrics.fid import (
    MIN_RECOMMENDED_SAMPLES,
    RESIZE_FILTER,
    FeatureExtractor,
    FeatureStats,
    cached_reference,
    fid_from_stats,
    kid,
    reference_key,
    uint8_batches,
)

from betavae.metrics.prdc import DC_K, PR_K, prdc

REFERENCE_SEED = 0  # fixed, so every model of a dataset is compared with the same subset
PRDC_MAX_REFERENCE = 10_000  # reference features of precision/recall/density/coverage (seeded subset)
KID_SETTINGS = {"subsets": 100, "subset_size": 1000, "seed": 0}


def parse_reference(text: str) -> str | int:
    """``"all"`` or a positive number of training images."""
    if text == "all":
        return "all"
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count <= 0:
        raise ValueError(f"--fid-reference must be 'all' or a positive number of images, got {text!r}")
    return count


def reference_indices(train_indices: np.ndarray, reference: str | int) -> tuple[np.ndarray, str]:
    """The training rows to compare against, and how they were chosen (in words)."""
    if reference == "all" or reference >= len(train_indices):
        return np.sort(train_indices), f"all {len(train_indices)} images of the training split"
    chosen = np.random.default_rng(REFERENCE_SEED).choice(train_indices, size=reference, replace=False)
    return np.sort(chosen), f"{reference} of {len(train_indices)} training images (seeded random subset, seed {REFERENCE_SEED})"


def sampler_batches(trained, sampler, n: int, seed: int, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """Decoded images of ``n`` codes of a :class:`betavae.samplers.Sampler` (one seeded draw; the prior's
    is :func:`betavae.sampling.prior_codes`, as ``trained.sample``), in batches."""
    for chunk in sampler.sample(n, seed).split(batch_size):
        yield trained.decode(chunk)


def prdc_reference(features: np.ndarray, n_samples: int) -> tuple[np.ndarray, str]:
    """The reference features precision/recall/density/coverage compare with, and how they were chosen."""
    count = min(len(features), max(n_samples, 2), PRDC_MAX_REFERENCE)
    if count >= len(features):
        return features, f"all {len(features)} reference features"
    rows = np.sort(np.random.default_rng(REFERENCE_SEED).choice(len(features), size=count, replace=False))
    return features[rows], f"{count} of the {len(features)} reference features (seeded subset, seed {REFERENCE_SEED})"


def _prdc(real: np.ndarray, fake: np.ndarray) -> dict:
    if min(len(real), len(fake)) <= max(PR_K, DC_K):
        return {}
    return prdc(real, fake)


def feature_scores(features: np.ndarray, ref, prdc_real: np.ndarray, with_kid: bool, progress: bool = False) -> dict:
    """FID, precision/recall/density/coverage (when both sides have enough points) and optionally KID of
    one image set's Inception ``features`` against the reference ``ref`` (a cached reference)."""
    row = {"fid": fid_from_stats(FeatureStats.of(features), ref.stats, progress=progress), **_prdc(prdc_real, features)}
    if with_kid:
        row["kid"], row["kid_std"] = kid(features, ref.features, **KID_SETTINGS, progress=progress)
    return row


def sample_quality(trained, extractor: FeatureExtractor, n_samples: int = 2400, reference: str | int = "all",
                   with_kid: bool = False, seed: int = 0, cache_dir: str | Path | None = None,
                   samplers: list[str] | tuple[str, ...] = ("prior",)) -> dict:
    """FID (and optionally KID), precision, recall, density and coverage of ``n_samples`` samples
    against the training split; every setting recorded.

    The prior's scores are the top-level values (the headline's); ``samplers`` (the prior always
    among them) are compared side by side under ``"samplers"``, fitted ones fitted and stored first
    when missing (:func:`betavae.samplers.get_sampler`). The extractor's ``progress`` setting also
    shows bars for the Fréchet distance's trace term and KID."""
    from betavae.samplers import get_sampler

    kinds = ["prior", *(k for k in dict.fromkeys(samplers) if k != "prior")]
    drawn = {kind: get_sampler(trained, kind, progress=extractor.progress) for kind in kinds}
    data = trained.data()
    rows, described = reference_indices(data.train_indices, reference)
    key = reference_key(data.fingerprint, rows, extractor.identity)
    started = time.perf_counter()
    ref = cached_reference(
        key,
        lambda: extractor.features(uint8_batches(data.images, rows), len(rows), desc="FID reference features"),
        cache_dir,
    )
    reference_seconds = time.perf_counter() - started
    samples = extractor.features(sampler_batches(trained, drawn["prior"], n_samples, seed), n_samples,
                                 desc="FID sample features")
    prdc_real, prdc_described = prdc_reference(ref.features, n_samples)
    prior_prdc = _prdc(prdc_real, samples)
    result = {
        "fid": fid_from_stats(FeatureStats.of(samples), ref.stats, progress=extractor.progress),
        **prior_prdc,
        "n_samples": n_samples,
        "sample_seed": seed,
        "samples": "decoder(z), z ~ N(0, I), images in [0, 1]",
        "reference": {
            "set": described,
            "n": int(len(rows)),
            "data_fingerprint": data.fingerprint,
            "from_cache": ref.from_cache,
            "cache_file": str(ref.cache_file),
        },
        "resize_filter": RESIZE_FILTER,
        "feature_network": extractor.identity,
        "feature_dim": int(samples.shape[1]),
        "weights": extractor.record,
        "seconds": {"reference": round(reference_seconds, 2), "total": round(time.perf_counter() - started, 2)},
    }
    if min(n_samples, len(rows)) < MIN_RECOMMENDED_SAMPLES:
        result["caveat"] = (f"fewer than {MIN_RECOMMENDED_SAMPLES} images on one side: FID is biased upwards; "
                            "compare only at equal N against the same reference set (KID is unbiased)")
    if with_kid:
        mean, std = kid(samples, ref.features, **KID_SETTINGS, progress=extractor.progress)
        result.update(kid=mean, kid_std=std, kid_settings={**KID_SETTINGS, "kernel": "(x.y/d + 1)^3, unbiased MMD^2"})
    result["prdc_settings"] = {"precision_recall_k": PR_K, "density_coverage_k": DC_K, "reference": prdc_described,
                               "distance": "Euclidean, on the FID features",
                               **({} if prior_prdc else {"skipped": f"needs more than {max(PR_K, DC_K)} points per side"})}
    table = {"prior": {key: result[key] for key in ("fid", *prior_prdc, "kid", "kid_std") if key in result}
             | {"sampler": drawn["prior"].settings()}}
    for kind in kinds[1:]:
        features = extractor.features(sampler_batches(trained, drawn[kind], n_samples, seed), n_samples,
                                      desc=f"FID sample features ({kind})")
        table[kind] = feature_scores(features, ref, prdc_real, with_kid, extractor.progress) | {"sampler": drawn[kind].settings()}
    result["samplers"] = table
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    return result
