"""The Fréchet distance's trace term Tr (Σ₁Σ₂)^½ on 2048-d statistics: sqrtm against eigenvalues.

* baseline — the formula as betavae computed it before (pytorch-fid's): ``scipy.linalg.sqrtm`` of
  the 2048×2048 product Σ₁Σ₂, real part;
* ours — :func:`betavae.metrics.fid.frechet_distance`: Cholesky Σ₁ = L₁L₁ᵀ and the eigenvalues
  of L₁ᵀΣ₂L₁ (Σ₁ full rank), or pivoted Cholesky of both and the singular values of the factors'
  product (Σ₁ rank-deficient); with fewer samples than dimensions and the feature rows given,
  the N×N route instead.

Two cases, as FID meets them: N = 2,400 samples a side (full rank, the study's setting) and N = 500
(rank 499 of 2048). Reports the time of each (ours: min/median/max of repeats, with the default
BLAS threads and with one — on one thread also its CPU time, which a busy machine does not
inflate; sqrtm: once, it takes minutes), the relative FID difference, and ours split into its
steps. ``--quick`` skips sqrtm.

Also KID on 2,400 + 2,400 such features (100 subsets of 1,000): the subset loop as it was (three
fancy-indexed 1,000² copies of the kernel matrices per subset) against
:func:`betavae.metrics.fid.kid` (all subsets' kernel sums as products with 0/1 indicator rows).
``--kid-only`` runs just that.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
from scipy import linalg
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from betavae.metrics import fid
from betavae.metrics.fid import FeatureStats, frechet_distance

from common import parser, report, seconds, summary

DIM = 2048


def stats_pair(rows: int, seed: int = 0) -> tuple[FeatureStats, FeatureStats]:
    """Two sets of ``rows`` non-negative 2048-d features (random squares, like fid_features.py)."""
    rng = np.random.default_rng(seed)
    first, second = rng.standard_normal((rows, DIM)) ** 2, rng.standard_normal((rows, DIM)) ** 2 + 0.05
    return FeatureStats.of(first), FeatureStats.of(second)


def sqrtm_fid(a: FeatureStats, b: FeatureStats) -> float:
    """The replaced computation: Tr of sqrtm(Σ₁Σ₂), real part."""
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(linalg.sqrtm(a.cov @ b.cov)).real)


def cpu_and_wall(job) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call: on one thread the CPU time is what the call
    costs with the core to itself, whatever else runs on the machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    job()
    return time.perf_counter() - wall, time.process_time() - cpu


def steps(a: FeatureStats, b: FeatureStats) -> dict[str, float]:
    """Seconds of each step of the full-rank eigen route, timed one by one."""
    out, started = {}, time.perf_counter()
    lower = fid._cholesky(a.cov)
    out["Cholesky of Σ1"], started = time.perf_counter() - started, time.perf_counter()
    with fid._one_blas_thread():
        inner, _ = lapack.dsygst(b.cov, lower, itype=2, lower=1)
    out["L1ᵀ Σ2 L1 (dsygst)"], started = time.perf_counter() - started, time.perf_counter()
    fid._eigvalsh(inner)
    out["eigenvalues (dsyev)"] = time.perf_counter() - started
    return out


def kid_reference(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                  seed: int = 0) -> tuple[float, float]:
    """KID as betavae computed it before: whole-set kernels, then three indexed copies per subset."""
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    k_11, k_22, k_12 = fid._kernel(f1, f1), fid._kernel(f2, f2), fid._kernel(f1, f2)
    values = []
    for _ in range(subsets):
        i, j = rng.choice(len(f1), m, replace=False), rng.choice(len(f2), m, replace=False)
        values.append(fid._mmd2_unbiased(k_11[np.ix_(i, i)], k_22[np.ix_(j, j)], k_12[np.ix_(i, j)]))
    return float(np.mean(values)), float(np.std(values))


def kid_section(repeats: int) -> tuple[str, dict]:
    """Seconds of KID on 2,400 + 2,400 2048-d features, before and now, interleaved, and their difference."""
    rng = np.random.default_rng(1)
    f1, f2 = rng.standard_normal((2400, DIM)) ** 2, rng.standard_normal((2400, DIM)) ** 2 + 0.05
    times: dict[str, list[float]] = {"before (indexed copies per subset)": [], "now (indicator products)": []}
    for _ in range(repeats):
        elapsed, before = seconds(lambda: kid_reference(f1, f2))
        times["before (indexed copies per subset)"].append(elapsed)
        elapsed, now = seconds(lambda: fid.kid(f1, f2))
        times["now (indicator products)"].append(elapsed)
    difference = abs(now[0] - before[0]) / abs(before[0])
    medians = {k: summary(v)["median"] for k, v in times.items()}
    line = (f"KID, 2,400 + 2,400 × {DIM}-d, 100 subsets of 1,000 ({repeats} repeats, median s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
            + f"; {medians['before (indexed copies per subset)'] / medians['now (indicator products)']:.1f}×; "
            f"relative difference of the mean {difference:.1e}")
    return line, {"seconds": {k: summary(v) for k, v in times.items()}, "relative_difference": difference}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--kid-only", action="store_true", help="only the KID comparison")
    args = cli.parse_args()
    repeats = 3 if args.quick else 7
    if args.kid_only:
        line, payload = kid_section(repeats)
        report("fid_kid", [line], payload)
        return
    cases = {"N = 2,400 (full rank)": (2400, False), "N = 500, (μ, Σ) only (rank 499)": (500, False),
             "N = 500, rows kept (N×N route)": (500, True)}
    results, baseline = {}, {}
    for name, (n, keep_rows) in cases.items():
        a, b = stats_pair(n)
        if not keep_rows:
            a, b = FeatureStats(a.mean, a.cov, a.n), FeatureStats(b.mean, b.cov, b.n)

        def run(a=a, b=b) -> float:
            return frechet_distance(a.mean, a.cov, b.mean, b.cov, features1=a.features, features2=b.features)

        times = [seconds(run)[0] for _ in range(repeats)]
        with threadpool_limits(1):
            single = [cpu_and_wall(run) for _ in range(repeats)]
        entry = {"n": n, "ours_s": summary(times), "ours_1_thread_s": summary([w for w, _ in single]),
                 "ours_1_thread_cpu_s": summary([c for _, c in single]), "fid": run()}
        if not args.quick and n not in baseline:
            baseline[n] = seconds(lambda: sqrtm_fid(a, b))
        if n in baseline:
            entry["sqrtm_s"], entry["sqrtm_fid"] = baseline[n]
            entry["relative_difference"] = abs(entry["fid"] - entry["sqrtm_fid"]) / abs(entry["sqrtm_fid"])
        results[name] = entry
    split = steps(*stats_pair(2400))

    threads = torch.get_num_threads()
    rows = [f"### Fréchet distance on {DIM}-d statistics (ours: {repeats} repeats; sqrtm: once)", "",
            "| case | sqrtm (s) | ours, default BLAS threads: min / median / max (s) "
            "| ours, 1 BLAS thread: wall min / median, CPU median (s) | speed-up (median) | FID | relative difference |",
            "|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        s, one, base = entry["ours_s"], entry["ours_1_thread_s"], entry.get("sqrtm_s")
        cells = [name, f"{base:.1f}" if base else "—", f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}",
                 f"{one['min']:.3f} / {one['median']:.3f}, {entry['ours_1_thread_cpu_s']['median']:.3f}",
                 f"{base / s['median']:.0f}×" if base else "—", f"{entry['fid']:.6f}",
                 f"{entry['relative_difference']:.1e}" if base else "—"]
        rows.append("| " + " | ".join(cells) + " |")
    lines = ["\n".join(rows),
             "Full-rank route, one run split into steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in split.items()),
             f"CPU threads: {os.cpu_count()} (torch {threads}); load average while measuring (1, 5, 15 min): "
             + ", ".join(f"{x:.1f}" for x in os.getloadavg())]
    kid_line, kid_payload = kid_section(3 if args.quick else 5)
    report("fid_sqrtm", lines + [kid_line], {"cases": results, "full_rank_steps_s": split, "dim": DIM,
                                             "load_average": os.getloadavg(), "kid": kid_payload})


if __name__ == "__main__":
    main()
