"""The ``explore`` subcommand: serve the latent explorer for the runs named on the command line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers) -> None:
    """Adds ``explore`` to the ``betavae`` subcommands."""
    p = subparsers.add_parser(
        "explore", help="browse the latent space of one or more runs in a web page",
        description="Serves a local page with sliders over each run's latent dimensions (ranked by mean "
        "KL on validation images), a traversal strip, image upload/encoding, downloads and zip export "
        "of synthetic images. Only the runs named here are served, by position (0, 1, ...).")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s); two or more can be compared side by side")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only); any other exposes the page to the network")
    p.add_argument("--top-k", type=int, default=10, help="sliders shown per model before 'show all' (default 10)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="weights to load (default best)")
    p.set_defaults(func=run_explorer)


def run_explorer(args: argparse.Namespace) -> int:
    """Loads the runs and serves the explorer until interrupted; returns the exit code."""
    import uvicorn

    from betavae.explorer.app import create_app
    from betavae.explorer.state import load_models

    if args.top_k < 1:
        raise ValueError("--top-k must be at least 1")
    for run in args.runs:
        if not run.is_dir():
            raise FileNotFoundError(f"run folder {run} does not exist")
    if args.host not in LOCAL_HOSTS:
        print(f"warning: binding {args.host}: anyone who can reach this address can use the explorer "
              "(there is no authentication)", file=sys.stderr)
    models = load_models(args.runs, args.checkpoint)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {len(models)} model(s) at http://{host}:{args.port}/ (Ctrl+C stops)")
    uvicorn.run(create_app(models, args.top_k), host=args.host, port=args.port, log_level="warning")
    return 0
