"""The ``betavae`` command line: train, sample, reconstruct, info, demo (and the commands of other modules)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# Idle OpenMP threads sleep instead of spinning (read once, when torch loads, hence before any torch
# import): with other processes on the cores, torch's default spin-waiting pair of threads lost most
# of each step waiting for a descheduled partner (training step 2.4-3.1x, evaluate --no-fid 106 s ->
# 61 s under load; same results); on an idle machine it costs 5-8 % of a training step
# (bench/thread_policy.py). The user's own setting wins (OMP_WAIT_POLICY=ACTIVE for a dedicated machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml

from betavae.cliargs import int_at_least, positive_int, unit_float
from betavae.config import ConfigError, RunConfig, load_config

if TYPE_CHECKING:
    from betavae.runs import RunPaths
    from betavae.starts import StartsPolicy

DEMO_CONFIG = Path(__file__).parent / "resources" / "demo.yaml"


def _write_figures(root: Path) -> None:
    """The figures a finished training gets, and its run page."""
    from betavae.evaluation.figure_set import write_run_figures
    from betavae.run_page import write_run_page
    from betavae.tracking import log_figures

    write_run_figures(root)
    write_run_page(root)
    log_figures(root)  # as artefacts of the run's MLflow run, when train.trackers has mlflow


def _train(args: argparse.Namespace) -> int:
    from betavae.distributed import launched_rank
    from betavae.runs import RunPaths, read_config
    from betavae.starts import StartsPolicy, choosing_start, read_starts
    from betavae.training import resume, train

    policy = StartsPolicy(args.starts, args.start_steps, args.min_separation)
    choosing = bool(args.resume) and choosing_start(args.resume)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and (policy.starts > 1 or choosing):
        raise ConfigError("--starts trains in one process, not under torchrun")
    if args.resume:
        if args.config or args.overwrite or args.out or policy.starts > 1:
            raise ConfigError("--resume continues a run in its own folder with its saved config (and its own "
                              "starts, if it began with --starts); drop --config/--out/--overwrite/--starts "
                              "(--set may change the settings resume allows)")
        if choosing:
            if args.set:
                raise ConfigError(f"{args.resume} is still choosing among starts ({args.resume}/starts.json): "
                                  "resume it without --set, then resume again to change settings")
            if not RunPaths(args.resume).config.is_file():
                raise ConfigError(f"{args.resume} holds only the record of its starts (stopped while one start "
                                  "replaced another): rerun the `betavae train --config ... --starts K` command "
                                  "that began it")
            policy = StartsPolicy(**read_starts(args.resume)["policy"])
            paths, _ = _train_with_starts(read_config(args.resume), args.resume, policy, overwrite=False)
        else:
            paths = resume(args.resume, overrides=args.set, allow_data_change=args.allow_data_change)
    else:
        if args.allow_data_change:
            raise ConfigError("--allow-data-change goes with --resume")
        config = load_config(args.config, args.set)
        out = args.out or Path("runs") / config.name
        if policy.starts > 1:
            if config.train.max_steps is None:
                raise ConfigError("--starts needs train.max_steps (starts and the full run are counted in steps)")
            paths, _ = _train_with_starts(config, out, policy, overwrite=args.overwrite)
        else:
            paths = train(config, out, overwrite=args.overwrite)
    if launched_rank() != 0:
        return 0  # under torchrun, rank 0 alone writes figures
    if not args.no_figures:
        _write_figures(paths.root)
    print(f"done: {paths.root} (open {paths.index})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from betavae.inference import load
    from betavae.samplers import get_sampler
    from betavae.sampling import check_dim, parse_assignments, write_samples

    trained = load(args.run, args.checkpoint)
    fixed, sweeps = parse_assignments(args.fix, "fix"), parse_assignments(args.sweep, "sweep")
    if set(fixed) & set(sweeps):
        raise ValueError("a dimension cannot be both fixed and swept")
    for dim in (*fixed, *sweeps):  # before a sampler is fitted for nothing
        check_dim(dim, trained.latent_dim)
    sampler = get_sampler(trained, args.sampler, progress=True)
    z = sampler.sample(args.n, args.seed, fixed, sweeps)
    settings = {**sampler.settings(), "seed": args.seed, "fixed": {str(d): v for d, v in fixed.items()},
                "sweeps": {str(d): list(pair) for d, pair in sweeps.items()}}
    print(f"wrote {write_samples(trained, z, args.out, nrow=args.nrow, sampler=settings)}")
    return 0


def _fit_sampler(args: argparse.Namespace) -> int:
    from betavae.inference import load
    from betavae.runs import RunPaths
    from betavae.samplers import fit_sampler

    trained = load(args.run, args.checkpoint)
    sampler = fit_sampler(trained, args.kind, args.components, args.seed, args.max_images, progress=not args.quiet)
    if sampler.fitted:
        print(f"{args.kind}: {json.dumps(sampler.settings())}")
        print(f"wrote {RunPaths(Path(args.run)).sampler(args.kind)}")
    else:
        print(f"{args.kind}: nothing to fit")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    from betavae.data.imageio import SkipImage
    from betavae.data.transforms import uint8_to_unit
    from betavae.evaluation.reconstruction import load_image
    from betavae.figures import image_grid, save_png
    from betavae.inference import load

    trained = load(args.run, args.checkpoint)
    ends = []
    for path in (args.a, args.b):
        try:
            ends.append(uint8_to_unit(load_image(path, trained.image_size, trained.channels)[None]))
        except SkipImage as exc:
            raise ValueError(f"{path}: {exc}") from None
    x0, x1 = ends
    _, images = trained.interpolate(x0, x1, args.steps, spherical=args.spherical)
    print(f"wrote {save_png(image_grid(images, nrow=args.steps), args.out)}")
    return 0


def _reconstruct(args: argparse.Namespace) -> int:
    from betavae.figures import reconstruction_pairs, save_png
    from betavae.inference import load

    trained = load(args.run, args.checkpoint)
    originals = trained.images(trained.validation_sample(args.n, args.seed))
    print(f"wrote {save_png(reconstruction_pairs(originals, trained.reconstruct(originals)), args.out)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from betavae.runs import RunPaths, read_config, read_info

    paths = RunPaths(Path(args.run))
    config, info = read_config(paths.root), read_info(paths)
    summary = {k: info.get(k) for k in ("status", "step", "total_steps", "best_step", "best_val_loss", "parameters", "device", "precision", "data")}
    print(yaml.safe_dump({"run": str(paths.root), **summary, "config": config.to_dict()}, sort_keys=False))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from betavae.starts import StartsPolicy

    config = load_config(DEMO_CONFIG, args.set)
    policy = StartsPolicy(args.starts, args.start_steps, args.min_separation)
    paths, done = _train_with_starts(config, args.out, policy, overwrite=args.overwrite)
    _write_figures(paths.root)
    if not args.no_evaluate and (done == "trained" or not paths.eval_metrics.is_file()):
        from betavae.evaluation.run_eval import EvalOptions, evaluate_run

        print("evaluating the demo (disentanglement metrics, factor-labelled figures; no FID: see --help)")
        evaluate_run(paths.root, EvalOptions(fid=False, disentanglement_points=args.points, dci_points=args.points))
    print(f"demo written: open {paths.index}")
    return 0


def _train_with_starts(config: RunConfig, out: Path, policy: StartsPolicy, overwrite: bool) -> tuple[RunPaths, str]:
    """:func:`betavae.starts.train_with_starts`, saying when the run had finished earlier and which
    starts it was chosen from."""
    from betavae.starts import describe_starts, train_with_starts

    paths, done = train_with_starts(config, out, policy, overwrite=overwrite)
    if done != "trained":
        print(f"{paths.root}: {done} (--overwrite retrains)")
    line = describe_starts(paths.root)
    if line:
        print(line)
    return paths, done


def _starts_arguments(p: argparse.ArgumentParser, default_starts: int) -> None:
    """--starts, --start-steps and --min-separation (betavae.starts), for train and demo."""
    from betavae.starts import StartsPolicy

    defaults = StartsPolicy()
    p.add_argument("--starts", type=positive_int, default=default_starts, metavar="K",
                   help="try up to K seeds (train.seed, +1, ...): each trains --start-steps steps and is kept "
                   "when its traversal separation reaches --min-separation, else the next is tried; when none "
                   "does, the best separated is retrained in full. The judgements go to OUT/starts.json; "
                   f"rerunning the same command (train: also --resume RUN) goes on where it stopped (default {default_starts}; "
                   "1 trains train.seed only)")
    p.add_argument("--start-steps", type=positive_int, default=defaults.steps, metavar="N",
                   help=f"steps of each start before it is judged (default {defaults.steps})")
    p.add_argument("--min-separation", type=unit_float, default=defaults.min_separation, metavar="S",
                   help="traversal separation in [0, 1] that keeps a start: how cleanly each latent dimension "
                   "changes one thing in the decoded images (purity) times how cleanly each thing is changed "
                   f"by one dimension (exclusivity); no labels (default {defaults.min_separation})")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from betavae import __version__

    parser = argparse.ArgumentParser(prog="betavae", description=__doc__)
    parser.add_argument("--version", action="version", version=f"betavae {__version__}")
    parser.add_argument("-q", dest="silent", action="store_true",
                        help="no progress bars and no informational messages from any command (errors and "
                        "warnings still show), e.g. betavae -q train ...")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train a model from a YAML config (or resume a run)",
                            description="Train a β-VAE. The run folder gets config.yaml, run.json, "
                            "metrics/*.csv, checkpoints/ and figures/.")
    p.add_argument("--config", type=Path, help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set objective.beta=4 (repeatable); with --resume only "
                   "train.lr, lr_decay, lr_warmup_steps, max_steps, epochs, precision, device, checkpoint_every, val_every, "
                   "progress, compile, divergence_factor, factor_metrics_every and factor_metrics_points may change")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="continue RUN exactly from its last checkpoint (Ctrl-C and SIGTERM save one between steps)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue although the prepared data or its split changed since the run began")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (only ever a betavae run folder; other folders are refused)")
    p.add_argument("--no-figures", action="store_true", help="skip writing figures/ and index.html at the end")
    _starts_arguments(p, default_starts=1)
    p.set_defaults(func=_train)

    p = commands.add_parser("sample", help="decode N samples from the prior (grid PNG or folder of PNGs)",
                            description="Synthetic images from z ~ N(0, I), seeded; chosen dims fixed or swept.")
    _run_arguments(p)
    p.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=Path, required=True,
                   help="a .png path for a grid, or a folder for one PNG per sample plus manifest.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default 0)")
    p.add_argument("--fix", action="append", default=[], metavar="DIM=VALUE", help="set latent DIM to VALUE in every sample")
    p.add_argument("--sweep", action="append", default=[], metavar="DIM=LOW:HIGH",
                   help="spread latent DIM linearly from LOW to HIGH across the samples")
    p.add_argument("--nrow", type=positive_int, default=8, help="images per grid row (default 8)")
    p.add_argument("--sampler", choices=_sampler_kinds(), default="prior",
                   help="where codes come from: prior (N(0, I), default), gmm (a Gaussian mixture fitted to the "
                   "training codes) or two-stage (a second small VAE on those codes); a fitted sampler is fitted "
                   "and stored in RUN/samplers/ first when missing. With --fix/--sweep, gmm samples conditioned "
                   "on the fixed values; two-stage sets them after drawing")
    p.set_defaults(func=_sample)

    p = commands.add_parser("fit-sampler", help="fit a latent sampler to the training codes and store it with the run",
                            description="Fits a sampler (betavae.samplers) on the posterior means of the training "
                            "split and stores it as RUN/samplers/KIND.safetensors + KIND.json, keyed to the checkpoint.")
    _run_arguments(p)
    p.add_argument("--kind", choices=_sampler_kinds(), default="gmm", help="the sampler (default gmm)")
    p.add_argument("--components", type=positive_int, default=None,
                   help="Gaussian mixture components (default: chosen by BIC from 1, 2, 5, 10, 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit and of the image subset (default 0)")
    p.add_argument("--max-images", type=_count_or_all, default=10_000, metavar="N|all",
                   help="training images to encode (a seeded subset; default 10000, or all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_fit_sampler)

    p = commands.add_parser("interpolate", help="decode a strip between two images' codes",
                            description="Encodes two image files (posterior means) and decodes STEPS codes "
                            "between them, linearly or along the great circle (--spherical).")
    _run_arguments(p)
    p.add_argument("a", type=Path, help="the first image file")
    p.add_argument("b", type=Path, help="the second image file")
    p.add_argument("--steps", type=int_at_least(2), default=8, help="images in the strip, both ends included (default 8)")
    p.add_argument("--spherical", action="store_true", help="slerp instead of linear interpolation")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.set_defaults(func=_interpolate)

    p = commands.add_parser("reconstruct", help="validation images beside their reconstructions",
                            description="Grid of validation images (odd rows) and reconstructions from μ (even rows).")
    _run_arguments(p)
    p.add_argument("-n", type=positive_int, default=16, help="number of images (default 16)")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--seed", type=int, default=0, help="seed of the image choice (default 0)")
    p.set_defaults(func=_reconstruct)

    p = commands.add_parser("info", help="print a run's status, numbers and config")
    p.add_argument("run", type=Path, help="run folder")
    p.set_defaults(func=_info)

    p = commands.add_parser("demo", help="train on built-in dSprites-like data and write a report",
                            description="Trains the demo config (a β-TCVAE on 32×32 dSprites-like data, 6,000 steps: about 9 "
                            "minutes on 2 AVX2 CPU cores, less with native bf16 or a GPU), evaluates it in about a minute "
                            "(reconstruction, disentanglement metrics, factor-labelled traversals; no FID) and "
                            "writes everything to OUT/index.html. A seed whose traversals are mixed after "
                            "--start-steps is replaced by the next (--starts; each costs those steps). Rerunning "
                            "redraws a finished demo and resumes an interrupted one.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a demo config value")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain even if OUT holds a finished demo (only ever replaces a betavae run folder)")
    p.add_argument("--points", type=positive_int, default=10_000, metavar="N",
                   help="points of the demo's disentanglement metrics (default 10000, as disentanglement_lib)")
    p.add_argument("--no-evaluate", action="store_true",
                   help="skip the evaluation (by default a newly trained demo is evaluated without FID, whose "
                   "Inception pass takes about half an hour on 2 CPU cores: run `betavae evaluate OUT` for it)")
    _starts_arguments(p, default_starts=3)
    p.set_defaults(func=_demo)

    from betavae.data.cli import add_parser as add_prepare_parser
    from betavae.explorer.cli import add_parser as add_explore_parser
    from betavae.export.cli import add_parser as add_export_parser

    from betavae.evaluation.cli import add_parsers as add_evaluation_parsers
    from betavae.study.cli import add_parsers as add_study_parsers

    add_prepare_parser(commands)
    add_evaluation_parsers(commands)
    add_study_parsers(commands)
    add_explore_parser(commands)
    add_export_parser(commands)
    return parser


def _sampler_kinds() -> list[str]:
    from betavae.samplers import SAMPLERS

    return list(SAMPLERS)


def _count_or_all(text: str) -> int | None:
    return None if text == "all" else positive_int(text)


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``betavae`` console script; returns the exit code."""
    from betavae.interrupts import Terminated, terminate_as_interrupt
    from betavae.runs import RunExistsError, RunLockedError
    from betavae.training import TrainingDiverged

    args = build_parser().parse_args(argv)
    _show_library_messages(silent=args.silent)
    try:
        with terminate_as_interrupt():
            return args.func(args)
    except (ConfigError, RunExistsError, RunLockedError, ValueError, OSError) as exc:
        print(f"betavae {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"betavae {args.command}: training stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        hint = {"train": "; continue with `betavae train --resume RUN`", "demo": "; rerun it to continue",
                "study": "; run the same command again to continue (finished cells are kept)"}
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nbetavae {args.command}: {what}{hint.get(args.command, '')}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (it may be replaced after setup)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_library_messages(silent: bool = False) -> None:
    """The library reports through :mod:`logging` (logger ``betavae``); the command line shows its
    messages on stderr, plain. Set up once, and not when the caller configured ``betavae`` itself.
    ``silent`` (``betavae -q``): warnings and errors only, and every progress bar off."""
    if silent:
        _silence_progress_bars()
    library = logging.getLogger("betavae")
    if library.handlers or library.level != logging.NOTSET:
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    library.addHandler(handler)
    library.setLevel(logging.WARNING if silent else logging.INFO)


def _silence_progress_bars() -> None:
    """Every tqdm bar of this process disabled, whatever its creator asked for (``betavae -q``)."""
    from tqdm import std

    show = std.tqdm.__init__

    def hidden(self, *args, **kwargs):
        show(self, *args, **{**kwargs, "disable": True})

    std.tqdm.__init__ = hidden


def _one_line(exc: BaseException) -> str:
    """The error's message; an OS error also names its file."""
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc.strerror or ""):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
