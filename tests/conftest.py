"""Shared fixtures: tiny configs and a tiny trained run (built once per test session)."""
from __future__ import annotations

import os

import pytest
import torch

from betavae.config import RunConfig, validate_config

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: two torch threads per worker would oversubscribe the
    # cores, which was measured here to slow training steps several-fold.
    torch.set_num_threads(1)


def tiny_config(**sections) -> RunConfig:
    """A config that trains in a second: 32 px dSprites, a 2-block model, a few steps."""
    raw = {
        "name": "tiny",
        "data": {"name": "dsprites", "num_images": 256, "image_size": 32},
        "model": {"preset": "tiny"},
        "objective": {"name": "beta", "beta": 1.0},
        "train": {"max_steps": 8, "batch_size": 16, "lr": 0.003, "progress": False, "checkpoint_every": 4, "val_every": 4},
    }
    for name, values in sections.items():
        replace = name == "objective" or not isinstance(values, dict)
        raw[name] = values if replace else {**raw.get(name, {}), **values}
    return validate_config(raw)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny run folder (shared, read-only for tests)."""
    from betavae.training import train

    return train(tiny_config(), tmp_path_factory.mktemp("runs") / "tiny").root


def train_until_crash(config: RunConfig, run_dir, step: int, monkeypatch) -> None:
    """Trains ``config`` into ``run_dir`` until step ``step`` begins, where a crash ("power cut",
    a RuntimeError inside the step) stops it as a kill would, with no checkpoint written."""
    from betavae.training import Trainer, train

    original = Trainer.train_step

    def crash(trainer, x, lr):
        if trainer.state.step == step:
            raise RuntimeError("power cut")
        return original(trainer, x, lr)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train(config, run_dir)
    monkeypatch.undo()


def fake_judge(monkeypatch, separation_by_seed: dict[int, float]) -> list[int]:
    """Replaces the judgement of starts by fixed separations per seed; returns the seeds judged, in order."""
    import betavae.starts
    from betavae.runs import RunPaths, read_config, read_info

    judged = []

    def judge(run_dir):
        seed = read_config(run_dir).train.seed
        judged.append(seed)
        return {"seed": seed, "step": read_info(RunPaths(run_dir))["step"], "purity": 1.0,
                "exclusivity": separation_by_seed[seed], "separation": separation_by_seed[seed], "dimensions": []}

    monkeypatch.setattr(betavae.starts, "judge_start", judge)
    return judged
