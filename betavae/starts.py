"""Several short starts, one long run: restart a run whose first steps learned mixed dimensions.

Which of a few seeds gives a disentangled model is largely luck (Locatello et al. 2019), and on
the built-in sprites it shows early: after 500 steps of the demo's recipe, the runs that end clean
already have dimensions that each move one thing in the decoded images, one dimension per thing,
and the weak ones have two dimensions that both move the shape diagonally, or change its size and
position together. So :func:`train_with_starts` trains ``train.seed``, ``seed + 1``, … for
``steps`` steps each, judges each start by its
:func:`~betavae.evaluation.naming.traversal_separation` (purity × exclusivity; no labels), and
continues the first that reaches ``min_separation`` to the config's full ``max_steps``; when none
does, the best separated one is retrained to the full budget.

Everything happens in the one run folder: a start is a normal run with ``train.max_steps`` set
to ``steps``; a rejected start is replaced by the next; the chosen one is resumed with
``train.max_steps`` raised (``run.json`` lists that override). The judgements go to
``RUN/starts.json`` (kept when a start replaces another), so an interrupted call resumes where it
stopped, with the settings it began with, without training or judging a start twice. Used by
``betavae demo`` (three starts by default) and ``betavae train --starts K``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from betavae.config import RunConfig
from betavae.fileio import write_json
from betavae.runs import RunPaths, is_run_folder, read_config, read_info, update_info
from betavae.training import resume, train


@dataclass(frozen=True)
class StartsPolicy:
    """How many starts to try (1: just train), how long each is, and the traversal separation that
    keeps one."""

    starts: int = 3
    steps: int = 500
    min_separation: float = 0.6

    def check(self) -> None:
        """Raises ValueError for a policy that makes no sense."""
        if self.starts < 1 or self.steps < 1:
            raise ValueError(f"starts ({self.starts}) and start steps ({self.steps}) must be at least 1")
        if not 0 <= self.min_separation <= 1:
            raise ValueError(f"min separation {self.min_separation} must be between 0 and 1")


def judge_start(run_dir: str | Path) -> dict:
    """The seed, step, traversal purity, exclusivity and separation, and the dimension names of the
    run in ``run_dir`` (named as ``evaluate`` names them, and stored the same way)."""
    from betavae.evaluation.naming import stored_dimension_names
    from betavae.inference import load
    from betavae.latents import latent_ranking

    trained = load(run_dir, checkpoint="last")
    ranking = latent_ranking(trained)
    names = stored_dimension_names(trained, ranking)
    return {"seed": trained.config.train.seed, "step": read_info(RunPaths(run_dir)).get("step"),
            "purity": names["traversal_purity"], "exclusivity": names["traversal_exclusivity"],
            "separation": names["traversal_separation"],
            "dimensions": [f"{e['dim']}: {e['name']}" for e in names["dimensions"] if e["dim"] in ranking.active]}


def read_starts(root: str | Path) -> dict | None:
    """``RUN/starts.json`` when a run was chosen among starts (or is being), else None (also when
    the file is not such a record)."""
    try:
        record = json.loads(RunPaths(Path(root)).starts.read_text())
        if "min_purity" in record["policy"]:  # written before the separation: its cut applies to it now
            record["policy"]["min_separation"] = record["policy"].pop("min_purity")
        StartsPolicy(**record["policy"]).check()
        valid = (isinstance(record["base_seed"], int) and isinstance(record["max_steps"], int)
                 and all(isinstance(e["seed"], int) and isinstance(score(e), (int, float)) for e in record["starts"])
                 and record["chosen"] in (None, *(e["seed"] for e in record["starts"]), record["base_seed"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return record if valid else None


def score(entry: dict) -> float:
    """The traversal separation a start was judged by (its purity in records written before the
    separation existed)."""
    return entry.get("separation", entry["purity"])


def choosing_start(root: str | Path) -> bool:
    """Whether the run folder ``root`` is still choosing among starts: it holds a starts record and
    the run in it is a start (or none yet), so only :func:`train_with_starts` may go on with it."""
    record = read_starts(root)
    if record is None:
        return False
    paths = RunPaths(Path(root))
    return not paths.config.is_file() or _is_start(paths, StartsPolicy(**record["policy"]))


def describe_starts(root: str | Path) -> str | None:
    """One line on the starts a run was chosen from (None when it was not chosen among starts)."""
    record = read_starts(root)
    if not record or not record["starts"]:
        return None
    tried = ", ".join(f"seed {e['seed']}: {score(e):.2f}" for e in record["starts"])
    return (f"starts judged by traversal separation after {record['policy']['steps']} steps ({tried}); "
            f"kept seed {record['chosen']}")


def _with(config: RunConfig, seed: int, max_steps: int | None) -> RunConfig:
    train_settings = config.train.model_copy(update={"seed": seed, "max_steps": max_steps})
    return config.model_copy(update={"train": train_settings})


def train_with_starts(config: RunConfig, run_dir: str | Path, policy: StartsPolicy,
                      overwrite: bool = False) -> tuple[RunPaths, str]:
    """Trains ``config`` into ``run_dir`` by :class:`StartsPolicy` (module docstring), resuming
    whatever an interrupted call left. Returns the run's paths and ``"trained"`` or
    ``"finished earlier"``."""
    policy.check()
    paths = RunPaths(Path(run_dir))
    if overwrite and is_run_folder(paths.root):
        paths.starts.unlink(missing_ok=True)
    # a record left by an interrupted call (even one killed while a start replaced another)
    record = None if overwrite else read_starts(paths.root)
    if record is None:
        full = config.train.max_steps
        if full is None or policy.steps >= full:  # a start as long as the run: just train it
            policy = replace(policy, starts=1)
        record = {"policy": asdict(policy), "base_seed": config.train.seed, "max_steps": full, "starts": [],
                  "chosen": config.train.seed if policy.starts == 1 else None}
    else:  # go on as the interrupted call began, whatever the arguments now
        policy = StartsPolicy(**record["policy"])
    fresh = overwrite or not paths.config.is_file()
    if not fresh and read_info(paths).get("status") == "finished" and not _is_start(paths, policy):
        return paths, "finished earlier"
    base, full = record["base_seed"], record["max_steps"]
    settings = config if fresh else read_config(paths.root)  # later starts train as the first did
    while True:
        status = None if fresh else read_info(paths).get("status")
        if status in ("running", "interrupted"):
            resume(paths.root)
        elif status != "finished":  # nothing there yet, a start set aside, or a run that died
            seed = record["chosen"] if record["chosen"] is not None else base + len(record["starts"])
            steps = full if record["chosen"] is not None else policy.steps
            keep = (paths.starts.name,) if read_starts(paths.root) is not None else ()  # ours, never a user's
            train(_with(settings, seed, steps), paths.root, overwrite=paths.config.is_file(), keep=keep)
        elif not _is_start(paths, policy):
            return paths, "trained"
        else:
            _decide(paths, record, policy, full)
        fresh = False


def _is_start(paths: RunPaths, policy: StartsPolicy) -> bool:
    """Whether the run in ``paths`` is a start (trained for ``policy.steps``), not the final run."""
    return policy.starts > 1 and read_config(paths.root).train.max_steps == policy.steps


def _decide(paths: RunPaths, record: dict, policy: StartsPolicy, full: int) -> None:
    """Judges the finished start in ``paths`` (once: the judgement is recorded) and either continues
    it to ``full`` steps or sets it aside for the next start (or for the purest, when all failed)."""
    seed = read_config(paths.root).train.seed
    entry = next((e for e in record["starts"] if e["seed"] == seed), None)
    if entry is None:
        entry = judge_start(paths.root)
        record["starts"].append(entry)
    if score(entry) >= policy.min_separation:
        record["chosen"] = seed
    elif len(record["starts"]) >= policy.starts:
        record["chosen"] = max(record["starts"], key=score)["seed"]
    write_json(paths.starts, record)  # the judgement and the choice together (a kill before: judged again)
    if record["chosen"] == seed:
        resume(paths.root, overrides=[f"train.max_steps={full}"])
    else:
        update_info(paths, status="set aside")  # the loop trains the next start (or the purest) over it
