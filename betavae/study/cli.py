"""The ``study`` and ``report`` subcommands; :func:`add_parsers` adds them to ``betavae``'s parser."""
from __future__ import annotations

import argparse
from pathlib import Path


def _study(args: argparse.Namespace) -> int:
    from betavae.study.runner import dry_run, run_study

    if args.dry_run:
        print(dry_run(args.study), end="")
        return 0
    state = run_study(args.study, args.out, args.address, args.num_cpus, args.retries, live=not args.quiet,
                      start_timeout=args.start_timeout)
    failed = [name for name, entry in state["cells"].items() if entry["state"] == "failed"]
    stopped = [name for name, entry in state["cells"].items() if entry["state"] == "interrupted"]
    print(f"report: {Path(state['folder']) / 'report.html'}")
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)} (errors in study.json and each cell's error.txt)")
    if stopped:
        print(f"{len(stopped)} cell(s) stopped by SIGTERM: {', '.join(stopped)} (checkpointed; run the same "
              "command again to resume them)")
    return 1 if failed or stopped else 0


def _report(args: argparse.Namespace) -> int:
    from betavae.study.report import write_report

    print(f"wrote {write_report(args.study_dir, args.out)}")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Adds ``study`` and ``report`` to the ``betavae`` subcommands."""
    p = commands.add_parser(
        "study", help="run a grid of trainings + evaluations on Ray and write the comparison report",
        description="Expands a study file (datasets × grid, see studies/) into cells, trains and evaluates each "
        "as a Ray task (a local Ray instance unless --address), and writes OUT/report.html. Rerunning skips "
        "finished cells and resumes interrupted ones; a failing cell is retried once, then reported. Ctrl-C or "
        "SIGTERM stops every cell at a checkpoint (exit 130 or 143).")
    p.add_argument("study", type=Path, help="study file (YAML), e.g. studies/demo.yaml")
    p.add_argument("--out", type=Path, help="study folder (default runs/study-<name>)")
    p.add_argument("--address", metavar="ADDR",
                   help="existing Ray cluster, e.g. ray://head:10001 or auto; data and --out must be on a "
                   "filesystem every node sees, with betavae installed on every node")
    p.add_argument("--num-cpus", type=int, metavar="N", help="cores of the local Ray instance (default: all)")
    p.add_argument("--retries", type=int, default=1, metavar="N", help="retries of a failed cell (default 1)")
    p.add_argument("--start-timeout", type=float, default=60.0, metavar="S",
                   help="seconds for Ray to start (or the cluster at --address to answer) before the study "
                   "stops with the reason (default 60)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and their settings, run nothing")
    p.add_argument("--quiet", action="store_true", help="no live table")
    p.set_defaults(func=_study)

    p = commands.add_parser("report", help="(re)build a study's comparison report from its finished cells",
                            description="Writes one self-contained HTML file (tables 2–4 analogues, findings, "
                            "curves, reconstructions, samples, traversals, KL per dimension) and tables/*.csv|md.")
    p.add_argument("study_dir", type=Path, help="study folder (written by `betavae study`)")
    p.add_argument("--out", type=Path, help="HTML file (default STUDY_DIR/report.html)")
    p.set_defaults(func=_report)
