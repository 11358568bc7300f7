"""Naming latent dimensions: which factor (or binary attribute) each latent of a model captures.

* :func:`normalized_mi_matrix` — factor × latent mutual information divided by the factor's
  entropy (the discretisation of MIG), in [0, 1]; :func:`mi_heatmap` draws it.
* :func:`name_dimensions` — per latent, the factor it captures most, to label traversal rows.
* :func:`attribute_dimensions` — for ±1 attributes (CelebA's ``list_attr_celeba.txt``), the latents
  most correlated with each attribute (absolute point-biserial correlation).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from betavae.metrics.disentanglement import NUM_BINS, factor_entropies, mutual_info_matrix


def normalized_mi_matrix(codes: np.ndarray, factors: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """MI(v_k; z_j) / H(v_k), shape ``(F, D)``; a factor that takes one value gets a row of zeros."""
    mi = mutual_info_matrix(codes, factors, num_bins).T
    entropy = factor_entropies(factors)[:, None]
    return np.divide(mi, entropy, out=np.zeros_like(mi), where=entropy > 0)


def name_dimensions(normalized_mi: np.ndarray, factor_names: Sequence[str],
                    min_score: float = 0.1) -> list[dict]:
    """For each latent: the factor of highest normalised MI, its score, and a short label.

    A latent whose best score is below ``min_score`` gets ``factor`` None and label ``"—"``.
    """
    names = []
    for dim, column in enumerate(normalized_mi.T):
        best = int(np.argmax(column))
        score = float(column[best])
        captured = factor_names[best] if score >= min_score else None
        label = f"{captured} ({score:.2f})" if captured is not None else "—"
        names.append({"dim": dim, "factor": captured, "score": score, "label": label})
    return names


def mi_heatmap(normalized_mi: np.ndarray, factor_names: Sequence[str],
               title: str = "MI(factor; latent) / H(factor)") -> Figure:
    """The factor × latent matrix as a heatmap figure."""
    num_factors, num_dims = normalized_mi.shape
    figure = Figure(figsize=(max(4.0, 0.35 * num_dims + 2.5), max(2.0, 0.45 * num_factors + 1.2)))
    axes = figure.add_subplot()
    image = axes.imshow(normalized_mi, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axes.set_xticks(range(num_dims), [str(d) for d in range(num_dims)], fontsize=7)
    axes.set_yticks(range(num_factors), list(factor_names))
    axes.set_xlabel("latent dimension")
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    return figure


def attribute_correlations(codes: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Point-biserial correlation of each latent with each binary attribute, shape ``(A, D)``.

    ``attributes`` ``(N, A)`` holds two values per column (±1 or 0/1); a constant latent or
    attribute correlates 0.
    """
    codes = np.asarray(codes, dtype=np.float64)
    attributes = np.asarray(attributes, dtype=np.float64)
    centred_codes = codes - codes.mean(axis=0)
    centred_attributes = attributes - attributes.mean(axis=0)
    covariance = centred_attributes.T @ centred_codes / len(codes)
    scale = np.outer(centred_attributes.std(axis=0), centred_codes.std(axis=0))
    return np.divide(covariance, scale, out=np.zeros_like(covariance), where=scale > 0)


def attribute_dimensions(codes: np.ndarray, attributes: np.ndarray, attribute_names: Sequence[str],
                         top_k: int = 3) -> dict[str, list[dict]]:
    """For each attribute, the ``top_k`` latents of largest absolute point-biserial correlation.

    Each entry: ``dim``, ``score`` (|r|) and ``sign`` (+1 when the latent grows with the attribute).
    """
    correlations = attribute_correlations(codes, attributes)
    result = {}
    for name, row in zip(attribute_names, correlations):
        best = np.argsort(-np.abs(row), kind="stable")[:top_k]
        result[name] = [
            {"dim": int(d), "score": float(abs(row[d])), "sign": int(np.sign(row[d]))} for d in best
        ]
    return result
