"""Training objectives, kept apart from the model: β-VAE, capacity-controlled β-VAE and β-TCVAE.

Each objective maps (x, model output) to an :class:`ObjectiveResult`: the scalar to minimise,
its named terms and the per-dimension KL, for logging. Notation as in REFERENCE.md §1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from betavae.model import Posterior, VAEOutput


@dataclass
class ObjectiveResult:
    """The loss to minimise, its terms (scalars, named as the objective's ``TERMS``) and the
    batch-mean KL of each latent dimension."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    kl_per_dim: torch.Tensor


def kl_per_dim(posterior: Posterior) -> torch.Tensor:
    """Batch mean of KL(q(z_j|x) ‖ N(0, 1)) for each dimension j: −½(1 + log σ² − μ² − σ²)."""
    mean, logvar = posterior.mean.float(), posterior.logvar.float()
    return (-0.5 * (1 + logvar - mean.pow(2) - logvar.exp())).mean(dim=0)


def reconstruction_loss(kind: str, x: torch.Tensor, output: VAEOutput) -> torch.Tensor:
    """``mse_mean``: MSE averaged over every element (the study); ``mse_sum``: per-image sum of
    squared errors, batch mean; ``bernoulli``: per-image sum of binary cross-entropy on the logits."""
    if kind == "mse_mean":
        return F.mse_loss(output.recon.float(), x)
    if kind == "mse_sum":
        return F.mse_loss(output.recon.float(), x, reduction="sum") / x.shape[0]
    if kind == "bernoulli":
        return F.binary_cross_entropy_with_logits(output.logits.float(), x, reduction="sum") / x.shape[0]
    raise ValueError(f"unknown reconstruction {kind!r}")


@dataclass
class BetaVAE:
    """Higgins et al. 2017: recon + β·w·KL, with w the study's "KLD weight"."""

    beta: float
    kld_weight: float = 1.0
    reconstruction: str = "bernoulli"
    TERMS = ("recon", "kl")

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        recon = reconstruction_loss(self.reconstruction, x, output)
        per_dim = kl_per_dim(output.posterior)
        kl = per_dim.sum()
        return ObjectiveResult(recon + self.beta * self.kld_weight * kl, {"recon": recon, "kl": kl}, per_dim)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class CapacityVAE:
    """Burgess et al. 2018: recon + γ·|KL − C|, C = min(C_max, C_max·step/T).

    ``step`` counts training steps only (validation calls pass ``training=False``) and is part of
    the checkpoint through :meth:`state_dict`.
    """

    gamma: float
    capacity_max: float
    capacity_steps: int
    reconstruction: str = "bernoulli"
    step: int = 0
    TERMS = ("recon", "kl", "capacity")

    def capacity(self) -> float:
        return min(self.capacity_max, self.capacity_max * self.step / self.capacity_steps)

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        recon = reconstruction_loss(self.reconstruction, x, output)
        per_dim = kl_per_dim(output.posterior)
        kl = per_dim.sum()
        capacity = self.capacity()
        loss = recon + self.gamma * (kl - capacity).abs()
        if training:
            self.step += 1
        terms = {"recon": recon, "kl": kl, "capacity": torch.tensor(capacity)}
        return ObjectiveResult(loss, terms, per_dim)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(z; mean, exp(logvar))."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def log_importance_weights(batch_size: int, dataset_size: int) -> torch.Tensor:
    """log of minibatch stratified sampling weights (Chen et al. 2018, appendix C.2): row i weighs
    sample j for estimating q(z_i). Reproduces the reference code's matrix exactly, including its
    ``W[M-1, 0]`` entry, so that one row sums to 1 + (N−M)/(NM) − 1/N instead of 1."""
    n, m = dataset_size, batch_size - 1
    weights = torch.full((batch_size, batch_size), 1.0 / m)
    weights.view(-1)[:: m + 1] = 1.0 / n
    weights.view(-1)[1 :: m + 1] = (n - m) / (n * m)
    weights[m - 1, 0] = (n - m) / (n * m)
    return weights.log()


@dataclass
class BetaTCVAE:
    """Chen et al. 2018: recon + α·MI + β·TC + γ·dimension-wise KL, with log q(z) estimated on the
    minibatch by weighted (``mws``) or stratified (``mss``) sampling over a dataset of ``dataset_size``.

    ``mws`` normalises by log(N·M) exactly as the paper and its code do. That constant leaves the
    gradients alone but shifts the *logged* terms: MI by +log N, TC by +(D−1)·log N and
    dimension-wise KL by −D·log N. ``mss`` (the default) has no such offset: its TC is ≈ 0 for
    independent codes.
    """

    dataset_size: int
    alpha: float = 1.0
    beta: float = 6.0
    gamma: float = 1.0
    sampling: str = "mss"
    reconstruction: str = "bernoulli"
    TERMS = ("recon", "kl", "mi", "tc", "dim_kl")

    def decomposition(self, z: torch.Tensor, posterior: Posterior) -> dict[str, torch.Tensor]:
        """Batch estimates of index-code MI, total correlation and dimension-wise KL."""
        z, mean, logvar = z.float(), posterior.mean.float(), posterior.logvar.float()
        batch = z.shape[0]
        log_q_z_given_x = gaussian_log_density(z, mean, logvar).sum(1)
        log_p_z = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
        # pairwise[i, j, d] = log q(z_i,d | x_j)
        pairwise = gaussian_log_density(z[:, None, :], mean[None, :, :], logvar[None, :, :])
        if self.sampling == "mss":
            log_w = log_importance_weights(batch, self.dataset_size).to(z.device)
            log_q_z = torch.logsumexp(log_w + pairwise.sum(2), dim=1)
            log_prod_q_z = torch.logsumexp(log_w[:, :, None] + pairwise, dim=1).sum(1)
        else:
            log_norm = math.log(batch * self.dataset_size)
            log_q_z = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm
            log_prod_q_z = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)
        return {
            "mi": (log_q_z_given_x - log_q_z).mean(),
            "tc": (log_q_z - log_prod_q_z).mean(),
            "dim_kl": (log_prod_q_z - log_p_z).mean(),
        }

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        recon = reconstruction_loss(self.reconstruction, x, output)
        per_dim = kl_per_dim(output.posterior)
        parts = self.decomposition(output.z, output.posterior)
        loss = recon + self.alpha * parts["mi"] + self.beta * parts["tc"] + self.gamma * parts["dim_kl"]
        return ObjectiveResult(loss, {"recon": recon, "kl": per_dim.sum(), **parts}, per_dim)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


Objective = BetaVAE | CapacityVAE | BetaTCVAE


def build_objective(cfg, dataset_size: int) -> Objective:
    """The objective an ``objective`` config section describes (``dataset_size``: training images)."""
    options = cfg.model_dump(exclude={"name"})
    if cfg.name == "beta":
        return BetaVAE(**options)
    if cfg.name == "capacity":
        return CapacityVAE(**options)
    return BetaTCVAE(dataset_size=dataset_size, **options)
