"""Latent samplers (betavae.samplers): conditioning formulas, stored fits, the sample/fit-sampler commands."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from betavae.cli import main
from betavae.inference import load
from betavae.latents import latent_ranking
from betavae.runs import RunPaths
from betavae.samplers import (
    SAMPLERS,
    GMMSampler,
    PriorSampler,
    condition_mixture,
    fit_gmm,
    fit_sampler,
    get_sampler,
    stored_sampler,
)
from betavae.sampling import prior_codes


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


def _two_component_2d():
    weights = np.array([0.3, 0.7])
    means = np.array([[0.0, 1.0], [2.0, -1.0]])
    covs = np.array([[[1.0, 0.5], [0.5, 2.0]], [[0.5, -0.2], [-0.2, 1.0]]])
    return weights, means, covs


def test_conditioning_a_2d_mixture_matches_the_hand_formulas():
    weights, means, covs = _two_component_2d()
    v = 1.5  # condition dimension 0 on 1.5; dimension 1 is free
    w, m, c = condition_mixture(weights, means, covs, [0], np.array([v]))
    # Per component: mean μ1 + Σ10/Σ00 (v − μ0), variance Σ11 − Σ10²/Σ00.
    assert m[0, 0] == pytest.approx(1.0 + 0.5 / 1.0 * (1.5 - 0.0))
    assert m[1, 0] == pytest.approx(-1.0 + -0.2 / 0.5 * (1.5 - 2.0))
    assert c[0, 0, 0] == pytest.approx(2.0 - 0.25 / 1.0)
    assert c[1, 0, 0] == pytest.approx(1.0 - 0.04 / 0.5)
    # Weights ∝ w_k N(v; μ_k0, Σ_k00).
    like = [0.3 * np.exp(-0.5 * 1.5**2 / 1.0) / np.sqrt(2 * np.pi * 1.0),
            0.7 * np.exp(-0.5 * 0.5**2 / 0.5) / np.sqrt(2 * np.pi * 0.5)]
    assert w == pytest.approx(np.array(like) / sum(like))


def test_conditioning_on_nothing_keeps_the_mixture_and_far_values_do_not_underflow():
    weights, means, covs = _two_component_2d()
    w, m, c = condition_mixture(weights, means, covs, [], np.array([]))
    assert np.allclose(w, weights) and np.allclose(m, means) and np.allclose(c, covs)
    w, _, _ = condition_mixture(weights, means, covs, [0], np.array([500.0]))
    assert np.isfinite(w).all() and w.sum() == pytest.approx(1.0)


def test_gmm_conditional_samples_have_the_conditional_moments_and_exact_fixed_values():
    weights, means, covs = _two_component_2d()
    sampler = GMMSampler(3, [0, 2], weights, means, covs)  # dim 1 inactive: N(0, 1)
    z = sampler.sample(40_000, seed=1, fixed={0: 1.5}).double().numpy()
    assert (z[:, 0] == np.float32(1.5)).all()
    w, m, c = condition_mixture(weights, means, covs, [0], np.array([1.5]))
    expected_mean = float(w @ m[:, 0])
    expected_var = float(w @ (c[:, 0, 0] + m[:, 0] ** 2) - expected_mean**2)
    assert z[:, 2].mean() == pytest.approx(expected_mean, abs=0.03)
    assert z[:, 2].var() == pytest.approx(expected_var, rel=0.05)
    assert z[:, 1].mean() == pytest.approx(0, abs=0.03) and z[:, 1].std() == pytest.approx(1, abs=0.03)


def test_gmm_unconditioned_samples_follow_the_mixture_and_are_seeded():
    weights, means, covs = _two_component_2d()
    sampler = GMMSampler(2, [0, 1], weights, means, covs)
    z = sampler.sample(40_000, seed=3).double().numpy()
    assert z.mean(0) == pytest.approx(weights @ means, abs=0.04)
    assert torch.equal(sampler.sample(5, seed=7), sampler.sample(5, seed=7))
    assert not torch.equal(sampler.sample(5, seed=7), sampler.sample(5, seed=8))


def test_a_sweep_conditions_each_row_and_sets_the_swept_values_exactly():
    weights, means, covs = _two_component_2d()
    sampler = GMMSampler(2, [0, 1], weights, means, covs)
    z = sampler.sample(9, seed=0, sweeps={0: (-2.0, 2.0)}, fixed=None)
    assert torch.allclose(z[:, 0], torch.linspace(-2, 2, 9))
    z = sampler.sample(4, seed=0, fixed={1: 0.25}, sweeps={0: (-1.0, 1.0)})
    assert (z[:, 1] == 0.25).all() and torch.allclose(z[:, 0], torch.linspace(-1, 1, 4))
    with pytest.raises(ValueError, match="does not exist"):
        sampler.sample(2, fixed={5: 0.0})
    with pytest.raises(ValueError, match="both fixed and swept"):
        sampler.sample(2, fixed={0: 0.0}, sweeps={0: (0.0, 1.0)})


def test_the_prior_sampler_is_prior_codes():
    assert list(SAMPLERS) == ["prior", "gmm", "two-stage"]
    sampler = PriorSampler(4)
    assert torch.equal(sampler.sample(6, 2, {1: 0.5}, {2: (-1.0, 1.0)}), prior_codes(6, 4, 2, {1: 0.5}, {2: (-1.0, 1.0)}))


def test_bic_picks_two_components_for_two_clusters():
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.normal(-4, 0.5, (300, 2)), rng.normal(4, 0.5, (300, 2))])
    weights, means, covs, chosen = fit_gmm(codes, seed=0)
    assert chosen["components"] == 2 and chosen["chosen_by"] == "BIC" and set(chosen["bic"]) == {"1", "2", "5", "10", "20"}
    assert sorted(means[:, 0].round()) == [-4, 4] and covs.shape == (2, 2, 2)
    assert fit_gmm(codes, components=5)[3]["components"] == 5


def test_a_fitted_sampler_is_stored_reloaded_and_refitted_for_a_new_checkpoint(run_copy):
    trained = load(run_copy)
    sampler = fit_sampler(trained, "gmm", components=2, seed=0)
    paths = RunPaths(run_copy)
    assert paths.sampler("gmm").is_file() and paths.sampler_info("gmm").is_file()
    info = json.loads(paths.sampler_info("gmm").read_text())
    assert info["components"] == 2 and info["active_dims"] == latent_ranking(trained).active
    assert info["fit_images"] == 192 and "posterior means" in info["fit_codes"]
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in paths.root.rglob("*"))
    again = stored_sampler(trained, "gmm")
    assert again is not None and np.allclose(again.covariances, sampler.covariances)
    assert torch.equal(again.sample(8, seed=4), sampler.sample(8, seed=4))
    # A different checkpoint (last instead of best) has another digest: the stored fit does not apply.
    if paths.last.read_bytes() != paths.best.read_bytes():
        assert stored_sampler(load(run_copy, "last"), "gmm") is None
    info["checkpoint_sha256"] = "0" * 64
    paths.sampler_info("gmm").write_text(json.dumps(info))
    assert stored_sampler(trained, "gmm") is None
    refit = get_sampler(trained, "gmm", components=1)
    assert refit.components == 1 and stored_sampler(trained, "gmm").components == 1


def test_fitting_refuses_a_run_without_a_training_split(run_copy, monkeypatch):
    trained = load(run_copy)
    data = trained.data()
    monkeypatch.setattr(data, "train_indices", np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="no training split"):
        fit_sampler(trained, "gmm")


def test_the_sample_and_fit_sampler_commands(run_copy, tmp_path, capsys):
    assert main(["fit-sampler", str(run_copy), "--kind", "gmm", "--components", "2", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    out = tmp_path / "samples"
    assert main(["sample", str(run_copy), "-n", "5", "--sampler", "gmm", "--fix", "0=1.25", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampler"]["kind"] == "gmm" and manifest["sampler"]["components"] == 2
    assert manifest["sampler"]["fixed"] == {"0": 1.25} and all(s["z"][0] == 1.25 for s in manifest["samples"])
    assert main(["sample", str(run_copy), "-n", "4", "--out", str(tmp_path / "grid.png")]) == 0
    assert main(["sample", str(run_copy), "-n", "4", "--fix", "0=1", "--sweep", "0=-1:1",
                 "--out", str(tmp_path / "g.png")]) == 2
    assert "both fixed and swept" in capsys.readouterr().err


class _StandIn(torch.nn.Module):
    """A tiny fixed feature network (no Inception weights in tests)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, kernel_size=23, stride=23)
        self.images_seen = 0

    def forward(self, x):
        self.images_seen += len(x)
        return torch.nn.functional.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)


