"""Checkpoints as one safetensors file: tensors (model, optimiser, RNG) plus a JSON training state
in the file's metadata. Written atomically; loading never unpickles anything."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from betavae.fileio import atomic_path

_STATE_KEY = "betavae_state"


def _flatten(prefix: str, value, tensors: dict, plain: dict) -> None:
    """Splits a nested state dict into safetensors-able tensors and JSON-able values."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().cpu().contiguous()
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, tensors, plain)
    else:
        plain[prefix] = value


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An optimiser's state as (tensors named ``optimizer.state.<param>.<name>``, JSON values)."""
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    _flatten("optimizer.state", state["state"], tensors, plain)
    plain["optimizer.param_groups"] = state["param_groups"]
    return tensors, plain


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, plain: dict) -> None:
    """Restores what :func:`optimizer_to_flat` saved."""
    per_param: dict[int, dict] = {}
    for source in (tensors, plain):
        for key, value in source.items():
            if key.startswith("optimizer.state."):
                param, name = key[len("optimizer.state.") :].split(".", 1)
                per_param.setdefault(int(param), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": plain["optimizer.param_groups"]})


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Atomically writes ``tensors`` and the JSON-able ``state`` to ``path``."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_STATE_KEY: json.dumps(state)})


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """Reads ``(tensors, state)`` written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if _STATE_KEY not in metadata:
            raise ValueError(f"{path} is not a betavae checkpoint (no training state in its metadata)")
        return load_file(str(path), device=str(device)), json.loads(metadata[_STATE_KEY])
    except (SafetensorError, json.JSONDecodeError, OSError) as exc:
        raise DamagedCheckpointError(f"checkpoint {path} is damaged or not a safetensors file ({exc})") from None


class DamagedCheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, garbage, or another format)."""


def with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"w": t}`` → ``{"<prefix>.w": t}`` (CPU, contiguous)."""
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``<prefix>.``, with that prefix removed."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
