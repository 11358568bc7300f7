"""`betavae study` when things go wrong: SIGTERM of the driver or of a cell's own process stops the
cells at a checkpoint and a rerun resumes them; every failed attempt's traceback is kept; a Ray that
cannot start (or a cluster that does not answer) stops the study with the reason instead of waiting
forever."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from betavae.checkpoint import load_checkpoint
from betavae.runs import RunPaths
from betavae.study.folder import StudyPaths, read_state
from betavae.study.runner import CellTerminated, _record_failure

STUDY_CLI = [sys.executable, "-m", "betavae.cli", "study"]
EVALUATE = {"fid": False, "max_images": 16, "disentanglement": False, "top_k": 1}


def _study_file(folder: Path, name: str, max_steps: int, checkpoint_every: int) -> Path:
    study = {
        "name": name,
        "base": {"data": {"name": "dsprites", "num_images": 320, "image_size": 32}, "model": {"preset": "tiny"},
                 "train": {"max_steps": max_steps, "batch_size": 16, "lr": 0.003,
                           "checkpoint_every": checkpoint_every, "val_every": 250}},
        "datasets": {"dsprites": {}},
        "grid": {"objective.beta": [1]},
        "evaluate": EVALUATE,
        "resources": {"cpus": 1},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


# ----- error.txt keeps every attempt ------------------------------------------------------------

def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - a real traceback to record
        return caught


def test_error_txt_keeps_every_attempts_traceback_in_order(tmp_path):
    paths = StudyPaths(tmp_path)
    entry = {"name": "cell", "attempts": 1}
    _record_failure(paths, entry, _raised(ValueError("first problem")))
    entry["attempts"] = 2
    _record_failure(paths, entry, _raised(CellTerminated("second problem")))
    text = (tmp_path / "cells" / "cell" / "error.txt").read_text()
    headers = re.findall(r"^=== attempt (\d+), (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) ===$", text, re.M)
    assert [number for number, _ in headers] == ["1", "2"]
    first, second = text.split("=== attempt 2,")
    assert "Traceback" in first and "ValueError: first problem" in first and "second problem" not in first
    assert "Traceback" in second and "CellTerminated: second problem" in second
    assert entry["error"] == "CellTerminated: second problem"  # study.json keeps the latest, one line
    assert [p.name for p in (tmp_path / "cells" / "cell").iterdir()] == ["error.txt"]  # no temporary left

    # a later `betavae study` numbers its attempts from 1 again; its times tell them apart
    entry["attempts"] = 1
    _record_failure(paths, entry, _raised(RuntimeError("after a restart")))
    text = (tmp_path / "cells" / "cell" / "error.txt").read_text()
    assert [n for n in re.findall(r"^=== attempt (\d+),", text, re.M)] == ["1", "2", "1"]
    assert text.index("first problem") < text.index("second problem") < text.index("after a restart")


# ----- Ray start-up is bounded -------------------------------------------------------------------

def test_an_address_that_does_not_answer_fails_within_the_start_timeout(tmp_path):
    """Ray itself retries a silent GCS address for many minutes, printing warnings."""
    study = _study_file(tmp_path, "no-cluster", max_steps=4, checkpoint_every=2)
    started = time.monotonic()
    done = subprocess.run([*STUDY_CLI, str(study), "--out", str(tmp_path / "out"), "--quiet",
                           "--address", "127.0.0.1:1", "--start-timeout", "5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert ("betavae study: error: could not connect to the Ray cluster at 127.0.0.1:1 within 5 s: "
            "nothing answers at 127.0.0.1:1") in done.stderr
    assert "--start-timeout waits longer" in done.stderr
    assert time.monotonic() - started < 90  # imports + 5 s + Ray's client letting go; not Ray's ~15 min
    assert read_state(tmp_path / "out")["cells"]["dsprites_beta1"]["state"] == "pending"


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -n` (root) for a network without loopback")
def test_a_local_ray_without_a_usable_loopback_fails_at_once_with_the_reason(tmp_path):
    """In a network namespace whose loopback is down `ray.init()` waited forever; now the study says why."""
    study = _study_file(tmp_path, "no-loopback", max_steps=4, checkpoint_every=2)
    started = time.monotonic()
    done = subprocess.run(["unshare", "-n", *STUDY_CLI, str(study), "--out", str(tmp_path / "out"), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "betavae study: error: could not start a local Ray instance: 127.0.0.1 is not usable" in done.stderr
    assert "check that 127.0.0.1 is usable, or pass --address" in done.stderr
    assert time.monotonic() - started < 60


# ----- SIGTERM: the cell's process, then the driver ------------------------------------------------

def _wait_for(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; driver log:\n"
                         f"{log.read_text()[-3000:] if log.is_file() else ''}")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _checkpoint_step(path: Path) -> int:
    try:
        return load_checkpoint(path)[1]["step"]
    except Exception:  # noqa: BLE001 - missing, or being replaced
        return -1


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def _cell_worker(driver: int) -> int | None:
    """The Ray worker process running our cell (its title is ``ray::run_cell``)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::run_cell") and _descends_from(int(entry.name), driver):
            return int(entry.name)
    return None


