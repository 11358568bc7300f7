import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from betavae.cli import build_parser, main
from betavae.evaluation.headline import read_headline
from betavae.runs import RunPaths, read_info


def tiny_overrides() -> list[str]:
    return [
        "--set", "data.num_images=128", "--set", "data.image_size=32", "--set", "model.preset=tiny",
        "--set", "train.max_steps=3", "--set", "train.batch_size=16", "--set", "train.progress=false",
    ]


def test_every_command_has_help(capsys):
    parser = build_parser()
    for command in ("train", "sample", "reconstruct", "info", "demo"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command, "--help"])
        assert exit_.value.code == 0
        assert "usage: betavae " + command in capsys.readouterr().out


def test_train_with_overrides_writes_a_run_with_figures(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "configs/dsprites.yaml", "--set", "objective.beta=2", *tiny_overrides(), "--out", str(out)]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["objective"]["beta"] == 2 and config["name"] == "dsprites"
    for name in ("curves", "samples", "reconstructions", "traversals", "kl_per_dim"):
        assert (out / "figures" / f"{name}.png").is_file()
    assert "figures/traversals.png" in (out / "index.html").read_text()


def test_existing_run_is_refused_and_bad_config_exits_2(tmp_path, tiny_run, capsys):
    assert main(["train", *tiny_overrides(), "--out", str(tiny_run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--set", "train.bogus=1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown key 'train.bogus'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_resume_of_a_finished_run_keeps_its_steps(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    assert main(["train", "--resume", str(copy), "--no-figures"]) == 0
    assert read_info(RunPaths(copy))["step"] == 8


def test_sample_grid_and_folder_with_fixed_and_swept_dims(tiny_run, tmp_path):
    grid = tmp_path / "grid.png"
    assert main(["sample", str(tiny_run), "-n", "6", "--nrow", "3", "--out", str(grid)]) == 0
    assert Image.open(grid).size == (3 * 34 + 2, 2 * 34 + 2)
    folder = tmp_path / "synthetic"
    assert main(["sample", str(tiny_run), "-n", "5", "--out", str(folder), "--fix", "1=2.5", "--sweep", "0=-3:3"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    codes = np.array([entry["z"] for entry in manifest["samples"]])
    assert np.allclose(codes[:, 1], 2.5) and np.allclose(codes[:, 0], np.linspace(-3, 3, 5))
    assert all((folder / entry["file"]).is_file() for entry in manifest["samples"])
    assert main(["sample", str(tiny_run), "-n", "2", "--out", str(grid), "--fix", "9=1"]) == 2


def test_sampling_is_seeded(tiny_run, tmp_path):
    for name in ("a.png", "b.png"):
        main(["sample", str(tiny_run), "-n", "4", "--seed", "3", "--out", str(tmp_path / name)])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_reconstruct_and_info(tiny_run, tmp_path, capsys):
    out = tmp_path / "recon.png"
    assert main(["reconstruct", str(tiny_run), "-n", "4", "--out", str(out)]) == 0
    assert Image.open(out).size == (4 * 34 + 2, 2 * 34 + 2)
    capsys.readouterr()
    assert main(["info", str(tiny_run)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["status"] == "finished" and printed["config"]["model"]["latent_dim"] == 4


def test_demo_trains_then_redraws_without_retraining(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = [a.replace("model.preset=tiny", "model.channels=[8,16]") for a in tiny_overrides()]
    assert main(["demo", "--out", str(out), *overrides, "--points", "200"]) == 0
    assert (out / "index.html").is_file() and (out / "figures" / "samples.png").is_file()
    headline = read_headline(out)  # evaluated: metrics on the page, the factor heatmap drawn
    assert headline.value("mig") is not None and headline.value("fid") is None
    assert (out / "figures" / "mi_heatmap.png").is_file() and "MIG" in (out / "index.html").read_text()
    first, evaluated = RunPaths(out).last.stat().st_mtime_ns, RunPaths(out).eval_metrics.stat().st_mtime_ns
    assert main(["demo", "--out", str(out)]) == 0
    assert "finished earlier" in capsys.readouterr().out
    assert RunPaths(out).last.stat().st_mtime_ns == first
    assert RunPaths(out).eval_metrics.stat().st_mtime_ns == evaluated  # not evaluated again


def test_q_silences_every_progress_bar_and_message(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    argv = ["evaluate", str(run), "--no-fid", "--disentanglement-points", "100", "--dci-points", "60"]
    loud = subprocess.run([sys.executable, "-m", "betavae", *argv], capture_output=True, text=True)
    quiet = subprocess.run([sys.executable, "-m", "betavae", "-q", *argv], capture_output=True, text=True)
    assert loud.returncode == quiet.returncode == 0
    assert "reconstruction (validation)" in loud.stderr and quiet.stderr == ""
    assert json.loads(quiet.stdout[:quiet.stdout.rindex("}") + 1])["n_val"] > 0  # the results still print
