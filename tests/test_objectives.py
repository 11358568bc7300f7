import math

import pytest
import torch
import torch.nn.functional as F

from betavae.model import Posterior, VAEOutput
from betavae.objectives import (
    BetaTCVAE,
    BetaVAE,
    CapacityVAE,
    DIPVAE,
    FactorVAE,
    build_objective,
    kl_per_dim,
    log_importance_weights,
    reconstruction_loss,
)
from betavae.config import ConfigError, validate_config
from betavae.objectives.dip_vae import covariance, dip_covariance, dip_penalties


def output_for(recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, z=None) -> VAEOutput:
    return VAEOutput(Posterior(mean, logvar), mean if z is None else z, recon, recon)


def test_kl_per_dim_matches_the_closed_form_by_hand():
    mean = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # KL_j = ½(σ² + μ² − 1 − log σ²): [[0.5, (4 − 1 − log 4)/2], [0, 2]] → batch means
    expected = torch.tensor([0.25, ((3 - math.log(4.0)) / 2 + 2.0) / 2])
    assert torch.allclose(kl_per_dim(Posterior(mean, logvar)), expected)


def test_kl_is_zero_for_the_prior():
    assert torch.allclose(kl_per_dim(Posterior(torch.zeros(3, 4), torch.zeros(3, 4))), torch.zeros(4))


def test_reconstruction_losses_by_hand():
    x = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 1.0]]]])  # 2 images of 1×1×2
    recon = torch.tensor([[[[0.5, 1.0]]], [[[1.0, 0.0]]]])
    out = output_for(recon, torch.zeros(2, 1), torch.zeros(2, 1))
    assert reconstruction_loss("mse_mean", x, out).item() == pytest.approx((0.25 + 1.0) / 4)
    assert reconstruction_loss("mse_sum", x, out).item() == pytest.approx((0.25 + 1.0) / 2)
    expected = F.binary_cross_entropy_with_logits(recon, x, reduction="sum").item() / 2
    assert reconstruction_loss("bernoulli", x, out).item() == pytest.approx(expected)


def test_beta_objective_is_recon_plus_beta_w_kl_as_in_the_study():
    x = torch.rand(4, 3, 2, 2)
    mean, logvar = torch.randn(4, 5), torch.randn(4, 5) * 0.1
    out = output_for(torch.rand(4, 3, 2, 2), mean, logvar)
    result = BetaVAE(beta=10, kld_weight=0.0025, reconstruction="mse_mean")(x, out)
    kl = (-0.5 * (1 + logvar - mean**2 - logvar.exp())).sum(1).mean()
    assert result.loss.item() == pytest.approx(F.mse_loss(out.recon, x).item() + 0.025 * kl.item(), rel=1e-5)
    assert set(result.terms) == {"recon", "kl"} and result.kl_per_dim.shape == (5,)


def test_capacity_advances_only_on_training_steps_and_survives_save_restore():
    objective = CapacityVAE(gamma=100.0, capacity_max=10.0, capacity_steps=4, reconstruction="mse_sum")
    x = torch.rand(2, 1, 2, 2)
    out = output_for(x.clone(), torch.ones(2, 3), torch.zeros(2, 3))  # KL = 1.5 nats, recon 0
    capacities = [objective(x, out).terms["capacity"].item() for _ in range(3)]
    assert capacities == [0.0, 2.5, 5.0]
    objective(x, out, training=False)  # validation must not move the schedule
    restored = CapacityVAE(gamma=100.0, capacity_max=10.0, capacity_steps=4, reconstruction="mse_sum")
    restored.load_state_dict(objective.state_dict())
    result = restored(x, out)
    assert result.terms["capacity"].item() == 7.5
    assert result.loss.item() == pytest.approx(100 * abs(1.5 - 7.5))
    assert restored(x, out).terms["capacity"].item() == 10.0  # capped at capacity_max
    assert restored(x, out).terms["capacity"].item() == 10.0


def tcvae_terms(mean: torch.Tensor, sampling: str) -> dict:
    logvar = torch.full_like(mean, math.log(0.3**2))
    z = mean + 0.3 * torch.randn_like(mean)
    return BetaTCVAE(dataset_size=len(mean), sampling=sampling).decomposition(z, Posterior(mean, logvar))


