"""Never lose a user's work: overwrite, atomic logs, signals, exact resume, divergence, locks, data
checks, config errors before any file, and one-line errors instead of tracebacks."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import betavae
from betavae.checkpoint import load_checkpoint
from betavae.cli import main
from betavae.data import build_data
from betavae.objectives import BetaVAE
from betavae.runs import CsvLog, RunLockedError, RunPaths, read_csv, read_info, run_lock
from betavae.training import DataChangedError, Trainer, TrainingDiverged, resume, train

from conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "data.num_images=128", "--set", "data.image_size=32", "--set", "model.preset=tiny",
        "--set", "train.max_steps=3", "--set", "train.batch_size=16", "--set", "train.progress=false"]


def curve(root) -> list[dict]:
    """The train log without its wall-clock column."""
    return [{k: v for k, v in row.items() if k != "images_per_s"} for row in read_csv(RunPaths(root).train_log)]


def checkpoint_tensors(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


# ----- 1. --overwrite only ever replaces a run folder ------------------------------------------------
def _user_folder(root: Path) -> Path:
    (root / "photos").mkdir(parents=True)
    (root / "photos" / "cat.jpg").write_bytes(b"precious")
    (root / "notes.txt").write_text("mine")
    return root


@pytest.mark.parametrize("command", [["train", *TINY], ["demo", *TINY[:2]]])
def test_overwrite_refuses_a_folder_that_is_not_a_run_and_does_not_suggest_it(tmp_path, capsys, command):
    folder = _user_folder(tmp_path / "data")
    assert main([*command, "--out", str(folder), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not a betavae run folder" in err and "--overwrite" not in err
    assert (folder / "photos" / "cat.jpg").read_bytes() == b"precious" and (folder / "notes.txt").is_file()
    assert main([*command, "--out", str(folder)]) == 2
    assert "--overwrite" not in capsys.readouterr().err


def test_overwrite_refuses_a_run_folder_holding_a_users_file(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "thesis.tex").write_text("do not delete")
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 2
    assert (run / "thesis.tex").is_file()


def test_overwrite_replaces_a_run_folder(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "checkpoints" / ".last.safetensors.x1.tmp").write_bytes(b"")
    assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 0
    assert read_info(RunPaths(run))["step"] == 3


# ----- 2. atomic log truncation ---------------------------------------------------------------------
def test_an_interrupted_log_truncation_keeps_every_row(tmp_path, monkeypatch):
    log = CsvLog(tmp_path / "train.csv", ["step", "loss"])
    log.append([{"step": s, "loss": s / 10} for s in range(1, 101)])
    before = log.path.read_text()

    def interrupted(self, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(csv.DictWriter, "writerows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        log.truncate_after(50)
    monkeypatch.undo()
    assert log.path.read_text() == before
    assert not list(tmp_path.glob("*.tmp"))
    log.truncate_after(50)
    assert [row["step"] for row in read_csv(log.path)] == list(range(1, 51))


def test_a_row_torn_by_a_crash_is_dropped_on_read(tmp_path):
    log = CsvLog(tmp_path / "train.csv", ["step", "loss", "kl"])
    log.append([{"step": 1, "loss": 1.0, "kl": 0.5}])
    with log.path.open("a") as handle:
        handle.write("2,0.9")  # a kill during the append
    assert read_csv(log.path) == [{"step": 1.0, "loss": 1.0, "kl": 0.5}]
    log.truncate_after(5)
    assert log.path.read_text().splitlines() == ["step,loss,kl", "1,1.0,0.5"]


# ----- 3 and 4. signals only between steps; resume is exact -----------------------------------------
def _signal_inside_step(monkeypatch, where: str, at_step: int, signum: int) -> None:
    """Sends ``signum`` to this process at ``where`` during training step ``at_step`` (1-based)."""
    def fire(trainer) -> None:
        if trainer.state.step == at_step - 1:
            signal.raise_signal(signum)
    if where == "batch":
        original_batch = Trainer.batch
        monkeypatch.setattr(Trainer, "batch", lambda t, i, step=None: (fire(t), original_batch(t, i, step))[1])
    elif where in ("forward", "objective", "optimizer"):
        original = Trainer.train_step

        def train_step(trainer, x, lr):
            if where == "forward":
                hook = trainer.model.decoder.register_forward_hook(lambda *a: fire(trainer))
            elif where == "objective":  # after the encoder drew its noise: inside the objective
                hook = trainer.model.register_forward_hook(lambda *a: fire(trainer))
            else:  # after backward, before the update
                hook = trainer.optimizer.register_step_pre_hook(lambda *a: fire(trainer))
            try:
                return original(trainer, x, lr)
            finally:
                hook.remove()

        monkeypatch.setattr(Trainer, "train_step", train_step)
    elif where == "checkpoint":
        original_save = Trainer.save

        def save(trainer, path, with_training_state=True):
            if with_training_state and trainer.state.step == at_step:  # the periodic `last`
                signal.raise_signal(signum)
            return original_save(trainer, path, with_training_state)

        monkeypatch.setattr(Trainer, "save", save)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    config = tiny_config(data={"hflip": True}, train={"max_steps": 10, "val_every": 3, "checkpoint_every": 4})
    return config, train(config, tmp_path_factory.mktemp("straight") / "run").root


@pytest.mark.parametrize("where,signum", [
    ("batch", signal.SIGINT), ("forward", signal.SIGINT), ("objective", signal.SIGTERM),
    ("optimizer", signal.SIGINT), ("validation", signal.SIGTERM), ("checkpoint", signal.SIGINT),
])
def test_a_signal_anywhere_inside_a_step_resumes_bit_for_bit(tmp_path, monkeypatch, straight_run, where, signum):
    config, reference = straight_run
    at_step = 6 if where != "checkpoint" else 4
    if where == "validation":
        at_step = 6  # validation runs after steps 3, 6, 9; the first one is let through
        calls = {"n": 0}
        original_validate = Trainer.validate

        def validate(trainer):
            calls["n"] += 1
            if calls["n"] == 2:
                signal.raise_signal(signum)
            return original_validate(trainer)

        monkeypatch.setattr(Trainer, "validate", validate)
    else:
        _signal_inside_step(monkeypatch, where, at_step, signum)
    expected = KeyboardInterrupt if signum == signal.SIGINT else betavae.interrupts.Terminated
    with pytest.raises(expected):
        train(config, tmp_path / "run")
    monkeypatch.undo()
    paths = RunPaths(tmp_path / "run")
    info = read_info(paths)
    assert info["status"] == "interrupted" and info["step"] == at_step
    assert load_checkpoint(paths.last)[1]["step"] == at_step
    assert info["stopped_by"] == ("SIGINT" if signum == signal.SIGINT else "SIGTERM")
    assert max(row["step"] for row in read_csv(paths.train_log)) == at_step

    resume(paths.root)
    assert curve(paths.root) == curve(reference)
    assert read_csv(paths.val_log) == read_csv(RunPaths(reference).val_log)
    got, want = checkpoint_tensors(paths.last), checkpoint_tensors(RunPaths(reference).last)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_sigterm_to_the_train_command_checkpoints_and_exits_143(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "betavae.cli", "train", *TINY, "--set", "train.max_steps=100000",
               "--set", "train.checkpoint_every=100000", "--out", str(run), "--no-figures"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    log = RunPaths(run).train_log
    try:
        for _ in range(3000):  # until the first rows are logged (a validation each epoch of 6 steps)
            if log.is_file() and len(read_csv(log)) >= 6:
                break
            try:
                process.wait(timeout=0.1)
                break  # it ended by itself: reported below
            except subprocess.TimeoutExpired:
                pass
        assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "--resume" in err
    info = read_info(RunPaths(run))
    step = load_checkpoint(RunPaths(run).last)[1]["step"]
    assert info["status"] == "interrupted" and info["stopped_by"] == "SIGTERM" and info["step"] == step >= 6
    assert [row["step"] for row in read_csv(log)] == list(range(1, step + 1))


# ----- 6. divergence ---------------------------------------------------------------------------------
def _explode_at(monkeypatch, call: int, factor: float = 1e9) -> None:
    original = BetaVAE.__call__
    calls = {"n": 0}

    def exploding(objective, x, output, training=True):
        result = original(objective, x, output, training)
        if training:
            calls["n"] += 1
            if calls["n"] >= call:
                result.loss = result.loss * factor
        return result

    monkeypatch.setattr(BetaVAE, "__call__", exploding)


def test_an_exploding_loss_stops_training_before_the_update(tmp_path, monkeypatch):
    _explode_at(monkeypatch, call=30)
    config = tiny_config(train={"max_steps": 60, "checkpoint_every": 8, "val_every": 8})
    with pytest.raises(TrainingDiverged, match=r"exploded .* at step 30") as raised:
        train(config, tmp_path / "run")
    paths = RunPaths(tmp_path / "run")
    assert f"the last good checkpoint is {paths.last} (step 24)" in str(raised.value)
    assert "--resume" in str(raised.value)
    assert read_info(paths)["status"] == "diverged"


def test_a_nan_before_any_checkpoint_names_no_checkpoint(tmp_path, monkeypatch):
    _explode_at(monkeypatch, call=2, factor=float("nan"))
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet") as raised:
        train(tiny_config(), tmp_path / "run")
    assert "last.safetensors" not in str(raised.value)


def test_a_non_finite_weight_is_never_written_to_a_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(model={"preset": "tiny", "batch_norm": True}, train={"max_steps": 12})
    original = Trainer.save

    def poison_then_save(trainer, path, with_training_state=True):
        if trainer.state.step == 8:
            running_var = next(v for k, v in trainer.model.state_dict().items() if k.endswith("running_var"))
            running_var.fill_(float("inf"))
        return original(trainer, path, with_training_state)

    monkeypatch.setattr(Trainer, "save", poison_then_save)
    with pytest.raises(TrainingDiverged, match=r"non-finite values in model\..*running_var at step 8"):
        train(config, tmp_path / "run")
    paths = RunPaths(tmp_path / "run")
    tensors, state = load_checkpoint(paths.last)
    assert state["step"] == 4 and all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    tensors, _ = load_checkpoint(paths.best)
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_a_huge_learning_rate_diverges_and_every_checkpoint_is_finite(tmp_path):
    config = tiny_config(model={"preset": "tiny", "batch_norm": True},
                         train={"max_steps": 200, "lr": 50.0, "checkpoint_every": 2, "val_every": 2})
    with pytest.raises(TrainingDiverged):
        train(config, tmp_path / "run")
    for path in (tmp_path / "run" / "checkpoints").glob("*.safetensors"):
        tensors, _ = load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_resume_takes_safe_overrides_to_recover_and_refuses_others(tmp_path, monkeypatch, capsys):
    _explode_at(monkeypatch, call=30)
    config = tiny_config(train={"max_steps": 40, "checkpoint_every": 8})
    with pytest.raises(TrainingDiverged):
        train(config, tmp_path / "run")
    monkeypatch.undo()
    run = str(tmp_path / "run")
    assert main(["train", "--resume", run, "--set", "model.latent_dim=3"]) == 2
    assert "cannot change 'model.latent_dim'" in capsys.readouterr().err
    assert main(["train", "--resume", run, "--set", "train.lr=0.001", "--set", "train.max_steps=44",
                 "--no-figures"]) == 0
    paths = RunPaths(Path(run))
    info = read_info(paths)
    assert info["status"] == "finished" and info["step"] == 44
    assert info["resume_overrides"] == [{"at_step": 24, "set": ["train.lr=0.001", "train.max_steps=44"]}]
    saved = yaml.safe_load(paths.config.read_text())["train"]
    assert saved["lr"] == 0.001 and saved["max_steps"] == 44
    lrs = [row["lr"] for row in read_csv(paths.train_log)]
    assert len(lrs) == 44 and lrs[:24] == [0.003] * 24 and lrs[24:] == [0.001] * 20


# ----- 7. one process per run folder ----------------------------------------------------------------
def test_a_second_process_cannot_train_a_locked_run(tmp_path, tiny_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from betavae.runs import RunPaths, run_lock\n"
         f"with run_lock(RunPaths(__import__('pathlib').Path({str(run)!r}))):\n"
         "    print('locked', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--resume", str(run), "--set", "train.max_steps=10"]) == 2
        err = capsys.readouterr().err
        assert f"is being trained by pid {holder.pid}" in err
        assert main(["train", *TINY, "--out", str(run), "--overwrite"]) == 2
        assert (run / "config.yaml").is_file()
    finally:
        holder.communicate("")
    assert main(["train", "--resume", str(run), "--set", "train.max_steps=10", "--no-figures"]) == 0


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    paths = RunPaths(tmp_path / "run")
    with pytest.raises(ZeroDivisionError):
        with run_lock(paths):
            with pytest.raises(RunLockedError):
                with run_lock(paths):
                    pass
            1 / 0
    with run_lock(paths):
        pass


# ----- 8. resume checks its data -----------------------------------------------------------------------
def test_resume_refuses_another_split_unless_allowed(tmp_path):
    config = tiny_config(train={"max_steps": 6})
    paths = RunPaths(tmp_path / "run")
    train(config, paths.root)
    data = build_data(config.data)
    swapped = type(data)(**{**data.__dict__, "train_indices": data.train_indices[16:],
                            "val_indices": np.concatenate([data.val_indices, data.train_indices[:16]])})
    old = read_info(paths)["data"]["val_indices_hash"]
    with pytest.raises(DataChangedError, match="split changed") as raised:
        resume(paths.root, data=swapped, overrides=["train.max_steps=8"])
    assert old in str(raised.value) and "--allow-data-change" in str(raised.value)
    resume(paths.root, data=swapped, overrides=["train.max_steps=8"], allow_data_change=True)
    info = read_info(paths)
    assert info["data"]["val_indices_hash"] != old and info["data_changes"][0]["from"]["val_indices_hash"] == old


# ----- 10. config errors before any folder is made ---------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("train.device=cuda", "CUDA is not available"),
    ("train.device=foo", "train.device"),
    ("train.precision=fp16", "fp16"),
    ("data.image_size=0", "data.image_size"),
    ("train.batch_size=500", "larger than the"),
    ("data.num_images=1", "too few"),
    ("train.seed=-1", "train.seed"),
    ("data.seed=-3", "data.seed"),
])
def test_a_config_error_leaves_no_folder(tmp_path, capsys, override, message):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--set", override, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_unprepared_data_path_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--set", "data.name=prepared", "--set", f"data.path={tmp_path / 'nothing'}"]
    assert main(["train", *TINY, *args, "--out", str(out)]) == 2
    assert "nothing" in capsys.readouterr().err and not out.exists()


# ----- 11. one line, never a traceback ---------------------------------------------------------------
def test_malformed_yaml_is_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert f"{bad} is not valid YAML" in capsys.readouterr().err
    assert main(["train", *TINY, "--set", "train.lr=[1", "--out", str(tmp_path / "r")]) == 2
    assert "'train.lr=[1': the value is not valid YAML" in capsys.readouterr().err


@pytest.fixture
def run_copy(tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


def test_a_garbage_or_truncated_checkpoint_is_named(run_copy, tmp_path, capsys):
    paths = RunPaths(run_copy)
    paths.last.write_bytes(b"\x00garbage" * 5)
    assert main(["sample", str(run_copy), "--checkpoint", "last", "--out", str(tmp_path / "g.png")]) == 2
    assert f"checkpoint {paths.last} is damaged" in capsys.readouterr().err
    paths.best.write_bytes(paths.best.read_bytes()[:-10])
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {paths.best} is damaged" in err and f"fallback: checkpoint {paths.last} is damaged" in err


def test_a_damaged_best_falls_back_to_last(run_copy):
    paths = RunPaths(run_copy)
    paths.best.write_bytes(paths.best.read_bytes()[:100])
    with pytest.warns(UserWarning, match="using .*last.safetensors instead"):
        model = betavae.load(run_copy)
    last = load_checkpoint(paths.last)[0]
    assert all(torch.equal(v, last[f"model.{k}"]) for k, v in model.model.state_dict().items())


def test_an_edited_latent_dim_is_named(run_copy, capsys, tmp_path):
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    config["model"]["latent_dim"] = 7
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["sample", str(run_copy), "--out", str(tmp_path / "s.png")]) == 2
    assert "config.yaml does not match the weights" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["sample", "-n", "0"], ["sample", "-n", "-5"], ["sample", "--nrow", "0"],
                                  ["reconstruct", "-n", "0"]])
def test_non_positive_counts_are_refused_by_the_parser(run_copy, tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        main([args[0], str(run_copy), *args[1:], "--out", str(tmp_path / "x.png")])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err


def test_traverse_of_a_non_image_is_one_line(run_copy, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["traverse", str(run_copy), "--image", str(text), "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "Traceback" not in err


# ----- also --------------------------------------------------------------------------------------------
def test_resume_cleans_up_temporary_files_and_checkpoints_are_readable_by_others(run_copy):
    paths = RunPaths(run_copy)
    stale = paths.root / "checkpoints" / ".last.safetensors.abc123.tmp"
    stale.write_bytes(b"")
    resume(run_copy, overrides=["train.max_steps=10"])
    assert not stale.exists()
    assert paths.last.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_run_json_says_which_precision_auto_chose_and_why(tiny_run):
    info = read_info(RunPaths(tiny_run))
    assert info["precision"] in ("fp32", "bf16") and info["precision_reason"].startswith(f"auto → {info['precision']}")


def test_training_batches_come_from_the_device_copy_with_the_host_paths_values(tiny_run):
    from betavae.runs import read_config

    config = read_config(tiny_run).model_copy(deep=True)
    config.data.hflip = True
    trainer = Trainer(config, RunPaths(tiny_run))
    assert trainer.device_images is not None and "in place" in read_info(RunPaths(tiny_run))["data_placement"]
    indices = trainer.data.train_indices[:16]
    on_device = trainer.batch(indices, step=5)
    trainer.device_images = None  # the host path
    assert torch.equal(on_device, trainer.batch(indices, step=5))