def test_sample_quality_compares_samplers_side_by_side_on_one_feature_pass_each(run_copy, tmp_path):
    from betavae.evaluation.run_eval import EvalOptions, _headline_values
    from betavae.evaluation.sample_quality import sample_quality
    from betavae.metrics.fid import FeatureExtractor

    network = _StandIn()
    extractor = FeatureExtractor(network, "stand-in:samplers", batch_size=32, progress=False, record={"network": "stand-in"})
    trained = load(run_copy)
    with pytest.warns(UserWarning, match="below 2048"):
        quality = sample_quality(trained, extractor, 40, "all", with_kid=True, cache_dir=tmp_path / "cache",
                                 samplers=["gmm"])
    assert network.images_seen == 192 + 40 + 40  # the reference once, each sampler's samples once
    assert set(quality["samplers"]) == {"prior", "gmm"}
    for kind, row in quality["samplers"].items():
        assert {"fid", "kid", "kid_std", "precision", "recall", "density", "coverage"} <= set(row), kind
        assert 0 <= row["precision"] <= 1 and 0 <= row["coverage"] <= 1 and row["sampler"]["kind"] == kind
    assert quality["samplers"]["prior"]["fid"] == quality["fid"] and quality["precision"] == quality["samplers"]["prior"]["precision"]
    assert quality["prdc_settings"]["precision_recall_k"] == 3 and quality["prdc_settings"]["density_coverage_k"] == 5
    assert RunPaths(run_copy).sampler("gmm").is_file()  # fitted on demand and stored
    values = _headline_values({}, quality, latent_ranking(trained), None)
    assert {"fid", "precision", "recall", "density", "coverage"} <= set(values)
    assert EvalOptions(samplers=["gmm"]).samplers == ["prior", "gmm"]
    with pytest.raises(ValueError, match="no sampler 'vamp'"):
        EvalOptions(samplers=["vamp"])


