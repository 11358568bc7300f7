"""FactorVAE (Kim & Mnih 2018): the ELBO plus γ·TC, with the total correlation TC = KL(q(z) ‖ Π_j q(z_j))
estimated by a discriminator that tells codes drawn from q(z) from codes whose dimensions were
shuffled independently across the batch (samples of Π_j q(z_j))."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from betavae.model import Posterior, VAEOutput
from betavae.objectives.base import Objective, ObjectiveConfig, ObjectiveResult, kl_per_dim, reconstruction_loss

REAL, PERMUTED = 0, 1  # the discriminator's two classes (logit columns)


def permute_dims(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Kim & Mnih's Algorithm 1: every column of ``z`` shuffled independently across the batch (a new
    tensor; ``z`` is left alone). The permutations come from ``generator`` (a CPU generator)."""
    order = torch.rand(z.shape, generator=generator).argsort(dim=0).to(z.device)
    return z.gather(0, order)


def build_discriminator(latent_dim: int, hidden_units: int = 1000, hidden_layers: int = 6) -> nn.Sequential:
    """The paper's MLP: ``hidden_layers`` fully connected layers of ``hidden_units`` with LeakyReLU(0.2),
    then a linear layer to 2 logits (column 0: drawn from q(z), column 1: permuted)."""
    layers: list[nn.Module] = []
    width = latent_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_units), nn.LeakyReLU(0.2)]
        width = hidden_units
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


