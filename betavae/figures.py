"""Figures of a run: image grids, training curves, latent traversals (PNG via Pillow/matplotlib)."""
from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib import font_manager  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from betavae.data.transforms import unit_to_uint8  # noqa: E402
from betavae.fileio import write_bytes  # noqa: E402
from betavae.runs import RunPaths, read_csv  # noqa: E402

_PAD = 2
_MIN_LABEL_WIDTH = 44


def image_grid(images01: torch.Tensor | np.ndarray, nrow: int = 8, scale: int = 1) -> Image.Image:
    """Tiles float images ``(N, C, H, W)`` in [0, 1] into rows of ``nrow`` with white gaps."""
    tiles = unit_to_uint8(torch.as_tensor(images01))  # (N, H, W, C)
    count, height, width, channels = tiles.shape
    rows = -(-count // nrow)
    cols = min(nrow, count)
    canvas = np.full(
        (rows * (height + _PAD) + _PAD, cols * (width + _PAD) + _PAD, channels), 255, dtype=np.uint8
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, nrow)
        top, left = _PAD + r * (height + _PAD), _PAD + c * (width + _PAD)
        canvas[top : top + height, left : left + width] = tile
    return enlarge(Image.fromarray(canvas[..., 0] if channels == 1 else canvas), scale)


def enlarge(image: Image.Image, scale: int) -> Image.Image:
    """``image`` with every pixel repeated ``scale``× in each direction (nearest neighbour)."""
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def with_row_labels(grid: Image.Image, labels: Sequence[str], row_height: int) -> Image.Image:
    """Adds a white column on the left with one text label (lines split at ``\\n``) per grid row."""
    font = _label_font()
    width = max([_MIN_LABEL_WIDTH] + [int(font.getlength(line)) + 8 for label in labels for line in label.split("\n")])
    labelled = Image.new("RGB", (grid.width + width, grid.height), "white")
    labelled.paste(grid.convert("RGB"), (width, 0))
    draw = ImageDraw.Draw(labelled)
    for r, label in enumerate(labels):
        top = _PAD + r * row_height + row_height // 2 - 6 * (label.count("\n") + 1)
        draw.multiline_text((3, top), label, fill="black", font=font)
    return labelled


@functools.cache
def _label_font() -> ImageFont.ImageFont:
    """DejaVu Sans, which matplotlib ships (Pillow's default font has no Greek, e.g. β)."""
    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 11)
    except (OSError, ValueError):
        return ImageFont.load_default()


def image_png(image: Image.Image) -> bytes:
    """A Pillow image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def figure_png(figure: plt.Figure) -> bytes:
    """A matplotlib figure encoded as PNG (110 dpi, tight box); the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Atomically saves a Pillow image as PNG."""
    write_bytes(path, image_png(image))
    return Path(path)


def save_figure(figure: plt.Figure, path: str | Path) -> Path:
    """Atomically saves a matplotlib figure as PNG and closes it."""
    write_bytes(path, figure_png(figure))
    return Path(path)


def reconstruction_pairs(originals01: torch.Tensor, recons01: torch.Tensor, per_row: int = 8,
                         scale: int = 1) -> Image.Image:
    """Rows of originals, each followed by a row of their reconstructions (enlarged ``scale``×)."""
    per_row = min(per_row, len(originals01))
    rows = []
    for start in range(0, len(originals01), per_row):
        rows += [originals01[start : start + per_row], recons01[start : start + per_row]]
    return image_grid(torch.cat(rows), nrow=per_row, scale=scale)


def traversal_images(trained, z_base: torch.Tensor, dims: Sequence[int], values: Sequence[float]) -> torch.Tensor:
    """Decodes ``z_base`` with each of ``dims`` set in turn to each of ``values``: ``(len(dims)·len(values), C, H, W)``."""
    codes = z_base.reshape(1, -1).repeat(len(dims) * len(values), 1)
    for r, dim in enumerate(dims):
        codes[r * len(values) : (r + 1) * len(values), dim] = torch.as_tensor(values, dtype=codes.dtype)
    return trained.decode(codes)


def traversal_grid(
    trained, z_base: torch.Tensor, dims: Sequence[int], values: Sequence[float], labels: Sequence[str] | None = None
) -> Image.Image:
    """One row per latent dimension, one column per value; rows labelled ``z<dim>`` unless ``labels``."""
    images = traversal_images(trained, z_base, dims, values)
    grid = image_grid(images, nrow=len(values))
    return with_row_labels(grid, labels or [f"z{d}" for d in dims], trained.image_size + _PAD)


CURVE_TERMS = (("recon", "reconstruction loss"), ("kl", "KL divergence (nats)"))


def training_curves(run_dir: str | Path) -> plt.Figure:
    """Reconstruction loss and KL per step (train, smoothed) and per validation (val)."""
    paths = RunPaths(Path(run_dir))
    train, val = read_csv(paths.train_log), read_csv(paths.val_log)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, (term, title) in zip(axes, CURVE_TERMS):
        plot_log(axis, term, train, val, "tab:blue", "train", "validation", val_colour="tab:orange")
        axis.set(title=title, xlabel="step")
        if term == "recon" and train and min(row[term] for row in train) > 0:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def score_curves(rows: list[dict[str, float]], labels: dict[str, str], title: str) -> plt.Figure:
    """Each column of ``rows`` named in ``labels`` against ``step``, on one axis from 0 to 1."""
    figure, axis = plt.subplots(figsize=(7.5, 3.6))
    steps = [row["step"] for row in rows]
    for key, label in labels.items():
        if all(key in row for row in rows):
            axis.plot(steps, [row[key] for row in rows], "o-", markersize=3, label=label)
    axis.set(title=title, xlabel="step", ylim=(0, 1))
    axis.grid(alpha=0.3)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")  # beside, not over, the lines
    figure.tight_layout()
    return figure


def plot_log(axis, term: str, train: list[dict], val: list[dict], colour: str, train_label: str, val_label: str,
             val_colour: str | None = None) -> None:
    """One term of a run's logs on ``axis``: training raw (faint) and smoothed, validation with markers."""
    if train:
        steps, values = [row["step"] for row in train], np.array([row[term] for row in train])
        axis.plot(steps, values, "-", color=colour, alpha=0.25, linewidth=0.8)
        axis.plot(steps, smooth(values), "-", color=colour, label=train_label)
    if val:
        axis.plot([r["step"] for r in val], [r[term] for r in val], "o--", color=val_colour or colour, label=val_label)


def smooth(values: np.ndarray, window: int = 25) -> np.ndarray:
    """Trailing moving mean over ``window`` values (the first values padded with the first one)."""
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def kl_bars(kl: np.ndarray, threshold: float) -> plt.Figure:
    """Bar chart of the mean KL of each latent dimension; active dimensions (KL > threshold) highlighted."""
    figure, axis = plt.subplots(figsize=(max(5, 0.12 * len(kl) + 2), 3))
    colours = ["tab:orange" if value > threshold else "tab:gray" for value in kl]
    axis.bar(np.arange(len(kl)), kl, color=colours)
    axis.set(xlabel="latent dimension", ylabel="mean KL (nats)",
             title=f"{int((kl > threshold).sum())} of {len(kl)} dimensions active (KL > {threshold})")
    axis.grid(alpha=0.3, axis="y")
    return figure
