"""A study whose cells are chosen among starts: the starts block, its seeds, cell folders, the report."""
from __future__ import annotations

import pytest
import yaml

from betavae.config import ConfigError
from betavae.runs import read_config
from betavae.starts import StartsPolicy, read_starts
from betavae.study.folder import StudyPaths, cell_finished, write_state
from betavae.study.report import write_report
from betavae.study.runner import _check_inputs, _initial_state, _resolved, dry_run, run_cell
from betavae.study.spec import load_study
from tests.conftest import fake_judge
from tests.test_study_spec import write_study

STARTS = {"starts": 3, "steps": 4, "min_separation": 0.75}
EVALUATE = {"fid": False, "max_images": 16, "disentanglement": False, "top_k": 1, "images": None}


def test_a_starts_block_checks_seeds_within_a_setting_only(tmp_path):
    # seeds 1 and 4 of one β never share a start; seed 1 of β 1 and of β 4 are other settings
    spec, cells = load_study(write_study(tmp_path, grid={"objective.beta": [1, 4], "train.seed": [1, 4]}, starts=STARTS))
    assert len(cells) == 4 and spec.starts.policy() == StartsPolicy(3, 4, 0.75)
    with pytest.raises(ConfigError, match="cells dsprites_beta1_seed1 and dsprites_beta1_seed3 differ only in their seed"):
        load_study(write_study(tmp_path, grid={"objective.beta": [1, 4], "train.seed": [1, 3]}, starts=STARTS))
    # without starts (the default: one) neighbouring seeds are fine
    assert load_study(write_study(tmp_path, grid={"train.seed": [1, 2]}))[0].starts.starts == 1
    assert yaml.safe_load(dry_run(write_study(tmp_path, grid={"train.seed": [1, 4]}, starts=STARTS)))["starts"] == STARTS


def test_a_cell_with_starts_keeps_the_first_separated_seed_and_the_report_names_it(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    study_file = write_study(tmp_path, grid={"train.seed": [1265]}, starts=STARTS)
    spec, [cell] = load_study(study_file)
    paths = StudyPaths(tmp_path / "out")
    run_cell(str(paths.cell(cell.name)), _resolved(cell.config), EVALUATE, 1, spec.starts.model_dump())
    assert judged == [1265, 1266] and cell_finished(paths.cell(cell.name))
    trained = read_config(paths.cell(cell.name)).train
    assert (trained.seed, trained.max_steps) == (1266, cell.config.train.max_steps)
    assert read_starts(paths.cell(cell.name))["chosen"] == 1266
    # the cell's folder is its own under the same starts, though it trained another seed
    configs = {cell.name: _resolved(cell.config)}
    _check_inputs([cell], configs, paths, spec.starts.policy())
    for other in (StartsPolicy(2, 4, 0.75), StartsPolicy(starts=1)):
        with pytest.raises(ConfigError, match=r"was chosen among starts \(starts: 3, steps: 4, min_separation: 0.75\) "
                                              rf"but the study asks for starts: {other.starts}"):
            _check_inputs([cell], configs, paths, other)
    state = _initial_state(spec, [cell], paths, study_file)
    assert state["cells"][cell.name]["state"] == "finished"
    write_state(paths, state)
    page = write_report(paths.root).read_text()
    assert "Cells chosen among starts" in page and "(seed 1265: 0.30, seed 1266: 0.90); kept seed 1266" in page


def test_a_study_without_starts_trains_the_cell_seed_straight(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {})
    spec, [cell] = load_study(write_study(tmp_path, grid={"train.seed": [7]}))
    run = StudyPaths(tmp_path / "out").cell(cell.name)
    run_cell(str(run), _resolved(cell.config), EVALUATE, 1, spec.starts.model_dump())
    assert judged == [] and read_starts(run) is None and read_config(run).train.seed == 7
