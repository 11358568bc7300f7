"""Several short starts, one long run (betavae.starts): the choice, the folder, interruptions."""
import json
import shutil

import pytest
import yaml

import betavae.starts as starts
from betavae.cli import main
from betavae.evaluation.naming import STATISTICS, traversal_exclusivity, traversal_purity, traversal_separation
from betavae.runs import RunExistsError, RunPaths, read_config, read_csv, read_info
from betavae.starts import StartsPolicy, judge_start, read_starts, train_with_starts
from betavae.training import Trainer, train

from conftest import fake_judge, tiny_config

FULL = 8


def effects(**values) -> dict:
    return {name: values.get(name, 0.0) for name in STATISTICS}


def test_purity_is_the_kl_weighted_share_of_each_dimensions_largest_effect():
    clean = {"dim": 0, "effects": effects(x=0.8)}
    mixed = {"dim": 2, "effects": effects(x=0.5, y=0.5)}
    inactive = {"dim": 1, "name": "inactive"}
    assert traversal_purity([clean, inactive], [2.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert traversal_purity([mixed], [0, 0, 1.0]) == pytest.approx(0.5)
    assert traversal_purity([clean, mixed], [3.0, 0.0, 1.0]) == pytest.approx((3 * 1.0 + 1 * 0.5) / 4)
    assert traversal_purity([inactive], [0.0, 0.0, 0.0]) == 0.0


def test_separation_is_purity_times_exclusivity():
    x, y = {"dim": 0, "effects": effects(x=0.8)}, {"dim": 1, "effects": effects(y=0.6)}
    assert traversal_separation([x, y], [1.0, 1.0]) == pytest.approx(1.0)
    down = {"dim": 0, "effects": effects(x=0.5, y=0.5)}
    up = {"dim": 1, "effects": effects(x=0.5, y=-0.5)}
    assert traversal_purity([down, up], [1.0, 1.0]) == pytest.approx(0.5)
    assert traversal_exclusivity([down, up]) == pytest.approx(0.5)
    assert traversal_separation([down, up], [1.0, 1.0]) == pytest.approx(0.25)
    # two dimensions that both scale: each is pure, but they share the area
    grow, grow_too = {"dim": 0, "effects": effects(area=0.6)}, {"dim": 1, "effects": effects(area=0.6)}
    assert traversal_separation([grow, grow_too, x], [1.0, 1.0, 1.0]) == pytest.approx((0.36 + 0.64) / (0.72 + 0.64))


def config():
    return tiny_config(train={"max_steps": FULL, "checkpoint_every": 2, "val_every": 4})


def steps_logged(root) -> list[int]:
    return [row["step"] for row in read_csv(RunPaths(root).train_log)]


def test_a_start_below_the_separation_is_replaced_by_the_next_seed_which_is_continued(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    paths, done = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=3, steps=4, min_separation=0.75))
    assert done == "trained" and judged == [1265, 1266]
    run = read_config(paths.root).train
    assert (run.seed, run.max_steps) == (1266, FULL)
    assert steps_logged(paths.root) == list(range(1, FULL + 1))  # the start's 4 steps, continued once
    info = read_info(paths)
    assert info["status"] == "finished" and info["total_steps"] == FULL and "train.max_steps" in json.dumps(info)
    record = read_starts(paths.root)
    assert [e["seed"] for e in record["starts"]] == [1265, 1266] and record["chosen"] == 1266
    # the kept start continued is the same model as the seed trained straight through
    straight = train(tiny_config(train={"max_steps": FULL, "checkpoint_every": 2, "val_every": 4, "seed": 1266}),
                     tmp_path / "straight")
    assert read_csv(paths.train_log)[-1]["loss"] == read_csv(straight.train_log)[-1]["loss"]
    assert train_with_starts(config(), paths.root, StartsPolicy(3, 4, 0.75)) == (paths, "finished earlier")


def test_when_no_start_is_pure_enough_the_purest_is_retrained_in_full(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.6, 1267: 0.5})
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=3, steps=4, min_separation=0.75))
    assert judged == [1265, 1266, 1267]
    assert read_config(paths.root).train.seed == 1266 and read_starts(paths.root)["chosen"] == 1266
    assert steps_logged(paths.root) == list(range(1, FULL + 1))


