"""DCI's gradient-boosting backends compared, and the cost of every disentanglement metric.

Two parts (both print Markdown tables and write ``bench/results/disentanglement*.json``):

* ``--compare``: DCI with ``backend="hist"`` (the default) against ``"exact"`` (disentanglement_lib's
  ``GradientBoostingClassifier()``) on the same codes: synthetic codes of known structure with
  dSprites' factor sizes (3, 6, 40, 32, 32) and 10 latents, and, with ``--run RUN``, the codes of a
  trained run's encoder on its ground-truth generator. D, C, I of both, their differences, and
  the seconds (wall and process CPU) of each.
* ``--full RUN``: ``betavae.evaluation.disentanglement.disentanglement_report`` on a run at disentanglement_lib's
  counts (10,000 training / 5,000 test points for every metric, DCI included): seconds per
  metric, wall and CPU, and how many images the BetaVAE/FactorVAE scores asked for and encoded.

The machine is named with its load average: on a shared machine wall time grows with the load,
process CPU time much less (numbers under load say so).

    .venv/bin/python bench/disentanglement.py --compare --points 2000 --run runs/demo
    .venv/bin/python bench/disentanglement.py --full runs/demo
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from betavae.metrics.disentanglement import dci  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DSPRITES_SIZES = (3, 6, 40, 32, 32)
STRUCTURES = ("disentangled", "rotated", "dsprites-like")


def machine_line() -> str:
    """CPU model, vector extensions, cores and the 1-minute load average."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown CPU", "", platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vector = [name for name in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if name in flags]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{model}, {os.cpu_count()} logical CPUs ({', '.join(vector) or 'no AVX2'}); "
            f"1-min load average {load:.2f}")


def synthetic_codes(structure: str, num_points: int, seed: int = 0, noise: float = 0.1,
                    sizes: tuple[int, ...] = DSPRITES_SIZES) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(N, 10)`` and factors ``(N, len(sizes))`` of a known structure.

    * ``disentangled``: latent k = factor k (scaled to [0, 2]) + Gaussian noise; the other latents
      are near-constant noise (an inactive VAE dimension);
    * ``rotated``: the same informative latents mixed by a fixed random rotation (entangled);
    * ``dsprites-like``: position and scale each in one latent, orientation as (cos, sin) in two
      latents with shape added to one of them, one latent mixing posX and posY.
    """
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, size, num_points) for size in sizes], axis=1)
    unit = factors / (np.asarray(sizes) - 1)
    codes = 0.05 * rng.normal(size=(num_points, 10))
    jitter = lambda: noise * rng.normal(size=num_points)  # noqa: E731
    k = len(sizes)
    if structure in ("disentangled", "rotated"):
        for j in range(k):
            codes[:, j] += 2 * unit[:, j] + jitter()
        if structure == "rotated":
            rotation = np.linalg.qr(np.random.default_rng(99).normal(size=(k, k)))[0]
            codes[:, :k] = codes[:, :k] @ rotation
    elif structure == "dsprites-like":
        angle = 2 * np.pi * unit[:, 2]
        codes[:, 0] += 3 * unit[:, 3] + jitter()
        codes[:, 1] += 3 * unit[:, 4] + jitter()
        codes[:, 2] += 2 * unit[:, 1] + jitter()
        codes[:, 3] += np.cos(angle) + 0.5 * factors[:, 0] + jitter()
        codes[:, 4] += np.sin(angle) + jitter()
        codes[:, 5] += 0.5 * unit[:, 3] + 0.5 * unit[:, 4] + jitter()
    else:
        raise ValueError(f"unknown structure {structure!r}; choose from {', '.join(STRUCTURES)}")
    return codes, factors


def run_codes(run: Path, num_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encoder means and factors of ``num_points`` images rendered from a run's generator."""
    from betavae.evaluation.latent_meaning import metric_represent
    from betavae.inference import load

    trained = load(run)
    source = trained.data().source
    if source is None:
        raise SystemExit(f"{run}: its data has no ground-truth generator")
    factors = source.sample_factors(num_points, np.random.default_rng(seed))
    represent = metric_represent(trained)
    codes = np.concatenate([represent(source.render(factors[i:i + 4096]))[0] for i in range(0, num_points, 4096)])
    varying = [k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1]
    return codes.astype(np.float64), factors[:, varying]


