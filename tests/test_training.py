import csv

import numpy as np
import pytest
import torch

import betavae
from betavae.checkpoint import load_checkpoint, save_checkpoint
from betavae.objectives import BetaVAE
from betavae.runs import RunExistsError, RunPaths, read_csv, read_info
from betavae.training import Trainer, TrainingDiverged, resume, train

from conftest import tiny_config, train_until_crash


def train_losses(root) -> list[tuple]:
    return [(row["step"], row["loss"], row["recon"], row["kl"]) for row in read_csv(RunPaths(root).train_log)]


def test_loss_decreases_on_a_tiny_set(tmp_path):
    config = tiny_config(train={"max_steps": 60, "val_every": 20, "checkpoint_every": 60})
    paths = train(config, tmp_path / "run")
    losses = [row["loss"] for row in read_csv(paths.train_log)]
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    val = read_csv(paths.val_log)
    assert [row["step"] for row in val] == [20, 40, 60] and val[-1]["loss"] < val[0]["loss"]


def test_run_folder_records_config_split_versions_and_fingerprint(tiny_run):
    info = read_info(RunPaths(tiny_run))
    assert info["status"] == "finished" and info["step"] == 8
    assert info["data"]["train"] == 192 and info["data"]["val"] == 64 and info["data"]["fingerprint"]
    assert info["environment"]["torch"] == torch.__version__ and info["seed"] == 1265
    assert (tiny_run / "config.yaml").is_file() and RunPaths(tiny_run).best.is_file()


class InterruptAt:
    """Raises KeyboardInterrupt when the trainer asks for the batch of ``step`` (like Ctrl-C)."""

    def __init__(self, step: int):
        self.step = step

    def install(self, monkeypatch):
        original = Trainer.batch

        def batch(trainer, indices, step=None):
            if step == self.step:
                raise KeyboardInterrupt
            return original(trainer, indices, step)

        monkeypatch.setattr(Trainer, "batch", batch)


@pytest.mark.parametrize("objective", [{"name": "beta"}, {"name": "capacity", "capacity_steps": 10}])
def test_interrupted_then_resumed_run_has_the_uninterrupted_loss_curve(tmp_path, monkeypatch, objective):
    config = tiny_config(objective=objective, data={"hflip": True}, train={"max_steps": 14})
    reference = train_losses(train(config, tmp_path / "straight").root)

    InterruptAt(step=9).install(monkeypatch)  # mid-epoch (12 steps per epoch), between checkpoints
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "interrupted")
    monkeypatch.undo()
    assert read_info(RunPaths(tmp_path / "interrupted"))["status"] == "interrupted"
    resumed = train_losses(resume(tmp_path / "interrupted").root)
    assert resumed == reference
    if objective["name"] == "capacity":
        _, state = load_checkpoint(RunPaths(tmp_path / "interrupted").last)
        assert state["objective"] == {"step": 14}


@pytest.mark.parametrize("checkpoint_every,crash_at,saved", [(4, 10, 8), (100, 7, None)],
                         ids=["between-checkpoints", "before-the-first-checkpoint"])
def test_a_crash_resumes_from_the_last_checkpoint_with_no_duplicate_steps(tmp_path, monkeypatch, checkpoint_every,
                                                                          crash_at, saved):
    config = tiny_config(train={"max_steps": 12, "checkpoint_every": checkpoint_every, "val_every": 3})
    reference = train(config, tmp_path / "straight").root
    train_until_crash(config, tmp_path / "crashed", crash_at, monkeypatch)
    paths = RunPaths(tmp_path / "crashed")
    assert (load_checkpoint(paths.last)[1]["step"] if paths.last.exists() else None) == saved
    resume(paths.root)
    assert train_losses(paths.root) == train_losses(reference)  # steps 1..12 once each
    assert read_csv(paths.val_log) == read_csv(RunPaths(reference).val_log)


