"""UDR, the Unsupervised Disentanglement Ranking (Duan et al., ICLR 2020), as pure functions.

UDR needs no ground-truth factors: it scores a model by how similar its representation is to those
of other models trained with the same hyperparameters but other seeds. The idea: disentangled
representations are alike up to a permutation and sign flips of the dimensions, entangled ones
differ between seeds in arbitrary rotations.

For two models a and b whose codes come from the **same inputs**:

1. the similarity matrix ``R`` (``D_a × D_b``) between their latent dimensions: the absolute
   Spearman rank correlation (default), or the absolute coefficients of a Lasso regression (α 0.1)
   of b's standardised code on a's (disentanglement_lib's ``lasso_correlation_matrix``);
2. dimensions whose mean KL to the prior is at most ``kl_threshold`` (0.01 nats, betavae's
   ``ACTIVE_KL_NATS``) are dropped from both sides;
3. the pair's UDR (the paper's eq. 2), with ``d_a``, ``d_b`` the active dimensions left::

       UDR_ab = 1/(d_a + d_b) · [ Σ_b max_a R(a,b)² / Σ_a R(a,b)  +  Σ_a max_b R(a,b)² / Σ_b R(a,b) ]

   (a row or column of zeros contributes 0). Identical codes score 1 with Spearman; with Lasso the
   shrinkage leaves a standardised coefficient of 1 at 1 − α, so the best Lasso pair scores 0.9. disentanglement_lib averages each side separately,
   ½(mean over b + mean over a), which is the same number when d_a = d_b. A model without active
   dimensions has nothing in common with another: its pairs score 0.

A model's UDR is the median of its pairs' scores with the other models of its setting.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.stats

SIMILARITIES = ("spearman", "lasso")
LASSO_ALPHA = 0.1
KL_THRESHOLD = 0.01  # nats; betavae.latents.ACTIVE_KL_NATS (not imported: this module needs no torch)


def _standardised(codes: np.ndarray) -> np.ndarray:
    """Each column to mean 0, standard deviation 1 (a constant column stays 0)."""
    std = codes.std(axis=0)
    return (codes - codes.mean(axis=0)) / np.where(std > 0, std, 1.0)


def similarity_matrix(codes_a: np.ndarray, codes_b: np.ndarray, method: str = "spearman",
                      alpha: float = LASSO_ALPHA, random_state: int = 0) -> np.ndarray:
    """``R`` ``(D_a, D_b)``: how strongly each of a's dimensions goes with each of b's on the same inputs.

    ``spearman``: |Spearman ρ| between the columns (0 where a column is constant). ``lasso``: |coefficient|
    of a's dimension a in a Lasso (``alpha``) predicting b's dimension b, both codes standardised.
    """
    a, b = np.asarray(codes_a, dtype=np.float64), np.asarray(codes_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"need two codes (N, D_a) and (N, D_b) of the same N inputs; got {a.shape} and {b.shape}")
    if len(a) < 3:
        raise ValueError("need at least 3 inputs")
    if method == "spearman":
        ranks_a = _standardised(scipy.stats.rankdata(a, axis=0))
        ranks_b = _standardised(scipy.stats.rankdata(b, axis=0))
        return np.abs(ranks_a.T @ ranks_b / len(a))  # Pearson correlation of the ranks
    if method == "lasso":
        from sklearn.linear_model import Lasso

        model = Lasso(alpha=alpha, random_state=random_state)
        model.fit(_standardised(a), _standardised(b))
        return np.abs(np.atleast_2d(model.coef_)).T
    raise ValueError(f"unknown similarity {method!r}; choose one of {', '.join(SIMILARITIES)}")


def _relative_strength(matrix: np.ndarray, axis: int) -> np.ndarray:
    """max² / sum along ``axis`` for every line of ``matrix`` (0 for a line of zeros)."""
    total = matrix.sum(axis=axis)
    peak = matrix.max(axis=axis)
    return np.divide(peak**2, total, out=np.zeros_like(total), where=total > 0)


def udr_pair(similarity: np.ndarray, active_a: np.ndarray | None = None,
             active_b: np.ndarray | None = None) -> float:
    """The UDR of one pair from its similarity matrix ``(D_a, D_b)``; ``active_a``/``active_b`` are
    boolean masks of the dimensions kept (default: all). 0 when neither side has an active dimension."""
    matrix = np.abs(np.asarray(similarity, dtype=np.float64))
    if active_a is not None:
        matrix = matrix[np.asarray(active_a, dtype=bool), :]
    if active_b is not None:
        matrix = matrix[:, np.asarray(active_b, dtype=bool)]
    d_a, d_b = matrix.shape
    if d_a == 0 or d_b == 0:
        return 0.0
    return float((_relative_strength(matrix, 0).sum() + _relative_strength(matrix, 1).sum()) / (d_a + d_b))


def udr(codes: Sequence[np.ndarray], kl: Sequence[np.ndarray] | None = None, method: str = "spearman",
        kl_threshold: float = KL_THRESHOLD, alpha: float = LASSO_ALPHA, random_state: int = 0) -> dict:
    """UDR of every model of one setting from their codes of the same inputs.

    ``codes``: one ``(N, D_i)`` array per model (encoder means of the same N inputs, in the same
    order); ``kl``: each model's mean KL per dimension ``(D_i,)`` (None: every dimension counts).
    Returns ``model_scores`` (each model's median pair score), ``pairwise`` (``M × M``, entry
    [i][j] the UDR of the pair with R computed from i to j; the diagonal is NaN), ``active_dims``.
    Needs at least two models.
    """
    if len(codes) < 2:
        raise ValueError("UDR compares models of one setting: it needs at least 2 (seeds)")
    if kl is not None and len(kl) != len(codes):
        raise ValueError("give one KL vector per model")
    masks = [np.ones(np.shape(c)[1], dtype=bool) if kl is None else np.asarray(kl[i]) > kl_threshold
             for i, c in enumerate(codes)]
    count = len(codes)
    pairwise = np.full((count, count), np.nan)
    for i in range(count):
        for j in range(count):
            if i != j:
                if method == "spearman" and j < i:  # symmetric
                    pairwise[i, j] = pairwise[j, i]
                    continue
                similarity = similarity_matrix(codes[i], codes[j], method, alpha, random_state)
                pairwise[i, j] = udr_pair(similarity, masks[i], masks[j])
    scores = [float(np.median(np.delete(pairwise[:, i], i))) for i in range(count)]
    return {"model_scores": scores, "pairwise": pairwise.tolist(), "active_dims": [int(m.sum()) for m in masks],
            "method": method, "kl_threshold": kl_threshold, **({"alpha": alpha} if method == "lasso" else {})}
