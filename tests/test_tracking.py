"""Experiment tracking (train.trackers): an MLflow file store and TensorBoard events hold what the
run's CSV logs hold; a resumed run continues its MLflow run; a missing package stops before training."""
import logging
import sys
import typing

import pytest
from mlflow.tracking import MlflowClient

from betavae.cli import main
from betavae.config import TrainConfig
from betavae.runs import RunPaths, read_config, read_csv, read_info
from betavae.study.runner import _differences, _resolved
from betavae.tracking import TRACKERS, TrackerUnavailable, flatten, mlflow_tracking_uri
from betavae.training import resume, train

from conftest import tiny_config, train_until_crash
from test_training import InterruptAt


@pytest.fixture(autouse=True)
def no_tracking_uri_from_outside(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def mlflow_config(store, **train):
    return tiny_config(train={"trackers": ["csv", "mlflow"], "mlflow_tracking_uri": str(store), **train})


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def csv_history(path, column: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), row[column]) for row in read_csv(path)]


def test_registry_matches_the_config_and_csv_is_always_on():
    names = typing.get_args(typing.get_args(TrainConfig.model_fields["trackers"].annotation)[0])
    assert set(names) == set(TRACKERS)
    assert TrainConfig().trackers == ["csv"]
    assert TrainConfig(trackers=["mlflow", "mlflow"]).trackers == ["csv", "mlflow"]


