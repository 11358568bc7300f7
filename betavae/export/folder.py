"""The exported-model folder (the Hugging Face convention): its files, its ``config.json``, reading it back.

An export holds the model's weights only (``model.safetensors``: no optimiser, no RNG state),
``config.json`` (everything needed to rebuild the model and map images in and out), a model card
(``README.md``), the run's sample and traversal figures, and optionally ``encoder.onnx`` and
``decoder.onnx``. Reading it never executes code: JSON and safetensors only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

FORMAT = "betavae-export"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportPaths:
    """Every file of an exported-model folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def weights(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def card(self) -> Path:
        return self.root / "README.md"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def encoder_onnx(self) -> Path:
        return self.root / "encoder.onnx"

    @property
    def decoder_onnx(self) -> Path:
        return self.root / "decoder.onnx"


def is_export_folder(root: str | Path) -> bool:
    """True for a folder holding a betavae ``config.json`` and ``model.safetensors``."""
    paths = ExportPaths(Path(root))
    if not (paths.config.is_file() and paths.weights.is_file()):
        return False
    try:
        return json.loads(paths.config.read_text(encoding="utf-8")).get("format") == FORMAT
    except (ValueError, OSError, AttributeError):
        return False


def read_export_config(root: str | Path) -> dict:
    """The ``config.json`` of an exported model; a ValueError when it is not one betavae can read."""
    paths = ExportPaths(Path(root))
    try:
        config = json.loads(paths.config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{paths.config} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{paths.config} is not a betavae export (no \"format\": \"{FORMAT}\")")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{paths.root} was exported by a newer betavae ({config.get('betavae_version')}, "
                         f"format {config.get('format_version')}); upgrade betavae to load it")
    return config


def read_export_weights(root: str | Path) -> dict[str, torch.Tensor]:
    """The model tensors of an export (safetensors: nothing is unpickled)."""
    path = ExportPaths(Path(root)).weights
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{path} is damaged or not a safetensors file ({exc})") from None
