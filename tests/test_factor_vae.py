"""FactorVAE: the discriminator's update is separate from the VAE's graph and gradients, its TC
estimate tells independent from correlated codes, and a run with it resumes bit for bit."""
from __future__ import annotations

import math

import pytest
import torch

from betavae.checkpoint import load_checkpoint
from betavae.config import validate_config
from betavae.model import ConvVAE, Posterior, VAEOutput
from betavae.objectives import FactorVAE, build_objective
from betavae.objectives.factor_vae import build_discriminator, discriminator_loss, permute_dims
from betavae.runs import RunPaths, read_csv, read_info
from betavae.training import Trainer, resume, train

from conftest import tiny_config

SMALL = {"hidden_units": 32, "hidden_layers": 2}  # a discriminator that trains in milliseconds


def codes(z: torch.Tensor) -> VAEOutput:
    """A model output that carries only codes (for the discriminator's own tests)."""
    posterior = Posterior(z, torch.zeros_like(z))
    return VAEOutput(posterior, z, torch.zeros(len(z), 1, 1, 1), torch.zeros(len(z), 1, 1, 1))


def tiny_model(seed: int = 0) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(image_size=16, in_channels=1, channels=[4, 8], latent_dim=3, batch_norm=True)


def encoder_grads(model: ConvVAE) -> list[torch.Tensor]:
    heads = [*model.encoder.parameters(), *model.to_mean.parameters(), *model.to_logvar.parameters()]
    return [p.grad.clone() for p in heads]


def test_default_discriminator_is_the_papers_mlp():
    layers = list(build_discriminator(10))
    linear = [layer for layer in layers if isinstance(layer, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linear] == [(10, 1000)] + [(1000, 1000)] * 5 + [(1000, 2)]
    relus = [layer for layer in layers if isinstance(layer, torch.nn.LeakyReLU)]
    assert len(relus) == 6 and all(r.negative_slope == 0.2 and not r.inplace for r in relus)
    objective = build_objective(validate_config({"objective": {"name": "factor_vae"}}).objective, 100)
    objective.after_step(torch.zeros(4, 1), codes(torch.randn(4, 10)))
    group = objective.discriminator_optimizer.param_groups[0]
    assert group["lr"] == 1e-4 and tuple(group["betas"]) == (0.5, 0.9)


def test_permute_dims_shuffles_each_dimension_separately_and_leaves_its_input_alone():
    z = torch.arange(40.0).reshape(20, 2)
    z[:, 1] += 100
    before = z.clone()
    permuted = permute_dims(z, torch.Generator().manual_seed(0))
    assert torch.equal(z, before)
    for j in range(2):  # each column keeps its values, in another order
        assert torch.equal(permuted[:, j].sort().values, z[:, j])
    assert not torch.equal(permuted, z)
    assert not torch.equal(permuted[:, 0].argsort(), permuted[:, 1].argsort())  # independent orders


def test_several_training_steps_run_without_an_in_place_autograd_error():
    model = tiny_model()
    objective = FactorVAE(gamma=10.0, seed=1, reconstruction="mse_sum", **SMALL)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(8, 1, 16, 16)
    weights = [p.clone() for p in objective._ensure_discriminator(3, x.device).parameters()]
    with torch.autograd.set_detect_anomaly(True):
        for _ in range(4):
            output = model(x)
            result = objective(x, output, training=True)
            optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            optimizer.step()  # changes the encoder's weights in place, as the trainer does
            objective.after_step(x, output)  # must not backpropagate through the stale VAE graph
            assert torch.isfinite(result.loss) and math.isfinite(objective.last_discriminator_loss)
    assert objective.updates == 4
    assert all(not torch.equal(a, b) for a, b in zip(weights, objective.discriminator.parameters()))


def test_the_discriminator_update_does_not_change_the_encoders_gradients():
    x = torch.rand(8, 1, 16, 16)
    grads = []
    for update_discriminator in (False, True):
        model = tiny_model()
        objective = FactorVAE(gamma=10.0, seed=1, reconstruction="mse_sum", **SMALL)
        torch.manual_seed(5)  # the same reparameterisation noise in both
        output = model(x)
        objective(x, output, training=True).loss.backward()
        if update_discriminator:
            objective.after_step(x, output)
        grads.append(encoder_grads(model))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_the_vae_loss_leaves_no_trace_in_the_discriminators_update():
    """The VAE's backward also reaches the discriminator's weights; its step must start from zero."""
    z = torch.randn(16, 3, requires_grad=True)
    updated = []
    for vae_backward_first in (False, True):
        objective = FactorVAE(gamma=10.0, seed=2, **SMALL)
        if vae_backward_first:
            objective.total_correlation(z[:8]).backward()
        objective.after_step(torch.zeros(16, 1), codes(z))
        updated.append([p.detach().clone() for p in objective.discriminator.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*updated))


def train_discriminator(objective: FactorVAE, sample, steps: int = 300) -> None:
    for _ in range(steps):
        objective.after_step(torch.zeros(1), codes(sample(512)))


@pytest.mark.parametrize("correlated", [False, True], ids=["independent", "correlated"])
def test_tc_estimate_is_near_zero_for_independent_codes_and_positive_for_correlated_ones(correlated):
    torch.manual_seed(0)
    rho = 0.95  # true TC of this 2-D Gaussian: −½·log(1 − ρ²) ≈ 1.16 nats

    def sample(n: int) -> torch.Tensor:
        a, b = torch.randn(n), torch.randn(n)
        return torch.stack([a, rho * a + math.sqrt(1 - rho**2) * b if correlated else b], dim=1)

    objective = FactorVAE(seed=0, discriminator_lr=1e-3, **SMALL)
    train_discriminator(objective, sample)
    with torch.no_grad():
        tc = objective.total_correlation(sample(4096)).item()
    if correlated:
        assert tc == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.3)
    else:
        assert abs(tc) < 0.1