def interrupt_starts(run_dir, monkeypatch, seed: int, step: int) -> None:
    """Runs the default-like starts (3 of 4 steps) into ``run_dir`` until the start of ``seed``
    reaches ``step``, where a Ctrl-C stops it."""
    original = Trainer.train_step

    def interrupt(trainer, x, lr):
        if trainer.config.train.seed == seed and trainer.state.step == step:
            raise KeyboardInterrupt
        return original(trainer, x, lr)

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_with_starts(config(), run_dir, StartsPolicy(starts=3, steps=4))
    monkeypatch.setattr(Trainer, "train_step", original)


def leave_only_the_record(run_dir) -> None:
    """As if killed inside create_run while a start replaced another: only ``starts.json`` is left."""
    for entry in run_dir.iterdir():
        if entry.name != "starts.json":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def test_an_interrupted_second_start_resumes_without_judging_the_first_again(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    interrupt_starts(tmp_path / "run", monkeypatch, seed=1266, step=3)
    assert read_starts(tmp_path / "run")["starts"][0]["seed"] == 1265  # kept over the second start
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=3, steps=4))
    assert judged == [1265, 1266] and read_config(paths.root).train.seed == 1266
    assert steps_logged(paths.root) == list(range(1, FULL + 1))


def test_one_start_trains_the_seed_straight_and_writes_no_record(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {})
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=1))
    assert judged == [] and read_starts(paths.root) is None and read_config(paths.root).train.max_steps == FULL


def test_overwrite_forgets_the_earlier_starts(tmp_path, monkeypatch):
    fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=2, steps=4))
    judged = fake_judge(monkeypatch, {1265: 0.9})
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=2, steps=4), overwrite=True)
    assert judged == [1265] and [e["seed"] for e in read_starts(paths.root)["starts"]] == [1265]


@pytest.mark.parametrize("policy,message", [(StartsPolicy(starts=0), "at least 1"),
                                            (StartsPolicy(min_separation=1.5), "between 0 and 1")])
def test_a_policy_that_makes_no_sense_is_refused_before_training(tmp_path, policy, message):
    with pytest.raises(ValueError, match=message):
        train_with_starts(config(), tmp_path / "run", policy)
    assert not (tmp_path / "run").exists()


def test_starts_as_long_as_the_run_train_it_straight(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {})
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=3, steps=FULL))
    assert judged == [] and read_starts(paths.root) is None and steps_logged(paths.root) == list(range(1, FULL + 1))


def test_a_users_own_starts_file_in_a_folder_that_is_not_a_run_is_left_alone(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "starts.json").write_text("my race results")
    with pytest.raises(RunExistsError):
        train_with_starts(config(), folder, StartsPolicy(starts=2, steps=4), overwrite=True)
    assert (folder / "starts.json").read_text() == "my race results"


def test_a_real_judgement_names_the_active_dimensions_and_scores_them(tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")  # judging caches the KL ranking in the run folder
    verdict = judge_start(str(tmp_path / "run"))  # a str path as well as a Path
    assert verdict["seed"] == 1265 and verdict["step"] == 8
    assert 0.0 <= verdict["purity"] <= 1.0 and 0.0 <= verdict["exclusivity"] <= 1.0
    assert verdict["separation"] == pytest.approx(verdict["purity"] * verdict["exclusivity"], abs=1e-4)
    assert all(": " in d for d in verdict["dimensions"])


def test_the_run_page_names_the_starts_the_run_was_chosen_from(tmp_path, monkeypatch):
    from betavae.run_page import write_run_page

    fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=2, steps=4))
    page = write_run_page(paths.root).read_text()
    assert "kept seed 1266 of 2 judged by traversal separation (purity × exclusivity of the decoded traversals) after 4 steps (seed 1265: 0.3; seed 1266: 0.9)" in page


