"""What the explorer serves: the loaded runs, and the checks and conversions behind its API.

Nothing here takes a path from a request: models are addressed by their position on the command
line, validation images by their position in the run's validation split.
"""
from __future__ import annotations

import io
import json
import math
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from betavae.data import imageio
from betavae.data.transforms import uint8_to_unit, unit_to_uint8
from betavae.evaluation.naming import name_labels, stored_dimension_names
from betavae.figures import image_grid, image_png, traversal_images
from betavae.inference import TrainedModel, load
from betavae.latents import latent_ranking
from betavae.runs import RunPaths
from betavae.samplers import Sampler, check_kind, get_sampler
from betavae.sampling import write_samples

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096
LATENT_BOUND = 10.0
MAX_EXPORT = 1000
MAX_TRAVERSAL_STEPS = 15


class RequestError(ValueError):
    """A request the explorer refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class ExplorerModel:
    """One served run: the model, its stored dimension ranking (:mod:`betavae.latents`), and optional labels."""

    id: int
    name: str
    trained: TrainedModel
    kl: np.ndarray
    order: np.ndarray
    labels: dict[int, str]
    _samplers: dict[str, Sampler] = field(default_factory=dict, repr=False)
    _sampler_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sampler(self, kind: str) -> Sampler:
        """The run's sampler of ``kind`` (:data:`betavae.samplers.SAMPLERS`): the stored fit, or one fitted
        (and stored) on first use; one fit at a time."""
        try:
            check_kind(kind)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        with self._sampler_lock:
            if kind not in self._samplers:
                try:
                    self._samplers[kind] = get_sampler(self.trained, kind)
                except ValueError as exc:  # e.g. a run without a training split
                    raise RequestError(f"the {kind} sampler cannot be fitted: {exc}", status=409) from None
            return self._samplers[kind]

    def summary(self, top_k: int) -> dict:
        """The JSON description the page builds its controls from."""
        objective = self.trained.config.objective
        return {
            "id": self.id, "name": self.name, "latent_dim": self.trained.latent_dim,
            "image_size": self.trained.image_size, "channels": self.trained.channels,
            "beta": getattr(objective, "beta", None), "top_k": min(top_k, self.trained.latent_dim),
            "num_val": len(self.trained.data().val_indices),
            "dims": [{"dim": int(d), "kl": round(float(self.kl[d]), 4), "label": self.labels.get(int(d), "")}
                     for d in self.order],
        }


def load_models(run_dirs: list[Path], checkpoint: str = "best") -> list[ExplorerModel]:
    """Loads each run with the ranking of its dimensions that every view of the run shows."""
    models = []
    for index, run_dir in enumerate(run_dirs):
        trained = load(run_dir, checkpoint)
        ranking = latent_ranking(trained)
        labels = read_labels(Path(run_dir)) or name_labels(stored_dimension_names(trained, ranking))
        models.append(ExplorerModel(index, Path(run_dir).resolve().name, trained, ranking.kl,
                                    np.asarray(ranking.order), labels))
    return models


def read_labels(run_dir: Path) -> dict[int, str]:
    """The factor each dimension captures, from the run's disentanglement report; {} without one
    (then :func:`load_models` labels the sliders with :mod:`betavae.evaluation.naming`'s names)."""
    path = RunPaths(run_dir).disentanglement
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("dimensions", [])
        return {int(e["dim"]): str(e["label"]) for e in entries if "dim" in e and "label" in e}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def check_latent(values: list[float], latent_dim: int) -> torch.Tensor:
    """A latent vector as a ``(1, latent_dim)`` tensor, after checking its length and values."""
    if len(values) != latent_dim:
        raise RequestError(f"z has {len(values)} values; this model needs {latent_dim}")
    if not all(math.isfinite(v) and abs(v) <= LATENT_BOUND for v in values):
        raise RequestError(f"every value of z must be a finite number in [-{LATENT_BOUND:g}, {LATENT_BOUND:g}]")
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1)


def check_dim(dim: int, latent_dim: int) -> int:
    """``dim`` if this model has it."""
    if not 0 <= dim < latent_dim:
        raise RequestError(f"latent dimension {dim} does not exist (this model has 0..{latent_dim - 1})")
    return dim


