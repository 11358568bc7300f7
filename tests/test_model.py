import subprocess
import sys

import pytest
import torch

from betavae.config import validate_config
from betavae.data.transforms import Normalizer
from betavae.model import PRESETS, ConvVAE, OutputActivation, build_model, count_parameters


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("size", [32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_preset_maps_every_size_back_to_itself(preset, size, channels):
    model = ConvVAE(size, channels, **PRESETS[preset]).eval()
    x = torch.rand(2, channels, size, size)
    with torch.no_grad():
        out = model(x)
    latent = PRESETS[preset]["latent_dim"]
    assert out.posterior.mean.shape == out.posterior.logvar.shape == (2, latent)
    assert out.recon.shape == out.logits.shape == x.shape


def test_paper_preset_has_the_study_parameter_count():
    assert count_parameters(ConvVAE(64, 3, **PRESETS["paper"])) == 3_937_635


def test_paper_batik_is_three_blocks_grayscale():
    model = ConvVAE(64, 1, **PRESETS["paper-batik"])
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128] and convs[0].in_channels == 1
    assert model.to_mean.in_features == 128 * 8 * 8


def test_hidden_layer_sits_between_the_convolutions_and_the_code_both_ways():
    plain, wide = ConvVAE(32, 1, [8, 16], 4), ConvVAE(32, 1, [8, 16], 4, hidden=24)
    assert plain.to_mean.in_features == 16 * 8 * 8 and wide.to_mean.in_features == 24
    linears = [m for m in wide.from_latent.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 24), (24, 16 * 8 * 8)]
    assert wide(torch.rand(2, 1, 32, 32)).recon.shape == (2, 1, 32, 32)
    # hidden 0 keeps the parameter names of earlier checkpoints
    assert {"from_latent.weight", "to_mean.weight"} <= set(plain.state_dict())
    config = validate_config({"data": {"image_size": 32}, "model": {"channels": [8, 16], "latent_dim": 4,
                                                                     "hidden": 24}})
    assert build_model(config, 1).to_mean.in_features == 24


def test_size_the_channel_list_cannot_reach_is_rejected():
    with pytest.raises(ValueError, match="not divisible"):
        ConvVAE(48, 3, channels=[8, 16, 32, 64, 128], latent_dim=4)


def test_eval_mode_reconstructs_from_the_mean_and_training_mode_samples():
    model = ConvVAE(32, 1, **PRESETS["tiny"])
    x = torch.rand(4, 1, 32, 32)
    model.eval()
    out = model(x)
    assert torch.equal(out.z, out.posterior.mean)
    model.train()
    assert not torch.equal(model(x).z, model(x).posterior.mean)


@pytest.mark.parametrize("mode", ["unit", "symmetric", "imagenet"])
def test_output_activation_spans_exactly_the_normalised_data_range(mode):
    config = validate_config({"data": {"normalization": mode, "image_size": 32}, "model": {"preset": "tiny"},
                              "objective": {"reconstruction": "mse_mean"}})
    model = build_model(config, 3)
    low, high = Normalizer(mode, 3).bounds()
    extreme = torch.tensor([-1e4, 1e4]).view(2, 1, 1, 1).expand(2, 3, 2, 2)
    out = model.output_activation(extreme)
    assert torch.allclose(out[0], low.view(3, 1, 1).expand(3, 2, 2))
    assert torch.allclose(out[1], high.view(3, 1, 1).expand(3, 2, 2))


def test_identity_and_tanh_activations():
    logits = torch.linspace(-3, 3, 7).view(1, 1, 1, 7)
    zeros, ones = torch.zeros(1), torch.ones(1)
    assert torch.equal(OutputActivation("identity", zeros, ones)(logits), logits)
    assert torch.allclose(OutputActivation("tanh", zeros, ones)(logits), torch.tanh(logits))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_in_place_leaky_relu_changes_neither_values_gradients_nor_checkpoint_keys(batch_norm):
    torch.manual_seed(0)
    fast = ConvVAE(32, 3, channels=[8, 16], latent_dim=4, batch_norm=batch_norm).train()
    plain = ConvVAE(32, 3, channels=[8, 16], latent_dim=4, batch_norm=batch_norm).train()
    plain.load_state_dict(fast.state_dict())
    relus = [m for m in plain.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert relus and all(m.inplace for m in relus)
    for m in relus:
        m.inplace = False  # the reference: a fresh output tensor per activation
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.rand(4, 3, 32, 32)
    outputs = []
    for model in (fast, plain):
        torch.manual_seed(1)
        out = model(x)
        (out.recon.square().mean() + out.posterior.logvar.exp().mean()).backward()
        outputs.append((out.recon.detach(), [p.grad for p in model.parameters()]))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outputs[0][1], outputs[1][1]))


def test_loading_a_model_does_not_import_the_trainer():
    code = "import sys, betavae.inference; assert 'betavae.training' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
