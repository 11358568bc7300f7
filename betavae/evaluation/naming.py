"""Naming latent dimensions without labels: what a dimension does to the decoded images.

Each active dimension is swept over :data:`SWEEP_VALUES` (−2..2 in 9 steps) from the posterior
means of a fixed, seeded sample of :data:`BASE_IMAGES` validation images; every decoded image is
measured (:func:`image_statistics`), and each statistic's change along the sweep is the slope of a
Theil–Sen fit (the median of the pairwise slopes, robust to a step where the shape vanishes),
averaged over the base images (signed, so changes that do not agree in direction cancel), times the
sweep's length, divided by the statistic's scale (:data:`SCALES`):

=================  ===========================================  ===============================
statistic          measured on the foreground (see below)       scale (effect 1 = ...)
=================  ===========================================  ===============================
``x``, ``y``       weighted centroid, as a fraction of the      half the image size
                   image size (y grows downwards)
``area``           fraction of pixels at ≥ half the foreground  the mean area over the sweeps
                   contrast (blur does not change it)
``angle``          principal axis of the second moments,        90°
                   mod 180° (unwrapped along the sweep; a step
                   counts in proportion to the shape's
                   elongation up to :data:`MIN_ELONGATION`, as a
                   round shape has no axis)
``hue``            circular mean hue (RGB only), unwrapped      0.5 (the largest hue distance)
``saturation``     mean HSV saturation (RGB only)               1
``value``          mean HSV value (brightness)                  1
``background``     mean of the background colour                1
``background_hue`` hue of the background colour (RGB only;      0.5
                   0 when it is grey), unwrapped
``asymmetry``      left–right skewness of the shape (pixels at  2 (e.g. from −1 to +1)
                   ≥ half the foreground contrast; third
                   central moment in x / σ³)
=================  ===========================================  ===============================

The background colour is the per-channel median of the image's border pixels; a pixel's
foreground weight is its RMS colour distance from it divided by the image's largest distance (at
least :data:`FOREGROUND_CONTRAST`, so a nearly empty image has nearly no foreground).

**The rule.** The statistic of largest absolute effect names the dimension ("moves right" /
"moves left", "moves down" / "moves up", "larger" / "smaller", "rotates", "hue", "saturation",
"brighter" / "darker", "lighter background" / "darker background", "background hue", "asymmetry"; the direction is the
sign of the effect as z grows) when its effect is at least :data:`DOMINANCE` (1.5) times the second
largest; otherwise the dimension is ``"mixed"``. An active dimension whose largest effect is below
:data:`MIN_EFFECT` is ``"no visible change"``; an inactive one (mean KL at most
:data:`betavae.latents.ACTIVE_KL_NATS`) is ``"inactive"`` and is not swept. The strength is the largest
effect. :func:`stored_dimension_names` keeps the result in ``RUN/eval/dimension_names.json`` with the
checkpoint's digest and :data:`RULE_VERSION` (like ``RUN/latents.json``), so ``evaluate``, the figures, ``traverse`` and the
explorer show the same names.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from betavae.fileio import write_json
from betavae.latents import UNKNOWN, LatentRanking
from betavae.runs import RunPaths

SWEEP_VALUES = tuple(float(v) for v in np.linspace(-2.0, 2.0, 9))
BASE_IMAGES = 64
BASE_SEED = 0
DOMINANCE = 1.5
MIN_EFFECT = 0.05
FOREGROUND_CONTRAST = 0.25
MIN_ELONGATION = 0.2
RULE_VERSION = 4  # stored names of another version are recomputed (2: the asymmetry of the shape's mask;
# 3: the record holds the traversal purity; 4: and the exclusivity and separation)
STATISTICS = ("x", "y", "area", "angle", "hue", "saturation", "value", "background", "background_hue",
              "asymmetry")
SCALES = {"x": 0.5, "y": 0.5, "area": None, "angle": 90.0, "hue": 0.5, "saturation": 1.0, "value": 1.0,
          "background": 1.0, "background_hue": 0.5, "asymmetry": 2.0}  # area: the mean area over the sweeps
# (name when the effect is positive, name when negative)
NAMES = {"x": ("moves right", "moves left"), "y": ("moves down", "moves up"), "area": ("larger", "smaller"),
         "angle": ("rotates", "rotates"), "hue": ("hue", "hue"), "saturation": ("saturation", "saturation"),
         "value": ("brighter", "darker"), "background": ("lighter background", "darker background"),
         "background_hue": ("background hue", "background hue"),
         "asymmetry": ("asymmetry", "asymmetry")}
INACTIVE, MIXED, NO_CHANGE = "inactive", "mixed", "no visible change"
_EPS = 1e-8


def image_statistics(images: torch.Tensor) -> torch.Tensor:
    return _statistics(images)[0]


def _statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(..., C, H, W)`` in [0, 1] → their :data:`STATISTICS` ``(..., 10)`` (float64).

    x, y: the foreground centroid as a fraction of the image size; area: the foreground fraction;
    angle: the principal axis in degrees, in [−90, 90); hue in [0, 1); the rest as in the module
    docstring. Hue and saturation are 0 for one-channel images. An image without foreground gets
    its centroid in the middle and angle, hue and asymmetry 0.
    """
    images = torch.as_tensor(images, dtype=torch.float64)
    lead, (c, h, w) = images.shape[:-3], images.shape[-3:]
    x = images.reshape(-1, c, h, w).clamp(0, 1)
    border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)
    background = border.median(dim=2).values  # (M, C)
    distance = ((x - background[:, :, None, None]) ** 2).mean(dim=1).sqrt()
    contrast = distance.amax(dim=(1, 2)).clamp_min(FOREGROUND_CONTRAST)
    weight = distance / contrast[:, None, None]  # (M, H, W) in [0, 1]
    mass = weight.sum(dim=(1, 2))
    safe = mass.clamp_min(_EPS)
    cols = torch.arange(w, dtype=torch.float64) + 0.5
    rows = torch.arange(h, dtype=torch.float64) + 0.5
    cx = (weight.sum(dim=1) * cols).sum(dim=1) / safe
    cy = (weight.sum(dim=2) * rows).sum(dim=1) / safe
    dx = cols[None, None, :] - cx[:, None, None]
    dy = rows[None, :, None] - cy[:, None, None]
    mu20 = (weight * dx * dx).sum(dim=(1, 2)) / safe
    mu02 = (weight * dy * dy).sum(dim=(1, 2)) / safe
    mu11 = (weight * dx * dy).sum(dim=(1, 2)) / safe
    angle = torch.rad2deg(0.5 * torch.atan2(2 * mu11, mu20 - mu02))
    mask = (weight >= 0.5).double()  # the shape itself: a faint halo far out would dominate a third moment
    asymmetry = _skewness_x(mask, cols)
    value = x.amax(dim=1)
    if c >= 3:
        saturation = torch.where(value > _EPS, (value - x.amin(dim=1)) / value.clamp_min(_EPS), torch.zeros_like(value))
        hue = _hue(x[:, :3])
        hue_weight = weight * saturation
        turn = 2 * torch.pi * hue
        mean_hue = torch.atan2((hue_weight * torch.sin(turn)).sum(dim=(1, 2)),
                               (hue_weight * torch.cos(turn)).sum(dim=(1, 2))) / (2 * torch.pi) % 1.0
        mean_saturation = (weight * saturation).sum(dim=(1, 2)) / safe
        background_hue = _hue(background[:, :3, None, None])[:, 0, 0]
    else:
        mean_hue = mean_saturation = background_hue = torch.zeros_like(mass)
    mean_value = (weight * value).sum(dim=(1, 2)) / safe
    empty = mass < _EPS
    cx, cy = torch.where(empty, w / 2, cx), torch.where(empty, h / 2, cy)
    zero = torch.zeros_like(mass)
    angle, mean_hue, asymmetry = (torch.where(empty, zero, t) for t in (angle, mean_hue, asymmetry))
    elongation = torch.sqrt((mu20 - mu02) ** 2 + 4 * mu11 ** 2) / (mu20 + mu02).clamp_min(_EPS)
    area = (weight >= 0.5).double().mean(dim=(1, 2)) * (mass >= _EPS)  # at half the foreground's contrast
    stats = torch.stack([cx / w, cy / h, area, angle, mean_hue, mean_saturation, mean_value,
                         background.mean(dim=1), background_hue, asymmetry], dim=1)
    return stats.reshape(*lead, len(STATISTICS)), elongation.reshape(lead)


