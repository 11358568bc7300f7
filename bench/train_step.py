"""Training-step throughput of the study's β-VAE (`paper` preset, 3,937,635 parameters, 64×64×3).

Compared, at batch 64 and 144, same model initialisation and inputs, fp32, Adam, the study's loss
(β = 10, KLD weight 0.0025, MSE mean):

* baseline — plain eager float32 NCHW loop;
* channels_last — model and inputs in channels_last memory format;
* compile — ``torch.compile`` of the model (NCHW); the cold compile time is reported separately;
* channels_last + compile — both.

Each variant is warmed up (compiling where it applies), then every repeat times a few steps,
variants interleaved. ``--profile`` adds a torch.profiler table of the top ops of one baseline
and one channels_last step.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from betavae.model import PRESETS, ConvVAE
from betavae.objectives import BetaVAE

from common import interleaved, parser, report, table, throughput

BATCH_SIZES = (64, 144)
# name → (channels_last, compile, device, bf16 autocast)
VARIANTS = {"baseline (eager fp32 NCHW)": (False, False, "cpu", False), "channels_last": (True, False, "cpu", False),
            "compile": (False, True, "cpu", False), "channels_last + compile": (True, True, "cpu", False)}
if torch.cuda.is_available():  # absolute GPU numbers beside the CPU ones (ratios are then vs the CPU baseline)
    VARIANTS |= {"CUDA eager fp32 NCHW": (False, False, "cuda", False),
                 "CUDA channels_last + bf16 autocast": (True, False, "cuda", True)}
CUDA_STEP_FACTOR = 20  # GPU steps are ~100× shorter: time more of them
OBJECTIVE = BetaVAE(beta=10, kld_weight=0.0025, reconstruction="mse_mean")


def make_step(batch_size: int, channels_last: bool, compile_model: bool, device: str = "cpu",
              bf16: bool = False) -> Callable[[], None]:
    """One Adam training step of a freshly initialised `paper` model on a fixed random batch
    (on CUDA the step waits for the GPU, so that wall time measures it)."""
    torch.manual_seed(0)
    model = ConvVAE(64, 3, **PRESETS["paper"]).train().to(device)
    x = torch.rand(batch_size, 3, 64, 64, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    forward = torch.compile(model) if compile_model else model

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            loss = OBJECTIVE(x, forward(x)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def first_step_seconds(step: Callable[[], None]) -> float:
    """Seconds of the first call (the compile, for compiled variants)."""
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def bench_batch(batch_size: int, repeats: int, steps: int, warmup: int) -> tuple[dict, dict]:
    """Interleaved throughputs per variant and the first-step (compile) seconds per variant."""
    built = {name: make_step(batch_size, *flags) for name, flags in VARIANTS.items()}
    first = {name: first_step_seconds(step) for name, step in built.items()}
    for step in built.values():
        for _ in range(warmup):
            step()
    measures = {name: (lambda s=step, n=steps * (CUDA_STEP_FACTOR if VARIANTS[name][2] == "cuda" else 1):
                       throughput(s, batch_size, n, warmup=1)) for name, step in built.items()}
    return interleaved(measures, repeats), first


def profile_table(batch_size: int, rows: int = 12) -> str:
    """torch.profiler's top ops (self CPU time) for one baseline and one channels_last step."""
    parts = []
    for name, channels_last in (("baseline", False), ("channels_last", True)):
        step = make_step(batch_size, channels_last, False)
        for _ in range(2):  # warm-up
            step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        parts.append(f"#### top ops, {name}, batch {batch_size}\n\n```\n"
                     + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows) + "\n```")
    return "\n\n".join(parts)


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--profile", action="store_true", help="also print a profiler table of the top ops")
    args = args.parse_args()
    repeats, steps, warmup = (2, 3, 2) if args.quick else (3, 4, 2)
    tables, payload = [], {"steps": steps, "warmup": warmup, "repeats": repeats, "batches": {}}
    for batch_size in BATCH_SIZES:
        values, first = bench_batch(batch_size, repeats, steps, warmup)
        title = f"Training step, `paper` preset, batch {batch_size} ({steps} timed steps × {repeats} repeats)"
        compile_note = ", ".join(f"{name}: {seconds:.1f} s" for name, seconds in first.items())
        tables.append(table(title, values, "baseline (eager fp32 NCHW)") + f"\n\nFirst step (incl. compile): {compile_note}")
        payload["batches"][batch_size] = {"images_per_s": values, "first_step_s": first}
    if torch.cuda.is_available():
        tables.append(f"CUDA variants on {torch.cuda.get_device_name(0)}; their ratio is against the CPU baseline.")
    if args.profile:
        tables.append(profile_table(BATCH_SIZES[0]))
    report("train_step", tables, payload)


if __name__ == "__main__":
    main()
