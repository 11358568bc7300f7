"""FID and KID between two image sets, with cached dataset statistics.

The pipeline (pytorch-fid's): images in [0, 1] → grayscale repeated to 3 channels → bilinear
resize to 299×299 (``F.interpolate``, ``align_corners=False``, no antialiasing) → ``2x − 1``
→ a feature network (the FID Inception-v3 by default, any ``nn.Module`` mapping N×3×299×299 to
N×d can stand in) → mean and covariance (N − 1) in float64 → Fréchet distance.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn
from tqdm import tqdm

from betavae.fileio import atomic_path
from betavae.metrics.inception import INPUT_SIZE, cache_root, file_sha256, find_weights, load_inception

RESIZE_FILTER = "bilinear to 299x299 (torch F.interpolate, align_corners=False, no antialias), then 2x-1 — as pytorch-fid"
MIN_RECOMMENDED_SAMPLES = 2048
_CACHE_FORMAT = 1


# --------------------------------------------------------------------------- features


def preprocess(x01: torch.Tensor) -> torch.Tensor:
    """Images ``(N, 1|3, H, W)`` in [0, 1] → ``(N, 3, 299, 299)`` in [−1, 1], exactly as pytorch-fid."""
    if x01.ndim != 4 or x01.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1 or 3, H, W) images, got shape {tuple(x01.shape)}")
    x = x01.float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


@dataclass
class FeatureExtractor:
    """A feature network and what identifies it: ``identity`` goes into cache keys, ``record`` into reports."""

    network: nn.Module
    identity: str
    batch_size: int = 50
    device: str | torch.device = "cpu"
    channels_last: bool = True
    progress: bool = True
    record: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.network = self.network.eval().to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def features(self, batches: Iterable[torch.Tensor], total: int, desc: str = "FID features") -> np.ndarray:
        """Runs image batches (float [0, 1], any batch size) through the network → float64 ``(N, d)``."""
        rows = []
        with tqdm(total=total, desc=desc, unit="img", disable=not self.progress, dynamic_ncols=True) as bar:
            for batch in _rebatch(batches, self.batch_size):
                x = preprocess(batch.to(self.device))
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = self.network(x)
                if out.ndim != 2 or out.shape[0] != len(batch):
                    raise ValueError(f"feature network returned {tuple(out.shape)} for {len(batch)} images")
                rows.append(out.double().cpu().numpy())
                bar.update(len(batch))
        return np.concatenate(rows) if rows else np.zeros((0, 0))


def _rebatch(batches: Iterable[torch.Tensor], size: int) -> Iterator[torch.Tensor]:
    """Re-chunks a stream of image batches into batches of ``size`` (the last one smaller)."""
    pending: list[torch.Tensor] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        while count >= size:
            joined = torch.cat(pending)
            yield joined[:size]
            pending, count = [joined[size:]], count - size
    if count:
        yield torch.cat(pending)


def inception_extractor(weights: str | Path | None = None, batch_size: int = 50, device: str = "cpu",
                        progress: bool = True) -> FeatureExtractor:
    """The FID Inception-v3 (weights located by :func:`~betavae.metrics.inception.find_weights`), fp32, channels_last."""
    located = find_weights(weights)
    digest = file_sha256(located.path)
    record = {"path": str(located.path), "format": located.format, "found_via": located.source, "sha256": digest,
              "network": "Inception-v3 pool3 (2048-d), TF 2015-12-05 weights, eager re-implementation, fp32"}
    return FeatureExtractor(load_inception(located), f"fid-inception-v3:{digest}", batch_size, device,
                            channels_last=True, progress=progress, record=record)


def uint8_batches(images: np.ndarray, indices: np.ndarray, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """uint8 ``(N, H, W, C)`` rows at ``indices`` as float ``(B, C, H, W)`` batches in [0, 1]."""
    for start in range(0, len(indices), batch_size):
        chunk = np.ascontiguousarray(images[np.sort(indices[start:start + batch_size])])
        yield torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div_(255.0)


# --------------------------------------------------------------------------- statistics and distances


@dataclass
class FeatureStats:
    """Mean ``(d,)`` and covariance ``(d, d)`` (N − 1) of ``n`` feature rows, float64."""

    mean: np.ndarray
    cov: np.ndarray
    n: int

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, dtype=np.float64)
        if len(features) < 2:
            raise ValueError(f"statistics need at least 2 feature rows, got {len(features)}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½ with pytorch-fid's numerical safeguards.

    If the matrix square root is not finite, ``eps``·I is added to both covariances and it is
    retried; an imaginary part is dropped only if the diagonal's is below 1e-3, else ValueError.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: mean {mu1.shape} vs {mu2.shape}, covariance {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular product of covariances; adding {eps} to the diagonals", stacklevel=2)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag)):.3g} in the matrix square root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID of two feature statistics; warns when either rests on fewer than 2,048 samples."""
    if min(a.n, b.n) < MIN_RECOMMENDED_SAMPLES:
        warnings.warn(
            f"FID from {a.n} and {b.n} samples: below {MIN_RECOMMENDED_SAMPLES} the covariance is rank-deficient "
            "and FID is biased upwards; compare only at equal N against the same reference set",
            stacklevel=2,
        )
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def kid(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with kernel (xᵀy/d + 1)³.

    Averaged over ``subsets`` random subsets of ``min(subset_size, len(f1), len(f2))`` rows drawn
    without replacement from each set; returns (mean, standard deviation) over the subsets.
    """
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    # Kernel matrices of the whole sets, when they fit, are cheaper than 3 per subset.
    whole = max(len(f1), len(f2)) <= _KID_WHOLE_KERNEL_ROWS
    if whole:
        k_11, k_22, k_12 = _kernel(f1, f1), _kernel(f2, f2), _kernel(f1, f2)
    values = []
    for _ in range(subsets):
        i, j = rng.choice(len(f1), m, replace=False), rng.choice(len(f2), m, replace=False)
        if whole:
            kernels = k_11[np.ix_(i, i)], k_22[np.ix_(j, j)], k_12[np.ix_(i, j)]
        else:
            kernels = _kernel(f1[i], f1[i]), _kernel(f2[j], f2[j]), _kernel(f1[i], f2[j])
        values.append(_mmd2_unbiased(*kernels))
    return float(np.mean(values)), float(np.std(values))


_KID_WHOLE_KERNEL_ROWS = 6000  # n² float64 entries: about 290 MB per kernel matrix at this size


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / m**2)


# --------------------------------------------------------------------------- cached dataset statistics


def fid_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder of cached statistics: ``cache_dir`` if given, else ``$BETAVAE_CACHE/fid``, else ``~/.cache/betavae/fid``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "fid"


@dataclass
class ReferenceFeatures:
    """Statistics (and the raw features, for KID) of a reference image set, and whether they came from the cache."""

    stats: FeatureStats
    features: np.ndarray
    from_cache: bool
    cache_file: Path


def reference_key(fingerprint: str, indices: np.ndarray, extractor_identity: str) -> dict:
    """What identifies a reference set's features: data, chosen rows, network, preprocessing."""
    indices = np.sort(np.asarray(indices, dtype=np.int64))
    return {
        "format": _CACHE_FORMAT,
        "data_fingerprint": fingerprint,
        "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
        "n": int(len(indices)),
        "network": extractor_identity,
        "resize_filter": RESIZE_FILTER,
    }


def cached_reference(key: dict, compute: Callable[[], np.ndarray],
                     cache_dir: str | Path | None = None) -> ReferenceFeatures:
    """Loads the reference features named by ``key`` from the cache, or computes and stores them atomically."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = fid_cache_dir(cache_dir) / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                if json.loads(str(stored["key"])) == key:
                    features = stored["features"].astype(np.float64)
                    stats = FeatureStats(stored["mean"], stored["cov"], int(stored["n"]))
                    return ReferenceFeatures(stats, features, True, path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign file: recompute and replace it
    features = compute()
    stats = FeatureStats.of(features)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, key=json.dumps(key, sort_keys=True), features=features.astype(np.float32),
                 mean=stats.mean, cov=stats.cov, n=stats.n)
    return ReferenceFeatures(stats, features, False, path)
