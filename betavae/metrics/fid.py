"""FID and KID between two image sets, with cached dataset statistics.

The pipeline (pytorch-fid's): images in [0, 1] → grayscale repeated to 3 channels → bilinear
resize to 299×299 (``F.interpolate``, ``align_corners=False``, no antialiasing) → ``2x − 1``
→ a feature network (the FID Inception-v3 by default, any ``nn.Module`` mapping N×3×299×299 to
N×d can stand in; fp32, or opt-in bf16 autocast where bf16 is native) → mean and covariance
(N − 1) in float64 → Fréchet distance, its Tr (Σ₁Σ₂)^½ from symmetric eigenvalues (or an N×N
matrix's singular values) instead of pytorch-fid's matrix square root (:func:`frechet_distance`).
"""
from __future__ import annotations

import contextlib
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
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits
from torch import nn
from tqdm import tqdm

from betavae import hardware
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


PRECISIONS = ("fp32", "bf16")


def _cpu_has_native_bf16() -> bool:
    """:func:`betavae.hardware.cpu_bf16_native`, the check training's ``precision: auto`` uses too:
    AVX-512-BF16 or AMX-BF16 among the CPU's flags and bf16 support in this torch's oneDNN. (oneDNN's
    own ``_is_mkldnn_bf16_supported()`` is also true on plain AVX-512, where bf16 is emulated.)"""
    return hardware.cpu_bf16_native()


def precision_refusal(precision: str, device: str | torch.device = "cpu") -> str | None:
    """Why ``precision`` cannot run the feature network on ``device`` (None when it can).

    fp32 runs anywhere. bf16 (``torch.autocast``) only where it is native: on CUDA, and on a CPU
    with AVX-512-BF16 or AMX-BF16 (:func:`betavae.hardware.cpu_bf16_native`, the same check as
    training's ``precision: auto``); elsewhere bf16 is emulated (the FID Inception measured 2.9×
    slower than fp32 on an AVX2-only CPU), so it is refused there.
    """
    if precision not in PRECISIONS:
        return f"FID precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
    kind = torch.device(device).type
    if precision == "fp32" or kind == "cuda":
        return None
    if kind != "cpu":
        return f"bf16 FID features run on CUDA or a CPU with native bf16, not on {kind}; use fp32"
    if not _cpu_has_native_bf16():
        return ("bf16 FID features refused: this CPU has no native bf16 (betavae.hardware: no "
                "AVX-512-BF16/AMX-BF16 among its flags, or this torch's oneDNN does not run bf16 on it), so "
                "oneDNN would emulate bf16: the FID Inception ran 2.9× slower than in fp32 on an AVX2-only "
                "AMD EPYC (bench/fid_features.py); use fp32 (the default)")
    return None


