"""Sample quality: FID (and KID) of images decoded from z ~ N(0, I) against the run's training data.

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

REFERENCE_SEED = 0  # fixed, so every model of a dataset is compared with the same subset
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


def prior_sample_batches(trained, n: int, seed: int, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """Decoded images of ``n`` codes z ~ N(0, I) (one seeded draw, as ``trained.sample``), in batches."""
    z = torch.randn(n, trained.latent_dim, generator=torch.Generator().manual_seed(seed))
    for chunk in z.split(batch_size):
        yield trained.decode(chunk)


def sample_quality(trained, extractor: FeatureExtractor, n_samples: int = 2400, reference: str | int = "all",
                   with_kid: bool = False, seed: int = 0, cache_dir: str | Path | None = None) -> dict:
    """FID (and optionally KID) of ``n_samples`` prior samples against the training split; every setting recorded.

    The extractor's ``progress`` setting also shows bars for the Fréchet distance's trace term and KID."""
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
    samples = extractor.features(prior_sample_batches(trained, n_samples, seed), n_samples, desc="FID sample features")
    result = {
        "fid": fid_from_stats(FeatureStats.of(samples), ref.stats, progress=extractor.progress),
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
    return result