def test_tracking_uri_config_then_environment_then_local_mlruns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert mlflow_tracking_uri(tiny_config()) == (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert mlflow_tracking_uri(tiny_config()) == "sqlite:///elsewhere.db"
    assert mlflow_tracking_uri(tiny_config(train={"mlflow_tracking_uri": "store"})) == (tmp_path / "store").as_uri()


def test_cli_training_logs_params_metric_history_and_figures_to_a_local_store(tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "run"
    code = main(["train", "--set", "data.num_images=128", "--set", "data.image_size=32", "--set", "model.preset=tiny",
                 "--set", "train.max_steps=6", "--set", "train.val_every=3", "--set", "train.batch_size=16",
                 "--set", "train.progress=false", "--set", "train.trackers=[csv, mlflow]",
                 "--set", f"train.mlflow_tracking_uri={store}", "--out", str(out)])
    assert code == 0
    paths = RunPaths(out)
    saved = read_info(paths)["mlflow"]
    assert saved["tracking_uri"] == store.as_uri() and saved["experiment"] == "run"
    assert f"mlflow: logging to run {saved['run_id']}" in capsys.readouterr().err  # logging, shown by the CLI

    client = MlflowClient(store.as_uri())
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "run"
    assert run.data.params == flatten(read_config(out).to_dict())
    assert run.data.params["train.trackers"] == "['csv', 'mlflow']"
    for column in ("loss", "recon", "kl", "lr", "images_per_s"):
        assert history(client, run.info.run_id, f"train/{column}") == csv_history(paths.train_log, column)
    assert [step for step, _ in history(client, run.info.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert history(client, run.info.run_id, "val/loss") == csv_history(paths.val_log, "loss")
    assert history(client, run.info.run_id, "val_kl/z0") == csv_history(paths.val_kl_log, "z0")

    figures = sorted(p.name for p in paths.figures.iterdir())
    stored = sorted(a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "figures"))
    assert "curves.png" in figures and stored == figures


def test_interrupted_then_resumed_run_continues_the_same_mlflow_run(tmp_path, monkeypatch):
    store, root = tmp_path / "store", tmp_path / "run"
    config = mlflow_config(store, max_steps=10)
    InterruptAt(step=6).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config, root)
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = RunPaths(root)
    run_id = read_info(paths)["mlflow"]["run_id"]
    client = MlflowClient(store.as_uri())
    assert client.get_run(run_id).info.status == "KILLED"
    assert [s for s, _ in history(client, run_id, "train/loss")] == [1, 2, 3, 4]  # the last checkpoint

    monkeypatch.chdir(tmp_path / "store")  # from another folder: the store is the one in run.json
    resume(root, overrides=["train.max_steps=12"])
    assert read_info(paths)["mlflow"]["run_id"] == run_id
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    assert history(client, run_id, "train/loss") == csv_history(paths.train_log, "loss")
    assert [s for s, _ in history(client, run_id, "train/loss")] == list(range(1, 13))
    assert history(client, run_id, "val/loss") == csv_history(paths.val_log, "loss")


def test_tensorboard_events_hold_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths = train(tiny_config(train={"trackers": ["tensorboard"]}), tmp_path / "run")
    events = list((paths.root / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(paths.root / "tensorboard"))
    accumulator.Reload()
    assert {"train/loss", "train/kl", "val/loss", "val_kl/z0"} <= set(accumulator.Tags()["scalars"])
    logged = [(e.step, e.value) for e in accumulator.Scalars("train/loss")]
    assert [s for s, _ in logged] == [int(r["step"]) for r in read_csv(paths.train_log)]
    assert [v for _, v in logged] == pytest.approx([r["loss"] for r in read_csv(paths.train_log)], rel=1e-6)


@pytest.mark.parametrize("name,modules", [("mlflow", ["mlflow", "mlflow.entities", "mlflow.tracking"]),
                                          ("tensorboard", ["torch.utils.tensorboard"])])
def test_a_tracker_that_is_not_installed_stops_before_any_file(tmp_path, monkeypatch, name, modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # importing it fails as if it were not installed
    with pytest.raises(TrackerUnavailable, match=f"train.trackers has '{name}'"):
        train(tiny_config(train={"trackers": [name]}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_library_messages_go_through_logging_and_can_be_silenced(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="betavae"):
        train(mlflow_config(tmp_path / "store"), tmp_path / "a")
    assert any(r.name == "betavae.tracking" and "mlflow: logging to run" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="betavae"):
        train(mlflow_config(tmp_path / "store"), tmp_path / "b")
    assert not [r for r in caplog.records if r.name.startswith("betavae")]


def test_study_cells_are_runs_of_an_experiment_named_after_the_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cell = _resolved(tiny_config(train={"trackers": ["csv", "mlflow"]}), "beta-sweep")
    assert cell["train"]["tracker_experiment"] == "beta-sweep"
    assert cell["train"]["mlflow_tracking_uri"] == (tmp_path / "mlruns").as_uri()  # the driver's store
    own = _resolved(tiny_config(train={"tracker_experiment": "mine"}), "beta-sweep")
    assert own["train"]["tracker_experiment"] == "mine" and own["train"]["mlflow_tracking_uri"] is None
    assert _differences(tiny_config().to_dict(), cell) == ["train.trackers"]  # where tracking goes is not a change


def test_after_a_crash_tensorboard_drops_the_redone_steps_and_mlflow_keeps_the_run(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = mlflow_config(tmp_path / "store", trackers=["tensorboard", "mlflow"], max_steps=10, val_every=2,
                           checkpoint_every=4)
    train_until_crash(config, tmp_path / "run", 7, monkeypatch)  # rows 5-6 logged (validation at 6), checkpoint at 4
    paths = RunPaths(tmp_path / "run")
    run_id = read_info(paths)["mlflow"]["run_id"]
    client = MlflowClient((tmp_path / "store").as_uri())
    assert client.get_run(run_id).info.status == "FAILED"
    resume(paths.root)
    assert client.get_run(run_id).info.status == "FINISHED"

    accumulator = EventAccumulator(str(paths.root / "tensorboard"))
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("train/loss")] == list(range(1, 11))
    # MLflow cannot drop metrics: the redone steps 5-6 are there twice, the later value is train.csv's
    logged = client.get_metric_history(run_id, "train/loss")
    latest = {m.step: m.value for m in sorted(logged, key=lambda m: m.timestamp)}
    assert sorted(latest.items()) == csv_history(paths.train_log, "loss")


def test_a_study_cell_logs_its_run_and_evaluation_figures_to_the_study_experiment(tmp_path, monkeypatch):
    from betavae.study.runner import run_cell

    monkeypatch.chdir(tmp_path)
    config = _resolved(tiny_config(train={"trackers": ["csv", "mlflow"], "max_steps": 4}), "beta-sweep")
    evaluate = {"fid": False, "max_images": 16, "disentanglement": False, "top_k": 1, "images": None}
    run_cell(str(tmp_path / "cells" / "b1"), config, evaluate, threads=1)
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("beta-sweep")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "b1" and run.info.status == "FINISHED"
    stored = {a.path.split("/")[-1] for a in client.list_artifacts(run.info.run_id, "figures")}
    assert stored == {p.name for p in (tmp_path / "cells" / "b1" / "figures").iterdir()} and "traversals.png" in stored
