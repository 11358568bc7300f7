"""The ``betavae`` command line: train, sample, reconstruct, info, demo (and the commands of other modules)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from betavae.config import ConfigError, load_config

DEMO_CONFIG = Path(__file__).parent / "resources" / "demo.yaml"


def _train(args: argparse.Namespace) -> int:
    from betavae.distributed import launched_rank
    from betavae.run_figures import write_run_figures
    from betavae.training import resume, train

    if args.resume:
        if args.config or args.set:
            raise ConfigError("--resume continues a run with its saved config; drop --config/--set")
        paths = resume(args.resume)
    else:
        config = load_config(args.config, args.set)
        paths = train(config, args.out or Path("runs") / config.name, overwrite=args.overwrite)
    if launched_rank() != 0:
        return 0  # under torchrun, rank 0 alone writes figures
    if not args.no_figures:
        write_run_figures(paths.root)
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
    from betavae.run_figures import write_run_figures
    from betavae.training import train, train_or_resume

    config = load_config(DEMO_CONFIG, args.set)
    if args.overwrite:
        paths = train(config, args.out, overwrite=True)
    else:
        paths, done = train_or_resume(config, args.out)
        if done != "trained":
            print(f"{paths.root}: {done} (--overwrite retrains)")
    write_run_figures(paths.root)
    print(f"demo written: open {paths.index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="betavae", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train a model from a YAML config (or resume a run)",
                            description="Train a β-VAE. The run folder gets config.yaml, run.json, "
                            "metrics/*.csv, checkpoints/ and figures/.")
    p.add_argument("--config", type=Path, help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set objective.beta=4 (repeatable)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--no-figures", action="store_true", help="skip writing figures/ and index.html at the end")
    p.set_defaults(func=_train)

    p = commands.add_parser("sample", help="decode N samples from the prior (grid PNG or folder of PNGs)",
                            description="Synthetic images from z ~ N(0, I), seeded; chosen dims fixed or swept.")
    _run_arguments(p)
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=Path, required=True,
                   help="a .png path for a grid, or a folder for one PNG per sample plus manifest.json")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default 0)")
    p.add_argument("--fix", action="append", default=[], metavar="DIM=VALUE", help="set latent DIM to VALUE in every sample")
    p.add_argument("--sweep", action="append", default=[], metavar="DIM=LOW:HIGH",
                   help="spread latent DIM linearly from LOW to HIGH across the samples")
    p.add_argument("--nrow", type=int, default=8, help="images per grid row (default 8)")
    p.set_defaults(func=_sample)

    p = commands.add_parser("reconstruct", help="validation images beside their reconstructions",
                            description="Grid of validation images (odd rows) and reconstructions from μ (even rows).")
    _run_arguments(p)
    p.add_argument("-n", type=int, default=16, help="number of images (default 16)")
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
    p.add_argument("--overwrite", action="store_true", help="retrain even if OUT holds a finished demo")
    p.set_defaults(func=_demo)

    from betavae.data.prepare import add_parser as add_prepare_parser
    from betavae.explorer.cli import add_parser as add_explore_parser

    from betavae.evaluation.cli import add_parsers as add_evaluation_parsers
    from betavae.study.cli import add_parsers as add_study_parsers

    add_prepare_parser(commands)
    add_evaluation_parsers(commands)
    add_study_parsers(commands)
    add_explore_parser(commands)
    return parser


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``betavae`` console script; returns the exit code."""
    from betavae.runs import RunExistsError
    from betavae.training import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RunExistsError, FileNotFoundError, ValueError) as exc:
        print(f"betavae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"betavae {args.command}: training stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = {"train": "; continue with `betavae train --resume RUN`", "demo": "; rerun it to continue",
                "study": "; run the same command again to continue (finished cells are kept)"}
        print(f"\nbetavae {args.command}: interrupted{hint.get(args.command, '')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
