"""Conformance tests that iterate the registries: a new plug-in is tested here without a new test."""
from __future__ import annotations

import pytest
import torch

from betavae.config import validate_config
from betavae.model import Posterior, VAEOutput
from betavae.objectives import OBJECTIVES, RECONSTRUCTIONS, build_objective


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