def test_a_rerun_goes_on_with_the_settings_the_interrupted_call_began_with(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    interrupt_starts(tmp_path / "run", monkeypatch, seed=1266, step=1)
    other = tiny_config(objective={"name": "beta", "beta": 7.0}, train={"max_steps": 20, "seed": 5})
    paths, _ = train_with_starts(other, tmp_path / "run", StartsPolicy(starts=2, steps=2, min_separation=1.0))
    run = read_config(paths.root)
    assert judged == [1265, 1266] and (run.train.seed, run.train.max_steps, run.objective.beta) == (1266, FULL, 1.0)
    assert read_starts(paths.root)["policy"] == {"starts": 3, "steps": 4, "min_separation": 0.6}


@pytest.mark.parametrize("text", ["not json", "[]", '{"starts": []}', '{"policy": {"starts": 3, "steps": 4, '
                                  '"min_separation": 0.5}, "base_seed": 1, "max_steps": 8, "starts": [{"seed": 1, '
                                  '"purity": 0.5, "separation": "high"}], "chosen": null}', '{"policy": {"starts": 0, "steps": 1, '
                                  '"min_purity": 0.5}, "base_seed": 1, "max_steps": 8, "starts": [], "chosen": null}'])
def test_a_starts_file_that_is_not_a_record_reads_as_none(tmp_path, text):
    (tmp_path / "starts.json").write_text(text)
    assert read_starts(tmp_path) is None


def test_a_record_written_before_the_separation_is_read_by_its_purity(tmp_path):
    legacy = {"policy": {"starts": 3, "steps": 1000, "min_purity": 0.85}, "base_seed": 1265, "max_steps": 6000,
              "starts": [{"seed": 1265, "step": 1000, "purity": 0.9, "dimensions": []}], "chosen": 1265}
    (tmp_path / "starts.json").write_text(json.dumps(legacy))
    record = read_starts(tmp_path)
    assert record["policy"] == {"starts": 3, "steps": 1000, "min_separation": 0.85}
    assert starts.score(record["starts"][0]) == 0.9 and "(seed 1265: 0.90); kept seed 1265" in starts.describe_starts(tmp_path)


def test_a_kill_while_a_start_replaces_another_leaves_a_folder_the_rerun_continues(tmp_path, monkeypatch):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    interrupt_starts(tmp_path / "run", monkeypatch, seed=1266, step=3)
    leave_only_the_record(tmp_path / "run")
    paths, _ = train_with_starts(config(), tmp_path / "run", StartsPolicy(starts=3, steps=4))
    assert judged == [1265, 1266] and read_config(paths.root).train.seed == 1266
    assert steps_logged(paths.root) == list(range(1, FULL + 1))


def config_file(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config().to_dict()))
    return str(path)


def test_train_starts_chooses_a_seed_and_a_rerun_finds_it_finished(tmp_path, monkeypatch, capsys):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    command = ["train", "--config", config_file(tmp_path), "--out", str(tmp_path / "run"), "--no-figures",
               "--starts", "3", "--start-steps", "4", "--min-separation", "0.75"]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "after 4 steps (seed 1265: 0.30, seed 1266: 0.90); kept seed 1266" in out
    assert judged == [1265, 1266] and read_config(tmp_path / "run").train.seed == 1266
    assert main(command) == 0 and "finished earlier" in capsys.readouterr().out and judged == [1265, 1266]


def test_train_resume_of_a_run_still_choosing_goes_on_choosing(tmp_path, monkeypatch, capsys):
    judged = fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    interrupt_starts(tmp_path / "run", monkeypatch, seed=1266, step=3)
    run = str(tmp_path / "run")
    assert main(["train", "--resume", run, "--set", "train.lr=0.1"]) == 2
    assert "still choosing among starts" in capsys.readouterr().err
    assert main(["train", "--resume", run, "--starts", "2"]) == 2
    assert "drop --config/--out/--overwrite/--starts" in capsys.readouterr().err
    assert main(["train", "--resume", run, "--no-figures"]) == 0
    assert judged == [1265, 1266] and read_config(run).train.seed == 1266
    assert steps_logged(tmp_path / "run") == list(range(1, FULL + 1))
    assert read_info(RunPaths(tmp_path / "run"))["status"] == "finished"
    # finished: --resume is a plain resume again, and --set applies
    assert main(["train", "--resume", run, "--no-figures", "--set", f"train.max_steps={FULL + 2}"]) == 0
    assert steps_logged(tmp_path / "run")[-1] == FULL + 2


def test_train_resume_of_a_folder_holding_only_the_record_names_the_command_to_rerun(tmp_path, monkeypatch, capsys):
    fake_judge(monkeypatch, {1265: 0.3, 1266: 0.9})
    interrupt_starts(tmp_path / "run", monkeypatch, seed=1266, step=3)
    leave_only_the_record(tmp_path / "run")
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "rerun the `betavae train --config ... --starts K` command" in capsys.readouterr().err


def test_train_starts_need_a_step_budget(tmp_path, capsys):
    command = ["train", "--config", config_file(tmp_path), "--out", str(tmp_path / "run"), "--starts", "2"]
    assert main([*command, "--set", "train.max_steps=null", "--set", "train.epochs=2"]) == 2
    assert "--starts needs train.max_steps" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_train_starts_are_refused_under_torchrun(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--config", config_file(tmp_path), "--out", str(tmp_path / "run"), "--starts", "2"]) == 2
    assert "not under torchrun" in capsys.readouterr().err and not (tmp_path / "run").exists()