def test_the_headline_registers_the_fidelity_and_diversity_scores():
    from betavae.evaluation.headline import SCORES

    assert [SCORES[k].better for k in ("precision", "recall", "density", "coverage")] == [1, 1, 0, 1]


def test_the_two_stage_sampler_learns_the_codes_and_round_trips_through_its_files(run_copy):
    from betavae.samplers import TwoStageSampler, save_sampler

    rng = np.random.default_rng(0)
    clusters = np.where(rng.integers(0, 2, 4000) == 1, 2.5, -2.5) + rng.normal(0, 0.3, 4000)
    codes = np.column_stack([clusters, rng.normal(0, 1, 4000), rng.normal(-1.0, 2.0, 4000)])
    sampler = TwoStageSampler.fit(codes, 3, [0, 2], seed=0, steps=1500)
    z = sampler.sample(4000, seed=1).double().numpy()
    assert z[:, 2].mean() == pytest.approx(-1.0, abs=0.3) and z[:, 2].std() == pytest.approx(2.0, rel=0.25)
    near_centres = np.mean(np.abs(np.abs(z[:, 0]) - 2.5) < 0.8)
    assert near_centres > 2 * np.mean(np.abs(z[:, 0]) < 0.8)  # two modes, not one Gaussian over both
    assert sampler.info["gamma"] < 0.5 and "kl_warmup" in sampler.info
    assert z[:, 1].std() == pytest.approx(1.0, abs=0.05)  # the inactive dimension: N(0, 1)
    assert torch.equal(sampler.sample(6, seed=2), sampler.sample(6, seed=2))
    fixed = sampler.sample(5, seed=2, fixed={0: 1.5}, sweeps={2: (-1.0, 1.0)})
    assert (fixed[:, 0] == 1.5).all() and torch.allclose(fixed[:, 2], torch.linspace(-1, 1, 5))
    assert "set after drawing" in sampler.settings()["conditioning"]
    # Stored as safetensors + JSON, reloaded through the registry.
    trained = load(run_copy)
    again = fit_sampler(trained, "two-stage", seed=0)
    assert RunPaths(run_copy).sampler("two-stage").is_file()
    loaded = stored_sampler(trained, "two-stage")
    assert loaded is not None and torch.equal(loaded.sample(7, seed=3), again.sample(7, seed=3))
    save_sampler(RunPaths(run_copy), sampler)  # latent_dim 3 ≠ the model's 4: not this model's sampler
    assert stored_sampler(trained, "two-stage") is None
    with pytest.raises(ValueError, match="gmm sampler only"):
        fit_sampler(trained, "two-stage", components=2)


