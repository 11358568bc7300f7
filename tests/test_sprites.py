import numpy as np
import pytest

from betavae.data import build_data
from betavae.config import validate_config
from betavae.data.sprites import DSprites, ShapesRGB


def centroid_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean())


def test_dsprites_grid_matches_the_original():
    data = DSprites()
    assert data.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert data.factor_sizes == (3, 6, 40, 32, 32)
    assert len(data) == 737_280
    assert np.allclose(data.factor_values("scale"), np.linspace(0.5, 1.0, 6))
    assert np.isclose(data.factor_values("orientation")[-1], 2 * np.pi)  # both ends included


def test_index_order_has_posy_fastest_and_round_trips():
    data = DSprites()
    assert data.index_to_factors(1).tolist() == [0, 0, 0, 0, 1]
    assert data.index_to_factors(32).tolist() == [0, 0, 0, 1, 0]
    assert data.index_to_factors(len(data) - 1).tolist() == [2, 5, 39, 31, 31]
    indices = np.random.default_rng(0).integers(0, len(data), 500)
    assert np.array_equal(data.factors_to_index(data.index_to_factors(indices)), indices)


def test_images_are_binary_and_deterministic():
    data = DSprites()
    factors = data.sample_factors(64, np.random.default_rng(3))
    first, second = data.render(factors), data.render(factors.copy())
    assert first.shape == (64, 64, 64, 1) and first.dtype == np.uint8
    assert set(np.unique(first)) <= {0, 255}
    assert np.array_equal(first, second)
    assert (first > 0).any(axis=(1, 2, 3)).all()  # every sprite is visible


def test_posx_moves_the_centroid_monotonically_and_posy_moves_it_down():
    data = DSprites()
    row = np.array([[0, 5, 0, x, 10] for x in range(32)])
    xs = [centroid_x(m) for m in data.coverage(row)]
    assert all(b > a for a, b in zip(xs, xs[1:]))
    column = np.array([[1, 5, 0, 10, y] for y in range(32)])
    ys = [float(np.nonzero(m)[0].mean()) for m in data.coverage(column)]
    assert all(b > a for a, b in zip(ys, ys[1:]))


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_scale_changes_the_area(shape):
    areas = DSprites().coverage(np.array([[shape, s, 0, 16, 16] for s in range(6)])).sum(axis=(1, 2))
    assert all(b > a for a, b in zip(areas, areas[1:]))


def test_shapes_differ_and_rotation_changes_a_square():
    masks = DSprites().coverage(np.array([[0, 5, 0, 16, 16], [1, 5, 0, 16, 16], [2, 5, 0, 16, 16], [0, 5, 5, 16, 16]]))
    assert len({m.tobytes() for m in masks}) == 4


def test_restrict_samples_only_the_chosen_values():
    data = DSprites().restrict(shape=[2], scale=[0, 5])
    assert data.factor_sizes == (1, 2, 40, 32, 32)
    factors = data.sample_factors(200, np.random.default_rng(0))
    assert set(factors[:, 0]) == {2} and set(factors[:, 1]) == {0, 5}
    assert np.array_equal(data.index_to_factors(data.factors_to_index(factors)), factors)
    with pytest.raises(ValueError):
        data.factors_to_index(np.array([[0, 0, 0, 0, 0]]))


def test_shapes_rgb_colours_follow_their_factors():
    data = ShapesRGB()
    assert data.factor_names[-2:] == ("object_hue", "background_hue")
    base = np.array([[0, 5, 0, 16, 16, 0, 0]])
    image = data.render(base)[0]
    mask = data.coverage(base)[0] == 1
    assert image.shape == (64, 64, 3)
    other_object = data.render(base + [[0, 0, 0, 0, 0, 3, 0]])[0]
    other_background = data.render(base + [[0, 0, 0, 0, 0, 0, 2]])[0]
    assert not np.array_equal(other_object[mask], image[mask]) and np.array_equal(other_object[~mask], image[~mask])
    assert np.array_equal(other_background[mask], image[mask]) and not np.array_equal(other_background[~mask], image[~mask])


