"""Training-step throughput of the study's β-VAE (`paper` preset, 3,937,635 parameters, 64×64×3).

Same model initialisation and inputs, Adam, the study's loss (β = 10, KLD weight 0.0025, MSE mean).
Variants, interleaved repeat by repeat (the machine is shared and noisy):

* reference — plain eager float32 NCHW loop, the model as written the reference way (a fresh
  tensor per LeakyReLU), torch's default threads;
* channels_last — betavae's default path when ``precision: auto`` is fp32 (model and inputs
  channels_last, in-place LeakyReLU);
* channels_last + compile — the same under ``torch.compile`` (``train.compile: true``); the cold
  compile time (fresh Inductor cache) and a warm one are reported;
* the path ``precision: auto`` picks here when it is not fp32 (bf16 autocast on CPUs with native
  bf16, bf16/fp16 on CUDA), eager and compiled;
* the reference, channels_last and the compiled path on 1 thread (under shared load fewer threads
  can win; ``bench/thread_policy.py`` measures the OpenMP settings that need a fresh process).

Also measured in the same run: the machine's 2048² fp32 matmul rate (interleaved with the steps,
so it sees the same load), the model's FLOPs per image, the fraction of the matmul rate each
step reaches, the final loss of the fastest path against the reference after a short training
(must be within 2 %), and with ``--profile`` where a step's time goes (op categories and the
64×64 output stage).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from betavae.hardware import choose_precision, cpu_info
from betavae.model import PRESETS, ConvVAE
from betavae.objectives import BetaVAE

from common import interleaved, parser, report, summary, table, throughput

OBJECTIVE = BetaVAE(beta=10, kld_weight=0.0025, reconstruction="mse_mean")
REFERENCE = "reference (eager fp32 NCHW)"
CHECK_TOLERANCE = 0.02
MATMUL_SIZE = 2048
CUDA_STEP_FACTOR = 20  # GPU steps are ~100× shorter: time more of them
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def reference_model() -> ConvVAE:
    """The `paper` model as the reference loop has it: every LeakyReLU returns a new tensor."""
    model = ConvVAE(64, 3, **PRESETS["paper"])
    for module in model.modules():
        if isinstance(module, nn.LeakyReLU):
            module.inplace = False
    return model


def make_step(batch_size: int, *, reference: bool = False, channels_last: bool = False, compile_model: bool = False,
              precision: str = "fp32", device: str = "cpu", threads: int | None = None,
              seed: int = 0) -> Callable[[torch.Tensor | None], float]:
    """One Adam training step of a freshly initialised `paper` model (seed ``seed``); called with
    no batch it steps on a fixed random one. Returns the loss (a float: the step is finished,
    also on CUDA)."""
    torch.manual_seed(seed)
    model = (reference_model() if reference else ConvVAE(64, 3, **PRESETS["paper"])).train().to(device)
    fixed = torch.rand(batch_size, 3, 64, 64, device=device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    forward = torch.compile(model) if compile_model else model
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")

    def step(x: torch.Tensor | None = None) -> float:
        x = (fixed if x is None else x.to(device)).contiguous(memory_format=layout)
        with threads_set(threads), torch.autocast(device, dtype=DTYPES.get(precision, torch.bfloat16),
                                                  enabled=precision != "fp32"):
            loss = OBJECTIVE(x, forward(x)).loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss.item()

    return step


@contextlib.contextmanager
def threads_set(threads: int | None):
    """torch's intra-op threads set to ``threads`` for the block (None: unchanged)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def variants(device_auto: str) -> tuple[dict[str, dict], str, str, str]:
    """name → make_step options; the name of the fastest expected path; auto's precision and reason."""
    precision, reason = choose_precision("auto", torch.device(device_auto))
    cpu_precision = precision if device_auto == "cpu" else choose_precision("auto", torch.device("cpu"))[0]
    found = {REFERENCE: {"reference": True},
             "channels_last (betavae default, fp32)": {"channels_last": True},
             "channels_last + compile (fp32)": {"channels_last": True, "compile_model": True}}
    fast = "channels_last + compile (fp32)"
    if cpu_precision != "fp32":
        found[f"auto: {cpu_precision} autocast, channels_last"] = {"channels_last": True, "precision": cpu_precision}
        fast = f"auto: {cpu_precision} autocast, channels_last + compile"
        found[fast] = {"channels_last": True, "compile_model": True, "precision": cpu_precision}
    if torch.get_num_threads() > 1:
        found[f"{REFERENCE}, 1 thread"] = {"reference": True, "threads": 1}
        found["channels_last (fp32), 1 thread"] = {"channels_last": True, "threads": 1}
        found[f"{fast}, 1 thread"] = {**found[fast], "threads": 1}
    if device_auto == "cuda":  # absolute GPU numbers beside the CPU ones (ratios are then vs the CPU reference)
        found["CUDA eager fp32 NCHW"] = {"reference": True, "device": "cuda"}
        found[f"CUDA auto: {precision}, channels_last"] = {"channels_last": True, "precision": precision,
                                                            "device": "cuda"}
    return found, fast, precision, reason


