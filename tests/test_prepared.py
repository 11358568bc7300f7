"""Prepared folders as training data: `load_prepared` through `build_data`, training and the study configs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from betavae.config import load_config, validate_config
from betavae.data import build_data
from betavae.data.prepare import PrepareOptions, prepare
from betavae.data.prepared import PrepareError
from betavae.training import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _prepared_folder(root: Path, size: int, grayscale: bool = False, count: int = 16) -> tuple[Path, dict]:
    source = root / "images"
    source.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (size + 8, size + 4, 3), dtype=np.uint8)).save(source / f"{k:03d}.png")
    options = PrepareOptions(size=size, grayscale=grayscale)
    manifest = prepare("folder", source, root / "prepared", options, workers=1, progress=False, log=lambda m: None)
    return root / "prepared", manifest


def test_training_from_a_prepared_folder(tmp_path):
    path, manifest = _prepared_folder(tmp_path, size=32)
    config = validate_config(
        {
            "data": {"name": "prepared", "path": str(path), "image_size": 32},
            "model": {"preset": "tiny"},
            "objective": {"name": "beta", "reconstruction": "mse_mean"},
            "train": {"max_steps": 3, "batch_size": 4, "progress": False},
        }
    )
    paths = train(config, tmp_path / "run")
    info = json.loads(paths.info.read_text())
    assert info["status"] == "finished" and info["step"] == 3
    assert info["data"]["fingerprint"] == manifest["fingerprint"]
    assert (info["data"]["train"], info["data"]["val"]) == (12, 4)
    assert paths.last.is_file()


@pytest.mark.parametrize("name", ["paper-celeba", "paper-cars", "paper-cats", "paper-batik"])
def test_study_configs_run_on_prepared_data(tmp_path, name):
    grayscale = name == "paper-batik"
    path, manifest = _prepared_folder(tmp_path, size=64, grayscale=grayscale, count=12)
    config = load_config(
        CONFIGS / f"{name}.yaml",
        [f"data.path={path}", "objective.beta=100", "train.max_steps=1", "train.batch_size=4", "train.progress=false"],
    )
    assert config.data.name == "prepared" and config.objective.beta == 100
    data = build_data(config.data)
    assert data.channels == (1 if grayscale else 3) and data.fingerprint == manifest["fingerprint"]
    paths = train(config, tmp_path / "run", data=data)
    assert json.loads(paths.info.read_text())["status"] == "finished"


def test_unprepared_path_says_what_to_run(tmp_path):
    config = validate_config({"data": {"name": "prepared", "path": str(tmp_path), "image_size": 32}})
    with pytest.raises(PrepareError, match="betavae prepare"):
        build_data(config.data)