def _train_steps(run: Path) -> list[int]:
    with (run / "metrics" / "train.csv").open(newline="") as handle:
        return [int(float(row["step"])) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_sigterm_stops_cells_at_a_checkpoint_and_a_rerun_finishes_them(tmp_path):
    max_steps = 400  # a few seconds at most on an idle machine, still ~8 times what steps 1 and 2 need
    study = _study_file(tmp_path, "stop-me", max_steps=max_steps, checkpoint_every=10)
    out = tmp_path / "out"
    run = StudyPaths(out).cell("dsprites_beta1")
    info, last, log = run / "run.json", run / "checkpoints" / "last.safetensors", tmp_path / "driver.log"
    command = [*STUDY_CLI, str(study), "--out", str(out), "--quiet", "--num-cpus", "1", "--start-timeout", "300"]
    with log.open("w") as sink:
        driver = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # 1. SIGTERM to the cell's own process (Slurm and docker signal every process): it saves
        #    `last` at the step boundary, ends as interrupted, and the driver's retry resumes it
        _wait_for(lambda: _json(info).get("status") == "running" and _checkpoint_step(last) > 0, 300,
                  "the cell to train and checkpoint", log)
        worker = _wait_for(lambda: _cell_worker(driver.pid), 60, "the cell's worker process", log)
        os.kill(worker, signal.SIGTERM)
        stopped = _wait_for(lambda: _json(info) if _json(info).get("status") == "interrupted" else None, 60,
                            "the cell to stop", log)
        assert stopped["stopped_by"] == "SIGTERM" and stopped["step"] == _checkpoint_step(last) > 0
        retry = _wait_for(lambda: _json(out / "study.json").get("cells", {}).get("dsprites_beta1", {})
                          if _json(out / "study.json")["cells"]["dsprites_beta1"]["attempts"] == 2 else None,
                          60, "the driver to retry the cell", log)
        assert retry["error"].startswith("CellTerminated: ")
        error_txt = (run / "error.txt").read_text()
        assert error_txt.startswith("=== attempt 1, ") and "received SIGTERM" in error_txt
        _wait_for(lambda: _checkpoint_step(last) > stopped["step"], 120, "the retry to resume and checkpoint", log)

        # 2. SIGTERM to the driver: the cells stop at a checkpoint, exit code 143
        os.kill(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=120) == 143, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    output = log.read_text()
    assert "betavae study: terminated (SIGTERM)" in output and "stopping 1 cell(s)" in output
    cell = read_state(out)["cells"]["dsprites_beta1"]
    assert cell["state"] == "interrupted" and cell["attempts"] == 2
    after = _json(info)
    assert after["status"] == "interrupted", after  # not "running": training saved and recorded its stop
    assert stopped["step"] < after["step"] == _checkpoint_step(last) < max_steps

    # 3. the next `betavae study` resumes the cell and finishes it, every step logged once
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    cell = read_state(out)["cells"]["dsprites_beta1"]
    assert cell["state"] == "finished" and cell["attempts"] == 1
    assert _json(info)["status"] == "finished" and RunPaths(run).eval_metrics.is_file()
    assert _train_steps(run) == list(range(1, max_steps + 1))


# ----- the driver's stop: graceful first, then by force --------------------------------------------

class _FakeRay:
    """Answers like Ray for refs that finish ("ok"), end cancelled ("cancelled") or never stop (None)."""

    def __init__(self, outcomes: dict):
        self.outcomes, self.calls = outcomes, []

    def cancel(self, ref, force=False):
        self.calls.append((ref, force))

    def wait(self, refs, num_returns, timeout):
        ready = [ref for ref in refs if self.outcomes[ref] is not None]
        if len(ready) < num_returns:
            time.sleep(timeout)
        return ready, [ref for ref in refs if ref not in ready]

    def get(self, ref):
        if self.outcomes[ref] != "ok":
            raise RuntimeError("TaskCancelledError")


def test_stopping_asks_every_cell_first_then_forces_the_ones_still_running(tmp_path):
    from betavae.study.runner import _stop_cells

    paths = StudyPaths(tmp_path)
    done = RunPaths(paths.cell("done")).eval_metrics
    done.parent.mkdir(parents=True)
    done.write_text(json.dumps({"headline": {"psnr_val": 20.0, "ssim_val": 0.5}}))
    names = ["done", "checkpointed", "stuck", "between-attempts", "earlier"]
    state = {"cells": {name: {"name": name, "state": "training", "error": None} for name in names}}
    state["cells"]["between-attempts"]["state"] = "retrying"  # failed, not yet resubmitted
    state["cells"]["earlier"]["state"] = "finished"
    running = {name: SimpleNamespace(name=name) for name in ("done", "checkpointed", "stuck")}  # ref → cell
    ray = _FakeRay({"done": "ok", "checkpointed": "cancelled", "stuck": None})
    started = time.monotonic()
    _stop_cells(ray, running, paths, state, grace=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    graceful = [ref for ref, force in ray.calls if not force]
    assert graceful == ["done", "checkpointed", "stuck"] and ray.calls[3:] == [("stuck", True)]
    states = {name: entry["state"] for name, entry in read_state(tmp_path)["cells"].items()}
    assert states == {"done": "finished", "checkpointed": "interrupted", "stuck": "interrupted",
                      "between-attempts": "interrupted", "earlier": "finished"}
    assert read_state(tmp_path)["cells"]["done"]["headline"] == {"psnr_val": 20.0, "ssim_val": 0.5}
