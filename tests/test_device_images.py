"""DeviceImages draws the same batches, bit for bit, as Trainer.batch's host path."""
import numpy as np
import pytest
import torch

from betavae.data import device_images
from betavae.data.device_images import FLIP_BLOCK, DeviceImages, flip_mask, placement
from betavae.data.transforms import Normalizer, random_hflip, uint8_to_unit
from betavae.runs import create_run
from betavae.training import Trainer

from conftest import tiny_config


def host_batch(images, indices, step, *, normalization, seed, hflip, channels_last):
    """Trainer.batch's host path, written out with the same primitives."""
    x = uint8_to_unit(images[np.sort(indices)], "cpu")
    if step is not None and hflip:
        x = random_hflip(x, torch.Generator().manual_seed(seed * 1_000_003 + step))
    x = Normalizer(normalization, images.shape[3]).from_unit(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("normalization", ["unit", "symmetric", "imagenet"])
@pytest.mark.parametrize("hflip", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_batches_equal_the_host_path_bit_for_bit(images, normalization, hflip, channels_last):
    ours = DeviceImages(images, "cpu", Normalizer(normalization, 3), seed=7, hflip=hflip, channels_last=channels_last)
    rng = np.random.default_rng(1)
    for step in [0, 1, 5, FLIP_BLOCK - 1, FLIP_BLOCK, 3 * FLIP_BLOCK + 2, None]:
        indices = rng.permutation(len(images))[:32]  # unsorted, as an epoch order gives them
        expected = host_batch(images, indices, step, normalization=normalization, seed=7, hflip=hflip,
                              channels_last=channels_last)
        got = ours.batch(indices, step)
        assert got.dtype == torch.float32 and got.shape == (32, 3, 16, 16)
        assert torch.equal(got, expected)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert got.is_contiguous(memory_format=layout)


def test_flips_happen_and_follow_the_step(images):
    ours = DeviceImages(images, "cpu", Normalizer("unit", 3), seed=0, hflip=True)
    indices = np.arange(64)
    plain = ours.batch(indices)
    flipped = [bool(torch.equal(ours.batch(indices, 3)[i], plain[i].flip(-1))) for i in range(64)]
    assert flipped == flip_mask(0, 3, 64).tolist() and 10 < sum(flipped) < 54
    assert not torch.equal(ours.batch(indices, 3), ours.batch(indices, 4))


def test_matches_trainer_batch_including_across_flip_blocks(tmp_path):
    config = tiny_config(data={"hflip": True, "normalization": "imagenet"},
                         objective={"name": "beta", "beta": 1.0, "reconstruction": "mse_mean"})
    trainer = Trainer(config, create_run(tmp_path / "run", config))
    data = trainer.data
    ours = DeviceImages(data.images, trainer.device, trainer.normalizer, seed=config.train.seed,
                        hflip=config.data.hflip, channels_last=config.train.channels_last)
    size = config.train.batch_size
    for step in [0, 1, 11, FLIP_BLOCK - 1, FLIP_BLOCK, FLIP_BLOCK + 13]:
        epoch, position = divmod(step, trainer.steps_per_epoch)
        indices = trainer.epoch_order(epoch)[position * size:(position + 1) * size]
        assert torch.equal(ours.batch(indices, step), trainer.batch(indices, step))
    val = data.val_indices[:size]
    assert torch.equal(ours.batch(val), trainer.batch(val))


def test_a_memmap_is_uploaded_in_slices(tmp_path, images, monkeypatch):
    np.save(tmp_path / "images.npy", images)
    mapped = np.load(tmp_path / "images.npy", mmap_mode="r")
    monkeypatch.setattr(device_images, "UPLOAD_CHUNK_BYTES", 7 * 16 * 16 * 3)  # 7 rows a slice
    ours = DeviceImages(mapped, "cpu", Normalizer("unit", 3), seed=0)
    assert ours.images.dtype == torch.uint8 and torch.equal(ours.images, torch.from_numpy(images))
    assert len(ours) == 300 and ours.nbytes == images.nbytes


def test_images_that_do_not_fit_are_refused_with_a_reason(images, monkeypatch):
    images = images.copy()
    images.flags.writeable = False  # like a prepared cache's memmap: holding it means a copy
    monkeypatch.setattr(device_images, "free_memory_bytes", lambda device: 4 * images.nbytes - 1)
    held, plan = DeviceImages.if_it_fits(images, "cpu", Normalizer("unit", 3), seed=0)
    assert held is None and not plan.fits and "do not fit" in plan.message() and "25%" in plan.message()
    monkeypatch.setattr(device_images, "free_memory_bytes", lambda device: 4 * images.nbytes)
    held, plan = DeviceImages.if_it_fits(images, "cpu", Normalizer("unit", 3), seed=0)
    assert held is not None and plan.fits and "held on cpu" in plan.message()
    monkeypatch.setattr(device_images, "free_memory_bytes", lambda device: None)
    assert not placement(images, "cpu").fits and "unknown" in placement(images, "cpu").message()


def test_free_memory_is_known_on_this_cpu():
    free = device_images.free_memory_bytes(torch.device("cpu"))
    assert free is None or free > 0


def test_an_in_memory_array_is_shared_on_the_cpu_not_copied(images, monkeypatch):
    monkeypatch.setattr(device_images, "free_memory_bytes", lambda device: 0)  # nothing to spare
    held, plan = DeviceImages.if_it_fits(images, "cpu", Normalizer("unit", 3), seed=0)
    assert held is not None and plan.fits and plan.needed_bytes == 0 and "not copied" in plan.message()
    assert held.images.data_ptr() == images.ctypes.data