@dataclass
class FeatureExtractor:
    """A feature network and what identifies it: ``identity`` goes into cache keys, ``record`` into reports.

    ``precision`` is ``"fp32"`` (default) or ``"bf16"``: the network runs under ``torch.autocast``
    in bfloat16 (features still come back as float64), allowed only where bf16 is native
    (:func:`precision_refusal`; ValueError otherwise). A precision other than fp32 is appended to
    ``identity`` (``…:bf16``), so cached reference features of different precisions never mix;
    fp32 identities are unchanged, so statistics cached before precision existed stay valid.
    """

    network: nn.Module
    identity: str
    batch_size: int = 50
    device: str | torch.device = "cpu"
    channels_last: bool = True
    progress: bool = True
    record: dict = field(default_factory=dict)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        refusal = precision_refusal(self.precision, self.device)
        if refusal:
            raise ValueError(refusal)
        if self.precision != "fp32" and not self.identity.endswith(f":{self.precision}"):
            self.identity = f"{self.identity}:{self.precision}"
        self.network = self.network.eval().to(self.device)
        if self.channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def features(self, batches: Iterable[torch.Tensor], total: int, desc: str = "FID features") -> np.ndarray:
        """Runs image batches (float [0, 1], any batch size) through the network → float64 ``(N, d)``."""
        rows = []
        autocast = (torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())  # fp32: the network runs exactly as it always did
        with tqdm(total=total, desc=desc, unit="img", disable=not self.progress, dynamic_ncols=True) as bar:
            for batch in _rebatch(batches, self.batch_size):
                x = preprocess(batch.to(self.device))
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast:
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
                        progress: bool = True, precision: str = "fp32") -> FeatureExtractor:
    """The FID Inception-v3 (weights located by :func:`~betavae.metrics.inception.find_weights`), channels_last.

    ``precision``: ``"fp32"`` (default; features equal the TorchScript's to ~1e-6) or ``"bf16"``
    (``torch.autocast`` bfloat16, opt-in, on CUDA or a CPU with native bf16 only — refused with
    ValueError elsewhere, before the weights are read). The precision is part of the extractor's
    identity (``fid-inception-v3:<sha256>`` for fp32, ``…:bf16``) and of its record.
    """
    refusal = precision_refusal(precision, device)
    if refusal:
        raise ValueError(refusal)
    located = find_weights(weights)
    digest = file_sha256(located.path)
    arithmetic = "fp32" if precision == "fp32" else f"{precision} (torch.autocast)"
    record = {"path": str(located.path), "format": located.format, "found_via": located.source, "sha256": digest,
              "network": f"Inception-v3 pool3 (2048-d), TF 2015-12-05 weights, eager re-implementation, {arithmetic}",
              "precision": precision}
    return FeatureExtractor(load_inception(located), f"fid-inception-v3:{digest}", batch_size, device,
                            channels_last=True, progress=progress, record=record, precision=precision)


def uint8_batches(images: np.ndarray, indices: np.ndarray, batch_size: int = 250) -> Iterator[torch.Tensor]:
    """uint8 ``(N, H, W, C)`` rows at ``indices`` as float ``(B, C, H, W)`` batches in [0, 1]."""
    for start in range(0, len(indices), batch_size):
        chunk = np.ascontiguousarray(images[np.sort(indices[start:start + batch_size])])
        yield torch.from_numpy(chunk).permute(0, 3, 1, 2).float().div_(255.0)


# --------------------------------------------------------------------------- statistics and distances


