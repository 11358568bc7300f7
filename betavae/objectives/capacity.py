"""Capacity-controlled β-VAE (Burgess et al. 2018): recon + γ·|KL − C|, C rising linearly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from betavae.model import VAEOutput
from betavae.objectives.base import Objective, ObjectiveConfig, ObjectiveResult, kl_per_dim, reconstruction_loss


class CapacitySettings(ObjectiveConfig):
    """Burgess et al. 2018: recon + γ·|KL − C|, C rising linearly to capacity_max over capacity_steps."""

    name: Literal["capacity"]
    gamma: float = Field(1000.0, ge=0)
    capacity_max: float = Field(25.0, ge=0, description="nats")
    capacity_steps: int = Field(100_000, gt=0, description="training steps to reach capacity_max")


@dataclass
class CapacityVAE(Objective):
    """recon + γ·|KL − C|, C = min(C_max, C_max·step/T).

    ``step`` counts training steps only (validation calls pass ``training=False``) and is part of
    the checkpoint through :meth:`state_dict`.
    """

    gamma: float
    capacity_max: float
    capacity_steps: int
    reconstruction: str = "bernoulli"
    step: int = 0
    Settings = CapacitySettings
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
