"""The ``explore`` subcommand: serve the latent explorer for the runs named on the command line."""
from __future__ import annotations

import argparse
import errno
import socket
import sys
from pathlib import Path

from betavae.explorer.guard import LOOPBACK_HOSTS, normal_host

LOCAL_HOSTS = LOOPBACK_HOSTS
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def port_number(text: str) -> int:
    """``--port``: an integer from 0 to 65535 (0: a free port chosen by the system)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535; 0 picks a free one)")
    return port


def host_argument(text: str) -> str:
    """``--allow-host``: a host name or address (a port, if given, is dropped: any port is accepted)."""
    name = normal_host(text)
    if name is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host name or address (e.g. explorer.example.org, 192.168.1.5, [fe80::1])")
    return name


def add_parser(subparsers) -> None:
    """Adds ``explore`` to the ``betavae`` subcommands."""
    p = subparsers.add_parser(
        "explore", help="browse the latent space of one or more runs in a web page",
        description="Serves a local page with sliders over each run's latent dimensions (ranked by mean "
        "KL on validation images), a traversal strip, image upload/encoding, downloads and zip export "
        "of synthetic images. Only the runs named here are served, by position (0, 1, ...). Requests "
        "must address the server as 127.0.0.1, localhost, [::1], the --host address or an --allow-host "
        "name (others are refused, against DNS rebinding).")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folder(s); two or more can be compared side by side")
    p.add_argument("--port", type=port_number, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1, this machine only); any other exposes the page to the network")
    p.add_argument("--allow-host", action="append", default=[], type=host_argument, metavar="NAME",
                   help="also answer requests addressed to NAME (the name browsers use behind a proxy or on "
                   "the network; repeatable)")
    p.add_argument("--top-k", type=int, default=10, help="sliders shown per model before 'show all' (default 10)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="weights to load (default best)")
    p.set_defaults(func=run_explorer)


def served_hosts(bind_host: str, allow_hosts: list[str]) -> list[str]:
    """The Host header names answered besides the loopback ones: the ``--host`` address and the
    ``--allow-host`` names."""
    bound = normal_host(bind_host)
    return sorted({*([bound] if bound else []), *allow_hosts})


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (not yet listening), as uvicorn would bind it.

    Raises ValueError with a one-line message when the port is taken or the address unusable.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: ignores TIME_WAIT only
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is in use (another server is listening there; "
                             f"try --port {_free_port_near(host, port)})") from None
        raise ValueError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    return sock


def _free_port_near(host: str, port: int) -> int:
    """The first of the next 20 ports that is free on ``host``; 0 (any free port) if none is."""
    for candidate in range(port + 1, min(port + 21, 65536)):
        try:
            bind(host, candidate).close()
            return candidate
        except ValueError:
            continue
    return 0


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
    hosts = served_hosts(args.host, args.allow_host)
    if args.host not in LOCAL_HOSTS:
        print(f"warning: binding {args.host}: anyone who can reach this address can use the explorer "
              "(there is no authentication)", file=sys.stderr)
    if args.host in WILDCARD_HOSTS and not args.allow_host:
        print("warning: only requests addressed to 127.0.0.1/localhost are answered; give the name or "
              "address other machines use with --allow-host NAME", file=sys.stderr)
    sock = bind(args.host, args.port)  # before loading the runs: a taken port fails at once
    try:
        models = load_models(args.runs, args.checkpoint)
        sock.listen(2048)  # from here on a browser's connection waits for the server instead of failing
        port = sock.getsockname()[1]
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serving {len(models)} model(s) at http://{shown}:{port}/ (Ctrl+C stops)", flush=True)
        config = uvicorn.Config(create_app(models, args.top_k, hosts), host=args.host, port=port,
                                log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
