"""Interpolation between two images' codes: TrainedModel.interpolate and ``betavae interpolate``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from betavae.cli import main
from betavae.inference import interpolate_codes, load


def test_linear_codes_run_evenly_from_end_to_end():
    a, b = torch.tensor([0.0, 2.0], dtype=torch.float64), torch.tensor([4.0, -2.0], dtype=torch.float64)
    z = interpolate_codes(a, b, 5)
    assert torch.equal(z[0], a) and torch.equal(z[-1], b)
    assert torch.allclose(z[:, 0], torch.tensor([0.0, 1, 2, 3, 4], dtype=torch.float64))


def test_slerp_keeps_the_norm_between_codes_of_equal_norm_and_falls_back_when_parallel():
    a, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    z = interpolate_codes(a, b, 5, spherical=True)
    assert torch.allclose(z.norm(dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(z[2], torch.tensor([0.5**0.5, 0.5**0.5], dtype=torch.float64))
    assert torch.allclose(z[[0, -1]], torch.stack([a, b]))
    parallel = interpolate_codes(a, 3 * a, 3, spherical=True)
    assert torch.allclose(parallel[:, 0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))


def test_trained_model_interpolates_between_the_posterior_means(tiny_run):
    trained = load(tiny_run)
    images = trained.images(trained.validation_sample(2))
    z, strip = trained.interpolate(images[0], images[1:2], steps=6)
    mu = trained.encode(images).mean
    assert z.shape == (6, trained.latent_dim) and strip.shape == (6, trained.channels, 32, 32)
    assert torch.allclose(z[0], mu[0], atol=1e-6) and torch.allclose(z[-1], mu[1], atol=1e-6)
    assert torch.allclose(strip[0], trained.decode(mu[:1])[0], atol=1e-5)
    z_s, _ = trained.interpolate(images[0], images[1], steps=6, spherical=True)
    assert torch.allclose(z_s[[0, -1]], mu, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 steps"):
        trained.interpolate(images[0], images[1], steps=1)


def test_the_interpolate_command_writes_a_strip(tiny_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(a)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(b)
    out = tmp_path / "strip.png"
    assert main(["interpolate", str(tiny_run), str(a), str(b), "--steps", "4", "--spherical", "--out", str(out)]) == 0
    with Image.open(out) as strip:
        width, height = strip.size
    assert width > 4 * 32 and 32 < height < 2 * 32
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["interpolate", str(tiny_run), str(a), str(tmp_path / "bad.png"), "--out", str(out)]) == 2
    assert "bad.png" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["interpolate", str(tiny_run), str(a), str(b), "--steps", "1", "--out", str(out)])
