"""Latent samplers side by side: FID, KID, precision, recall, density and coverage of ``prior``, ``gmm``
and ``two-stage`` samples of trained runs, at equal N against the same reference set, between two bounds.

For each run: the samplers' scores as ``betavae evaluate --samplers`` computes them
(:func:`betavae.evaluation.sample_quality.sample_quality`: N decoded samples against a seeded subset of
the training split), plus two rows no sampler can beat, scored the same way against the same reference:
``real`` (N validation images themselves) and ``reconstructions`` (the same images decoded from their
posterior means — the codes of real images, the best any latent sampler could draw). A sampler's FID
can only improve on the prior's where the reconstructions' FID is well below the prior's.

``--figure PATH`` also draws the conditional-sampling figure for the first run: one dimension (``--dim``,
default the run's highest-KL one) fixed at −2, 0 and 2, a row of ``gmm`` samples (conditioned in closed
form) beside a row of prior samples (the dimension set) per value.

    .venv/bin/python bench/samplers.py runs/a runs/b --n 1000 --figure docs/conditional-samples.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

import betavae  # noqa: E402
from betavae.cliargs import positive_int  # noqa: E402
from betavae.evaluation.sample_quality import feature_scores, parse_reference, prdc_reference, reference_indices, sample_quality  # noqa: E402
from betavae.figures import _label_font, image_grid, with_row_labels  # noqa: E402
from betavae.latents import latent_ranking  # noqa: E402
from betavae.runs import RunPaths  # noqa: E402
from betavae.fileio import atomic_path  # noqa: E402
from betavae.metrics.fid import cached_reference, inception_extractor, reference_key, uint8_batches  # noqa: E402
from betavae.samplers import get_sampler  # noqa: E402
from common import machine_line, parser, write_results  # noqa: E402

KINDS = ("prior", "gmm", "two-stage")
SCORES = ("fid", "kid", "precision", "recall", "density", "coverage")


def bound_rows(trained, extractor, n: int, reference: str | int) -> dict[str, dict]:
    """Scores of ``n`` real validation images and of their reconstructions against the reference set."""
    data = trained.data()
    rows, _ = reference_indices(data.train_indices, reference)
    ref = cached_reference(reference_key(data.fingerprint, rows, extractor.identity),
                           lambda: extractor.features(uint8_batches(data.images, rows), len(rows)), None)
    chosen = trained.validation_sample(n, seed=0)
    real = extractor.features(uint8_batches(data.images, chosen), len(chosen), desc="real validation features")
    recons = extractor.features((trained.reconstruct(batch) for batch in uint8_batches(data.images, chosen)),
                                len(chosen), desc="reconstruction features")
    prdc_real, _ = prdc_reference(ref.features, len(chosen))
    return {name: {**feature_scores(features, ref, prdc_real, with_kid=True), "n": len(chosen)}
            for name, features in (("real", real), ("reconstructions", recons))}


def describe_run(trained) -> dict:
    """The objective's KL weight (β times any kld_weight) and the active dimensions."""
    objective = trained.config.objective
    beta = getattr(objective, "beta", None)  # FactorVAE and DIP-VAE weigh the KL by 1
    weight = (1.0 if beta is None else beta) * (getattr(objective, "kld_weight", None) or 1.0)
    ranking = latent_ranking(trained)
    return {"run": str(trained.run_dir), "data": trained.config.data.name, "objective": objective.name,
            "reconstruction": objective.reconstruction, "kl_weight": weight, "active": len(ranking.active)}


def score_run(run: str, extractor, n: int, reference: str | int, seed: int) -> dict:
    trained = betavae.load(run)
    quality = sample_quality(trained, extractor, n, reference, with_kid=True, seed=seed, samplers=list(KINDS))
    table = {kind: {k: v for k, v in row.items() if k != "sampler"} for kind, row in quality["samplers"].items()}
    return {**describe_run(trained), "n": n, "reference": quality["reference"]["set"],
            "samplers": {kind: row["sampler"] for kind, row in quality["samplers"].items()},
            "rows": {**table, **bound_rows(trained, extractor, n, reference)}}