def test_smaller_images_average_the_canvas_each_pixel_covers():
    factors = DSprites().sample_factors(50, np.random.default_rng(1))
    factors[:4, 3:] = [[0, 0], [31, 31], [0, 31], [31, 0]]  # the corners: the largest shifts either way
    big = DSprites(image_size=64).coverage(factors)
    for size in (32, 16):
        k = 64 // size
        small = DSprites(image_size=size).coverage(factors)
        assert small.shape == (50, size, size)
        assert np.allclose(small, big.reshape(50, size, k, size, k).mean(axis=(2, 4)))  # exact k×k means
    assert set(np.unique(DSprites(image_size=32).render(factors))) <= {0, 64, 128, 191, 255}
    odd = DSprites(image_size=48).coverage(factors)  # not a divisor of 64: still the same sprite's area
    assert np.allclose(odd.sum(axis=(1, 2)) * (64 / 48) ** 2, big.sum(axis=(1, 2)), rtol=0.1)


@pytest.mark.parametrize("size", [32, 16])
def test_every_scale_and_position_step_stays_visible_when_smaller(size):
    data = DSprites(image_size=size)
    areas = data.coverage(np.array([[2, s, 0, 16, 16] for s in range(6)])).sum(axis=(1, 2))
    assert all(b > a for a, b in zip(areas, areas[1:]))  # sampling pixel centres merged pairs of scales
    row = data.coverage(np.array([[2, 5, 0, x, 16] for x in range(32)]))
    xs = [float((m.sum(axis=0) * np.arange(size)).sum() / m.sum()) for m in row]
    assert all(b > a for a, b in zip(xs, xs[1:]))


def test_shapes_rgb_blends_the_edges_of_smaller_images():
    base = np.array([[0, 5, 3, 16, 16, 2, 1]])
    small = ShapesRGB(image_size=32)
    image, cover = small.render(base)[0].astype(float), small.coverage(base)[0]
    inside, outside = image[cover == 1][0], image[cover == 0][0]
    edge = (cover > 0) & (cover < 1)
    assert edge.any() and not np.array_equal(inside, outside)
    expected = outside + cover[edge][:, None] * (inside - outside)
    assert np.abs(image[edge] - expected).max() <= 0.5


def test_build_data_splits_75_25_reproducibly_and_keeps_factors():
    config = validate_config({"data": {"num_images": 400, "image_size": 32, "seed": 7}, "model": {"preset": "tiny"}})
    first, second = build_data(config.data), build_data(config.data)
    assert len(first.train_indices) == 300 and len(first.val_indices) == 100
    assert not set(first.train_indices) & set(first.val_indices)
    assert np.array_equal(first.val_indices, second.val_indices) and first.fingerprint == second.fingerprint
    assert first.factors.shape == (400, 5) and first.source is not None
    assert np.array_equal(first.source.render(first.factors[:5]), first.images[:5])


def test_data_factors_restrict_the_built_in_grid_and_the_metrics_generator():
    config = validate_config({"data": {"num_images": 300, "image_size": 32,
                                       "factors": {"shape": [2], "orientation": [0, 10]}}})
    data = build_data(config.data)
    assert set(data.factors[:, 0]) == {2} and set(data.factors[:, 2]) <= {0, 10}
    assert len(set(data.factors[:, 3])) > 10  # unrestricted factors keep their values
    assert data.source.factor_sizes == (1, 6, 2, 32, 32)  # what the disentanglement metrics sample from
    whole = build_data(validate_config({"data": {"num_images": 300, "image_size": 32}}).data)
    assert whole.fingerprint != data.fingerprint


@pytest.mark.parametrize("data, message", [
    ({"factors": {"colour": [0]}}, "unknown factor 'colour'"),
    ({"factors": {"shape": [3]}}, "must lie in 0..2"),
    ({"factors": {"shape": []}}, "must lie in 0..2"),
    ({"factors": {"shape": [0], "scale": [1], "orientation": [2], "posX": [3], "posY": [4]}}, "single image"),
    ({"name": "prepared", "path": "somewhere", "factors": {"shape": [0]}}, "built-in data only"),
])
def test_data_factors_that_cannot_be_met_are_config_errors(data, message):
    from betavae.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate_config({"data": data})