def independent_and_correlated_codes(n: int = 1500) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    first = torch.randn(n, 1)
    return torch.randn(n, 2), torch.cat([first, first], dim=1)


def test_stratified_total_correlation_is_near_zero_for_independent_codes_and_large_for_correlated():
    independent, correlated = independent_and_correlated_codes()
    assert abs(tcvae_terms(independent, "mss")["tc"].item()) < 0.05
    assert tcvae_terms(correlated, "mss")["tc"].item() > 0.5


def test_weighted_sampling_is_chens_estimator_with_its_log_n_offset():
    independent, correlated = independent_and_correlated_codes()
    tc_independent = tcvae_terms(independent, "mws")["tc"].item()
    # log q(z) − Σ_d log q(z_d) with log(N·M) normalisation: (D − 1)·log N above the true TC of 0
    assert tc_independent == pytest.approx(math.log(len(independent)), abs=0.05)
    assert tcvae_terms(correlated, "mws")["tc"].item() - tc_independent > 0.5


def test_tcvae_terms_add_up_to_the_sampled_kl():
    torch.manual_seed(1)
    mean, logvar = torch.randn(64, 3), torch.randn(64, 3) * 0.2
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    objective = BetaTCVAE(dataset_size=1000, alpha=1.0, beta=1.0, gamma=1.0, reconstruction="mse_sum")
    parts = objective.decomposition(z, Posterior(mean, logvar))
    log_q = (-0.5 * (math.log(2 * math.pi) + logvar + (z - mean) ** 2 / logvar.exp())).sum(1)
    log_p = (-0.5 * (math.log(2 * math.pi) + z**2)).sum(1)
    assert (parts["mi"] + parts["tc"] + parts["dim_kl"]).item() == pytest.approx((log_q - log_p).mean().item(), rel=1e-5)
    x = torch.rand(64, 1, 2, 2)
    result = objective(x, output_for(x.clone(), mean, logvar, z))
    assert result.loss.item() == pytest.approx(sum(parts[k].item() for k in ("mi", "tc", "dim_kl")), rel=1e-5)


def test_stratified_weights_match_the_reference_matrix():
    n, m = 100, 7  # dataset size, batch size − 1
    weights = log_importance_weights(batch_size=m + 1, dataset_size=n).exp()
    strat = (n - m) / (n * m)
    sums = weights.sum(1)
    others = [i for i in range(m + 1) if i != m - 1]
    assert torch.allclose(sums[others], torch.ones(m))  # every row but one is a distribution
    assert sums[m - 1].item() == pytest.approx(1 + strat - 1 / n)  # the reference code's W[M-1, 0]
    assert torch.all(weights > 0)


def test_build_objective_reads_each_config_and_passes_the_dataset_size():
    config = validate_config({"objective": {"name": "beta_tcvae", "beta": 3}, "model": {"preset": "tiny"}, "data": {"image_size": 32}})
    objective = build_objective(config.objective, dataset_size=123)
    assert isinstance(objective, BetaTCVAE) and objective.dataset_size == 123 and objective.beta == 3
    config = validate_config({"objective": {"name": "capacity", "capacity_max": 5}, "model": {"preset": "tiny"}, "data": {"image_size": 32}})
    assert isinstance(build_objective(config.objective, 10), CapacityVAE)


@pytest.mark.parametrize("objective", [
    BetaVAE(beta=2.0),
    CapacityVAE(gamma=10.0, capacity_max=5.0, capacity_steps=10),
    BetaTCVAE(dataset_size=100),
    DIPVAE(kind="ii"),
    FactorVAE(seed=0, hidden_units=16, hidden_layers=1),
])
def test_each_objective_returns_exactly_the_terms_it_declares(objective):
    torch.manual_seed(0)
    x = torch.rand(8, 1, 2, 2)
    out = output_for(torch.rand(8, 1, 2, 2), torch.randn(8, 3), torch.randn(8, 3) * 0.1)
    assert tuple(objective(x, out).terms) == objective.TERMS


# ----------------------------------------------------------------------------------- DIP-VAE

