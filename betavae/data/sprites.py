"""Built-in ground-truth datasets rendered in code: ``dsprites`` (grey) and ``shapes-rgb`` (colour).

``DSprites`` follows the dSprites factor grid exactly (shape 3 × scale 6 × orientation 40 ×
posX 32 × posY 32, posY fastest) on a 64×64 canvas where a pixel is on when its centre lies inside
the shape; posX/posY step one canvas pixel. At 64×64 and above the images are that binary canvas
(sampled at the pixel centres). Smaller images are the canvas averaged over the area each pixel
covers, so a 32×32 sprite has grey edges and, as at 64×64, every one of the 6 scales and 32
positions gives a different image (sampling pixel centres at 32×32 merged pairs of scales and
moved edges by whole pixels every other position step). The outlines and the position/scale →
pixel mapping are our own (the original's are unpublished), so the images are dSprites-like, not
pixel-identical.
"""
from __future__ import annotations

import colorsys

import numpy as np

from betavae.data.groundtruth import GroundTruthData

SHAPES = ("square", "ellipse", "heart")
_CANVAS = 64  # sprites are drawn on a 64×64 canvas, then sampled to image_size
_HALF_SIZE = 10.0  # half-width of the square at scale 1, in canvas pixels
_FIRST_CENTRE = 16.5  # posX/posY = 0 puts the centre here; each of the 32 steps moves 1 pixel
_TEMPLATE_CENTRE = _FIRST_CENTRE + 16  # templates are drawn here and shifted by whole pixels
_CHUNK = 4096  # images assembled per vectorised step (bounds memory)


def _inside_square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 1.0


def _inside_ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u / 1.4) ** 2 + (v / 0.7) ** 2 <= 1.0


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # (x² + y² − 1)³ − x²y³ ≤ 0, the classic heart curve, pointing down in image coordinates
    x, y = u / 1.1, -v / 1.1 + 0.1
    return (x * x + y * y - 1.0) ** 3 - x * x * y**3 <= 0.0


_INSIDE = (_inside_square, _inside_ellipse, _inside_heart)


