"""Disentanglement scores while training (``train.factor_metrics_every``): logged, resumable, drawn,
and without effect on the training itself."""
import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from betavae.checkpoint import load_checkpoint
from betavae.config import ConfigError
from betavae.data import build_data
from betavae.evaluation.disentanglement import factor_scores
from betavae.evaluation.figure_set import write_run_figures
from betavae.run_page import write_run_page
from betavae.runs import RunPaths, read_csv
from betavae.training import resume, train

from conftest import tiny_config, train_until_crash

# tiny checks: too few points for some factors, which scikit-learn warns about
pytestmark = pytest.mark.filterwarnings("ignore:The number of unique classes:UserWarning")
CHECKED = {"factor_metrics_every": 4, "factor_metrics_points": 30}


def test_each_check_logs_every_score_at_its_step_and_the_run_page_draws_them(tmp_path):
    paths = train(tiny_config(train={"max_steps": 10, **CHECKED}), tmp_path / "run")
    rows = read_csv(paths.factor_log)
    assert [row["step"] for row in rows] == [4, 8, 10]  # every 4 steps and the last
    for row in rows:
        assert set(row) == {"step", *(score.key for score in factor_scores())}
        assert all(0.0 <= value <= 1.0 for key, value in row.items() if key != "step")
    assert rows[0] != rows[-1]  # the model changed between checks, and so did its scores
    write_run_figures(paths.root)  # what `betavae train` does when training ends
    assert paths.figure("factor_metrics.png").stat().st_size > 1000
    assert "figures/factor_metrics.png" in write_run_page(paths.root).read_text()


def test_a_run_without_the_setting_has_no_curve(tiny_run, tmp_path):
    paths = RunPaths(Path(shutil.copytree(tiny_run, tmp_path / "run")))
    write_run_figures(paths.root)
    assert read_csv(paths.factor_log) == []
    assert not paths.figure("factor_metrics.png").exists()


def test_checks_leave_the_training_unchanged(tmp_path):
    plain = train(tiny_config(train={"max_steps": 10}), tmp_path / "plain")
    checked = train(tiny_config(train={"max_steps": 10, **CHECKED}), tmp_path / "checked")
    plain_weights, checked_weights = load_checkpoint(plain.last)[0], load_checkpoint(checked.last)[0]
    assert plain_weights.keys() == checked_weights.keys()
    for name, tensor in plain_weights.items():
        assert torch.equal(tensor, checked_weights[name]), name

    def losses(paths):  # every logged number but the throughput, which the checks slow
        return [{k: v for k, v in row.items() if k != "images_per_s"} for row in read_csv(paths.train_log)]

    assert losses(plain) == losses(checked)


def test_a_crashed_run_resumes_without_duplicate_checks(tmp_path, monkeypatch):
    config = tiny_config(train={"max_steps": 12, "checkpoint_every": 8, **CHECKED})
    reference = read_csv(train(config, tmp_path / "straight").factor_log)
    train_until_crash(config, tmp_path / "crashed", 10, monkeypatch)  # after the check and checkpoint at 8
    paths = resume(tmp_path / "crashed")
    assert read_csv(paths.factor_log) == reference


def test_checks_can_start_when_a_run_is_resumed(tmp_path):
    paths = train(tiny_config(train={"max_steps": 4}), tmp_path / "run")
    resume(paths.root, overrides=["train.max_steps=8", "train.factor_metrics_every=2",
                                  "train.factor_metrics_points=30"])
    assert [row["step"] for row in read_csv(paths.factor_log)] == [6, 8]
    write_run_figures(paths.root)
    assert paths.figure("factor_metrics.png").is_file()


def test_checks_turned_off_on_resume_keep_the_earlier_rows_whole(tmp_path):
    paths = train(tiny_config(train={"max_steps": 8, **CHECKED}), tmp_path / "run")
    before = read_csv(paths.factor_log)
    resume(paths.root, overrides=["train.max_steps=12", "train.factor_metrics_every=null"])
    assert read_csv(paths.factor_log) == before and [row["step"] for row in before] == [4, 8]


def test_data_without_factors_is_refused_before_training(tmp_path):
    config = tiny_config(train={"factor_metrics_every": 2})
    unlabelled = dataclasses.replace(build_data(config.data), factors=None, factor_names=(), source=None)
    with pytest.raises(ValueError, match="factor_metrics_every needs data with ground-truth factors"):
        train(config, tmp_path / "run", data=unlabelled)
    assert not RunPaths(tmp_path / "run").last.exists()


@pytest.mark.parametrize("setting", ["factor_metrics_every=0", "factor_metrics_points=5",
                                     "factor_metrics_points=1000000"])
def test_bad_settings_are_config_errors(setting):
    key, value = setting.split("=")
    with pytest.raises((ConfigError, ValueError)):
        tiny_config(train={key: int(value)})
