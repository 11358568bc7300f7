"""Explorer decode latency: one latent code → decoded 64×64 image → PNG bytes (`small` preset).

Compared over the same codes, eval mode, inference mode, fp32: the eager NCHW model (baseline)
vs the model in channels_last. Reports calls/s and the median / p95 latency in milliseconds.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from betavae.explorer.state import png_bytes
from betavae.model import PRESETS, ConvVAE

from common import interleaved, parser, report, table

BASELINE, OURS = "baseline (eager NCHW)", "channels_last"


def make_decoder(channels_last: bool) -> Callable[[torch.Tensor], bytes]:
    """Code ``(1, 10)`` → PNG bytes with a freshly initialised `small` model."""
    torch.manual_seed(0)
    model = ConvVAE(64, 3, **PRESETS["small"]).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def decode(z: torch.Tensor) -> bytes:
        with torch.inference_mode():
            return png_bytes(model.decode(z).float().contiguous())

    return decode


def latencies(decode: Callable[[torch.Tensor], bytes], codes: list[torch.Tensor], into: list[float]) -> Callable[[], float]:
    """A measurement: one call per code, per-call seconds appended to ``into``; returns calls/s."""
    def measure() -> float:
        times = []
        for z in codes:
            started = time.perf_counter()
            decode(z)
            times.append(time.perf_counter() - started)
        into.extend(times)
        return len(times) / sum(times)
    return measure


def main() -> None:
    args = parser(__doc__).parse_args()
    calls, repeats = (30, 2) if args.quick else (100, 3)
    codes = list(torch.randn(calls, 1, PRESETS["small"]["latent_dim"], generator=torch.Generator().manual_seed(0)))
    decoders = {BASELINE: make_decoder(False), OURS: make_decoder(True)}
    for decode in decoders.values():
        for z in codes[:10]:
            decode(z)
    samples: dict[str, list[float]] = {name: [] for name in decoders}
    values = interleaved({name: latencies(d, codes, samples[name]) for name, d in decoders.items()}, repeats)
    ms = {name: {"median": 1e3 * statistics.median(s), "p95": 1e3 * float(np.percentile(s, 95))}
          for name, s in samples.items()}
    latency_lines = ["| variant | median ms | p95 ms |", "|---|---|---|"]
    latency_lines += [f"| {name} | {v['median']:.2f} | {v['p95']:.2f} |" for name, v in ms.items()]
    title = f"Decode one code → PNG, `small` preset, {calls} calls × {repeats} repeats"
    report("decode_latency", [table(title, values, BASELINE, unit="calls/s"), "\n".join(latency_lines)],
           {"calls_per_s": values, "latency_ms": ms})


if __name__ == "__main__":
    main()