def canvas_samples(native: int, size: int) -> tuple[np.ndarray, int]:
    """Where to sample a ``native``-pixel axis for ``size`` output pixels: the native pixel under
    each of ``per_pixel`` evenly spaced points per output pixel, and ``per_pixel`` (1 when not
    shrinking: plain pixel-centre sampling)."""
    per_pixel = -(-native // size) if size < native else 1
    points = (np.arange(size * per_pixel) + 0.5) / per_pixel
    return (points * native / size).astype(np.int64), per_pixel


def count_covered(fine: np.ndarray, per_pixel: int) -> np.ndarray:
    """Samples ``(n, S·k, S·k, ...)`` taken at :func:`canvas_samples` (boolean, or zero for off) →
    uint8 ``(n, S, S, ...)``: how many of each pixel's k² samples are on."""
    on = (fine if fine.dtype == bool else fine != 0).view(np.uint8)
    if per_pixel == 1:
        return on
    n, side = fine.shape[0], fine.shape[1] // per_pixel
    blocks = on.reshape(n, side, per_pixel, side, per_pixel, *fine.shape[3:])
    counts = np.zeros((n, side, side, *fine.shape[3:]), dtype=np.uint8)
    for i in range(per_pixel):  # k² slice additions: an order of magnitude faster than .sum(axis=(2, 4))
        for j in range(per_pixel):
            counts += blocks[:, :, i, :, j]
    return counts


def to_grey(counts: np.ndarray, samples: int) -> np.ndarray:
    """uint8 grey of pixels with ``counts`` of their ``samples`` on: 0 … 255, evenly, rounded."""
    if samples == 1:
        return counts * np.uint8(255)
    return np.rint(np.arange(samples + 1) * 255.0 / samples).astype(np.uint8)[counts]


def _template_index(factors: np.ndarray) -> np.ndarray:
    """Which of the 720 (shape, scale, orientation) templates each row of factor indices draws."""
    return (factors[:, 0] * 6 + factors[:, 1]) * 40 + factors[:, 2]


class DSprites(GroundTruthData):
    """dSprites-like sprites, 1 channel: values 0 or 255 at 64×64, grey edges when smaller."""

    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    channels = 1

    def __init__(self, factor_values=None, image_size: int = 64):
        if image_size < 16:
            raise ValueError("image_size must be at least 16")
        self.image_size = image_size
        self._template_cache: np.ndarray | None = None
        self._block_cache: dict[int, np.ndarray] = {}
        super().__init__(factor_values)

    def _options(self) -> dict:
        return {"image_size": self.image_size}

    def full_factor_sizes(self) -> tuple[int, ...]:
        return (3, 6, 40, 32, 32)

    def factor_values(self, name: str) -> np.ndarray:
        values = {
            "shape": np.arange(3, dtype=float),
            "scale": np.linspace(0.5, 1.0, 6),
            "orientation": np.linspace(0.0, 2 * np.pi, 40),
            "posX": np.linspace(0.0, 1.0, 32),
            "posY": np.linspace(0.0, 1.0, 32),
        }
        return values[self.factor_names[self.factor_index(name)]]

    def coverage(self, factors: np.ndarray) -> np.ndarray:
        """float32 ``(N, H, W)`` in [0, 1] for factor value indices ``(N, 5)``: the share of each
        pixel's area the sprite covers (0 or 1 at 64×64 and above)."""
        counts, samples = self._covered_samples(factors)
        return counts.astype(np.float32) / samples

    def _covered_samples(self, factors: np.ndarray) -> tuple[np.ndarray, int]:
        """uint8 ``(N, H, W)``: how many of each pixel's sample points lie inside the sprite, and how
        many points a pixel has (one, its centre, at 64×64 and above)."""
        factors = np.atleast_2d(np.asarray(factors, dtype=np.int64))
        sample, per_pixel = canvas_samples(_CANVAS, self.image_size)
        aligned = len(sample) == _CANVAS  # the size divides the canvas: every canvas pixel sampled once
        out = np.empty((len(factors), self.image_size, self.image_size), dtype=np.uint8)
        for start in range(0, len(factors), _CHUNK):
            f = factors[start : start + _CHUNK]
            out[start : start + _CHUNK] = (self._count_aligned(f, per_pixel) if aligned
                                           else count_covered(self._sample_canvas(f, sample), per_pixel))
        return out, per_pixel * per_pixel

    def _sample_canvas(self, f: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """The shifted templates under every sample point, ``(n, len(sample), len(sample))`` bool."""
        # Whole-pixel shifts keep every pixel-centre test exact; sprites never reach the border.
        rows = np.clip(sample[None, :] - (f[:, 4:5] - 16), 0, _CANVAS - 1)
        cols = np.clip(sample[None, :] - (f[:, 3:4] - 16), 0, _CANVAS - 1)
        return self._templates()[_template_index(f)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def _count_aligned(self, f: np.ndarray, per_pixel: int) -> np.ndarray:
        """:meth:`_sample_canvas` + :func:`count_covered` in one lookup a pixel instead of k²: shifting
        the sprite by d canvas pixels moves the template's k×k block sums, taken at offset
        k⌈d/k⌉ − d, by ⌈d/k⌉ blocks."""
        blocks = self._block_sums(per_pixel)  # clipped lookups land on empty edge blocks, as on the canvas
        side = blocks.shape[-1]
        shift_y, shift_x = f[:, 4] - 16, f[:, 3] - 16
        blocks_y, blocks_x = -(-shift_y // per_pixel), -(-shift_x // per_pixel)
        rows = np.clip(np.arange(side)[None, :] - blocks_y[:, None], 0, side - 1)
        cols = np.clip(np.arange(side)[None, :] - blocks_x[:, None], 0, side - 1)
        offset_y, offset_x = blocks_y * per_pixel - shift_y, blocks_x * per_pixel - shift_x
        which = (_template_index(f) * per_pixel + offset_y) * per_pixel + offset_x
        return blocks[which[:, None, None], rows[:, :, None], cols[:, None, :]]

    def _block_sums(self, per_pixel: int) -> np.ndarray:
        """uint8 ``(720·k·k, 64/k, 64/k)``: each template's k×k block sums, the blocks starting at
        every offset (0…k−1, 0…k−1), template-major."""
        if per_pixel not in self._block_cache:
            templates = self._templates()
            padded = np.zeros((len(templates), _CANVAS + per_pixel, _CANVAS + per_pixel), dtype=bool)
            padded[:, :_CANVAS, :_CANVAS] = templates
            sums = [count_covered(padded[:, dy : dy + _CANVAS, dx : dx + _CANVAS], per_pixel)
                    for dy in range(per_pixel) for dx in range(per_pixel)]
            side = _CANVAS // per_pixel
            self._block_cache[per_pixel] = np.stack(sums, axis=1).reshape(-1, side, side)
        return self._block_cache[per_pixel]

    def _templates(self) -> np.ndarray:
        """Masks of every (shape, scale, orientation) centred on the canvas, ``(720, 64, 64)``."""
        if self._template_cache is None:
            shape, scale, angle = np.meshgrid(
                np.arange(3), self.factor_values("scale"), self.factor_values("orientation"), indexing="ij"
            )
            shape, scale, angle = shape.ravel(), scale.ravel(), angle.ravel()
            offsets = np.arange(_CANVAS, dtype=np.float64) + 0.5 - _TEMPLATE_CENTRE
            dx, dy = offsets[None, None, :], offsets[None, :, None]
            cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
            size = (_HALF_SIZE * scale)[:, None, None]
            u, v = (cos * dx + sin * dy) / size, (-sin * dx + cos * dy) / size
            masks = np.zeros(u.shape, dtype=bool)
            for shape_id, inside in enumerate(_INSIDE):
                rows = shape == shape_id
                masks[rows] = inside(u[rows], v[rows])
            self._template_cache = masks
        return self._template_cache

    def render(self, factors: np.ndarray) -> np.ndarray:
        counts, samples = self._covered_samples(factors)
        return to_grey(counts, samples)[..., None]


def _hue_to_rgb(hues: np.ndarray, saturation: float, value: float) -> np.ndarray:
    rgb = np.array([colorsys.hsv_to_rgb(h, saturation, value) for h in hues])
    return (rgb * 255.0).round().astype(np.uint8)


class ShapesRGB(DSprites):
    """The dSprites grid in colour: a coloured sprite on a coloured background (3 channels)."""

    factor_names = DSprites.factor_names + ("object_hue", "background_hue")
    channels = 3
    _OBJECT_HUES, _BACKGROUND_HUES = 8, 4

    def full_factor_sizes(self) -> tuple[int, ...]:
        return super().full_factor_sizes() + (self._OBJECT_HUES, self._BACKGROUND_HUES)

    def factor_values(self, name: str) -> np.ndarray:
        if name == "object_hue":
            return np.linspace(0.0, 1.0, self._OBJECT_HUES, endpoint=False)
        if name == "background_hue":
            return np.linspace(0.0, 1.0, self._BACKGROUND_HUES, endpoint=False) + 0.125
        return super().factor_values(name)

    def render(self, factors: np.ndarray) -> np.ndarray:
        factors = np.atleast_2d(np.asarray(factors, dtype=np.int64))
        counts, samples = self._covered_samples(factors)
        objects = _hue_to_rgb(self.factor_values("object_hue"), 0.85, 1.0).astype(np.float64)
        backgrounds = _hue_to_rgb(self.factor_values("background_hue"), 0.5, 0.3).astype(np.float64)
        share = np.arange(samples + 1)[:, None, None, None] / samples
        # palette[count, object hue, background hue]: the two colours blended by the covered share
        palette = np.rint(backgrounds[None, None] + share * (objects[None, :, None] - backgrounds[None, None]))
        return palette.astype(np.uint8)[counts, factors[:, 5, None, None], factors[:, 6, None, None]]


GENERATORS: dict[str, type[DSprites]] = {"dsprites": DSprites, "shapes-rgb": ShapesRGB}