def png_bytes(images01: torch.Tensor, nrow: int = 8) -> bytes:
    """Float ``(N, C, H, W)`` images in [0, 1] as one PNG: the image itself when N = 1, else a grid."""
    if len(images01) == 1:
        tile = unit_to_uint8(images01)[0]
        image = Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile)
    else:
        image = image_grid(images01, nrow=nrow)
    return image_png(image)


def read_upload(data: bytes, channels: int, size: int) -> torch.Tensor:
    """An uploaded image file → ``(1, C, size, size)`` in [0, 1], after size checks.

    The file is read exactly as ``betavae traverse --image`` reads its file (and ``evaluate --images``
    its folder): :func:`betavae.data.imageio.outside_image`, i.e. the training data's transforms
    (EXIF orientation; 16-bit values scaled as value / 257; transparency composited on white; RGB or
    grayscale; shorter side resized to ``size``; centre crop).
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise RequestError(f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB", status=413)
    _check_pixels(data)
    try:
        array = imageio.outside_image(data, size, channels)
    except imageio.SkipImage as exc:
        if exc.reason in (imageio.EMPTY, imageio.NOT_AN_IMAGE, imageio.CORRUPT):
            raise RequestError(f"{_UNREADABLE} ({exc.reason})") from None
        raise RequestError(f"the upload cannot be used: {exc}") from None
    return uint8_to_unit(array[None])


_UNREADABLE = "the upload is not an image Pillow can read (PNG, JPEG, ...)"


def _check_pixels(data: bytes) -> None:
    """Refuses an image of more than :data:`MAX_UPLOAD_PIXELS` from its header, before any decoding."""
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            pixels = probe.width * probe.height
    except Image.DecompressionBombError:
        pixels = MAX_UPLOAD_PIXELS + 1
    except Exception:  # Pillow raises many types on bad data; load_image says which problem it is
        return
    if pixels > MAX_UPLOAD_PIXELS:
        raise RequestError(f"the image has more than {MAX_UPLOAD_PIXELS} pixels")


def traversal_strip(model: ExplorerModel, z: torch.Tensor, dim: int, steps: int, low: float, high: float) -> bytes:
    """One row of ``steps`` images with ``dim`` of ``z`` running from ``low`` to ``high``, as a PNG."""
    check_dim(dim, model.trained.latent_dim)
    if not 2 <= steps <= MAX_TRAVERSAL_STEPS:
        raise RequestError(f"steps must be between 2 and {MAX_TRAVERSAL_STEPS}")
    check_latent([low, high], 2)
    values = torch.linspace(low, high, steps).tolist()
    return png_bytes(traversal_images(model.trained, z[0], [dim], values), nrow=steps)


def export_zip(model: ExplorerModel, n: int, seed: int, fixed: dict[int, float],
               sweeps: dict[int, tuple[float, float]], sampler: str = "prior") -> bytes:
    """``n`` samples of ``sampler`` (the prior, or a fitted one conditioned on the ``fixed``/``sweeps``
    dims) as a zip of PNGs and ``manifest.json``, which names the sampler and its settings."""
    if not 1 <= n <= MAX_EXPORT:
        raise RequestError(f"n must be between 1 and {MAX_EXPORT}")
    latent_dim = model.trained.latent_dim
    for dim, value in [*fixed.items(), *((d, v) for d, pair in sweeps.items() for v in pair)]:
        check_dim(dim, latent_dim)
        check_latent([value], 1)
    if set(fixed) & set(sweeps):
        raise RequestError("a dimension cannot be both fixed and swept")
    drawn = model.sampler(sampler)
    z = drawn.sample(n, seed, fixed, sweeps)
    with tempfile.TemporaryDirectory(prefix="betavae-export-") as tmp:
        folder = write_samples(model.trained, z, Path(tmp) / "samples", sampler=drawn.settings())
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        manifest.update(run=model.name, model_id=model.id, seed=seed, n=n,
                        fixed={str(d): v for d, v in fixed.items()},
                        sweeps={str(d): list(pair) for d, pair in sweeps.items()})
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for entry in manifest["samples"]:
                archive.write(folder / entry["file"], entry["file"])
            archive.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
    return buffer.getvalue()
