"""Mixed precision keeps results: a short run's loss curve under bf16 autocast (and fp16 AMP on CUDA)
against float32's, same seed, same data.

The curves are compared after smoothing (moving mean over ``--window`` logged steps): the largest
relative difference over the second half of training, and the final validation losses. The
fast path passes when both stay within 2 %. Runs the real training loop (``betavae.training.train``)
on the built-in shapes-rgb data with the study's loss; on CUDA it uses the GPU.

bf16 is checked only where it is native (CUDA with bf16, CPUs with AVX-512-BF16 or AMX): on other
CPUs it is emulated, ``precision: auto`` never picks it, and a run would take ~4-6× the fp32 time;
the bench then says so and skips it (``--force`` runs it anyway).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from betavae.config import validate_config
from betavae.hardware import cpu_info, torch_cpu_bf16
from betavae.runs import RunPaths, read_csv
from betavae.training import train

from common import parser, report, seconds

TOLERANCE = 0.02


def run_config(precision: str, steps: int, device: str) -> dict:
    return {
        "name": f"precision-{precision}",
        "data": {"name": "shapes-rgb", "num_images": 8000, "image_size": 32, "normalization": "imagenet"},
        "model": {"channels": [32, 64, 128], "latent_dim": 16},
        "objective": {"name": "beta", "reconstruction": "mse_mean", "beta": 10, "kld_weight": 0.0025},
        "train": {"max_steps": steps, "batch_size": 64, "lr": 0.002, "precision": precision, "device": device,
                  "val_every": steps, "checkpoint_every": steps, "progress": False, "seed": 0},
    }


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    return np.convolve(values, np.ones(window) / window, mode="valid")


def compare(reference: Path, other: Path, window: int) -> dict:
    """Largest relative gap of the smoothed training losses (second half) and of the final validation loss."""
    a = np.array([row["loss"] for row in read_csv(RunPaths(reference).train_log)])
    b = np.array([row["loss"] for row in read_csv(RunPaths(other).train_log)])
    sa, sb = smoothed(a, window), smoothed(b, window)
    half = len(sa) // 2
    curve_gap = float(np.max(np.abs(sb[half:] - sa[half:]) / np.abs(sa[half:])))
    val_a, val_b = (read_csv(RunPaths(p).val_log)[-1]["loss"] for p in (reference, other))
    return {"curve_max_rel_gap": curve_gap, "val_loss": val_b, "val_rel_gap": abs(val_b - val_a) / abs(val_a)}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--window", type=int, default=25, help="moving-mean window of logged steps (default 25)")
    p.add_argument("--force", action="store_true", help="check bf16 on a CPU without native bf16 too")
    args = p.parse_args()
    steps = 120 if args.quick else args.steps
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = cpu_info()
    native = device == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False) or (
        device == "cpu" and cpu.native_bf16 and torch_cpu_bf16())
    if not (native or args.force):
        note = (f"bf16 not checked: {cpu.describe()} has no native bf16 (no AVX-512-BF16/AMX), so bf16 is "
                "emulated here, ~4× slower, and `precision: auto` does not pick it (`--force` runs the check anyway).")
        report("precision_check", [note], {"device": device, "skipped": note})
        return
    precisions = ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])
    runs, timings = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions:
            root = Path(tmp) / precision
            timings[precision], _ = seconds(lambda: train(validate_config(run_config(precision, steps, device)), root))
            runs[precision] = root
        rows = {precision: compare(runs["fp32"], runs[precision], args.window) for precision in precisions[1:]}
        fp32_val = read_csv(RunPaths(runs["fp32"]).val_log)[-1]["loss"]
    where = torch.cuda.get_device_name(0) if device == "cuda" else cpu.model + ("" if native else ", bf16 emulated")
    lines = [f"### Loss curve vs float32 ({steps} steps, {where}, shapes-rgb 32×32, study loss)", "",
             "| precision | seconds | final val loss | max rel. gap, smoothed train loss (2nd half) | val gap | within 2 %? |",
             "|---|---|---|---|---|---|",
             f"| fp32 | {timings['fp32']:.0f} | {fp32_val:.4f} | — | — | reference |"]
    for precision, row in rows.items():
        ok = row["curve_max_rel_gap"] <= TOLERANCE and row["val_rel_gap"] <= TOLERANCE
        lines.append(f"| {precision} | {timings[precision]:.0f} | {row['val_loss']:.4f} | "
                     f"{100 * row['curve_max_rel_gap']:.2f} % | {100 * row['val_rel_gap']:.2f} % | {'yes' if ok else '**no**'} |")
    report("precision_check", ["\n".join(lines)], {"device": device, "steps": steps, "window": args.window,
                                                   "seconds": timings, "comparison": rows})


if __name__ == "__main__":
    main()
