"""Using a trained run: ``betavae.load(run)`` → a model that works on images in [0, 1]."""
from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from betavae.checkpoint import DamagedCheckpointError, load_checkpoint, strip_prefix
from betavae.config import RunConfig
from betavae.data import ImageData, build_data
from betavae.data.transforms import Normalizer, uint8_to_unit
from betavae.model import ConvVAE, Posterior, build_model
from betavae.objectives import kl_per_dim as _kl_per_dim
from betavae.runs import RunPaths, read_config, read_info
from betavae.sampling import prior_codes

_BATCH = 256
logger = logging.getLogger(__name__)


class TrainedModel:
    """A trained β-VAE in eval mode. Images in and out are float ``(N, C, H, W)`` in [0, 1];
    normalisation to the model's input space happens inside."""

    def __init__(self, model: ConvVAE, config: RunConfig, run_dir: Path, device: torch.device,
                 weights: Path | None = None):
        self.model, self.config, self.run_dir, self.device = model.eval(), config, run_dir, device
        self.weights = weights  # the checkpoint file the weights came from
        self.normalizer = Normalizer(config.data.normalization, model.in_channels)
        self._data: ImageData | None = None

    @functools.cached_property
    def weights_sha256(self) -> str | None:
        """sha256 of the checkpoint file the weights came from (None when they came from no file),
        read once per loaded model: what files stored per checkpoint are keyed to."""
        if self.weights is None or not Path(self.weights).is_file():
            return None
        return hashlib.sha256(Path(self.weights).read_bytes()).hexdigest()

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def channels(self) -> int:
        return self.model.in_channels

    @torch.no_grad()
    def encode(self, x01: torch.Tensor) -> Posterior:
        """q(z|x) for images in [0, 1] (batched internally)."""
        means, logvars = [], []
        for chunk in torch.split(torch.as_tensor(x01, dtype=torch.float32), _BATCH):
            posterior = self.model.encode(self.normalizer.from_unit(chunk.to(self.device)))
            means.append(posterior.mean.float().cpu())
            logvars.append(posterior.logvar.float().cpu())
        return Posterior(torch.cat(means), torch.cat(logvars))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(N, latent_dim)`` → images in [0, 1]."""
        outputs = [
            self.normalizer.to_unit(self.model.decode(chunk.to(self.device).float())).cpu()
            for chunk in torch.split(torch.as_tensor(z, dtype=torch.float32), _BATCH)
        ]
        return torch.cat(outputs)

    def reconstruct(self, x01: torch.Tensor) -> torch.Tensor:
        """Reconstruction from the posterior mean μ."""
        return self.decode(self.encode(x01).mean)

    def represent(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images ``(N, H, W, C)`` → posterior means and log-variances as arrays (for metrics)."""
        posterior = self.encode(uint8_to_unit(images_uint8))
        return posterior.mean.numpy(), posterior.logvar.numpy()

    def sample(self, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` codes from N(0, I) (:func:`betavae.sampling.prior_codes`) and their images."""
        z = prior_codes(n, self.latent_dim, seed)
        return z, self.decode(z)

    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8,
                    spherical: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and images of ``steps`` points from image ``x0``'s posterior mean μ to ``x1``'s (both
        ends included): linear in μ, or along the great circle between them (slerp; linear when the
        two codes are parallel). ``x0``/``x1``: one image ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1]."""
        if steps < 2:
            raise ValueError("interpolate needs at least 2 steps")
        ends = [torch.as_tensor(x, dtype=torch.float32).reshape(1, self.channels, self.image_size, self.image_size)
                for x in (x0, x1)]
        mu = self.encode(torch.cat(ends)).mean.double()
        z = interpolate_codes(mu[0], mu[1], steps, spherical).float()
        return z, self.decode(z)

    def data(self) -> ImageData:
        """The run's dataset (rebuilt from its config; cached). Warns when these are not the images
        the run was trained on (its data folder changed, or another betavae version draws them)."""
        if self._data is None:
            self._data = build_data(self.config.data)
            _warn_if_other_images(self.run_dir, self._data.fingerprint)
        return self._data

    def validation_sample(self, n: int | None, seed: int = 0) -> np.ndarray:
        """Sorted validation indices: all of them, or a seeded random ``n`` of them."""
        val = self.data().val_indices
        if n is None or n >= len(val):
            return np.sort(val)
        return np.sort(np.random.default_rng(seed).choice(val, size=n, replace=False))

    def images(self, indices: np.ndarray) -> torch.Tensor:
        """Dataset images at ``indices`` as float [0, 1] tensors."""
        return uint8_to_unit(self.data().images[np.asarray(indices)])


def _warn_if_other_images(run_dir: Path, fingerprint: str) -> None:
    try:
        trained_on = read_info(RunPaths(run_dir)).get("data", {}).get("fingerprint")
    except (OSError, ValueError, AttributeError):  # no readable run.json: nothing to compare with
        return
    if trained_on and trained_on != fingerprint:
        logger.warning("%s was trained on other images than its config gives now (fingerprint %s, now %s): "
                       "its data folder changed, or this betavae version draws the built-in data differently; "
                       "scores and figures use the current images", run_dir, trained_on, fingerprint)


def load(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> TrainedModel:
    """Loads a run folder's ``best`` (or ``last``, or a ``.safetensors`` path's) weights, or an exported
    model folder (``betavae export``: config.json + model.safetensors); which one is detected. No code
    is executed while loading. A missing or damaged ``best`` falls back to ``last`` with a warning."""
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        from betavae.export.folder import is_export_folder

        if is_export_folder(paths.root):
            return _load_export(paths.root, checkpoint, device)
        if paths.root.is_dir():
            raise FileNotFoundError(f"{paths.root} is neither a run folder (no config.yaml) nor an exported "
                                    "model (no betavae config.json beside model.safetensors)")
    config = read_config(paths.root)
    tensors, weights = _read_weights(paths, checkpoint)
    model = _model_with(config, strip_prefix("model", tensors), f"the checkpoint of {paths.root}",
                        f"{paths.config} does not match the weights in its checkpoint (was config.yaml edited?)")
    device = torch.device(device)
    return TrainedModel(model.to(device), config, paths.root, device, weights)


def _load_export(root: Path, checkpoint: str, device: str | torch.device) -> TrainedModel:
    """An exported folder: the run config saved in config.json and the weights of model.safetensors."""
    from betavae.config import ConfigError, validate_config
    from betavae.export.folder import ExportPaths, read_export_config, read_export_weights

    if checkpoint != "best":
        raise ValueError(f"{root} is an exported model with one set of weights; --checkpoint does not apply")
    paths = ExportPaths(root)
    exported = read_export_config(root)
    try:
        config = validate_config(exported["run_config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ValueError(f"{paths.config} holds no valid run_config ({exc})") from None
    model = _model_with(config, read_export_weights(root), str(paths.weights),
                        f"{paths.config} does not match {paths.weights}")
    device = torch.device(device)
    return TrainedModel(model.to(device), config, root, device, paths.weights)


def _model_with(config: RunConfig, model_tensors: dict[str, torch.Tensor], source: str, mismatch: str) -> ConvVAE:
    """The model ``config`` describes, holding ``model_tensors``."""
    if "encoder.0.0.weight" not in model_tensors:
        raise ValueError(f"{source} holds no betavae model weights")
    model = build_model(config, model_tensors["encoder.0.0.weight"].shape[1])
    try:
        model.load_state_dict(model_tensors)
    except RuntimeError as exc:
        problems = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ValueError(f"{mismatch}: {'; '.join(problems[:3]) or exc}") from None
    return model


def _read_weights(paths: RunPaths, checkpoint: str) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of the chosen checkpoint and the file they came from."""
    if checkpoint not in ("best", "last"):
        return load_checkpoint(Path(checkpoint))[0], Path(checkpoint)
    if checkpoint == "last" or not paths.best.is_file():
        return load_checkpoint(paths.last)[0], paths.last
    try:
        return load_checkpoint(paths.best)[0], paths.best
    except DamagedCheckpointError as exc:
        if not paths.last.is_file():
            raise
        try:
            tensors = load_checkpoint(paths.last)[0]
        except DamagedCheckpointError as also:
            raise DamagedCheckpointError(f"{exc}; and the fallback: {also}") from None
        warnings.warn(f"{exc}; using {paths.last} instead", stacklevel=3)
        return tensors, paths.last


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int, spherical: bool = False) -> torch.Tensor:
    """``steps`` codes from ``a`` to ``b`` (ends included): linear, or slerp
    sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b with Ω the angle between them."""
    t = torch.linspace(0, 1, steps, dtype=a.dtype).unsqueeze(1)
    if spherical:
        cos = torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-12)
        omega = torch.arccos(cos.clamp(-1, 1))
        if float(torch.sin(omega)) > 1e-6:
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return (1 - t) * a + t * b


def kl_per_dim(trained: TrainedModel, x01: torch.Tensor) -> np.ndarray:
    """Mean KL(q(z_j|x) ‖ N(0, 1)) per latent dimension over the given images."""
    return _kl_per_dim(trained.encode(x01)).numpy()