def dip_output(mean: torch.Tensor, variance: torch.Tensor) -> VAEOutput:
    x = torch.zeros(len(mean), 1, 1, 1)
    return output_for(x, mean, variance.log())


def test_dip_covariance_by_hand():
    mean = torch.tensor([[2.0, 2.0], [0.0, 0.0]])  # deviations ±(1, 1): Cov[μ] = [[1, 1], [1, 1]] (over B)
    variance = torch.tensor([[0.5, 3.0], [1.5, 1.0]])  # E[σ²] = [1, 2]
    posterior = Posterior(mean, variance.log())
    assert torch.allclose(dip_covariance(posterior, "i"), torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    assert torch.allclose(dip_covariance(posterior, "ii"), torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
    off, diag = dip_penalties(dip_covariance(posterior, "ii"))
    assert off.item() == pytest.approx(2.0) and diag.item() == pytest.approx(1.0 + 4.0)


def test_dip_vae_i_and_ii_losses_by_hand():
    mean = torch.tensor([[2.0, 2.0], [0.0, 0.0]])
    variance = torch.tensor([[0.5, 3.0], [1.5, 1.0]])
    out = dip_output(mean, variance)
    x = out.recon.clone()  # recon 0 with mse_sum
    kl = kl_per_dim(out.posterior).sum().item()
    first = DIPVAE(kind="i", lambda_od=10.0, reconstruction="mse_sum")(x, out)
    assert first.loss.item() == pytest.approx(kl + 10.0 * 2 + 100.0 * 0.0, rel=1e-5)  # λ_d = 10·λ_od
    second = DIPVAE(kind="ii", lambda_od=10.0, reconstruction="mse_sum")(x, out)
    assert second.loss.item() == pytest.approx(kl + 10.0 * 2 + 10.0 * 5, rel=1e-5)  # λ_d = λ_od
    explicit = DIPVAE(kind="ii", lambda_od=2.0, lambda_d=3.0, reconstruction="mse_sum")(x, out)
    assert explicit.loss.item() == pytest.approx(kl + 2.0 * 2 + 3.0 * 5, rel=1e-5)
    assert {k: round(v.item(), 5) for k, v in second.terms.items() if k.startswith("cov")} == \
        {"cov_offdiag": 2.0, "cov_diag": 5.0}


def test_dip_penalty_is_zero_for_whitened_means_and_matches_a_reference_covariance():
    mean = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])  # Cov[μ] = I exactly
    out = dip_output(mean, torch.ones(4, 2))
    result = DIPVAE(kind="i", lambda_od=10.0, reconstruction="mse_sum")(out.recon, out)
    assert result.terms["cov_offdiag"].item() == 0 and result.terms["cov_diag"].item() == 0
    torch.manual_seed(0)
    random = torch.randn(64, 5)
    assert torch.allclose(covariance(random), torch.cov(random.T, correction=0), atol=1e-6)


def test_dip_vae_defaults_and_config():
    settings = validate_config({"objective": {"name": "dip_vae"}}).objective
    objective = build_objective(settings, 10)
    assert (objective.kind, objective.lambda_od, objective.lambda_d) == ("i", 10.0, 100.0)
    settings = validate_config({"objective": {"name": "dip_vae", "kind": "ii", "lambda_od": 5}}).objective
    assert build_objective(settings, 10).lambda_d == 5.0
    with pytest.raises(ConfigError, match="kind"):
        validate_config({"objective": {"name": "dip_vae", "kind": "iii"}})


@pytest.mark.parametrize("objective", [DIPVAE(kind="ii", reconstruction="mse_sum"),
                                       FactorVAE(seed=0, hidden_units=16, hidden_layers=2, reconstruction="mse_sum")],
                         ids=["dip_vae", "factor_vae"])
def test_covariance_and_discriminator_terms_stay_float32_under_autocast(objective):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 2, 2)
    out = output_for(x.clone(), torch.randn(16, 6), torch.randn(16, 6) * 0.1)
    reference = objective(x, out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = objective(x, out)
    for name, value in reference.terms.items():
        assert mixed.terms[name].dtype == torch.float32 and torch.equal(mixed.terms[name], value), name
