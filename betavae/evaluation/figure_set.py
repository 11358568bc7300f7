"""The figures of a run: one registry, one set of names, all under ``RUN/figures/``.

Training draws the cheap figures (``after_training``) when it finishes; ``betavae evaluate`` draws
every figure with its own options, replacing training's under the same names. The run page
(:mod:`betavae.run_page`) and the study's report show them with the captions given here. A new
figure is a draw function and one :data:`FIGURES` entry.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from betavae.data.transforms import uint8_to_unit
from betavae.evaluation.dimensions import mi_heatmap
from betavae.evaluation.disentanglement import factor_scores
from betavae.evaluation.figures import traversal_gif, traversal_sheet
from betavae.figures import (
    figure_png,
    image_grid,
    image_png,
    kl_bars,
    reconstruction_pairs,
    score_curves,
    training_curves,
)
from betavae.fileio import write_bytes
from betavae.inference import TrainedModel, load
from betavae.latents import ACTIVE_KL_NATS, LatentRanking, latent_ranking
from betavae.metrics.disentanglement import progress_bar
from betavae.runs import RunPaths, read_csv
from betavae.sampling import prior_codes

SHOWN_IMAGES = 16
# the disentanglement curves leave out DCI's completeness and informativeness (not disentanglement)
CURVE_HIDDEN_SCORES = ("dci_completeness", "dci_informativeness")


@dataclass
class FigureInputs:
    """What the figures are drawn from: the model, its stored ranking and the evaluation's choices."""

    trained: TrainedModel
    ranking: LatentRanking
    top_k: int = 8
    values: np.ndarray = field(default_factory=lambda: np.linspace(-3.0, 3.0, 7))
    seed: int = 0
    index: int = 0  # the validation image the traversals start from
    outside: np.ndarray | None = None  # uint8 outside images (``evaluate --images``)
    labels: dict[int, str] = field(default_factory=dict)  # the factor each dimension captures

    @property
    def paths(self) -> RunPaths:
        return RunPaths(Path(self.trained.run_dir))

    @property
    def top(self) -> list[int]:
        return self.ranking.top(self.top_k)

    def shown(self) -> torch.Tensor:
        return self.trained.images(self.trained.validation_sample(SHOWN_IMAGES, self.seed))

    @functools.cached_property
    def z_image(self) -> torch.Tensor:
        """μ of the validation image the traversals start from (encoded once for every figure)."""
        image = self.trained.images(np.sort(self.trained.data().val_indices)[[self.index]])
        return self.trained.encode(image).mean[0]

    def sheet(self, z: torch.Tensor, dims, scale: int = 2) -> Image.Image:
        return traversal_sheet(self.trained, z, dims, self.values, self.ranking.kl, self.labels, scale=scale)


