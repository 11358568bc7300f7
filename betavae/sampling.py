"""Synthetic data from the prior: seeded codes with chosen dimensions fixed or swept.

:func:`prior_codes` is betavae's one draw from the prior: samples, figures, FID samples and the
explorer's random codes all come from it, so one seed gives the same codes everywhere. Samplers
fitted after training (:mod:`betavae.samplers`) draw codes "like the data" instead."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from betavae.data.transforms import unit_to_uint8
from betavae.fileio import atomic_path, write_json


def parse_assignments(items: list[str], kind: str) -> dict[int, object]:
    """``["3=1.5"]`` → {3: 1.5} for ``fix``; ``["3=-2:2"]`` → {3: (-2.0, 2.0)} for ``sweep``."""
    result: dict[int, object] = {}
    for item in items:
        try:
            dim, value = item.split("=", 1)
            if kind == "sweep":
                low, high = value.split(":")
                result[int(dim)] = (float(low), float(high))
            else:
                result[int(dim)] = float(value)
        except ValueError:
            example = "3=-2:2" if kind == "sweep" else "3=1.5"
            raise ValueError(f"--{kind} {item!r} must look like DIM={example.split('=')[1]}") from None
    return result


def prior_codes(
    n: int, latent_dim: int, seed: int = 0, fixed: dict[int, float] | None = None,
    sweeps: dict[int, tuple[float, float]] | None = None,
) -> torch.Tensor:
    """``n`` codes from N(0, I); ``fixed`` dims take one value, ``sweeps`` dims run linearly from low to high."""
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    for dim, value in (fixed or {}).items():
        check_dim(dim, latent_dim)
        z[:, dim] = value
    for dim, (low, high) in (sweeps or {}).items():
        check_dim(dim, latent_dim)
        z[:, dim] = torch.linspace(low, high, n)
    return z


def check_dim(dim: int, latent_dim: int) -> None:
    """A ValueError naming the valid range when ``dim`` is not a dimension of a ``latent_dim`` model."""
    if not 0 <= dim < latent_dim:
        raise ValueError(f"latent dimension {dim} does not exist (this model has 0..{latent_dim - 1})")


def write_samples(trained, z: torch.Tensor, out: str | Path, nrow: int = 8, sampler: dict | None = None) -> Path:
    """Decodes ``z``; writes a grid when ``out`` ends in .png, else a folder of PNGs with a manifest
    (which names the ``sampler`` settings the codes came from, when given)."""
    from betavae.figures import image_grid, save_png  # matplotlib: only where images are written

    out = Path(out)
    images = trained.decode(z)
    if out.suffix.lower() == ".png":
        return save_png(image_grid(images, nrow=nrow), out)
    out.mkdir(parents=True, exist_ok=True)
    tiles = unit_to_uint8(images)
    entries = []
    for i, tile in enumerate(tiles):
        name = f"sample_{i:05d}.png"
        with atomic_path(out / name) as tmp:
            Image.fromarray(tile[..., 0] if tile.shape[-1] == 1 else tile).save(tmp, format="PNG")
        entries.append({"file": name, "z": [round(float(v), 6) for v in z[i]]})
    manifest = {"run": str(trained.run_dir), "latent_dim": trained.latent_dim}
    if sampler is not None:
        manifest["sampler"] = sampler
    write_json(out / "manifest.json", {**manifest, "samples": entries})
    return out