def timed(job):
    wall, cpu = time.perf_counter(), time.process_time()
    result = job()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def compare(cases: dict[str, tuple[np.ndarray, np.ndarray]], num_train: int) -> tuple[str, dict]:
    """DCI of both backends on each case's first ``num_train`` points (the rest, up to half as
    many, is the test set)."""
    rows, results = [], {}
    for name, (codes, factors) in cases.items():
        train = (codes[:num_train], factors[:num_train])
        test = (codes[num_train:num_train + num_train // 2], factors[num_train:num_train + num_train // 2])
        scores = {}
        for backend in ("exact", "hist"):
            result, wall, cpu = timed(lambda: dci(*train, *test, backend=backend))
            scores[backend] = {"D": result["disentanglement"], "C": result["completeness"],
                               "I": result["informativeness_test"], "wall_s": wall, "cpu_s": cpu,
                               "importance": result["importance_matrix"].tolist()}
            print(f"  {name} {backend}: D {scores[backend]['D']:.3f} C {scores[backend]['C']:.3f} "
                  f"I {scores[backend]['I']:.3f} ({wall:.1f} s wall, {cpu:.1f} s CPU)", flush=True)
        exact, hist = scores["exact"], scores["hist"]
        results[name] = scores
        rows.append(f"| {name} | {exact['D']:.3f} / {hist['D']:.3f} ({hist['D'] - exact['D']:+.3f}) "
                    f"| {exact['C']:.3f} / {hist['C']:.3f} ({hist['C'] - exact['C']:+.3f}) "
                    f"| {exact['I']:.3f} / {hist['I']:.3f} ({hist['I'] - exact['I']:+.3f}) "
                    f"| {exact['wall_s']:.1f} / {hist['wall_s']:.1f} | {exact['cpu_s']:.1f} / {hist['cpu_s']:.1f} "
                    f"| {exact['cpu_s'] / hist['cpu_s']:.1f}× |")
    header = [f"### DCI: exact / hist backend ({num_train} training, {num_train // 2} test points)", "",
              "| codes | D exact / hist (Δ) | C exact / hist (Δ) | I exact / hist (Δ) | wall s | CPU s | CPU ratio |",
              "|---|---|---|---|---|---|---|"]
    return "\n".join(header + rows), results


def full(run: Path, backend: str) -> tuple[str, dict]:
    """Every metric at disentanglement_lib's counts on a run, timed."""
    import tempfile

    from betavae.evaluation.latent_meaning import metric_represent
    from betavae.inference import load

    try:  # the report writes a JSON file (betavae.evaluation.disentanglement) ...
        from betavae.evaluation.disentanglement import disentanglement_report
        target = lambda folder: Path(folder) / "disentanglement.json"  # noqa: E731
    except ImportError:  # ... or, before the analysis package moved there, into a folder
        from betavae.analysis import disentanglement_report
        target = lambda folder: folder  # noqa: E731

    trained = load(run)
    with tempfile.TemporaryDirectory() as out:
        report, wall, cpu = timed(lambda: disentanglement_report(
            metric_represent(trained), trained.data(), target(out), num_train=10_000, num_eval=5_000,
            dci_num_train=10_000, dci_backend=backend, progress=True))
    seconds = report["seconds"]
    lines = [f"### Every metric at disentanglement_lib's counts (10,000 / 5,000), DCI {backend}", "",
             "| step | seconds (wall) |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in seconds.items()]
    lines.append(f"| **total** (incl. MI heatmap, TC) | **{wall:.1f}** (process CPU {cpu:.1f}) |")
    images = report.get("rendered_images")
    if images:
        lines += ["", f"BetaVAE + FactorVAE images requested {images['requested']:,}, encoded "
                      f"{images['encoded']:,} (each distinct image once)."]
    lines += ["", "Scores: " + ", ".join(f"{k} {v:.3f}" for k, v in report["summary"].items())]
    if report["notes"]:
        lines += ["", "Notes: " + "; ".join(report["notes"])]
    return "\n".join(lines), {"seconds": seconds, "wall_s": wall, "cpu_s": cpu, "summary": report["summary"],
                              "notes": report["notes"], "images": images}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="store_true", help="DCI hist against exact")
    parser.add_argument("--points", type=int, default=2000, help="training points for --compare (default 2000)")
    parser.add_argument("--structures", default=",".join(STRUCTURES), help="synthetic structures for --compare")
    parser.add_argument("--run", type=Path, help="also compare on this run's codes")
    parser.add_argument("--full", type=Path, metavar="RUN", help="every metric at disentanglement_lib's counts")
    parser.add_argument("--backend", default="hist", choices=["hist", "exact"], help="DCI backend for --full")
    parser.add_argument("--quick", action="store_true", help="--compare on 500 points (a smoke run, make bench --quick)")
    args = parser.parse_args()
    if args.quick:
        args.points = min(args.points, 500)
    if not (args.compare or args.full):
        parser.error("give --compare and/or --full RUN")
    print(f"Machine: {machine_line()}\n", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.compare:
        n = args.points + args.points // 2
        cases = {s: synthetic_codes(s, n) for s in args.structures.split(",") if s}
        if args.run:
            cases[f"run {args.run.name}"] = run_codes(args.run, n)
        text, results = compare(cases, args.points)
        print("\n" + text, flush=True)
        (RESULTS / f"disentanglement_compare_{args.points}.json").write_text(
            json.dumps({"machine": machine_line(), "points": args.points, "cases": results}, indent=1))
    if args.full:
        text, results = full(args.full, args.backend)
        print("\n" + text, flush=True)
        (RESULTS / f"disentanglement_full_{args.backend}.json").write_text(
            json.dumps({"machine": machine_line(), **results}, indent=1, default=float))
    print(f"\nMachine at the end: {machine_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