def test_nan_loss_stops_naming_step_and_term_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = BetaVAE.__call__
    calls = {"n": 0}

    def poisoned(objective, x, output, training=True):
        result = original(objective, x, output, training)
        if training:
            calls["n"] += 1
            if calls["n"] == 6:
                result.terms["kl"] = result.terms["kl"] * float("nan")
                result.loss = result.terms["recon"] + result.terms["kl"]
        return result

    monkeypatch.setattr(BetaVAE, "__call__", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 6 \(non-finite term: kl\)"):
        train(tiny_config(), tmp_path / "run")
    paths = RunPaths(tmp_path / "run")
    _, state = load_checkpoint(paths.last)
    assert state["step"] == 4
    assert read_info(paths)["status"] == "diverged"
    assert torch.isfinite(betavae.load(paths.root, "last").decode(torch.zeros(1, 4))).all()


def test_an_existing_run_folder_is_never_overwritten_silently(tiny_run, tmp_path):
    with pytest.raises(RunExistsError, match="--resume"):
        train(tiny_config(), tiny_run)
    target = tmp_path / "again"
    train(tiny_config(train={"max_steps": 2}), target)
    train(tiny_config(train={"max_steps": 3}), target, overwrite=True)
    assert read_info(RunPaths(target))["step"] == 3


def test_checkpoints_are_safetensors_and_loading_rejects_foreign_files(tmp_path, tiny_run):
    assert RunPaths(tiny_run).last.read_bytes()[8:9] == b"{"  # safetensors: 8-byte length, JSON header
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(foreign))
    with pytest.raises(ValueError, match="not a betavae checkpoint"):
        load_checkpoint(foreign)
    save_checkpoint(tmp_path / "ok.safetensors", {"w": torch.ones(2)}, {"step": 3})
    tensors, state = load_checkpoint(tmp_path / "ok.safetensors")
    assert state == {"step": 3} and torch.equal(tensors["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


def test_load_gives_a_model_that_encodes_and_decodes_unit_images(tiny_run):
    model = betavae.load(tiny_run)
    x = model.images(model.data().val_indices[:5])
    posterior = model.encode(x)
    assert posterior.mean.shape == (5, 4)
    recon = model.decode(posterior.mean)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    assert torch.equal(model.reconstruct(x), recon)
    sample = model.validation_sample(10, seed=3)
    assert len(sample) == 10 and set(sample) <= set(model.data().val_indices) and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, model.validation_sample(10, seed=3))
    assert np.array_equal(model.validation_sample(None), np.sort(model.data().val_indices))
    means, logvars = model.represent(model.data().images[model.data().val_indices[:5]])
    assert isinstance(means, np.ndarray) and np.allclose(means, posterior.mean.numpy()) and logvars.shape == (5, 4)


def test_train_log_has_a_row_per_step_with_throughput(tiny_run):
    with RunPaths(tiny_run).train_log.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert all(float(r["images_per_s"]) > 0 for r in rows)


def test_learning_rate_warms_up_linearly_then_decays_by_epoch(tmp_path, monkeypatch):
    config = tiny_config(train={"max_steps": 14, "lr": 0.003, "lr_warmup_steps": 6, "lr_decay": 0.5})
    reference = train(config, tmp_path / "straight").root
    lrs = [row["lr"] for row in read_csv(RunPaths(reference).train_log)]  # 12 steps per epoch
    assert lrs == pytest.approx([0.0005, 0.001, 0.0015, 0.002, 0.0025] + [0.003] * 7 + [0.0015] * 2)
    train_until_crash(config, tmp_path / "crashed", 5, monkeypatch)  # after the step-4 checkpoint, still warming up
    resume(tmp_path / "crashed")
    assert train_losses(tmp_path / "crashed") == train_losses(reference)


def test_tensorboard_gets_train_and_val_scalars_when_asked_for(tmp_path, monkeypatch):
    written = []

    class StubWriter:
        def __init__(self, log_dir, purge_step=None):
            pass

        def add_text(self, tag, text):
            pass

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def close(self):
            written.append(("closed", -1))

    import torch.utils.tensorboard

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", StubWriter)
    train(tiny_config(train={"max_steps": 4}), tmp_path / "off")
    assert written == []  # train.trackers: [csv] by default
    train(tiny_config(train={"max_steps": 4, "trackers": ["tensorboard"]}), tmp_path / "run")
    assert ("train/loss", 1) in written and ("train/kl", 4) in written and ("val/recon", 4) in written
    assert written[-1] == ("closed", -1)
