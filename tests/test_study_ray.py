"""A study through a local Ray instance: cells run as tasks, a failing cell is retried once and
reported while the others finish, and a restart skips the finished cells."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from betavae.runs import RunPaths
from betavae.study.folder import StudyPaths, read_state
from betavae.study.runner import run_study


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (`make test` sends a whole file to one xdist worker)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    empty = root / "not-prepared"
    empty.mkdir()  # exists, so the pre-flight check passes, but holds no prepared data: the cell fails
    photos = root / "photos"  # outside images for PSNR/SSIM, as the article evaluated
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 48), dtype=np.uint8)).save(photos / f"{i}.png")
    study = {
        "name": "two-cells",
        "base": {"data": {"name": "dsprites", "num_images": 256, "image_size": 32}, "model": {"preset": "tiny"},
                 "train": {"max_steps": 8, "batch_size": 16, "lr": 0.003, "checkpoint_every": 4, "val_every": 4}},
        "datasets": {"dsprites": {"images": str(photos)},
                     "broken": {"set": {"data.name": "prepared", "data.path": str(empty)}}},
        "grid": {"objective.beta": [1]},
        "extra": [{"dataset": "dsprites", "set": {"objective.beta": 4}}],
        "evaluate": {"fid": False, "max_images": 32, "disentanglement_points": 200, "dci_points": 100, "top_k": 2},
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def first_run(local_ray, study_file):
    out = study_file.parent / "out"
    return out, run_study(study_file, out, live=False)


def test_cells_run_on_ray_into_one_run_folder_each(first_run):
    out, state = first_run
    cells = state["cells"]
    assert {n: c["state"] for n, c in cells.items()} == {
        "dsprites_beta1": "finished", "broken_beta1": "failed", "dsprites_beta4": "finished"}
    for name in ("dsprites_beta1", "dsprites_beta4"):
        run = StudyPaths(out).cell(name)
        headline = json.loads(RunPaths(run).eval_metrics.read_text())["headline"]
        assert headline["n_val"] == 32 and headline["n_outside"] == 3 and "mig" in headline
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["progress"] is False
        assert cells[name]["attempts"] == 1 and cells[name]["error"] is None
        assert cells[name]["headline"] == headline
    assert read_state(out)["cells"] == cells
    assert (out / "study.yaml").read_text() == (out.parent / "study.yaml").read_text()


def test_a_failing_cell_is_retried_once_then_reported(first_run):
    out, state = first_run
    broken = state["cells"]["broken_beta1"]
    assert broken["attempts"] == 2
    assert broken["error"].startswith("PrepareError") and "not-prepared" in broken["error"]
    text = (StudyPaths(out).cell("broken_beta1") / "error.txt").read_text()
    assert re.findall(r"^=== attempt (\d+), ", text, re.M) == ["1", "2"]  # every attempt's traceback kept
    attempts = re.split(r"^=== attempt ", text, flags=re.M)[1:]
    assert all("Traceback" in attempt and "not-prepared" in attempt for attempt in attempts)
    assert "broken_beta1" in (out / "report.html").read_text()


def test_a_restart_skips_finished_cells_and_retries_failed_ones(first_run, study_file):
    out, _ = first_run
    checkpoints = {name: StudyPaths(out).cell(name) / "checkpoints" / "last.safetensors"
                   for name in ("dsprites_beta1", "dsprites_beta4")}
    before = {name: path.stat().st_mtime_ns for name, path in checkpoints.items()}
    state = run_study(study_file, out, live=False)
    for name in checkpoints:
        assert state["cells"][name]["state"] == "finished" and state["cells"][name]["skipped"] is True
        assert state["cells"][name]["attempts"] == 0 and state["cells"][name]["headline"]["psnr_val"] > 0
        assert checkpoints[name].stat().st_mtime_ns == before[name]
    assert state["cells"]["broken_beta1"]["state"] == "failed" and state["cells"]["broken_beta1"]["attempts"] == 2
    text = (StudyPaths(out).cell("broken_beta1") / "error.txt").read_text()
    assert re.findall(r"^=== attempt (\d+), ", text, re.M) == ["1", "2", "1", "2"]  # appended, not replaced


def test_the_cli_runs_a_study_on_an_existing_cluster_and_leaves_it_running(local_ray, study_file):
    study = yaml.safe_load(study_file.read_text())
    study.update(name="on-cluster", datasets={"dsprites": {}}, grid={"objective.beta": [2]}, extra=[])
    path = study_file.parent / "on-cluster.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    out = study_file.parent / "on-cluster"
    address = local_ray.get_runtime_context().gcs_address
    done = subprocess.run([sys.executable, "-m", "betavae.cli", "study", str(path), "--out", str(out),
                           "--address", address, "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"report: {out / 'report.html'}" in done.stdout
    assert read_state(out)["cells"]["dsprites_beta2"]["state"] == "finished"
    assert local_ray.cluster_resources()["CPU"] == 2  # the cluster the study joined is still up
