"""The figures every finished run gets: curves, samples, reconstructions, traversals, KL per dim."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from betavae.figures import (
    image_grid,
    plot_kl_per_dim,
    plot_training_curves,
    reconstruction_pairs,
    save_png,
)
from betavae.evaluation.figures import traversal_sheet
from betavae.inference import kl_per_dim, load, rank_dimensions
from betavae.report import write_run_index
from betavae.runs import RunPaths

TRAVERSAL_VALUES = np.linspace(-3.0, 3.0, 7)


def write_run_figures(run_dir: str | Path, top_k: int = 8, seed: int = 0) -> list[Path]:
    """Writes ``figures/*.png`` and ``index.html`` for a trained run and returns the figure paths."""
    paths = RunPaths(Path(run_dir))
    trained = load(paths.root)
    originals = trained.images(trained.validation_sample(16, seed))
    kl = kl_per_dim(trained, trained.images(trained.data().val_indices[:1024]))
    dims = rank_dimensions(kl)[:top_k]
    figures = [
        plot_training_curves(paths.root, paths.figures / "curves.png"),
        save_png(image_grid(trained.sample(64, seed)[1], nrow=8, scale=2), paths.figures / "samples.png"),
        save_png(reconstruction_pairs(originals, trained.reconstruct(originals)).resize(_double(originals)), paths.figures / "reconstructions.png"),
        save_png(traversal_sheet(trained, trained.encode(originals[:1]).mean[0], dims, TRAVERSAL_VALUES, kl),
                 paths.figures / "traversals.png"),
        plot_kl_per_dim(kl, paths.figures / "kl_per_dim.png"),
    ]
    write_run_index(paths.root)
    return figures


def _double(originals: torch.Tensor) -> tuple[int, int]:
    per_row, rows = min(8, len(originals)), -(-len(originals) // 8) * 2
    size = originals.shape[-1]
    return (2 * (per_row * (size + 2) + 2), 2 * (rows * (size + 2) + 2))