def test_discriminator_loss_is_half_the_two_cross_entropies():
    discriminator = build_discriminator(2, 8, 1)
    real, permuted = torch.randn(4, 2), torch.randn(6, 2)
    p_real = discriminator(real).softmax(1)[:, 0]
    p_permuted = discriminator(permuted).softmax(1)[:, 1]
    expected = -0.5 * (p_real.log().mean() + p_permuted.log().mean())
    assert discriminator_loss(discriminator, real, permuted).item() == pytest.approx(expected.item(), rel=1e-5)


def test_training_uses_the_first_half_for_the_vae_and_validation_the_whole_batch():
    objective = FactorVAE(gamma=2.0, seed=3, reconstruction="mse_sum", **SMALL)
    x = torch.rand(6, 1, 2, 2)
    mean = torch.randn(6, 3)
    output = VAEOutput(Posterior(mean, torch.zeros(6, 3)), mean, x.clone(), x.clone())
    train_result = objective(x, output, training=True)
    expected_kl = 0.5 * mean[:3].pow(2).sum(1).mean()
    assert train_result.terms["kl"].item() == pytest.approx(expected_kl.item(), rel=1e-5)
    assert train_result.terms["tc"].item() == pytest.approx(objective.total_correlation(mean[:3]).item())
    assert train_result.loss.item() == pytest.approx(expected_kl.item() + 2.0 * train_result.terms["tc"].item(),
                                                     rel=1e-5)
    val_result = objective(x, output, training=False)
    assert val_result.terms["kl"].item() == pytest.approx(0.5 * mean.pow(2).sum(1).mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------ exact resume

def factor_config(**train_settings):
    return tiny_config(objective={"name": "factor_vae", "gamma": 6.4, **SMALL}, data={"hflip": True},
                       train={"max_steps": 14, **train_settings})


def curve(root) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "images_per_s"} for row in read_csv(RunPaths(root).train_log)]


@pytest.fixture(scope="module")
def straight_factor_run(tmp_path_factory):
    return train(factor_config(), tmp_path_factory.mktemp("factor") / "straight").root


def assert_same_run(root, reference) -> None:
    assert curve(root) == curve(reference)
    assert read_csv(RunPaths(root).val_log) == read_csv(RunPaths(reference).val_log)
    got, want = load_checkpoint(RunPaths(root).last), load_checkpoint(RunPaths(reference).last)
    assert got[0].keys() == want[0].keys() and all(torch.equal(got[0][k], want[0][k]) for k in want[0])
    assert got[1]["objective"] == want[1]["objective"]


def test_the_checkpoint_holds_the_discriminator_its_adam_state_and_generator(straight_factor_run):
    tensors, state = load_checkpoint(RunPaths(straight_factor_run).last)
    objective_keys = {k for k in tensors if k.startswith("objective.")}
    assert "objective.discriminator.0.weight" in objective_keys and "objective.generator" in objective_keys
    assert any(k.startswith("objective.adam.") and k.endswith("exp_avg_sq") for k in objective_keys)
    assert state["objective"]["updates"] == 14
    best, _ = load_checkpoint(RunPaths(straight_factor_run).best)
    assert not any(k.startswith("objective.") for k in best)  # inference weights only
    assert {"tc"} <= set(read_csv(RunPaths(straight_factor_run).train_log)[0])


def test_an_interrupted_factor_vae_run_resumes_bit_for_bit(tmp_path, monkeypatch, straight_factor_run):
    original = Trainer.batch

    def batch(trainer, indices, step=None):
        if step == 9:  # mid-epoch, between checkpoints (every 4 steps)
            raise KeyboardInterrupt
        return original(trainer, indices, step)

    monkeypatch.setattr(Trainer, "batch", batch)
    with pytest.raises(KeyboardInterrupt):
        train(factor_config(), tmp_path / "run")
    monkeypatch.undo()
    assert read_info(RunPaths(tmp_path / "run"))["status"] == "interrupted"
    resume(tmp_path / "run")
    assert_same_run(tmp_path / "run", straight_factor_run)


def test_a_crashed_factor_vae_run_resumes_from_its_last_checkpoint_bit_for_bit(tmp_path, monkeypatch,
                                                                              straight_factor_run):
    original = Trainer.train_step

    def crash(trainer, x, lr):
        if trainer.state.step == 10:  # the last checkpoint is at step 8; steps 9–10 are redone
            raise RuntimeError("power cut")
        return original(trainer, x, lr)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(RuntimeError):
        train(factor_config(), tmp_path / "run")
    monkeypatch.undo()
    resume(tmp_path / "run")
    assert_same_run(tmp_path / "run", straight_factor_run)

