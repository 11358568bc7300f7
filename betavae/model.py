"""The convolutional β-VAE: an encoder to (μ, log σ²) and a mirrored decoder, every shape derived.

The study's architecture (docs/study.md) is the ``paper`` preset: stride-2 3×3 conv blocks
(Conv → BatchNorm → LeakyReLU) down to ``image_size / 2**len(channels)``, linear heads to μ and
log σ², and a decoder of transposed-conv blocks back up, ending in ConvTranspose(c0 → c0) →
Conv(c0 → C) → output activation. ``hidden`` > 0 adds a fully connected layer of that many units
between the convolutions and the code on both sides, as disentanglement_lib's architecture has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from betavae.data.transforms import Normalizer

if TYPE_CHECKING:
    from betavae.config import RunConfig

# Field values a preset fills in (ModelConfig fields given explicitly win).
PRESETS: dict[str, dict] = {
    "paper": {"channels": [32, 64, 128, 256, 512], "latent_dim": 128, "batch_norm": True},
    "paper-batik": {"channels": [32, 64, 128], "latent_dim": 128, "batch_norm": True},
    "small": {"channels": [32, 32, 64, 64], "latent_dim": 10, "batch_norm": True},
    "tiny": {"channels": [8, 16], "latent_dim": 4, "batch_norm": True},
}


@dataclass
class Posterior:
    """q(z|x) = N(mean, diag exp(logvar))."""

    mean: torch.Tensor
    logvar: torch.Tensor

    def sample(self) -> torch.Tensor:
        """Reparameterised sample z = μ + σ·ε."""
        return self.mean + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mean)


@dataclass
class VAEOutput:
    """One forward pass: the posterior, the sampled code and the decoder's output."""

    posterior: Posterior
    z: torch.Tensor
    logits: torch.Tensor  # decoder output before the output activation
    recon: torch.Tensor  # in the data's model space


def _block(conv: nn.Module, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """Conv → BatchNorm → LeakyReLU. The LeakyReLU works in place: neither BatchNorm's nor the
    convolution's backward needs the tensor it overwrites, so the values are the same and one
    full-size activation per block is neither allocated nor written (BN + LeakyReLU at 64×64×32
    measured ~15 % faster on CPU; no parameters, so checkpoints are unchanged)."""
    layers = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(inplace=True))
    return nn.Sequential(*layers)


class OutputActivation(nn.Module):
    """Maps decoder logits into the data's range.

    ``sigmoid`` is scaled per channel to [low, high] (the range of the normalised data), so the
    decoder can produce exactly the values the data takes — also for ImageNet normalisation,
    where a plain Tanh would cut off part of the range.
    """

    def __init__(self, kind: str, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.kind = kind
        self.register_buffer("low", low.reshape(1, -1, 1, 1).float(), persistent=False)
        self.register_buffer("high", high.reshape(1, -1, 1, 1).float(), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "sigmoid":
            return self.low + (self.high - self.low) * torch.sigmoid(logits)
        if self.kind == "tanh":
            return torch.tanh(logits)
        return logits


class ConvVAE(nn.Module):
    """β-VAE for square images of ``image_size`` (divisible by ``2**len(channels)``)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        channels: list[int],
        latent_dim: int,
        batch_norm: bool = True,
        output_activation: OutputActivation | None = None,
        hidden: int = 0,
    ):
        super().__init__()
        depth = len(channels)
        if image_size % (2**depth) != 0:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{depth}")
        self.image_size, self.in_channels, self.latent_dim = image_size, in_channels, latent_dim
        self.bottom = image_size // 2**depth
        flat = channels[-1] * self.bottom**2

        encoder, previous = [], in_channels
        for width in channels:
            conv = nn.Conv2d(previous, width, 3, stride=2, padding=1)
            encoder.append(_block(conv, width, batch_norm))
            previous = width
        encoder.append(nn.Flatten())
        features = flat
        if hidden:  # disentanglement_lib's fully connected layer between the convolutions and the code
            encoder += [nn.Linear(flat, hidden), nn.LeakyReLU(inplace=True)]
            features = hidden
        self.encoder = nn.Sequential(*encoder)
        self.to_mean = nn.Linear(features, latent_dim)
        self.to_logvar = nn.Linear(features, latent_dim)

        self.from_latent = (nn.Sequential(nn.Linear(latent_dim, hidden), nn.LeakyReLU(inplace=True),
                                          nn.Linear(hidden, flat), nn.LeakyReLU(inplace=True))
                            if hidden else nn.Linear(latent_dim, flat))
        reversed_channels = channels[::-1]
        decoder = []
        for wide, narrow in zip(reversed_channels, reversed_channels[1:]):
            up = nn.ConvTranspose2d(wide, narrow, 3, stride=2, padding=1, output_padding=1)
            decoder.append(_block(up, narrow, batch_norm))
        first = channels[0]
        last_up = nn.ConvTranspose2d(first, first, 3, stride=2, padding=1, output_padding=1)
        decoder.append(_block(last_up, first, batch_norm))
        decoder.append(nn.Conv2d(first, in_channels, 3, padding=1))
        self.decoder = nn.Sequential(*decoder)
        self.output_activation = output_activation or OutputActivation(
            "identity", torch.zeros(in_channels), torch.ones(in_channels)
        )

    def encode(self, x: torch.Tensor) -> Posterior:
        """x in model space ``(N, C, H, W)`` → q(z|x)."""
        h = self.encoder(x)
        return Posterior(self.to_mean(h), self.to_logvar(h))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z ``(N, latent_dim)`` → decoder output before the output activation."""
        h = self.from_latent(z).view(z.shape[0], -1, self.bottom, self.bottom)
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z → images in model space."""
        return self.output_activation(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> VAEOutput:
        posterior = self.encode(x)
        z = posterior.sample() if self.training else posterior.mean
        logits = self.decode_logits(z)
        return VAEOutput(posterior, z, logits, self.output_activation(logits))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_model(config: RunConfig, channels: int) -> ConvVAE:
    """The model a run config describes, for data with ``channels`` channels."""
    normalizer = Normalizer(config.data.normalization, channels)
    kind = config.model.output_activation
    if kind == "auto":
        kind = "sigmoid"  # scaled to the normalised data's exact range
    low, high = normalizer.bounds()
    return ConvVAE(
        image_size=config.data.image_size,
        in_channels=channels,
        channels=config.model.channels,
        latent_dim=config.model.latent_dim,
        batch_norm=config.model.batch_norm,
        output_activation=OutputActivation(kind, low.flatten(), high.flatten()),
        hidden=config.model.hidden,
    )
