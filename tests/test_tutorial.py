"""docs/tutorial.py runs end to end on a small generated folder of images."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import betavae

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.py"


def _tutorial():
    spec = importlib.util.spec_from_file_location("tutorial", TUTORIAL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tutorial_goes_from_a_folder_to_synthetic_images_and_an_exported_model(tmp_path, capsys):
    images = tmp_path / "photos"
    (images / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):  # coloured boxes on a light background, two sizes and a nested folder
        canvas = np.full((30 + i % 7, 40, 3), 230, np.uint8)
        x, y = rng.integers(2, 25), rng.integers(2, 15)
        canvas[y:y + 10, x:x + 10] = rng.integers(0, 255, 3)
        Image.fromarray(canvas).save(images / ("nested" if i % 2 else "") / f"{i:03d}.png")

    export = _tutorial().run(images, tmp_path / "work", size=16, steps=6, batch_size=8)

    printed = capsys.readouterr().out
    assert printed.count("$ betavae ") == 5 and "Done." in printed
    manifest = json.loads((tmp_path / "work" / "synthetic" / "manifest.json").read_text())
    fixed = json.loads((tmp_path / "work" / "run" / "latents.json").read_text())["order"][0]
    assert len(manifest["samples"]) == 32 and all(s["z"][fixed] == 1.5 for s in manifest["samples"])
    model = betavae.load(export)
    assert model.decode(torch.zeros(1, model.latent_dim)).shape == (1, 3, 16, 16)
