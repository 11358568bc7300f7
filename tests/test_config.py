from pathlib import Path

import pytest

from betavae.config import ConfigError, apply_overrides, load_config, validate_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError) as error:
        validate_config({"train": {"epoch": 3}})
    assert "unknown key 'train.epoch'" in str(error.value) and "epochs" in str(error.value)


def test_unknown_objective_key_lists_that_objectives_keys():
    with pytest.raises(ConfigError) as error:
        validate_config({"objective": {"name": "capacity", "beta": 4}})
    assert "capacity_max" in str(error.value)


def test_wrong_type_and_bad_choice_are_reported():
    with pytest.raises(ConfigError, match="train.batch_size"):
        validate_config({"train": {"batch_size": "many"}})
    with pytest.raises(ConfigError, match="objective"):
        validate_config({"objective": {"name": "vq"}})


def test_impossible_shape_is_caught_before_training_with_the_supported_sizes():
    with pytest.raises(ConfigError) as error:
        validate_config({"data": {"image_size": 48}, "model": {"preset": "paper"}})
    assert "48" in str(error.value) and "[32, 64, 128, 256, 512]" in str(error.value)


def test_bernoulli_needs_unit_normalisation():
    with pytest.raises(ConfigError, match="bernoulli"):
        validate_config({"data": {"normalization": "imagenet"}, "objective": {"reconstruction": "bernoulli"}})


def test_preset_fills_fields_and_explicit_fields_win():
    config = validate_config({"model": {"preset": "paper", "latent_dim": 32}})
    assert config.model.channels == [32, 64, 128, 256, 512] and config.model.latent_dim == 32


def test_overrides_parse_yaml_values_and_create_sections():
    raw = apply_overrides({"objective": {"beta": 1}}, ["objective.beta=4", "model.channels=[8, 16]", "train.compile=true"])
    assert raw == {"objective": {"beta": 4}, "model": {"channels": [8, 16]}, "train": {"compile": True}}
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["objective.beta"])


def test_objective_name_defaults_to_beta():
    assert validate_config({"objective": {"beta": 2}}).objective.name == "beta"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = load_config(path, ["data.path=somewhere"] if "paper-" in path.name else [])
    assert config.name


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
