"""DIP-VAE-I and DIP-VAE-II (Kumar, Sattigeri & Balakrishnan 2018): the ELBO plus a penalty that
pushes the covariance of the inferred codes towards the identity."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from betavae.model import Posterior, VAEOutput
from betavae.objectives.base import Objective, ObjectiveConfig, ObjectiveResult, kl_per_dim, reconstruction_loss

# λ_d = factor·λ_od when lambda_d is not given: the paper's "λ_d = 10·λ_od" for DIP-VAE-I and
# disentanglement_lib's lambda_d_factor (10 for I, 1 for II).
LAMBDA_D_FACTOR = {"i": 10.0, "ii": 1.0}


def covariance(values: torch.Tensor) -> torch.Tensor:
    """The batch covariance E[v vᵀ] − E[v] E[v]ᵀ (normalised by the batch size B, not B − 1).
    Elementwise rather than a matmul, so that autocast leaves it in float32."""
    centred = values - values.mean(dim=0, keepdim=True)
    return (centred[:, :, None] * centred[:, None, :]).mean(dim=0)


def dip_covariance(posterior: Posterior, kind: str) -> torch.Tensor:
    """DIP-VAE-I: Cov[μ(x)]. DIP-VAE-II: Cov_q(z)[z] = Cov[μ(x)] + E[diag σ²(x)]."""
    mean = posterior.mean.float()
    cov = covariance(mean)
    if kind == "ii":
        cov = cov + torch.diag(posterior.logvar.float().exp().mean(dim=0))
    return cov


def dip_penalties(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{i≠j} C_ij², Σ_i (C_ii − 1)²): the off-diagonal and diagonal deviations from the identity."""
    diagonal = torch.diagonal(cov)
    off = cov - torch.diag(diagonal)
    return off.pow(2).sum(), (diagonal - 1).pow(2).sum()


class DIPVAESettings(ObjectiveConfig):
    """Kumar et al. 2018: recon + KL + λ_od·Σ_{i≠j} C_ij² + λ_d·Σ_i (C_ii − 1)²."""

    name: Literal["dip_vae"]
    kind: Literal["i", "ii"] = Field("i", description="i: C = Cov[μ]; ii: C = Cov[μ] + E[diag σ²]")
    lambda_od: float = Field(10.0, ge=0, description="off-diagonal weight")
    lambda_d: float | None = Field(
        None, ge=0, description="diagonal weight; default 10·lambda_od for kind i, lambda_od for kind ii")


class DIPVAE(Objective):
    """recon + KL + λ_od·Σ_{i≠j} C_ij² + λ_d·Σ_i (C_ii − 1)², C estimated on the batch.

    Logged terms: ``recon``, ``kl`` and the unweighted ``cov_offdiag`` = Σ_{i≠j} C_ij² and
    ``cov_diag`` = Σ_i (C_ii − 1)².
    """

    Settings = DIPVAESettings
    TERMS = ("recon", "kl", "cov_offdiag", "cov_diag")

    def __init__(self, kind: str = "i", lambda_od: float = 10.0, lambda_d: float | None = None,
                 reconstruction: str = "bernoulli"):
        if kind not in LAMBDA_D_FACTOR:
            raise ValueError(f"unknown DIP-VAE kind {kind!r}; valid: i, ii")
        self.kind, self.lambda_od, self.reconstruction = kind, lambda_od, reconstruction
        self.lambda_d = LAMBDA_D_FACTOR[kind] * lambda_od if lambda_d is None else lambda_d

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        recon = reconstruction_loss(self.reconstruction, x, output)
        per_dim = kl_per_dim(output.posterior)
        kl = per_dim.sum()
        off, diag = dip_penalties(dip_covariance(output.posterior, self.kind))
        loss = recon + kl + self.lambda_od * off + self.lambda_d * diag
        return ObjectiveResult(loss, {"recon": recon, "kl": kl, "cov_offdiag": off, "cov_diag": diag}, per_dim)