def _skewness_x(mask: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Left–right skewness (third central moment in x over σ³) of binary masks ``(M, H, W)``; 0 for an
    empty mask or one a single column wide."""
    count = mask.sum(dim=(1, 2)).clamp_min(1.0)
    column_mass = mask.sum(dim=1)  # (M, W)
    centre = (column_mass * cols).sum(dim=1) / count
    dx = cols[None, :] - centre[:, None]
    variance = (column_mass * dx ** 2).sum(dim=1) / count
    third = (column_mass * dx ** 3).sum(dim=1) / count
    return torch.where(variance > 0.25, third / variance.clamp_min(_EPS) ** 1.5, torch.zeros_like(third))


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """HSV hue in [0, 1) of ``(M, 3, H, W)`` RGB images (0 where the pixel is grey)."""
    r, g, b = rgb.unbind(dim=1)
    high, low = rgb.amax(dim=1), rgb.amin(dim=1)
    span = (high - low).clamp_min(_EPS)
    hue = torch.where(high == r, (g - b) / span % 6, torch.where(high == g, (b - r) / span + 2, (r - g) / span + 4))
    return torch.where(high - low > _EPS, hue / 6, torch.zeros_like(hue))


def sweep_effects(sweeps: torch.Tensor, values: Sequence[float] = SWEEP_VALUES) -> dict[str, float]:
    """The signed, normalised effect of each statistic along sweeps ``(N, S, C, H, W)`` (``N`` base
    images, each decoded at the ``S`` ``values`` of one dimension): Theil–Sen slope per base image,
    averaged over them, times the sweep's length, divided by the statistic's scale."""
    values = torch.as_tensor(values, dtype=torch.float64)
    stats, elongation = _statistics(sweeps)  # (N, S, K), (N, S)
    for name, period in (("angle", 180.0), ("hue", 1.0), ("background_hue", 1.0)):  # unwrap the circular ones
        k = STATISTICS.index(name)
        steps = torch.diff(stats[..., k], dim=1)
        steps = (steps + period / 2) % period - period / 2
        if name == "angle":  # a round shape has no axis: its angle's steps count only as it elongates
            steps = steps * (torch.minimum(elongation[:, 1:], elongation[:, :-1]) / MIN_ELONGATION).clamp(0, 1)
        stats[..., k] = torch.cat([stats[..., :1, k], stats[..., :1, k] + steps.cumsum(dim=1)], dim=1)
    i, j = torch.triu_indices(len(values), len(values), offset=1)
    slopes = (stats[:, j] - stats[:, i]) / (values[j] - values[i])[None, :, None]  # (N, pairs, K)
    change = slopes.median(dim=1).values.mean(dim=0) * float(values[-1] - values[0])
    scales = dict(SCALES, area=max(float(stats[..., STATISTICS.index("area")].mean()), _EPS))
    return {name: float(change[k]) / scales[name] for k, name in enumerate(STATISTICS)}


def name_from_effects(effects: dict[str, float]) -> dict:
    """The rule of the module docstring: ``name``, ``strength`` (the largest absolute effect),
    ``statistic`` (the one that names it, None when mixed or no visible change) and ``runner_up``."""
    ranked = sorted(effects, key=lambda s: -abs(effects[s]))
    top, second = ranked[0], ranked[1]
    strength, next_strength = abs(effects[top]), abs(effects[second])
    if strength < MIN_EFFECT:
        name, statistic = NO_CHANGE, None
    elif strength < DOMINANCE * next_strength:
        name, statistic = MIXED, None
    else:
        name, statistic = NAMES[top][0 if effects[top] > 0 else 1], top
    return {"name": name, "strength": round(strength, 4), "statistic": statistic,
            "runner_up": {"statistic": second, "effect": round(effects[second], 4)}}


def name_sweeps(sweeps: torch.Tensor, values: Sequence[float] = SWEEP_VALUES) -> dict:
    """A dimension's name from its decoded sweeps ``(N, S, C, H, W)``: :func:`name_from_effects`
    with the ``effects`` themselves."""
    effects = sweep_effects(sweeps, values)
    return {**name_from_effects(effects), "effects": {k: round(v, 4) for k, v in effects.items()}}


def name_model_dimensions(trained, active: Sequence[int], base_codes: torch.Tensor | None = None,
                          values: Sequence[float] = SWEEP_VALUES, images: int = BASE_IMAGES,
                          seed: int = BASE_SEED) -> list[dict]:
    """One entry per latent dimension of ``trained`` (anything with ``decode`` and ``latent_dim``):
    the ``active`` ones named from their sweeps around ``base_codes`` (default: the posterior means of
    ``images`` seeded validation images), the others ``"inactive"``."""
    if base_codes is None:
        base_codes = trained.encode(trained.images(trained.validation_sample(images, seed))).mean
    base = torch.as_tensor(base_codes, dtype=torch.float32)
    grid = torch.as_tensor(values, dtype=torch.float32)
    entries = []
    for dim in range(trained.latent_dim):
        if dim not in active:
            entries.append({"dim": dim, "name": INACTIVE, "strength": 0.0, "statistic": None})
            continue
        codes = base[:, None, :].repeat(1, len(grid), 1)
        codes[:, :, dim] = grid
        decoded = trained.decode(codes.reshape(-1, base.shape[1]))
        entries.append({"dim": dim, **name_sweeps(decoded.reshape(len(base), len(grid), *decoded.shape[1:]), values)})
    return entries


def traversal_purity(entries: Sequence[dict], kl: Sequence[float]) -> float:
    """How cleanly the swept dimensions act, from :func:`name_model_dimensions`'s ``entries``: per
    swept dimension, the share of its largest effect in the sum of its squared effects (1 when it
    changes one statistic, 1/10 when all alike), averaged with weights ``kl[dim]`` (so nearly closed
    dimensions count little). No labels are used; 0 when no dimension was swept."""
    shares, weights = [], []
    for entry in entries:
        if "effects" in entry:
            squared = np.square(list(entry["effects"].values()))
            shares.append(float(squared.max() / max(squared.sum(), _EPS)))
            weights.append(float(kl[entry["dim"]]))
    return float(np.average(shares, weights=weights)) if shares and sum(weights) > 0 else 0.0


def traversal_exclusivity(entries: Sequence[dict]) -> float:
    """How exclusively the swept dimensions divide the statistics among them, from
    :func:`name_model_dimensions`'s ``entries``: per statistic, the share of the dimension that
    changes it most in the sum of all swept dimensions' squared effects on it, averaged with the
    statistics' summed squared effects as weights (1 when no two dimensions change the same
    statistic; 0.5 when two move the sprite along the two diagonals). No labels are used; 0 when no
    dimension was swept. Complements :func:`traversal_purity` as DCI completeness does disentanglement."""
    effects = [list(entry["effects"].values()) for entry in entries if "effects" in entry]
    if not effects:
        return 0.0
    squared = np.square(effects)  # (dims, statistics)
    return float(squared.max(axis=0).sum() / max(squared.sum(), _EPS))


def traversal_separation(entries: Sequence[dict], kl: Sequence[float]) -> float:
    """How well the swept dimensions separate what the decoded images do: :func:`traversal_purity`
    (each dimension changes one thing) times :func:`traversal_exclusivity` (each thing is changed by
    one dimension); 1 for a clean split, about 0.25 for position along two diagonals. No labels."""
    return traversal_purity(entries, kl) * traversal_exclusivity(entries)


def traversal_scores(entries: Sequence[dict], kl: Sequence[float]) -> dict[str, float]:
    """``traversal_purity``, ``traversal_exclusivity`` and their product ``traversal_separation``
    of ``entries`` (each computed once), rounded to 4 digits, as stored and as starts are judged."""
    purity, exclusivity = traversal_purity(entries, kl), traversal_exclusivity(entries)
    return {"traversal_purity": round(purity, 4), "traversal_exclusivity": round(exclusivity, 4),
            "traversal_separation": round(purity * exclusivity, 4)}


def stored_dimension_names(trained, ranking: LatentRanking) -> dict:
    """The names of ``trained``'s dimensions (:func:`name_model_dimensions` on the ranking's active
    dimensions) from ``RUN/eval/dimension_names.json`` when stored for this checkpoint, else computed
    and stored (a read-only run folder gets them unstored)."""
    path = RunPaths(Path(trained.run_dir)).dimension_names
    digest = ranking.checkpoint_sha256
    try:
        stored = json.loads(path.read_text())
        if (stored.get("checkpoint_sha256") == digest != UNKNOWN and stored.get("active") == ranking.active
                and stored.get("version") == RULE_VERSION):
            return stored
    except (OSError, ValueError, AttributeError):
        pass
    result = {
        "version": RULE_VERSION,
        "rule": (f"per active dimension, the statistic of largest normalised effect names it when that effect "
                 f"is at least {DOMINANCE}x the second largest (else 'mixed') and at least {MIN_EFFECT} "
                 "(else 'no visible change'); betavae.evaluation.naming"),
        "sweep": list(SWEEP_VALUES), "base_images": BASE_IMAGES, "seed": BASE_SEED,
        "active": list(ranking.active), "checkpoint_sha256": digest,
        "dimensions": name_model_dimensions(trained, ranking.active),
    }
    result.update(traversal_scores(result["dimensions"], ranking.kl_per_dim))
    try:
        write_json(path, result)
    except OSError:
        pass
    return result


def name_labels(names: dict, with_inactive: bool = False) -> dict[int, str]:
    """Row/slider labels from :func:`stored_dimension_names`: ``"moves right (0.62)"`` per dimension
    (inactive ones only when asked)."""
    return {int(e["dim"]): e["name"] if e["name"] == INACTIVE else f"{e['name']} ({e['strength']:.2f})"
            for e in names.get("dimensions", []) if with_inactive or e["name"] != INACTIVE}


def dimension_labels(trained, ranking: LatentRanking) -> dict[int, str]:
    """The label of each dimension for figures: the factor it captures from the run's disentanglement
    report when that names any, else the unsupervised names (:func:`stored_dimension_names`)."""
    try:
        entries = json.loads(RunPaths(Path(trained.run_dir)).disentanglement.read_text()).get("dimensions", [])
        factors = {int(e["dim"]): str(e["label"]) for e in entries if e.get("label", "—") != "—"}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        factors = {}
    return factors or name_labels(stored_dimension_names(trained, ranking))
