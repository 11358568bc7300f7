"""The ``betavae`` command line: train, sample, reconstruct, info, demo (and the commands of other modules)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from betavae.cliargs import positive_int
from betavae.config import ConfigError, load_config

DEMO_CONFIG = Path(__file__).parent / "resources" / "demo.yaml"


def _write_figures(root: Path) -> None:
    """The figures a finished training gets, and its run page."""
    from betavae.evaluation.figure_set import write_run_figures
    from betavae.run_page import write_run_page

    write_run_figures(root)
    write_run_page(root)


def _train(args: argparse.Namespace) -> int:
    from betavae.distributed import launched_rank
    from betavae.training import resume, train

    if args.resume:
        if args.config or args.overwrite or args.out:
            raise ConfigError("--resume continues a run in its own folder with its saved config; "
                              "drop --config/--out/--overwrite (--set may change the settings resume allows)")
        paths = resume(args.resume, overrides=args.set, allow_data_change=args.allow_data_change)
    else:
        if args.allow_data_change:
            raise ConfigError("--allow-data-change goes with --resume")
        config = load_config(args.config, args.set)
        paths = train(config, args.out or Path("runs") / config.name, overwrite=args.overwrite)
    if launched_rank() != 0:
        return 0  # under torchrun, rank 0 alone writes figures
    if not args.no_figures:
        _write_figures(paths.root)
    print(f"done: {paths.root} (open {paths.index})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from betavae.inference import load
    from betavae.sampling import parse_assignments, prior_codes, write_samples

    trained = load(args.run, args.checkpoint)
    fixed, sweeps = parse_assignments(args.fix, "fix"), parse_assignments(args.sweep, "sweep")
    z = prior_codes(args.n, trained.latent_dim, args.seed, fixed, sweeps)
    print(f"wrote {write_samples(trained, z, args.out, nrow=args.nrow)}")
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
    from betavae.training import train, train_or_resume

    config = load_config(DEMO_CONFIG, args.set)
    if args.overwrite:
        paths = train(config, args.out, overwrite=True)
    else:
        paths, done = train_or_resume(config, args.out)
        if done != "trained":
            print(f"{paths.root}: {done} (--overwrite retrains)")
    _write_figures(paths.root)
    print(f"demo written: open {paths.index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from betavae import __version__

    parser = argparse.ArgumentParser(prog="betavae", description=__doc__)
    parser.add_argument("--version", action="version", version=f"betavae {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train a model from a YAML config (or resume a run)",
                            description="Train a β-VAE. The run folder gets config.yaml, run.json, "
                            "metrics/*.csv, checkpoints/ and figures/.")
    p.add_argument("--config", type=Path, help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set objective.beta=4 (repeatable); with --resume only "
                   "train.lr, lr_decay, max_steps, epochs, precision, device, checkpoint_every, val_every, "
                   "progress, compile and divergence_factor may change")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="continue RUN exactly from its last checkpoint (Ctrl-C and SIGTERM save one between steps)")
    p.add_argument("--allow-data-change", action="store_true",
                   help="with --resume: continue although the prepared data or its split changed since the run began")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (only ever a betavae run folder; other folders are refused)")
    p.add_argument("--no-figures", action="store_true", help="skip writing figures/ and index.html at the end")
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
    p.set_defaults(func=_sample)

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
                            description="Trains the demo config (a few minutes on 2 CPU cores) and writes "
                            "curves, samples, reconstructions and traversals to OUT/index.html. Rerunning "
                            "redraws a finished demo and resumes an interrupted one.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder (default runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a demo config value")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain even if OUT holds a finished demo (only ever replaces a betavae run folder)")
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


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``betavae`` console script; returns the exit code."""
    from betavae.interrupts import Terminated, terminate_as_interrupt
    from betavae.runs import RunExistsError, RunLockedError
    from betavae.training import TrainingDiverged

    args = build_parser().parse_args(argv)
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


def _one_line(exc: BaseException) -> str:
    """The error's message; an OS error also names its file."""
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc.strerror or ""):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
