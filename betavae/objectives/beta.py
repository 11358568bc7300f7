"""β-VAE (Higgins et al. 2017): recon + β·w·KL, with w the study's "KLD weight"."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from betavae.model import VAEOutput
from betavae.objectives.base import Objective, ObjectiveConfig, ObjectiveResult, kl_per_dim, reconstruction_loss


class BetaSettings(ObjectiveConfig):
    """Higgins et al. 2017: recon + β·w·KL (w is the study's "KLD weight")."""

    name: Literal["beta"] = "beta"
    beta: float = Field(4.0, ge=0)
    kld_weight: float = Field(1.0, ge=0, description="the study's w; 0.0025 with mse_mean")


@dataclass
class BetaVAE(Objective):
    """recon + β·w·KL."""

    beta: float
    kld_weight: float = 1.0
    reconstruction: str = "bernoulli"
    Settings = BetaSettings
    TERMS = ("recon", "kl")

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        recon = reconstruction_loss(self.reconstruction, x, output)
        per_dim = kl_per_dim(output.posterior)
        kl = per_dim.sum()
        return ObjectiveResult(recon + self.beta * self.kld_weight * kl, {"recon": recon, "kl": kl}, per_dim)