def discriminator_tc(discriminator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The density-ratio estimate TC ≈ E_q(z)[log D(z) / (1 − D(z))] = mean of logit_real − logit_permuted,
    in float32 also under autocast (like every other term)."""
    with torch.autocast(z.device.type, enabled=False):
        logits = discriminator(z.float())
    return (logits[:, REAL] - logits[:, PERMUTED]).mean()


def discriminator_loss(discriminator: nn.Module, real: torch.Tensor, permuted: torch.Tensor) -> torch.Tensor:
    """½·[CE(D(real), real) + CE(D(permuted), permuted)]: the negative of the paper's discriminator
    objective, averaged over its 2·m inputs."""
    real_logits, permuted_logits = discriminator(real).float(), discriminator(permuted).float()
    real_target = torch.full((len(real),), REAL, dtype=torch.long, device=real.device)
    permuted_target = torch.full((len(permuted),), PERMUTED, dtype=torch.long, device=permuted.device)
    return 0.5 * (F.cross_entropy(real_logits, real_target) + F.cross_entropy(permuted_logits, permuted_target))


def _first(output: VAEOutput, n: int) -> VAEOutput:
    """The first ``n`` rows of a model output (views; nothing is copied or modified)."""
    posterior = Posterior(output.posterior.mean[:n], output.posterior.logvar[:n])
    return VAEOutput(posterior, output.z[:n], output.logits[:n], output.recon[:n])


class FactorVAESettings(ObjectiveConfig):
    """Kim & Mnih 2018: recon + KL + γ·TC, TC from a discriminator trained alongside."""

    name: Literal["factor_vae"]
    gamma: float = Field(40.0, ge=0, description="TC weight; the paper's dSprites sweep: 10–100")
    discriminator_lr: float = Field(1e-4, gt=0)
    discriminator_betas: tuple[float, float] = (0.5, 0.9)
    hidden_units: int = Field(1000, gt=0, description="discriminator width")
    hidden_layers: int = Field(6, gt=0, description="discriminator hidden layers")


class FactorVAE(Objective):
    """recon + KL + γ·TC (Kim & Mnih 2018, eq. 2 and Algorithm 2).

    A training batch of B images is split in two: the first ⌊B/2⌋ make the VAE's loss (ELBO and
    the TC estimate); in :meth:`after_step`, after the model's update, the discriminator takes one
    Adam step on the first half's codes (class "real") against the second half's codes with each
    dimension permuted across that half (class "permuted"). Both come detached from the step's
    forward pass, so the discriminator's update never reaches the encoder's gradients or graph.
    Validation (``training=False``) evaluates the ELBO and the TC estimate on the whole batch.

    The discriminator is built on first use (its input size is the latent size) from ``seed`` —
    drawn from the torch RNG when the objective is made, so it follows ``train.seed`` — without
    touching the global RNG; permutations come from a generator of its own. Its weights, Adam state
    and that generator go into every resumable checkpoint (:meth:`tensors`), so a resumed run
    continues bit for bit.
    """

    Settings = FactorVAESettings
    TERMS = ("recon", "kl", "tc")

    def __init__(self, gamma: float = 40.0, discriminator_lr: float = 1e-4,
                 discriminator_betas: tuple[float, float] = (0.5, 0.9), hidden_units: int = 1000,
                 hidden_layers: int = 6, reconstruction: str = "bernoulli", seed: int | None = None):
        self.gamma, self.reconstruction = gamma, reconstruction
        self.discriminator_lr, self.discriminator_betas = discriminator_lr, tuple(discriminator_betas)
        self.hidden_units, self.hidden_layers = hidden_units, hidden_layers
        self.seed = int(torch.randint(2**31 - 1, ()).item()) if seed is None else int(seed)
        self.updates = 0  # discriminator steps taken
        self._last_discriminator_loss: torch.Tensor | None = None
        self._reset()

    def _reset(self) -> None:
        self.discriminator: nn.Sequential | None = None
        self.discriminator_optimizer: torch.optim.Adam | None = None
        self.generator = torch.Generator().manual_seed(self.seed)
        self._loaded: dict[str, torch.Tensor] = {}

    def _ensure_discriminator(self, latent_dim: int, device: torch.device) -> nn.Sequential:
        """Builds the discriminator (and its optimiser) on ``device`` the first time, restoring
        loaded tensors if any."""
        if self.discriminator is not None:
            return self.discriminator
        with torch.random.fork_rng(devices=[]):  # the global RNG stream is left as it was
            torch.default_generator.manual_seed(self.seed)
            discriminator = build_discriminator(latent_dim, self.hidden_units, self.hidden_layers)
        self.discriminator = discriminator.to(device)
        self.discriminator_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.discriminator_lr, betas=self.discriminator_betas)
        loaded, self._loaded = self._loaded, {}
        weights = {k[len("discriminator."):]: v for k, v in loaded.items() if k.startswith("discriminator.")}
        if weights:
            self.discriminator.load_state_dict(weights)
        moments: dict[int, dict] = {}
        for key, value in loaded.items():
            if key.startswith("adam."):
                index, name = key[len("adam."):].split(".", 1)
                moments.setdefault(int(index), {})[name] = value
        if moments:
            groups = self.discriminator_optimizer.state_dict()["param_groups"]
            self.discriminator_optimizer.load_state_dict({"state": moments, "param_groups": groups})
        if "generator" in loaded:
            self.generator.set_state(loaded["generator"])
        return self.discriminator

    @staticmethod
    def vae_batch(batch: int) -> int:
        """How many of a training batch's images make the VAE's loss (the first half)."""
        return batch // 2

    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """The discriminator's TC estimate on codes ``z`` (differentiable in ``z``)."""
        return discriminator_tc(self._ensure_discriminator(z.shape[1], z.device), z)

    def __call__(self, x: torch.Tensor, output: VAEOutput, training: bool = True) -> ObjectiveResult:
        if training:
            if len(x) < 2:
                raise ValueError("factor_vae splits every training batch in two: train.batch_size must be at least 2")
            half = self.vae_batch(len(x))
            x, output = x[:half], _first(output, half)
        recon = reconstruction_loss(self.reconstruction, x, output)
        per_dim = kl_per_dim(output.posterior)
        kl = per_dim.sum()
        tc = self.total_correlation(output.z)
        return ObjectiveResult(recon + kl + self.gamma * tc, {"recon": recon, "kl": kl, "tc": tc}, per_dim)

    def after_step(self, x: torch.Tensor, output: VAEOutput) -> None:
        """One discriminator step: the first half's codes against the second half's permuted codes."""
        z = output.z.detach().float()
        half = self.vae_batch(len(z))
        discriminator = self._ensure_discriminator(z.shape[1], z.device)
        real, permuted = z[:half], permute_dims(z[half:], self.generator)
        with torch.enable_grad():
            loss = discriminator_loss(discriminator, real, permuted)
        self.discriminator_optimizer.zero_grad(set_to_none=True)  # drops what the VAE's backward left there
        loss.backward()
        self.discriminator_optimizer.step()
        self.updates += 1
        self._last_discriminator_loss = loss.detach()  # no .item() here: no device sync every step

    @property
    def last_discriminator_loss(self) -> float | None:
        """The latest discriminator step's loss (read on demand, not every step)."""
        return None if self._last_discriminator_loss is None else float(self._last_discriminator_loss)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.updates = int(state["seed"]), int(state["updates"])
        self._reset()

    def tensors(self) -> dict[str, torch.Tensor]:
        if self.discriminator is None:
            return dict(self._loaded) or {"generator": self.generator.get_state()}  # before the first step
        tensors = {f"discriminator.{k}": v for k, v in self.discriminator.state_dict().items()}
        for index, state in self.discriminator_optimizer.state_dict()["state"].items():
            tensors.update({f"adam.{index}.{name}": value for name, value in state.items()})
        tensors["generator"] = self.generator.get_state()
        return tensors

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._reset()
        self._loaded = dict(tensors)