def test_a_damaged_or_half_written_stored_fit_is_refitted_never_trusted(run_copy, monkeypatch):
    import safetensors.torch

    trained = load(run_copy)
    paths = RunPaths(run_copy)
    fit_sampler(trained, "gmm", components=2)
    info_text = paths.sampler_info("gmm").read_text()
    paths.sampler("gmm").write_bytes(b"garbage")
    assert stored_sampler(trained, "gmm") is None
    for damaged in ("[1, 2]", '{"format": 1, "latent_dim"', "null"):
        paths.sampler_info("gmm").write_text(damaged)
        assert stored_sampler(trained, "gmm") is None
    paths.sampler_info("gmm").write_text(info_text)
    # Ctrl-C while the new tensors are written: the previous fit's .json is gone, nothing is trusted.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit_sampler(trained, "gmm", components=1)
    assert not paths.sampler_info("gmm").exists() and stored_sampler(trained, "gmm") is None


def test_fits_on_too_few_codes_or_no_active_dimension(run_copy, monkeypatch):
    with pytest.raises(ValueError, match="at least 2 training images"):
        fit_gmm(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="at least as many training images"):
        fit_gmm(np.random.default_rng(0).normal(size=(5, 2)), components=6)
    trained = load(run_copy)
    ranking = latent_ranking(trained)
    monkeypatch.setattr("betavae.latents.latent_ranking", lambda t: type(ranking)(**{**vars(ranking), "active": []}))
    sampler = fit_sampler(trained, "gmm", store=False)
    assert sampler.active == [] and sampler.sample(4, seed=0, fixed={1: 2.0}).shape == (4, trained.latent_dim)


def test_the_sample_command_checks_dimensions_before_fitting(run_copy, tmp_path, capsys):
    out = str(tmp_path / "g.png")
    assert main(["sample", str(run_copy), "-n", "2", "--sampler", "gmm", "--fix", "99=1", "--out", out]) == 2
    assert "99 does not exist" in capsys.readouterr().err
    assert not RunPaths(run_copy).sampler("gmm").exists()  # refused before any fit
    for n in ("0", "-1"):
        with pytest.raises(SystemExit):
            main(["sample", str(run_copy), "-n", n, "--out", out])


def test_stored_two_stage_tensors_that_do_not_fit_the_network_are_refitted(run_copy):
    from safetensors.torch import save_file

    from betavae.latents import weights_digest
    from betavae.samplers import TwoStageSampler

    trained = load(run_copy)
    paths = RunPaths(run_copy)
    codes = np.random.default_rng(0).normal(size=(50, trained.latent_dim))
    sampler = TwoStageSampler.fit(codes, trained.latent_dim, [0, 1], steps=2)
    sampler.info |= {"format": 1, "latent_dim": trained.latent_dim, "checkpoint_sha256": weights_digest(trained)}
    tensors = sampler.tensors()
    paths.sampler("two-stage").parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(paths.sampler("two-stage")))
    paths.sampler_info("two-stage").write_text(json.dumps(sampler.info))
    assert stored_sampler(trained, "two-stage") is not None  # as written, it loads
    tensors["net.encoder.0.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(paths.sampler("two-stage")))
    assert stored_sampler(trained, "two-stage") is None