@dataclass
class FeatureStats:
    """Mean ``(d,)`` and covariance ``(d, d)`` (N − 1) of ``n`` feature rows, float64.

    ``features`` keeps the rows themselves (float64, not centred) when there are fewer of them
    than dimensions (``n < d``): then the Fréchet distance takes its N×N route, which needs them
    (:func:`frechet_distance`). With ``n ≥ d`` it is ``None``: (μ, Σ) are all the distance needs.
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int
    features: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, dtype=np.float64)
        if len(features) < 2:
            raise ValueError(f"statistics need at least 2 feature rows, got {len(features)}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features), _rows_if_few(features))


def _rows_if_few(features: np.ndarray) -> np.ndarray | None:
    """The rows when fewer than the dimension (what the N×N route needs), else None."""
    return features if features.ndim == 2 and len(features) < features.shape[1] else None


# Negative eigenvalues of the (PSD) product down to −NEGATIVE_TOLERANCE·‖Σ₁‖_F‖Σ₂‖_F are round-off
# (about d·2e-16 relative) and are clipped to 0; a more negative one means a covariance is not PSD.
NEGATIVE_TOLERANCE = 1e-9


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, *, features1: np.ndarray | None = None,
                     features2: np.ndarray | None = None, progress: bool = False) -> float:
    """‖μ₁ − μ₂‖² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁Σ₂)^½, in float64, without a matrix square root.

    Only the trace of (Σ₁Σ₂)^½ is needed, and it is Σᵢ √λᵢ over the eigenvalues of Σ₁Σ₂, which
    are real and ≥ 0. Two routes (:func:`trace_sqrt_product`):

    * **eigen route** (from μ, Σ alone): Σ₁ = L Lᵀ by Cholesky; the eigenvalues of Σ₁Σ₂ are those
      of the symmetric PSD d×d matrix Lᵀ Σ₂ L (formed by LAPACK ``dsygst``), from
      ``scipy.linalg.eigh(eigvals_only=True)`` (LAPACK dsyev). The Cholesky factor stands in for
      √Σ₁ (L = √Σ₁ Q for an orthogonal Q, so Lᵀ Σ₂ L and √Σ₁ Σ₂ √Σ₁ have the same eigenvalues) and
      costs a fraction of the eigendecomposition √Σ₁ would need. If Σ₁ is singular (its Cholesky
      fails), pivoted Cholesky (LAPACK ``dpstrf``) stops at each covariance's numerical rank,
      Σᵢ = AᵢAᵢᵀ with Aᵢ d×rᵢ, and the nonzero eigenvalues are the squared singular values of the
      r₁×r₂ matrix A₁ᵀA₂: no null space is left whose round-off would be square-rooted.
    * **N×N route**, when a side has fewer feature rows than dimensions (``n < d``) and its rows
      are given (``features1``/``features2``, as :class:`FeatureStats` keeps them): with X the
      centred rows, Σ = XᵀX/(n − 1), so the nonzero eigenvalues of Σ₁Σ₂ are those of the n₁×n₁
      matrix X₁ Σ₂ X₁ᵀ/(n₁ − 1); with both sides small, Tr (Σ₁Σ₂)^½ is the sum of the singular
      values of the n₁×n₂ matrix X₁X₂ᵀ/√((n₁ − 1)(n₂ − 1)) (√ of its smaller Gram matrix's
      eigenvalues). The rows must be those Σ was computed from (their scatter's trace is checked
      against Tr Σ).

    pytorch-fid's safeguards around ``scipy.linalg.sqrtm(Σ₁Σ₂)``, and what replaced them:

    * *non-finite square root → add ``eps``·I to both covariances and retry*: a singular product
      no longer fails (its zero eigenvalues just add 0), so this now guards only the
      eigendecomposition itself: if it does not converge or returns non-finite values, ``eps``·I
      is added to both covariances and the eigen route is retried, with the same warning.
      Non-finite means or covariances raise ValueError at once.
    * *imaginary part dropped if the diagonal's is below 1e-3, else ValueError*: eigenvalues of a
      symmetric matrix are real; negative ones from round-off (down to −1e-9·‖Σ₁‖_F‖Σ₂‖_F) are
      clipped to 0 — the real part of their square root, as dropping the imaginary part did — and
      a more negative eigenvalue, or a pivoted Cholesky that leaves more than 1e-6·‖Σ‖_F of a
      covariance out, which only a covariance that is not positive semi-definite gives, raises
      ValueError.

    ``progress`` shows a tqdm bar over the steps (d = 2048 takes seconds on a 2-core CPU).
    Agrees with the sqrtm formula to ~1e-7 relative or better (tests/test_fid.py, bench/fid_sqrtm.py).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(mu, dtype=np.float64)) for mu in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(sigma, dtype=np.float64)) for sigma in (sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: mean {mu1.shape} vs {mu2.shape}, covariance {sigma1.shape} vs {sigma2.shape}")
    if sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"covariance {sigma1.shape} does not match mean {mu1.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"FID: {name} has non-finite entries")
    diff = mu1 - mu2
    trace_sqrt = trace_sqrt_product(sigma1, sigma2, features1, features2, eps=eps, progress=progress)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, features1: np.ndarray | None = None,
                       features2: np.ndarray | None = None, eps: float = 1e-6, progress: bool = False) -> float:
    """Tr (Σ₁Σ₂)^½ for PSD Σ₁, Σ₂ — the N×N route where rows are given and fewer than d, else the eigen route.

    See :func:`frechet_distance` for both routes and the safeguards.
    """
    x1 = _centred_rows(features1, sigma1, "features1")
    x2 = _centred_rows(features2, sigma2, "features2")
    tolerance = NEGATIVE_TOLERANCE * np.linalg.norm(sigma1) * np.linalg.norm(sigma2)
    try:
        if x1 is not None and x2 is not None:
            return _trace_sqrt_cross(x1, x2, progress)
        if x1 is not None or x2 is not None:
            small, other = (x1, sigma2) if x1 is not None else (x2, sigma1)
            return _trace_sqrt_one_side(small, other, tolerance, progress)
        return _trace_sqrt_eigen(sigma1, sigma2, tolerance, progress)
    except np.linalg.LinAlgError as error:
        warnings.warn(f"FID: eigendecomposition failed ({error}); adding {eps} to the diagonals", stacklevel=3)
        offset = np.eye(sigma1.shape[0]) * eps
        return _trace_sqrt_eigen(sigma1 + offset, sigma2 + offset, tolerance, progress)


