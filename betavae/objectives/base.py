"""What every objective shares: its result, its settings base, the KL per dimension and the
reconstruction losses (a registry: one function and one entry per kind)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from betavae.model import Posterior, VAEOutput
from betavae.strict import StrictModel


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


def _mse_mean(x: torch.Tensor, output: VAEOutput) -> torch.Tensor:
    """MSE averaged over every element (the study's choice)."""
    return F.mse_loss(output.recon.float(), x)


def _mse_sum(x: torch.Tensor, output: VAEOutput) -> torch.Tensor:
    """Per-image sum of squared errors, batch mean."""
    return F.mse_loss(output.recon.float(), x, reduction="sum") / x.shape[0]


def _bernoulli(x: torch.Tensor, output: VAEOutput) -> torch.Tensor:
    """Per-image sum of binary cross-entropy on the logits, batch mean (targets in [0, 1])."""
    return F.binary_cross_entropy_with_logits(output.logits.float(), x, reduction="sum") / x.shape[0]


RECONSTRUCTIONS: dict[str, Callable[[torch.Tensor, VAEOutput], torch.Tensor]] = {
    "mse_mean": _mse_mean,
    "mse_sum": _mse_sum,
    "bernoulli": _bernoulli,
}
Reconstruction = Literal[tuple(RECONSTRUCTIONS)]  # type: ignore[valid-type]


def reconstruction_loss(kind: str, x: torch.Tensor, output: VAEOutput) -> torch.Tensor:
    """The reconstruction term ``kind`` (a key of :data:`RECONSTRUCTIONS`)."""
    if kind not in RECONSTRUCTIONS:
        raise ValueError(f"unknown reconstruction {kind!r}; valid: {', '.join(RECONSTRUCTIONS)}")
    return RECONSTRUCTIONS[kind](x, output)


class ObjectiveConfig(StrictModel):
    """Settings every objective has; each objective's ``Settings`` adds its own and a ``name`` tag."""

    reconstruction: Reconstruction = "bernoulli"


class Objective:
    """A training objective: ``objective(x, model_output, training)`` → :class:`ObjectiveResult`.

    A subclass declares ``Settings`` (its config section, a :class:`ObjectiveConfig` with a
    ``name: Literal[...]``) and ``TERMS`` (the names of the terms it logs), and overrides
    :meth:`state_dict`/:meth:`load_state_dict` when it has state that must survive a resume.

    An objective with trained parts of its own (FactorVAE's discriminator) also overrides
    :meth:`after_step`, where it updates them, and :meth:`tensors`/:meth:`load_tensors`, which put
    their weights and optimiser state into the resumable checkpoint.
    """

    Settings: ClassVar[type[ObjectiveConfig]]
    TERMS: ClassVar[tuple[str, ...]]

    @classmethod
    def from_config(cls, settings: ObjectiveConfig, dataset_size: int) -> "Objective":
        """The objective for a validated config section (``dataset_size``: training images)."""
        return cls(**settings.model_dump(exclude={"name"}))

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """JSON-able state saved with every checkpoint (none by default)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores what :meth:`state_dict` returned."""

    def after_step(self, x: torch.Tensor, output: VAEOutput) -> None:
        """Called by the trainer after each training step's model update (outside autocast), with
        that step's batch and model output; an objective that trains parts of its own updates them
        here. It must treat ``output`` as read-only and detach what it uses. Nothing by default."""

    def tensors(self) -> dict[str, torch.Tensor]:
        """Tensor state (weights, optimiser moments, generator state) saved with every resumable
        checkpoint under ``objective.``; none by default."""
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restores what :meth:`tensors` returned; called after :meth:`load_state_dict`."""
