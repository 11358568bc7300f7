"""What a headline number is: a :class:`Score` names it, says how to read it and which way is better.

Each evaluation stage declares its scores beside its implementation (reconstruction's per-image
metrics, sample quality, the disentanglement metrics, the latent ranking);
:mod:`betavae.evaluation.headline` gathers them into one registry and the typed headline of
``eval/metrics.json``, which the run page, the study's tables, findings and live table read.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    """One headline number: its key in ``metrics.json``, a short label for tables, what it is."""

    key: str
    label: str
    description: str
    better: int = 0  # +1: higher is better, -1: lower is better, 0: a count (not ranked)
    digits: int = 3
    integer: bool = False

    def format(self, value: float | None) -> str:
        """The value as tables show it (``—`` when missing)."""
        if value is None:
            return "—"
        return str(int(value)) if self.integer else f"{value:.{self.digits}f}"


SAMPLE_QUALITY_SCORES = (
    Score("fid", "FID", "Fréchet Inception distance of prior samples to the training split", better=-1, digits=2),
    Score("fid_n_samples", "N samples", "prior samples of FID (and KID)", integer=True),
    Score("fid_n_reference", "N reference", "training images of FID's reference statistics", integer=True),
    Score("kid", "KID", "kernel Inception distance (mean over subsets)", better=-1, digits=4),
    Score("kid_std", "KID std", "standard deviation of KID over its subsets", digits=4),
    Score("precision", "precision", "improved precision (Kynkäänniemi et al. 2019, k = 3) of prior samples on the "
          "FID features: share of samples inside the training images' k-NN balls", better=1),
    Score("recall", "recall", "improved recall (k = 3) of prior samples: share of training images inside the "
          "samples' k-NN balls", better=1),
    Score("density", "density", "density (Naeem et al. 2020, k = 5) of prior samples: ≈ 1 for samples like the "
          "training images, above 1 where samples crowd dense regions (not ranked)"),
    Score("coverage", "coverage", "coverage (Naeem et al. 2020, k = 5): share of training images whose k-NN ball "
          "holds a prior sample", better=1),
)
LATENT_SCORES = (
    Score("active_dims", "active dims", "latent dimensions with mean KL above the active threshold "
          "(betavae.latents.ACTIVE_KL_NATS) on the ranking sample", integer=True),
)