def _centred_rows(features: np.ndarray | None, sigma: np.ndarray, name: str) -> np.ndarray | None:
    """Centred rows for the N×N route (None when not given or not fewer than d), checked against Σ."""
    if features is None:
        return None
    features = np.asarray(features, dtype=np.float64)
    n, dim = len(features), sigma.shape[0]
    if features.ndim != 2 or features.shape[1] != dim or n < 2:
        raise ValueError(f"{name} of shape {features.shape} for a {dim}-d covariance")
    if n >= dim:
        return None  # the eigen route on Σ is as cheap
    centred = features - features.mean(axis=0)
    scatter, trace = np.einsum("ij,ij->", centred, centred) / (n - 1), np.trace(sigma)
    if not np.isclose(scatter, trace, rtol=1e-6, atol=1e-12):
        raise ValueError(f"{name} are not the rows of its covariance (their trace is {scatter:.6g}, Σ's {trace:.6g})")
    return centred


def _sum_sqrt(eigenvalues: np.ndarray, tolerance: float) -> float:
    """Σ √λ over eigenvalues of a PSD matrix: round-off negatives clipped to 0, real negatives refused."""
    if not np.isfinite(eigenvalues).all():
        raise np.linalg.LinAlgError("non-finite eigenvalues")
    lowest = float(eigenvalues.min(initial=0.0))
    if lowest < -tolerance:
        raise ValueError(f"FID: eigenvalue {lowest:.3g} of Σ₁Σ₂ is below round-off ({-tolerance:.3g}): "
                         "a covariance is not positive semi-definite")
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


# LAPACK's factorisations, dsygst and eigensolvers run on one BLAS thread. Their panels and the
# tridiagonal reduction are long chains of small memory-bound BLAS-2 calls: more threads gain
# little, and where the cores are busy OpenBLAS's per-call thread hand-offs made them 3–30× slower
# (2-core AMD EPYC under load: dsyev of 2048² 1.5–2.4 s on one thread against 6–28 s on two; dsygst
# 0.6–0.7 s against 3–19 s; two Cholesky factorisations ~0.4 s against 3.5 s). Matrix products
# (gemm) keep every thread.
def _one_blas_thread() -> threadpool_limits:
    return threadpool_limits(limits=1, user_api="blas")


