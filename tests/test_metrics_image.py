"""PSNR and SSIM against scikit-image on random and real images, grayscale and RGB."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from betavae.metrics import psnr, ssim

TOLERANCE = 1e-4


def _skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=data_range, channel_axis=-1)


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    """(H, W, C) arrays → one (N, C, H, W) tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)


def _distortions(image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Noise, blur and a brightness/contrast change, each clipped to [0, 1]."""
    noisy = image + rng.normal(0, 0.08, image.shape)
    blurred = ndimage.gaussian_filter(image, sigma=(2, 2, 0))
    shifted = 0.7 * image + 0.2
    return [np.clip(x, 0, 1) for x in (noisy, blurred, shifted)]


def _real_images() -> list[np.ndarray]:
    """skimage's bundled photos, 128×128 crops in [0, 1]: RGB and grayscale (as (H, W, 1))."""
    rgb = [data.astronaut()[100:356:2, 100:356:2], data.chelsea()[50:178, 150:278]]
    gray = [data.camera()[::4, ::4], data.brick()[:128, :128]]
    return [x / 255.0 for x in rgb] + [x[..., None] / 255.0 for x in gray]


@pytest.mark.parametrize("index", range(4))
def test_matches_skimage_on_real_images(index):
    image = _real_images()[index]
    distorted = _distortions(image, np.random.default_rng(index))
    x, y = _batch([image] * len(distorted)), _batch(distorted)
    ours_ssim, ours_psnr = ssim(x, y).numpy(), psnr(x, y).numpy()
    for i, other in enumerate(distorted):
        assert abs(ours_ssim[i] - _skimage_ssim(image, other)) < TOLERANCE
        assert abs(ours_psnr[i] - peak_signal_noise_ratio(image, other, data_range=1.0)) < TOLERANCE
    assert len(set(np.round(ours_ssim, 3))) == len(distorted)  # the distortions are told apart


@pytest.mark.parametrize("channels,size", [(3, 64), (1, 32), (3, 11), (1, 47)])
def test_matches_skimage_on_random_images(channels, size):
    rng = np.random.default_rng(channels * 100 + size)
    a = rng.random((5, size, size, channels))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    b[0] = rng.random(b[0].shape)  # an unrelated pair: SSIM near 0
    ours_ssim, ours_psnr = ssim(_batch(list(a)), _batch(list(b))), psnr(_batch(list(a)), _batch(list(b)))
    assert ours_ssim.shape == ours_psnr.shape == (5,)
    for i in range(5):
        assert abs(ours_ssim[i].item() - _skimage_ssim(a[i], b[i])) < TOLERANCE
        assert abs(ours_psnr[i].item() - peak_signal_noise_ratio(a[i], b[i], data_range=1.0)) < TOLERANCE


def test_float32_input_and_other_data_range():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 256, (2, 40, 40, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    x, y = _batch(list(a)).float(), _batch(list(b)).float()
    for i in range(2):
        assert abs(ssim(x, y, data_range=255.0)[i].item() - _skimage_ssim(a[i], b[i], 255.0)) < TOLERANCE
        assert abs(psnr(x, y, data_range=255.0)[i].item() - peak_signal_noise_ratio(a[i], b[i], data_range=255)) < TOLERANCE


def test_identical_images():
    x = torch.rand(3, 3, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    assert torch.isinf(psnr(x, x)).all()


def test_psnr_closed_form():
    x = torch.zeros(1, 1, 8, 8)
    y = torch.full((1, 1, 8, 8), 0.1)
    assert psnr(x, y).item() == pytest.approx(20.0)  # 10·log10(1 / 0.01)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 1, 10, 10), torch.rand(1, 1, 10, 10))
    with pytest.raises(ValueError, match="N, C, H, W"):
        psnr(torch.rand(3, 16, 16), torch.rand(3, 16, 16))