def matmul_rate(size: int = MATMUL_SIZE, repeats: int = 4, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of ``size``² @ ``size``² on this CPU (torch's threads), after one warm call."""
    a, b = torch.rand(size, size, dtype=dtype), torch.rand(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def flops_per_image(batch_size: int = 8) -> tuple[float, float, float]:
    """FLOPs per image of the `paper` model: forward, forward + backward, and the 64×64 output
    stage's forward + backward (last ConvTranspose block and the final conv)."""
    model = ConvVAE(64, 3, **PRESETS["paper"]).train()
    x = torch.rand(batch_size, 3, 64, 64)
    with FlopCounterMode(display=False) as counter:
        OBJECTIVE(x, model(x))
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        OBJECTIVE(x, model(x)).loss.backward()
    both = counter.get_total_flops()
    stage = output_stage(model)
    h = torch.rand(batch_size, model.decoder[-2][0].in_channels, 32, 32, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        stage(h).square().mean().backward()
    return forward / batch_size, both / batch_size, counter.get_total_flops() / batch_size


def output_stage(model: ConvVAE) -> nn.Module:
    """The 64×64 output stage: ConvTranspose(c0 → c0) + BN + LeakyReLU, Conv(c0 → C), activation."""
    return nn.Sequential(model.decoder[-2], model.decoder[-1], model.output_activation)


def bench_batch(batch_size: int, repeats: int, steps: int, device_auto: str) -> dict:
    """Interleaved throughputs per variant, the matmul rate in the same repeats, compile times."""
    found, fast, precision, reason = variants(device_auto)
    built, first = {}, {}
    for name, options in found.items():  # build and take the first step (the compile) one by one
        built[name] = make_step(batch_size, **options)
        started = time.perf_counter()
        built[name]()
        first[name] = time.perf_counter() - started
        built[name]()  # a second warm-up step
        print(f"  built {name}: first step {first[name]:.1f} s", flush=True)
    measures = {name: (lambda s=step, n=steps * (CUDA_STEP_FACTOR if found[name].get("device") == "cuda" else 1):
                       throughput(s, batch_size, n, warmup=1)) for name, step in built.items()}
    measures["matmul"] = matmul_rate
    values = interleaved(measures, repeats)
    matmul = values.pop("matmul")
    return {"values": values, "matmul_gflops": matmul, "first_step_s": first, "fast": fast,
            "auto_precision": precision, "auto_reason": reason}


def loss_check(fast_options: dict, steps: int, batch_size: int = 32) -> dict:
    """Trains the reference and the fast path ``steps`` steps from the same initialisation on the
    same smooth random batches; the mean loss of the last 10 steps of each and their gap."""
    generator = torch.Generator().manual_seed(1)
    batches = [F.interpolate(torch.rand(batch_size, 3, 8, 8, generator=generator), size=64, mode="bilinear",
                             align_corners=False) for _ in range(steps)]
    finals = {}
    for name, options in (("reference", {"reference": True}), ("fast", fast_options)):
        step = make_step(batch_size, seed=3, **options)
        torch.manual_seed(4)
        losses = [step(x) for x in batches]
        finals[name] = statistics.fmean(losses[-10:])
    gap = abs(finals["fast"] - finals["reference"]) / abs(finals["reference"])
    return {"steps": steps, "batch_size": batch_size, "reference_final": finals["reference"],
            "fast_final": finals["fast"], "rel_gap": gap, "ok": gap <= CHECK_TOLERANCE}


CATEGORIES = (("conv backward", ("convolution_backward",)), ("conv forward", ("convolution",)),
              ("BatchNorm", ("batch_norm",)), ("LeakyReLU", ("leaky_relu",)),
              ("copies / layout", ("copy_", "clone", "contiguous")), ("Adam", ("_foreach", "adam", "Optimizer.step")))


def profile_tables(batch_size: int, repeats: int = 5) -> str:
    """Where a step goes: torch.profiler self time by op category for the reference and
    channels_last eager steps (1 thread: under shared load two threads mostly measure waiting),
    and the 64×64 output stage timed alone against the whole step."""
    columns = {}
    with threads_set(1):
        for name, options in (("reference NCHW", {"reference": True}), ("channels_last", {"channels_last": True})):
            step = make_step(batch_size, **options)
            step(), step()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                step()
            totals = {label: 0.0 for label, _ in CATEGORIES} | {"other": 0.0}
            for event in prof.key_averages():
                label = next((label for label, keys in CATEGORIES if any(k in event.key for k in keys)), "other")
                totals[label] += event.self_cpu_time_total / 1e3
            columns[name] = totals
        lines = [f"#### Where one step goes (batch {batch_size}, 1 thread, torch.profiler self time)", "",
                 "| op category | " + " | ".join(f"{name} ms (share)" for name in columns) + " |",
                 "|---|" + "---|" * len(columns)]
        for label in [label for label, _ in CATEGORIES] + ["other", "total"]:
            cells = []
            for totals in columns.values():
                total = sum(totals.values())
                value = total if label == "total" else totals[label]
                cells.append(f"{value:.0f} ({100 * value / total:.0f} %)")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("\n" + output_stage_share(batch_size, repeats))
    return "\n".join(lines)


def output_stage_share(batch_size: int, repeats: int) -> str:
    """The 64×64 output stage (forward + backward, channels_last, 1 thread) against a whole step."""
    torch.manual_seed(0)
    model = ConvVAE(64, 3, **PRESETS["paper"]).train().to(memory_format=torch.channels_last)
    stage = output_stage(model)
    h = torch.rand(batch_size, model.decoder[-2][0].in_channels, 32, 32).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    target = torch.rand(batch_size, 3, 64, 64).contiguous(memory_format=torch.channels_last)

    def stage_step() -> None:
        F.mse_loss(stage(h), target).backward()

    full = make_step(batch_size, channels_last=True)
    values = interleaved({"stage": lambda: 1e3 / throughput(stage_step, 1, 2, warmup=1),
                          "step": lambda: 1e3 / throughput(full, 1, 2, warmup=1)}, repeats)
    stage_ms, step_ms = statistics.median(values["stage"]), statistics.median(values["step"])
    _, both, stage_flops = flops_per_image()
    return (f"64×64 output stage (ConvTranspose 32→32 + BN + LeakyReLU at 64×64×32, Conv 32→3, "
            f"activation), forward + backward alone: median {stage_ms:.0f} ms of a {step_ms:.0f} ms "
            f"channels_last step ({100 * stage_ms / step_ms:.0f} %) for {100 * stage_flops / both:.0f} % of "
            f"the step's FLOPs (1 thread, {repeats} interleaved repeats).")


def rate_table(title: str, result: dict, flops_image: float) -> str:
    """Each variant's median images/s as GFLOP/s and as a fraction of the matmul rate (same repeats)."""
    matmul = result["matmul_gflops"]
    lines = [f"### {title}", "", f"2048² fp32 matmul, measured in each repeat: "
             f"{summary(matmul)['min']:.0f} / {statistics.median(matmul):.0f} / {summary(matmul)['max']:.0f} "
             f"GFLOP/s (min / median / max). Step FLOPs: {flops_image / 1e6:.1f} MFLOP per image "
             "(forward + backward).", "",
             "| variant | GFLOP/s (median) | share of the matmul rate (median over repeats) |", "|---|---|---|"]
    for name, vals in result["values"].items():
        if name.startswith("CUDA"):
            continue
        shares = [v * flops_image / 1e9 / m for v, m in zip(vals, matmul)]
        lines.append(f"| {name} | {statistics.median(vals) * flops_image / 1e9:.1f} | "
                     f"{100 * statistics.median(shares):.0f} % |")
    return "\n".join(lines)


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--profile", action="store_true", help="also print where a step's time goes")
    args.add_argument("--batches", default="64", help="comma-separated batch sizes (default 64)")
    args.add_argument("--repeats", type=int, help="interleaved repeats (default 5, --quick 2)")
    args.add_argument("--check-steps", type=int, help="steps of the final-loss check (default 60, --quick 20)")
    args.add_argument("--warm-cache", action="store_true",
                      help="use Inductor's usual cache directory instead of a fresh one (compile time is then warm)")
    args = args.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    steps = 2 if args.quick else 3
    check_steps = args.check_steps or (20 if args.quick else 60)
    device_auto = "cuda" if torch.cuda.is_available() else "cpu"
    cache = contextlib.nullcontext() if args.warm_cache else tempfile.TemporaryDirectory(prefix="inductor-")
    with cache as cache_dir:
        if cache_dir:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
        forward, both, stage = flops_per_image()
        cpu = cpu_info()
        tables = [f"CPU: {cpu.describe()}.", ""]
        payload = {"steps": steps, "repeats": repeats, "flops_per_image": {"forward": forward, "train_step": both,
                                                                           "output_stage_train": stage},
                   "batches": {}}
        load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        for batch_size in [int(b) for b in args.batches.split(",")]:
            result = bench_batch(batch_size, repeats, steps, device_auto)
            tables[1] = f"`precision: auto` here → **{result['auto_precision']}** ({result['auto_reason']})."
            title = f"Training step, `paper` preset, batch {batch_size} ({steps} timed steps × {repeats} repeats)"
            cold = [s for name, s in result["first_step_s"].items() if "compile" in name]
            compile_note = ("First step incl. compile: " + ", ".join(
                f"{name}: {seconds:.0f} s" for name, seconds in result["first_step_s"].items() if "compile" in name)
                + (" (the first is a cold compile into a fresh Inductor cache, later ones reuse it)"
                   if cold and not args.warm_cache else ""))
            tables.append(table(title, result["values"], REFERENCE) + "\n\n" + compile_note)
            tables.append(rate_table(f"Share of the machine's fp32 matmul rate, batch {batch_size}", result, both))
            payload["batches"][batch_size] = {"images_per_s": result["values"], "matmul_gflops": result["matmul_gflops"],
                                              "first_step_s": result["first_step_s"]}
            payload["auto"] = {"precision": result["auto_precision"], "reason": result["auto_reason"]}
        found, fast, _, _ = variants(device_auto)
        check = loss_check({k: v for k, v in found[fast].items() if k != "threads"}, check_steps)
        tables.append(f"Final loss, {check['steps']} steps at batch {check['batch_size']} from the same "
                      f"initialisation on the same smooth random batches (mean of the last 10 steps): reference "
                      f"{check['reference_final']:.4f}, {fast} {check['fast_final']:.4f}, "
                      f"{100 * check['rel_gap']:.2f} % apart — "
                      + ("within 2 %." if check["ok"] else "**more than 2 % apart**."))
        payload["loss_check"] = check
        if device_auto == "cuda":
            tables.append(f"CUDA variants on {torch.cuda.get_device_name(0)}; their ratio is against the CPU reference.")
        if args.profile:
            tables.append(profile_tables(64))
        load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        tables.append(f"1-minute load average: {load_before} at the start, {load_after} at the end "
                      f"({cpu.logical_cpus} CPUs); anything above ~0.5 means other processes shared the cores.")
        payload["load_average"] = {"start": load_before, "end": load_after}
        report("train_step", tables, payload)


if __name__ == "__main__":
    main()