def _eigvalsh(matrix: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric matrix (its lower triangle), overwriting it; LAPACK dsyev."""
    with _one_blas_thread():
        return linalg.eigh(matrix, eigvals_only=True, driver="ev", overwrite_a=True, check_finite=False)


def _steps(total: int, progress: bool, dim: int) -> tqdm:
    return tqdm(total=total, desc=f"FID trace term ({dim}-d)", unit="step", disable=not progress,
                dynamic_ncols=True, leave=False)


def _trace_sqrt_eigen(sigma1: np.ndarray, sigma2: np.ndarray, tolerance: float, progress: bool) -> float:
    """Eigen route: Σ₁ = L Lᵀ by Cholesky, then Σ √λ over the eigenvalues of Lᵀ Σ₂ L (d×d, symmetric
    PSD; LAPACK dsygst forms it in half the flops of two triangular products). If Σ₁ is singular
    (its Cholesky fails): pivoted Cholesky Σᵢ[pᵢ, pᵢ] = Lᵢ Lᵢᵀ with Lᵢ d×rᵢ, rᵢ the numerical rank,
    and the singular values of A₁ᵀA₂ (r₁×r₂, Aᵢ = Lᵢ with its rows put back in order), whose squares
    are the nonzero eigenvalues of Σ₁Σ₂ — no null space left to round off. A singular Σ₂ alone goes
    the first way: its null space gives eigenvalues of round-off size, clipped (~1e-8 of FID).
    """
    dim = sigma1.shape[0]
    with _steps(3, progress, dim) as bar:
        bar.set_postfix_str("Cholesky of Σ1")
        lower = _cholesky(sigma1)
        bar.update()
        if lower is not None:
            bar.set_postfix_str("Lᵀ Σ2 L")
            with _one_blas_thread():
                inner, info = lapack.dsygst(sigma2, lower, itype=2, lower=1)
            if info != 0:
                raise ValueError(f"dsygst: illegal argument {-info}")
            bar.update()
            bar.set_postfix_str(f"eigenvalues ({dim}×{dim})")
            eigenvalues = _eigvalsh(inner)
            bar.update()
            return _sum_sqrt(eigenvalues, tolerance)
        bar.set_postfix_str("pivoted Cholesky of Σ1, Σ2")
        factor1, factor2 = _psd_factor(sigma1, "sigma1"), _psd_factor(sigma2, "sigma2")
        cross = factor1.T @ factor2
        bar.update()
        bar.set_postfix_str(f"singular values ({factor1.shape[1]}×{factor2.shape[1]})")
        total = _sum_singular_values(cross)
        bar.update()
    return total


def _cholesky(sigma: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor (LAPACK dpotrf), or None when Σ is not numerically positive definite."""
    with _one_blas_thread():
        factor, info = lapack.dpotrf(sigma, lower=1, clean=1)
    return factor if info == 0 else None


def _psd_factor(sigma: np.ndarray, name: str) -> np.ndarray:
    """A (d×r) with Σ = A Aᵀ, r = numerical rank: pivoted Cholesky (LAPACK dpstrf, default tolerance)."""
    dim = sigma.shape[0]
    with _one_blas_thread():
        factor, pivots, rank, info = lapack.dpstrf(sigma, lower=1)
    if info < 0:
        raise ValueError(f"dpstrf: illegal argument {-info}")
    lower, pivots = np.tril(factor[:, :rank]), pivots - 1
    if rank < dim:  # what the factor leaves out: entries ≤ dpstrf's tolerance (~d·eps·max Σᵢᵢ) if Σ is PSD
        rest = pivots[rank:]
        left_out = np.linalg.norm(sigma[np.ix_(rest, rest)] - lower[rank:] @ lower[rank:].T)
        if left_out > 1e-6 * np.linalg.norm(sigma):
            raise ValueError(f"FID: {name} is not positive semi-definite (its pivoted Cholesky factor leaves "
                             f"{left_out:.3g} out, of ‖{name}‖ = {np.linalg.norm(sigma):.3g})")
    unpermuted = np.empty_like(lower)
    unpermuted[pivots] = lower
    return unpermuted


def _sum_singular_values(matrix: np.ndarray) -> float:
    """Σ σᵢ(M) as Σ √λᵢ(M Mᵀ) over the smaller Gram matrix: eigenvalues (dsyev) are several times
    faster than an SVD, and squaring costs only singular values below √eps·σ_max (~1e-8 of it)."""
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    eigenvalues = _eigvalsh(gram)
    if not np.isfinite(eigenvalues).all():
        raise np.linalg.LinAlgError("non-finite eigenvalues")
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())  # a Gram matrix: negatives are round-off


def _trace_sqrt_one_side(x: np.ndarray, sigma_other: np.ndarray, tolerance: float, progress: bool) -> float:
    """N×N route with one small side: eigenvalues of X Σ_other Xᵀ / (n − 1), n×n."""
    n = len(x)
    with _steps(2, progress, sigma_other.shape[0]) as bar:
        bar.set_postfix_str(f"{n}×{n} product")
        inner = (x @ sigma_other) @ x.T / (n - 1)
        bar.update()
        bar.set_postfix_str(f"eigenvalues ({n}×{n})")
        eigenvalues = _eigvalsh(inner)
        bar.update()
    return _sum_sqrt(eigenvalues, tolerance)


def _trace_sqrt_cross(x1: np.ndarray, x2: np.ndarray, progress: bool) -> float:
    """N×N route with both sides small: the nuclear norm of X₁X₂ᵀ / √((n₁ − 1)(n₂ − 1))."""
    n1, n2 = len(x1), len(x2)
    with _steps(2, progress, x1.shape[1]) as bar:
        bar.set_postfix_str(f"{n1}×{n2} cross product")
        cross = x1 @ x2.T
        bar.update()
        bar.set_postfix_str("singular values")
        total = _sum_singular_values(cross)
        bar.update()
    return total / np.sqrt((n1 - 1) * (n2 - 1))


