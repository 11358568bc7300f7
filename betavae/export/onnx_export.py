"""``encoder.onnx`` (image in [0, 1] → μ, log σ²) and ``decoder.onnx`` (z → image in [0, 1]).

Both include the data normalisation, so they take and give the same [0, 1] images as
:class:`betavae.TrainedModel`, with a dynamic batch dimension. Written with torch's TorchScript-based
exporter (``dynamo=False``), which needs the onnx package but not onnxscript; running them needs
onnxruntime. Both come with ``pip install 'betavae[onnx]'``.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn

from betavae.inference import TrainedModel

OPSET = 17
ONNX_EXTRA = "pip install 'betavae[onnx]'"


class _Normalized(nn.Module):
    """The model with the data normalisation as buffers (so it is part of the graph)."""

    def __init__(self, trained: TrainedModel):
        super().__init__()
        self.model = trained.model
        self.register_buffer("mean", trained.normalizer.mean.clone())
        self.register_buffer("std", trained.normalizer.std.clone())


class _Encoder(_Normalized):
    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.model.encode((image - self.mean) / self.std)
        return posterior.mean, posterior.logvar


class _Decoder(_Normalized):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (self.model.decode(z) * self.std + self.mean).clamp(0.0, 1.0)


def require_onnx() -> None:
    """A clear error when torch's exporter would miss the onnx package."""
    if importlib.util.find_spec("onnx") is None:
        raise ValueError(f"--onnx needs the onnx package: {ONNX_EXTRA}")


def write_onnx(trained: TrainedModel, encoder_path: Path, decoder_path: Path, opset: int = OPSET) -> dict:
    """Writes both graphs (CPU, fp32, eval mode) and returns what config.json records about them."""
    require_onnx()
    model = trained.model
    device = next(model.parameters()).device
    model.cpu().float().eval()
    try:
        image = torch.rand(2, trained.channels, trained.image_size, trained.image_size)
        z = torch.randn(2, trained.latent_dim)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(_Encoder(trained).eval(), (image,), str(encoder_path), input_names=["image"],
                              output_names=["mu", "logvar"], opset_version=opset, dynamo=False,
                              dynamic_axes={"image": {0: "batch"}, "mu": {0: "batch"}, "logvar": {0: "batch"}})
            torch.onnx.export(_Decoder(trained).eval(), (z,), str(decoder_path), input_names=["z"],
                              output_names=["image"], opset_version=opset, dynamo=False,
                              dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}})
    finally:
        model.to(device)
    size = trained.image_size
    return {
        "opset": opset,
        "encoder": {"file": encoder_path.name, "inputs": {"image": ["batch", trained.channels, size, size]},
                    "outputs": {"mu": ["batch", trained.latent_dim], "logvar": ["batch", trained.latent_dim]},
                    "input_range": [0.0, 1.0]},
        "decoder": {"file": decoder_path.name, "inputs": {"z": ["batch", trained.latent_dim]},
                    "outputs": {"image": ["batch", trained.channels, size, size]}, "output_range": [0.0, 1.0]},
    }