Drawing = Image.Image | Figure | bytes | None  # bytes: a finished file (GIF); None: not for this run


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its file under ``figures/``, its caption, how to draw it, and whether training draws it."""

    file: str
    caption: str
    draw: Callable[[FigureInputs], Drawing]
    after_training: bool = False


def _reconstructions(inputs: FigureInputs) -> Image.Image:
    shown = inputs.shown()
    return reconstruction_pairs(shown, inputs.trained.reconstruct(shown), scale=2)


def _outside_reconstructions(inputs: FigureInputs) -> Image.Image | None:
    if inputs.outside is None:
        return None
    shown = uint8_to_unit(inputs.outside[:SHOWN_IMAGES])
    return reconstruction_pairs(shown, inputs.trained.reconstruct(shown), scale=2)


def _mi_heatmap(inputs: FigureInputs) -> Figure | None:
    report = inputs.paths.disentanglement
    if not report.is_file():
        return None
    content = json.loads(report.read_text())
    return mi_heatmap(np.asarray(content["normalized_mi"]), content["factor_names"])


def _factor_metric_curves(inputs: FigureInputs) -> Figure | None:
    rows = read_csv(inputs.paths.factor_log)
    if not rows:
        return None
    labels = {score.key: score.label for score in factor_scores() if score.key not in CURVE_HIDDEN_SCORES}
    points = inputs.trained.config.train.factor_metrics_points
    return score_curves(rows, labels, f"Disentanglement while training ({points:,} points a check)")


# In display order.
FIGURES: dict[str, FigureSpec] = {
    "curves": FigureSpec("curves.png", "Training curves: reconstruction loss and KL, train (smoothed) and validation",
                         lambda f: training_curves(f.paths.root), after_training=True),
    "factor_metrics": FigureSpec("factor_metrics.png", "Disentanglement scores against training steps "
                                 "(train.factor_metrics_every; the same points at every check)",
                                 _factor_metric_curves, after_training=True),
    "samples": FigureSpec("samples.png", "Random samples decoded from z ~ N(0, I)",
                          lambda f: image_grid(f.trained.sample(64, f.seed)[1], nrow=8, scale=2), after_training=True),
    "reconstructions": FigureSpec("reconstructions.png", "Validation images (odd rows) and their reconstructions "
                                  "from μ (even rows)", _reconstructions, after_training=True),
    "kl_per_dim": FigureSpec("kl_per_dim.png", "Mean KL per latent dimension on the ranking sample "
                             f"(active: above {ACTIVE_KL_NATS} nats)",
                             lambda f: kl_bars(f.ranking.kl, ACTIVE_KL_NATS), after_training=True),
    "traversals": FigureSpec("traversals.png", "The top dimensions by KL traversed from an encoded validation image",
                             lambda f: f.sheet(f.z_image, f.top), after_training=True),
    "traversals_prior": FigureSpec("traversals_prior.png", "The top dimensions traversed from a prior sample",
                                   lambda f: f.sheet(prior_codes(1, f.trained.latent_dim, f.seed)[0], f.top)),
    "traversals_all": FigureSpec("traversals_all_dims.png", "Every dimension traversed from an encoded validation image",
                                 lambda f: f.sheet(f.z_image, f.ranking.order, scale=1)),
    "traversals_gif": FigureSpec("traversals.gif", "Animated traversals of the top dimensions",
                                 lambda f: traversal_gif(f.trained, f.z_image, f.top, f.values[0], f.values[-1])),
    "reconstructions_outside": FigureSpec("reconstructions_outside.png", "Outside images (odd rows) and their "
                                          "reconstructions (even rows)", _outside_reconstructions),
    "mi_heatmap": FigureSpec("mi_heatmap.png", "Normalised mutual information between each ground-truth factor "
                             "and each latent dimension", _mi_heatmap),
}


def write_figures(inputs: FigureInputs, after_training: bool = False, progress: bool = False) -> list[Path]:
    """Draws the figures (only the ``after_training`` ones when asked) into ``figures/`` and removes
    a figure that no longer applies (outside images dropped, say); returns the written paths."""
    specs = [spec for spec in FIGURES.values() if spec.after_training or not after_training]
    written = []
    with progress_bar(progress, len(specs), "figures", "figure") as bar:
        for spec in specs:
            path = inputs.paths.figure(spec.file)
            drawing = spec.draw(inputs)
            if drawing is None:
                path.unlink(missing_ok=True)
            else:
                write_bytes(path, _encoded(drawing))
                written.append(path)
            bar.update()
    return written


def _encoded(drawing: Image.Image | Figure | bytes) -> bytes:
    if isinstance(drawing, bytes):
        return drawing
    return figure_png(drawing) if isinstance(drawing, Figure) else image_png(drawing)


def write_run_figures(run_dir: str | Path) -> list[Path]:
    """The figures training writes when it ends: the cheap ones, with the default settings."""
    trained = load(run_dir)
    return write_figures(FigureInputs(trained, latent_ranking(trained)), after_training=True)