def fid_from_stats(a: FeatureStats, b: FeatureStats, progress: bool = False) -> float:
    """FID of two feature statistics (the N×N route where they keep rows); warns below 2,048 samples a side."""
    if min(a.n, b.n) < MIN_RECOMMENDED_SAMPLES:
        warnings.warn(
            f"FID from {a.n} and {b.n} samples: below {MIN_RECOMMENDED_SAMPLES} the covariance is rank-deficient "
            "and FID is biased upwards; compare only at equal N against the same reference set",
            stacklevel=2,
        )
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, features1=a.features, features2=b.features,
                            progress=progress)


def kid(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, progress: bool = False) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with kernel (xᵀy/d + 1)³.

    Averaged over ``subsets`` random subsets of ``min(subset_size, len(f1), len(f2))`` rows drawn
    without replacement from each set; returns (mean, standard deviation) over the subsets.
    ``progress`` shows a tqdm bar (over the three kernel matrices, or the subsets for large sets).
    """
    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs at least 2 rows in each set, got {len(f1)} and {len(f2)}")
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(len(f1), m, replace=False), rng.choice(len(f2), m, replace=False)) for _ in range(subsets)]
    # Kernel matrices of the whole sets, when they fit, are cheaper than 3 per subset; a subset's
    # kernel sums are then wᵀKw with w its 0/1 row indicator, for all subsets in one product.
    whole = max(len(f1), len(f2)) <= _KID_WHOLE_KERNEL_ROWS
    with tqdm(total=3 if whole else subsets, desc="KID", unit="kernel" if whole else "subset",
              disable=not progress, dynamic_ncols=True, leave=False) as bar:
        if whole:
            values = _kid_whole(f1, f2, draws, m, bar)
        else:
            values = []
            for i, j in draws:
                values.append(_mmd2_unbiased(_kernel(f1[i], f1[i]), _kernel(f2[j], f2[j]), _kernel(f1[i], f2[j])))
                bar.update()
    return float(np.mean(values)), float(np.std(values))


def _kid_whole(f1: np.ndarray, f2: np.ndarray, draws: list, m: int, bar: tqdm) -> np.ndarray:
    """Unbiased MMD² of every drawn subset from the whole sets' kernels (exact, by indicator vectors)."""
    w1, w2 = np.zeros((len(draws), len(f1))), np.zeros((len(draws), len(f2)))
    for row, (i, j) in enumerate(draws):
        w1[row, i], w2[row, j] = 1, 1
    k_11 = _kernel(f1, f1)
    within = np.einsum("sn,sn->s", w1 @ k_11, w1) - w1 @ np.diagonal(k_11)
    del k_11
    bar.update()
    k_22 = _kernel(f2, f2)
    within += np.einsum("sn,sn->s", w2 @ k_22, w2) - w2 @ np.diagonal(k_22)
    del k_22
    bar.update()
    between = np.einsum("sn,sn->s", w1 @ _kernel(f1, f2), w2)
    bar.update()
    return within / (m * (m - 1)) - 2 * between / m**2


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
    """Loads the reference features named by ``key`` from the cache, or computes and stores them atomically.

    The file holds the key, the features as float32 (lossless for the feature networks here,
    which emit float32 or bf16) and μ, Σ, n in float64; the loaded statistics keep the rows when
    fewer than the dimension, for the Fréchet distance's N×N route.
    """
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = fid_cache_dir(cache_dir) / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                if json.loads(str(stored["key"])) == key:
                    features = stored["features"].astype(np.float64)
                    stats = FeatureStats(stored["mean"], stored["cov"], int(stored["n"]), _rows_if_few(features))
                    return ReferenceFeatures(stats, features, True, path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign file: recompute and replace it
    features = compute()
    stats = FeatureStats.of(features)
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, key=json.dumps(key, sort_keys=True), features=features.astype(np.float32),
                 mean=stats.mean, cov=stats.cov, n=stats.n)
    return ReferenceFeatures(stats, features, False, path)
