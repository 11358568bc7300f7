"""Conformance tests that iterate the registries: a new plug-in is tested here without a new test."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from betavae.checkpoint import load_checkpoint, save_checkpoint
from betavae.config import validate_config
from betavae.evaluation.disentanglement import FACTOR_METRICS, disentanglement_report
from betavae.evaluation.figure_set import FIGURES, FigureInputs, write_figures
from betavae.evaluation.headline import SCORES, Headline, HeadlineError, headline_of
from betavae.evaluation.reconstruction import IMAGE_METRICS
from betavae.evaluation.traverse import write_traversal
from betavae.explorer.state import load_models
from betavae.inference import load
from betavae.latents import ACTIVE_KL_NATS, RANKING_IMAGES, latent_ranking, rank_by_kl
from betavae.model import Posterior, VAEOutput
from betavae.objectives import OBJECTIVES, RECONSTRUCTIONS, build_objective
from betavae.runs import CsvLog, RunPaths

from test_disentanglement import factor_image_data, read_factors


def _output(batch: int = 8, latent: int = 3, seed: int = 0) -> tuple[torch.Tensor, VAEOutput]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, 8, 8, generator=g)
    logits = torch.randn(batch, 1, 8, 8, generator=g, requires_grad=True)
    mean = torch.randn(batch, latent, generator=g, requires_grad=True)
    logvar = (0.1 * torch.randn(batch, latent, generator=g)).requires_grad_()
    z = mean + logvar.mul(0.5).exp() * torch.randn(batch, latent, generator=g)
    return x, VAEOutput(Posterior(mean, logvar), z, logits, torch.sigmoid(logits))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_logs_exactly_its_declared_terms_and_a_differentiable_loss(name):
    objective = build_objective(validate_config({"objective": {"name": name}}).objective, dataset_size=100)
    x, output = _output()
    result = objective(x, output, training=True)
    assert tuple(result.terms) == type(objective).TERMS
    assert result.loss.ndim == 0 and torch.isfinite(result.loss)
    assert result.kl_per_dim.shape == (3,)
    result.loss.backward()
    assert output.posterior.mean.grad is not None and torch.isfinite(output.posterior.mean.grad).all()


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_round_trips_its_state(name):
    settings = validate_config({"objective": {"name": name}}).objective
    first = build_objective(settings, dataset_size=100)
    x, output = _output()
    for _ in range(3):
        first(x, output, training=True)
    second = build_objective(settings, dataset_size=100)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict()
    a, b = first(x, output, training=True), second(x, output, training=True)
    assert torch.equal(a.loss, b.loss)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_is_a_config_choice_with_its_own_settings(name):
    settings = validate_config({"objective": {"name": name}}).objective
    assert isinstance(settings, OBJECTIVES[name].Settings) and settings.name == name


@pytest.mark.parametrize("kind", RECONSTRUCTIONS)
def test_every_reconstruction_is_near_zero_at_a_perfect_match_and_a_config_choice(kind):
    x = torch.rand(4, 1, 8, 8)
    target = (x > 0.5).float() if kind == "bernoulli" else x
    logits = torch.where(target > 0.5, 30.0, -30.0) if kind == "bernoulli" else torch.logit(x.clamp(1e-4, 1 - 1e-4))
    output = VAEOutput(Posterior(torch.zeros(4, 2), torch.zeros(4, 2)), torch.zeros(4, 2), logits, torch.sigmoid(logits))
    loss = RECONSTRUCTIONS[kind](target, output)
    assert loss.ndim == 0 and float(loss) < 1e-3
    config = validate_config({"objective": {"name": "beta", "reconstruction": kind}})
    assert config.objective.reconstruction == kind


# ------------------------------------------------------------------------------------- metrics

@pytest.mark.parametrize("name", IMAGE_METRICS)
def test_every_image_metric_is_best_at_a_perfect_reconstruction_and_worse_with_noise(name):
    metric = IMAGE_METRICS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    noise = torch.randn(4, 3, 16, 16, generator=g)
    perfect = metric.per_image(x, x)
    slight, heavy = (metric.per_image(x, (x + s * noise).clamp(0, 1)) for s in (0.05, 0.3))
    assert perfect.shape == slight.shape == (4,)
    assert (perfect >= slight).all() and (slight > heavy).all()
    assert {f"{name}_val", f"{name}_outside"} <= set(SCORES)


@pytest.fixture(scope="module")
def factor_reports(tmp_path_factory):
    """The report of every factor metric for a perfect and a random representation of exact factor images."""
    folder = tmp_path_factory.mktemp("factor-reports")
    data = factor_image_data(True)
    random = np.random.default_rng(3)
    settings = {"num_train": 300, "num_eval": 150, "batch_size": 16, "dci_num_train": 150}
    perfect = disentanglement_report(read_factors, data, folder / "perfect.json", **settings)
    noise = disentanglement_report(lambda images: random.normal(size=(len(images), 3)), data,
                                   folder / "noise.json", **settings)
    return perfect, noise


@pytest.mark.parametrize("name", FACTOR_METRICS)
def test_every_factor_metric_scores_a_perfect_representation_above_noise(name, factor_reports):
    perfect, noise = factor_reports
    for score, field in FACTOR_METRICS[name].scores:
        assert score.key in SCORES and score.better == 1
        assert perfect[name][field] == perfect["summary"][score.key]
        assert 0.0 <= noise[name][field] < perfect[name][field] <= 1.0, score.key
    assert all(isinstance(note, str) for note in FACTOR_METRICS[name].notes(perfect[name]))


def test_the_headline_accepts_only_registered_scores():
    headline = Headline(psnr_val=30.5, n_val=10, mig=0.25)
    assert headline.value("psnr_val") == 30.5 and headline.value("fid") is None
    assert headline.computed() == {"psnr_val": 30.5, "n_val": 10, "mig": 0.25}
    with pytest.raises(KeyError, match="no score 'psnr'"):
        headline.value("psnr")
    with pytest.raises(ValueError):
        Headline(psnr=30.5)  # a renamed key is an error, not a blank cell
    with pytest.raises(HeadlineError, match="evaluate the run again"):
        headline_of({"psnr_val": 30.5})  # a metrics.json of the flat, older layout


# ------------------------------------------------------------------------------------- figures

def test_figures_have_distinct_files_and_captions():
    files = [spec.file for spec in FIGURES.values()]
    assert len(set(files)) == len(files) and all(spec.caption for spec in FIGURES.values())
    assert any(spec.after_training for spec in FIGURES.values())


@pytest.mark.parametrize("key", FIGURES)
def test_every_figure_renders_for_a_tiny_run(key, tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    trained = load(run)
    outside = np.random.default_rng(0).integers(0, 256, (3, trained.image_size, trained.image_size,
                                                          trained.channels), dtype=np.uint8)
    paths = RunPaths(run)
    paths.disentanglement.parent.mkdir(exist_ok=True)
    paths.disentanglement.write_text(json.dumps({"normalized_mi": [[0.5] * trained.latent_dim],
                                                 "factor_names": ["shape"]}))
    CsvLog(paths.factor_log, ["step", "mig", "factor_vae"]).append(
        [{"step": 4, "mig": 0.1, "factor_vae": 0.5}, {"step": 8, "mig": 0.2, "factor_vae": 0.6}])
    inputs = FigureInputs(trained, latent_ranking(trained), top_k=2, outside=outside)
    drawing = FIGURES[key].draw(inputs)
    assert drawing is not None
    written = write_figures(inputs, after_training=FIGURES[key].after_training)
    path = paths.figure(FIGURES[key].file)
    assert path in written and path.read_bytes()[:3] in (b"\x89PN", b"GIF")


# ------------------------------------------------------------------------------ latent ranking

def test_the_ranking_is_computed_once_per_checkpoint_and_read_by_every_view(tiny_run, tmp_path, monkeypatch):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    RunPaths(run).latents.unlink(missing_ok=True)
    trained = load(run)
    first = latent_ranking(trained)
    assert RunPaths(run).latents.is_file() and first.images == min(RANKING_IMAGES, len(trained.data().val_indices))
    assert first.order == rank_by_kl(first.kl) and set(first.active) == set(np.flatnonzero(first.kl > ACTIVE_KL_NATS))
    calls = []
    monkeypatch.setattr(trained, "encode", lambda x: calls.append(len(x)))
    assert latent_ranking(trained) == first and not calls  # read back, not recomputed
    # the explorer, traverse and evaluate's figures all start from it
    monkeypatch.setattr("betavae.latents.RANKING_SEED", 1)  # would change a recomputed ranking's sample
    assert (load_models([run])[0].order == first.order).all()
    _, dims = write_traversal(run, tmp_path / "t.png")
    assert dims == first.top(8)


def test_a_new_checkpoint_gets_a_new_ranking(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    first = latent_ranking(load(run))
    paths = RunPaths(run)
    tensors, metadata = load_checkpoint(paths.best)
    tensors = {k: (v * 1.5 if k.endswith("to_mean.weight") else v) for k, v in tensors.items()}
    save_checkpoint(paths.best, tensors, metadata)
    second = latent_ranking(load(run))
    assert second.checkpoint_sha256 != first.checkpoint_sha256
    assert json.loads(paths.latents.read_text())["checkpoint_sha256"] == second.checkpoint_sha256
