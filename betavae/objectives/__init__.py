"""Training objectives, kept apart from the model, in a registry.

Each objective maps (x, model output) to an :class:`ObjectiveResult`: the scalar to minimise, its
named terms and the per-dimension KL, for logging. To add one: a module with its ``Settings`` and
its :class:`Objective` subclass, and one entry in :data:`OBJECTIVES` — the config, the CLI and the
conformance tests pick it up from here.
"""
from __future__ import annotations

from betavae.objectives.base import (
    RECONSTRUCTIONS,
    Objective,
    ObjectiveConfig,
    ObjectiveResult,
    kl_per_dim,
    reconstruction_loss,
)
from betavae.objectives.beta import BetaVAE
from betavae.objectives.beta_tcvae import BetaTCVAE, gaussian_log_density, log_importance_weights
from betavae.objectives.capacity import CapacityVAE
from betavae.objectives.dip_vae import DIPVAE
from betavae.objectives.factor_vae import FactorVAE

OBJECTIVES: dict[str, type[Objective]] = {
    "beta": BetaVAE,
    "capacity": CapacityVAE,
    "beta_tcvae": BetaTCVAE,
    "factor_vae": FactorVAE,
    "dip_vae": DIPVAE,
}

__all__ = [
    "OBJECTIVES", "RECONSTRUCTIONS", "BetaTCVAE", "BetaVAE", "CapacityVAE", "DIPVAE", "FactorVAE", "Objective",
    "ObjectiveConfig", "ObjectiveResult", "build_objective", "gaussian_log_density", "kl_per_dim", "log_importance_weights",
    "reconstruction_loss",
]


def build_objective(settings: ObjectiveConfig, dataset_size: int) -> Objective:
    """The objective a validated ``objective`` config section describes (``dataset_size``: training images)."""
    return OBJECTIVES[settings.name].from_config(settings, dataset_size)