def markdown(results: list[dict]) -> str:
    lines = ["| run | data | KL weight | active | set | FID | KID×1000 | precision | recall | density | coverage |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for name in (*KINDS, "reconstructions", "real"):
            row = r["rows"][name]
            cells = [f"{row['fid']:.1f}", f"{1000 * row['kid']:.1f}",
                     *(f"{row[k]:.2f}" if k in row else "–" for k in SCORES[2:])]
            lines.append(f"| {Path(r['run']).name} | {r['data']} | {r['kl_weight']:g} | {r['active']} | {name} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def conditional_figure(run: str, dim: int | None, per_row: int = 8, scale: int = 2) -> Image.Image:
    """``gmm`` samples conditioned on z_dim = −2, 0, 2 (left) beside prior samples with z_dim set (right)."""
    trained = betavae.load(run)
    dim = latent_ranking(trained).order[0] if dim is None else dim
    if not 0 <= dim < trained.latent_dim:
        raise SystemExit(f"--dim {dim}: {run} has latent dimensions 0..{trained.latent_dim - 1}")
    values = (-2.0, 0.0, 2.0)
    panels = []
    for kind in ("gmm", "prior"):
        sampler = get_sampler(trained, kind)
        codes = torch.cat([sampler.sample(per_row, seed=0, fixed={dim: v}) for v in values])
        grid = image_grid(trained.decode(codes), nrow=per_row, scale=scale)
        labels = [f"{kind}\nz{dim} = {v:g}" for v in values]
        panels.append(with_row_labels(grid, labels, row_height=grid.height // len(values)))
    gap, header = 16, 18
    figure = Image.new("RGB", (sum(p.width for p in panels) + gap, max(p.height for p in panels) + header), "white")
    draw, left = ImageDraw.Draw(figure), 0
    for panel, title in zip(panels, ("gmm: conditioned on the fixed value", "prior: the value set, the rest N(0, 1)")):
        figure.paste(panel, (left, header))
        draw.text((left + 4, 2), title, fill="black", font=_label_font())
        left += panel.width + gap
    return figure


def _reference(text: str) -> str | int:
    try:
        return parse_reference(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'all' or a positive number of images, got {text!r}") from None


def main() -> None:
    p = parser(__doc__)
    p.add_argument("runs", nargs="+", help="trained run folders")
    p.add_argument("--n", type=positive_int, default=1000, help="samples per sampler and validation images (default 1000)")
    p.add_argument("--reference", type=_reference, default="2000", help="training images of the reference set: N or all (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--figure", help="also write the conditional-sampling figure of the first run here")
    p.add_argument("--dim", type=int, help="the figure's fixed dimension (default: the highest-KL one)")
    p.add_argument("--inception-precision", choices=("fp32", "bf16"), default="fp32",
                   help="the Inception's arithmetic (bf16 only where native; every row uses the same; default fp32)")
    args = p.parse_args()
    missing = [run for run in args.runs if not RunPaths(Path(run)).config.is_file()]
    if missing:
        p.error(f"not a run folder (no config.yaml): {', '.join(missing)}")
    n = 64 if args.quick else args.n
    if args.figure:  # first: it takes seconds, and a bad --dim should not wait for the scores
        with atomic_path(args.figure) as partial:
            conditional_figure(args.runs[0], args.dim).save(partial, format="PNG")
        print(f"figure: {args.figure}")
    extractor = inception_extractor(precision=args.inception_precision)
    results = [score_run(run, extractor, n, args.reference, args.seed) for run in args.runs]
    print(f"{machine_line()}\nInception: {args.inception_precision}; N = {n} a set, reference {args.reference} training images\n")
    print(markdown(results))
    print(f"\n(results: {write_results('samplers', {'results': results})})")


if __name__ == "__main__":
    main()
