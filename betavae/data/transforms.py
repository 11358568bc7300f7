"""Batched tensor transforms between uint8 images and the model's input space.

Normalisation modes: ``unit`` ([0, 1]), ``symmetric`` ([-1, 1]) and ``imagenet`` (the study's
mean/std). Every metric maps back to [0, 1] through :meth:`Normalizer.to_unit`.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

NormalizationMode = Literal["unit", "symmetric", "imagenet"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalizer:
    """Maps images in [0, 1] to model space and back, per channel: ``x_model = (x - mean) / std``."""

    def __init__(self, mode: NormalizationMode, channels: int):
        self.mode = mode
        if mode == "unit":
            mean, std = [0.0] * channels, [1.0] * channels
        elif mode == "symmetric":
            mean, std = [0.5] * channels, [0.5] * channels
        elif mode == "imagenet":
            # Grayscale data uses the mean of the three ImageNet statistics.
            mean = list(IMAGENET_MEAN) if channels == 3 else [float(np.mean(IMAGENET_MEAN))] * channels
            std = list(IMAGENET_STD) if channels == 3 else [float(np.mean(IMAGENET_STD))] * channels
        else:
            raise ValueError(f"unknown normalization {mode!r}; valid: unit, symmetric, imagenet")
        self.mean = torch.tensor(mean).view(1, channels, 1, 1)
        self.std = torch.tensor(std).view(1, channels, 1, 1)

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images → model space."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Model space → [0, 1] images (clamped)."""
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0.0, 1.0)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel lowest and highest value of model space (images of 0 and of 1)."""
        return -self.mean / self.std, (1.0 - self.mean) / self.std


def uint8_to_unit(batch: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` → float ``(N, C, H, W)`` in [0, 1] on ``device``."""
    tensor = torch.as_tensor(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
    tensor = tensor.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return tensor.float().div_(255.0)


def unit_to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``(N, C, H, W)`` in [0, 1] → uint8 ``(N, H, W, C)``."""
    return (x.detach().float().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flips each image of ``(N, C, H, W)`` left-right with probability ½ (seeded)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    if flip.any():
        x = x.clone()
        x[flip.to(x.device)] = x[flip.to(x.device)].flip(-1)
    return x
