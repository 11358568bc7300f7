"""The ``export`` subcommand; :func:`add_parser` adds it to ``betavae``'s parser."""
from __future__ import annotations

import argparse
from pathlib import Path


def _export(args: argparse.Namespace) -> int:
    from betavae.export import export_run
    from betavae.export.hub import require_hub

    if args.push_to:
        require_hub()  # before the export, not after it
    paths = export_run(args.run, args.out, args.checkpoint, onnx=args.onnx, license=args.license,
                       overwrite=args.overwrite, opset=args.opset)
    files = sorted(p.relative_to(paths.root).as_posix() for p in paths.root.rglob("*") if p.is_file())
    print(f"wrote {paths.root}: {', '.join(files)}")
    if args.push_to:
        from betavae.export.hub import push

        print(f"pushed to {args.push_to}: {push(paths.root, args.push_to, private=args.private)}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``export`` to the ``betavae`` command's subparsers."""
    p = subparsers.add_parser(
        "export", help="a weights-only model folder (Hugging Face convention), optionally ONNX and a Hub upload",
        description="Writes OUT/config.json, model.safetensors (model weights only), README.md (a model card with "
        "the headline metrics when the run was evaluated) and the sample/traversal figures. Load it with "
        "betavae.load(OUT) or betavae.from_pretrained(OUT).")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--out", type=Path, required=True, help="export folder (empty or new)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")
    p.add_argument("--onnx", action="store_true",
                   help="also write encoder.onnx (image in [0, 1] → mu, logvar) and decoder.onnx (z → image)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--license", default="mit", help="licence id for the model card (default mit)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT (never other folders)")
    p.add_argument("--push-to", metavar="REPO", help="upload OUT to this Hugging Face Hub repo (needs betavae[hub])")
    p.add_argument("--private", action="store_true", help="with --push-to: create the repo private")
    p.set_defaults(func=_export)
