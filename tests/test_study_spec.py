"""Study files: grid expansion, validation errors, pre-flight checks, the live table."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from betavae.config import ConfigError
from betavae.evaluation.run_eval import EvalOptions
from betavae.runs import RunPaths, update_info
from betavae.starts import StartsPolicy
from betavae.study.findings import setting_values
from betavae.study.folder import StudyPaths
from betavae.study.progress import LiveTable, render, table_rows
from betavae.study.runner import _check_inputs, _evaluation, _initial_state, _resolved, _round_robin
from betavae.study.spec import cell_name, load_study
from betavae.training import train, train_or_resume
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parents[1]
NO_STARTS = StartsPolicy(starts=1)
TINY_BASE = {"data": {"num_images": 256, "image_size": 32}, "model": {"preset": "tiny"},
             "train": {"max_steps": 8, "batch_size": 16, "progress": False, "checkpoint_every": 4, "val_every": 4}}


def write_study(tmp_path: Path, **fields) -> Path:
    study = {"name": "t", "base": TINY_BASE, "datasets": {"dsprites": {"set": {"data.name": "dsprites"}}},
             "grid": {"objective.beta": [1, 4]}, **fields}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def test_grid_expands_to_every_dataset_and_combination_then_extras(tmp_path):
    path = write_study(
        tmp_path,
        datasets={"dsprites": {"set": {"data.name": "dsprites"}}, "shapes": {"set": {"data.name": "shapes-rgb"}}},
        grid={"objective.beta": [1, 4], "model.latent_dim": [3, 5]},
        extra=[{"dataset": "shapes", "set": {"objective.beta": 2.5, "objective.kld_weight": 0.000001}}],
    )
    spec, cells = load_study(path)
    assert [c.name for c in cells] == [
        "dsprites_beta1_z3", "dsprites_beta1_z5", "dsprites_beta4_z3", "dsprites_beta4_z5",
        "shapes_beta1_z3", "shapes_beta1_z5", "shapes_beta4_z3", "shapes_beta4_z5", "shapes_beta2.5_kldw1e-06"]
    last = cells[-1]
    assert last.group == "extra" and last.describe() == "β=2.5, kld_weight=1e-06"
    assert last.config.data.name == "shapes-rgb" and last.config.objective.kld_weight == 1e-6
    assert cells[1].config.model.latent_dim == 5 and cells[1].config.objective.beta == 1
    assert cells[0].config.model.channels == [8, 16]  # the base's preset
    assert all(c.config.name == c.name for c in cells)


def test_layers_apply_in_order_base_dataset_file_dataset_set_grid(tmp_path):
    (tmp_path / "ds.yaml").write_text(yaml.safe_dump(
        {"data": {"name": "dsprites", "num_images": 300}, "train": {"lr": 0.01, "batch_size": 32}}))
    path = write_study(tmp_path, datasets={"d": {"config": "ds.yaml", "set": {"train.batch_size": 24}}},
                       grid={"train.batch_size": [20]})
    _, [cell] = load_study(path)
    config = cell.config
    assert (config.data.num_images, config.train.lr, config.train.batch_size) == (300, 0.01, 20)
    assert config.train.max_steps == 8  # from the base, untouched by the dataset file


def test_paper_study_encodes_the_article():
    spec, cells = load_study(REPO / "studies" / "paper.yaml")
    assert len(cells) == 10
    grid = {(c.dataset, c.config.objective.beta) for c in cells if c.group == "grid"}
    assert grid == {(d, b) for d in ("cars", "celeba", "cats", "batik") for b in (10, 100)}
    assert all(c.config.objective.kld_weight == 0.0025 and c.config.objective.reconstruction == "mse_mean"
               and c.config.train.lr == 0.005 for c in cells if c.group == "grid")
    extras = sorted((c.config.objective.beta, c.config.objective.kld_weight, c.dataset) for c in cells if c.group == "extra")
    assert extras == [(1, 1e-6, "batik"), (1, 0.0025, "batik")]
    batik = next(c for c in cells if c.dataset == "batik")
    assert batik.config.model.channels == [32, 64, 128] and batik.article == "batik"
    assert spec.evaluate.fid_samples == 2400


def test_the_sweep_study_replaces_the_sweep_script():
    spec, cells = load_study(REPO / "studies" / "dsprites-sweep.yaml")
    objectives = sorted((c.config.objective.name, c.config.objective.beta) for c in cells)
    assert objectives == [("beta", 1), ("beta", 4), ("beta", 16), ("beta_tcvae", 6)]
    assert all(c.config.data.image_size == 32 and c.config.train.max_steps == 2000 for c in cells)
    assert spec.evaluate.disentanglement and not spec.evaluate.fid and spec.evaluate.dci_points == 1000


def test_the_seeds_study_runs_four_objectives_with_three_seeds_each():
    spec, cells = load_study(REPO / "studies" / "disentanglement-seeds.yaml")
    runs = sorted((c.config.objective.name, c.config.train.seed) for c in cells)
    assert runs == [(name, seed) for name in ("beta", "beta_tcvae", "dip_vae", "factor_vae") for seed in (0, 1, 2)]
    assert all(c.config.data.name == "dsprites" and c.config.data.image_size == 32 for c in cells)
    assert {c.config.data.seed for c in cells} == {0}  # one dataset: the seeds' codes are comparable (UDR)
    assert spec.evaluate.disentanglement and not spec.evaluate.fid and spec.resources.cpus == 1


def test_the_64_study_adds_the_weights_x4_tcvae_and_beta32_at_24000_steps_as_two_settings_of_three_seeds():
    _, cells = load_study(REPO / "studies" / "disentanglement-seeds-64.yaml")
    grid = sorted((c.config.objective.name, c.config.train.seed, c.config.train.max_steps) for c in cells if c.group == "grid")
    assert grid == [(name, seed, 6000) for name in ("beta", "beta_tcvae") for seed in (1, 2, 1265)]
    extras = [c for c in cells if c.group == "extra"]
    by_objective = {name: [c for c in extras if c.config.objective.name == name] for name in ("beta_tcvae", "beta")}
    assert sum(map(len, by_objective.values())) == len(extras)
    for name, weights in (("beta_tcvae", (4, 24, 4)), ("beta", (None, 32, None))):
        setting = by_objective[name]
        assert sorted(c.config.train.seed for c in setting) == [1, 2, 1265]
        assert {(getattr(c.config.objective, "alpha", None), c.config.objective.beta,
                 getattr(c.config.objective, "gamma", None), c.config.train.max_steps) for c in setting} == {(*weights, 24000)}
        assert len({repr(sorted(setting_values(c.values).items())) for c in setting}) == 1  # the report's one setting
    assert all(c.config.data.image_size == 64 and c.config.data.seed == 0 for c in cells)


@pytest.mark.parametrize("study_file", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_file_loads(study_file):
    spec, cells = load_study(study_file)
    assert cells and spec.name


def test_demo_study_has_the_papers_shape():
    _, cells = load_study(REPO / "studies" / "demo.yaml")
    grid = [c for c in cells if c.group == "grid"]
    assert len(grid) == 4 and {c.config.objective.beta for c in grid} == {10, 100}
    extras = [c for c in cells if c.group == "extra"]
    assert {c.config.objective.kld_weight for c in extras} == {0.0025, 1e-6}
    assert all(c.config.objective.beta == 1 for c in extras)


@pytest.mark.parametrize("fields, message", [
    ({"grid": {"objective.betta": [1, 2]}}, "unknown key 'objective.betta'"),
    ({"grid": {"objective.beta": []}}, "has no values"),
    ({"grid": {"objective.beta": [1, 1]}}, "repeats a value"),
    ({"grid": {"objective.beta": ["high"]}}, "objective.beta"),
    ({"extra": [{"dataset": "faces", "set": {"objective.beta": 2}}]}, "names dataset 'faces'"),
    ({"extra": [{"dataset": "dsprites", "set": {"objective.beta": 1}}]}, "same settings: dsprites_beta1"),
    ({"datasets": {}}, "datasets"),
    ({"resources": {"cpus": 0}}, "resources.cpus"),
    ({"evaluate": {"fid_reference": 0}}, "fid_reference"),
    ({"evaluate": {"fid_sample": 10}}, "unknown key 'fid_sample'; the evaluate options: checkpoint, max_images"),
    ({"evaluate": {"device": "cuda"}}, "device and progress are set per cell"),
    ({"evaluate": {"dci_points": 0}}, "evaluate.dci_points"),
    ({"grids": {}}, "grids"),
    ({"starts": {"starts": 0}}, "starts.starts"),
    ({"starts": {"min_separation": 1.5}}, "starts.min_separation"),
    ({"starts": {"step": 2000}}, "starts.step"),
    ({"grid": {"train.seed": [1, 2]}, "starts": {"starts": 3}}, "space the seeds at least 3 apart"),
    ({"grid": {"train.seed": [1]}, "extra": [{"dataset": "dsprites", "set": {"train.seed": 3}}], "starts": {"starts": 3}},
     "cells dsprites_seed1 and dsprites_seed3 differ only in their seed"),
    ({"grid": {"train.max_steps": [None]}, "starts": {"starts": 2}}, "starts: 2 needs train.max_steps in every cell"),
    ({"datasets": {"d": {"config": "missing.yaml"}}}, "missing.yaml not found"),
])
def test_invalid_study_files_are_rejected_with_the_reason(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_study(write_study(tmp_path, **fields))


def test_the_evaluate_section_is_evaluate_options_with_the_studys_defaults(tmp_path):
    spec, _ = load_study(write_study(tmp_path, evaluate={"fid_samples": 64, "top_k": 3, "traversal_steps": 5}))
    options = spec.evaluate.options("cpu")
    assert isinstance(options, EvalOptions) and (options.device, options.progress) == ("cpu", False)
    assert (options.fid_samples, options.top_k, options.traversal_steps) == (64, 3, 5)
    assert (options.kid, options.disentanglement_points, options.dci_points) == (True, 5000, 2000)
    assert EvalOptions().kid is False  # the command's own defaults are untouched
    assert set(type(spec.evaluate).model_fields) == set(EvalOptions.model_fields) - {"device", "progress"}
    assert spec.evaluate.model_validate(_evaluation(spec, spec_cells(spec)[0])).options("cpu") == options
    spec, _ = load_study(write_study(tmp_path, evaluate={"fid": False}))
    assert spec.evaluate.options("cpu").kid is False  # KID only with FID


def spec_cells(spec):
    from betavae.study.spec import expand

    return expand(spec, REPO)


def test_a_cell_that_cannot_be_built_names_the_cell(tmp_path):
    with pytest.raises(ConfigError, match="(?s)cell 'dsprites_image_size30'.*image_size 30"):
        load_study(write_study(tmp_path, grid={"data.image_size": [30]}))


def test_missing_study_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "nope.yaml")


def test_cell_names_are_folder_safe():
    assert cell_name("my data", {"objective.name": "beta_tcvae", "train.seed": 3}) == "my-data_beta_tcvae_seed3"


def test_missing_prepared_data_is_reported_before_any_work(tmp_path):
    path = write_study(tmp_path, datasets={"faces": {"set": {"data.name": "prepared", "data.path": str(tmp_path / "no")}}})
    _, cells = load_study(path)
    configs = {c.name: _resolved(c.config) for c in cells}
    with pytest.raises(ConfigError, match="prepared data not found:\n  - faces: .*/no\nprepare each"):
        _check_inputs(cells, configs, StudyPaths(tmp_path / "out"), NO_STARTS)


def test_a_cell_folder_trained_with_another_config_is_not_reused(tmp_path):
    _, cells = load_study(write_study(tmp_path))
    paths = StudyPaths(tmp_path / "out")
    cell = cells[0]
    train(tiny_config(name=cell.name, objective={"name": "beta", "beta": 7.0}), paths.cell(cell.name))
    configs = {c.name: _resolved(c.config) for c in cells}
    with pytest.raises(ConfigError, match="another config \\(differs in objective.beta"):
        _check_inputs(cells, configs, paths, NO_STARTS)


def test_train_or_resume_finishes_resumes_or_retrains(tmp_path):
    config = tiny_config()
    run = tmp_path / "run"
    assert train_or_resume(config, run)[1] == "trained"
    assert train_or_resume(config, run)[1] == "finished earlier"
    update_info(RunPaths(run), status="interrupted")
    assert train_or_resume(config, run)[1] == "resumed"
    update_info(RunPaths(run), status="diverged")
    assert train_or_resume(config, run)[1] == "trained"
    stranger = tmp_path / "not-a-run"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        train_or_resume(config, stranger)
    assert (stranger / "keep.txt").read_text() == "mine"


def test_live_table_prints_on_state_changes_when_not_a_terminal(tmp_path):
    spec, cells = load_study(write_study(tmp_path))
    paths = StudyPaths(tmp_path / "out")
    state = _initial_state(spec, cells, paths, tmp_path / "study.yaml")
    stream = io.StringIO()
    table = LiveTable(paths, stream=stream)
    table.show(state)
    table.show(state)
    state["cells"]["dsprites_beta4"].update(state="failed", attempts=2, error="ValueError: boom", seconds=3.0)
    table.show(state)
    printed = stream.getvalue()
    assert printed.count("cell  ") == 2  # two tables: the first state and the change
    rows = table_rows(paths, state)
    assert rows[0][:3] == ("dsprites_beta1", "pending", "0")
    assert rows[1] == ("dsprites_beta4", "failed", "2", "", "3s", "ValueError: boom")
    assert render(rows).splitlines()[0].split() == ["cell", "state", "try", "progress", "time", "result"]


def test_cells_are_submitted_one_dataset_at_a_time_in_turn():
    _, cells = load_study(REPO / "studies" / "demo.yaml")
    order = [c.dataset for c in _round_robin(cells)]
    assert order[:4] == ["shapes-rgb", "dsprites", "shapes-rgb", "dsprites"] and sorted(order) == sorted(c.dataset for c in cells)


def test_a_datasets_outside_images_win_over_the_studys_and_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative folders are relative to the working directory, as data.path
    (tmp_path / "photos").mkdir()
    path = write_study(
        tmp_path, datasets={"a": {"set": {"data.name": "dsprites"}, "images": "photos"},
                            "b": {"set": {"data.name": "shapes-rgb"}}},
        grid={"objective.beta": [1]}, evaluate={"images": "everyone"})
    spec, cells = load_study(path)
    assert [c.images for c in cells] == ["photos", "everyone"]
    with pytest.raises(ConfigError, match="outside-image folders not found.*:\n  - b: everyone$"):
        _check_inputs(cells, {c.name: _resolved(c.config) for c in cells}, StudyPaths(tmp_path / "out"), NO_STARTS)
    assert _evaluation(spec, cells[0])["images"] == str(tmp_path / "photos")


def test_live_table_shows_a_finished_cells_headline_through_the_registry():
    from betavae.study.progress import _result

    entry = {"state": "finished", "headline": {"psnr_val": 21.234, "ssim_val": 0.51234, "n_val": 32}}
    assert _result(entry) == "PSNR (dB) 21.23  SSIM 0.512"
    entry["headline"]["fid"] = 123.456
    assert _result(entry) == "PSNR (dB) 21.23  SSIM 0.512  FID 123.46"
    assert _result({**entry, "state": "training"}) == ""


def test_a_cell_evaluated_by_another_version_is_evaluated_again(tmp_path):
    import json

    from betavae.study.folder import cell_finished

    paths = RunPaths(tmp_path / "cell")
    paths.eval_metrics.parent.mkdir(parents=True)
    update_info(paths, status="finished")
    assert not cell_finished(paths.root)
    paths.eval_metrics.write_text(json.dumps({"psnr_val": 20.0}))  # flat keys: an earlier version's
    assert not cell_finished(paths.root)
    paths.eval_metrics.write_text(json.dumps({"headline": {"psnr_val": 20.0}}))
    assert cell_finished(paths.root)


def test_a_cell_keeps_its_identity_through_study_json_into_the_report(tmp_path):
    import json

    from betavae.study.findings import CellResult

    spec, cells = load_study(write_study(
        tmp_path, datasets={"d": {"set": {"data.name": "dsprites"}, "label": "dSprites", "article": "cars"}},
        extra=[{"dataset": "d", "set": {"objective.beta": 2.5, "objective.kld_weight": 0.000001}}]))
    paths = StudyPaths(tmp_path / "out")
    state = json.loads(json.dumps(_initial_state(spec, cells, paths, tmp_path / "study.yaml")))
    results = [CellResult.read(paths.root, entry) for entry in state["cells"].values()]
    assert [r.identity() for r in results] == [c.identity() for c in cells]
    assert [r.describe() for r in results] == [c.describe() for c in cells] == [e["describe"] for e in state["cells"].values()]
    assert [r.shown_label for r in results] == ["dSprites"] * 3 and not any(r.finished for r in results)
