"""Naming dimensions without labels: the image statistics, the rule, and a hand-built decoder whose
dimensions are known (move right, scale, hue, nothing)."""
from __future__ import annotations

import colorsys
import json
import math
import shutil

import numpy as np
import pytest
import torch

from betavae.evaluation.naming import (
    DOMINANCE,
    INACTIVE,
    MIN_EFFECT,
    MIXED,
    NO_CHANGE,
    RULE_VERSION,
    STATISTICS,
    image_statistics,
    name_from_effects,
    name_labels,
    name_model_dimensions,
    name_sweeps,
    stored_dimension_names,
    traversal_exclusivity,
    traversal_purity,
)
from betavae.latents import LatentRanking

SIZE = 32
BACKGROUND = (0.2, 0.2, 0.2)


def stat(images: torch.Tensor, name: str) -> np.ndarray:
    return image_statistics(images)[..., STATISTICS.index(name)].numpy()


def ellipse(cx=16.0, cy=16.0, a=6.0, b=6.0, angle_deg=0.0, colour=(1.0, 0.0, 0.0), background=BACKGROUND,
            size=SIZE) -> torch.Tensor:
    """One RGB image ``(3, size, size)``: an anti-aliased ellipse (semi-axes a along angle_deg, b across)."""
    rows, cols = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    t = math.radians(angle_deg)
    u = (cols - cx) * math.cos(t) + (rows - cy) * math.sin(t)
    v = -(cols - cx) * math.sin(t) + (rows - cy) * math.cos(t)
    inside = ((1 - torch.sqrt((u / a) ** 2 + (v / b) ** 2)) * min(a, b) + 0.5).clamp(0, 1)
    colour = torch.tensor(colour)[:, None, None]
    back = torch.tensor(background)[:, None, None]
    return back + inside[None] * (colour - back)


def test_centroid_and_area_of_a_disc():
    image = ellipse(cx=10.0, cy=20.0, a=5.0, b=5.0)
    assert stat(image[None], "x")[0] == pytest.approx(10 / SIZE, abs=0.01)
    assert stat(image[None], "y")[0] == pytest.approx(20 / SIZE, abs=0.01)
    assert stat(image[None], "area")[0] == pytest.approx(math.pi * 25 / SIZE**2, rel=0.05)
    assert abs(stat(image[None], "asymmetry")[0]) < 0.02


def test_moved_and_scaled_discs():
    moved = torch.stack([ellipse(cx=cx) for cx in (10.0, 14.0, 18.0)])
    assert np.diff(stat(moved, "x")) == pytest.approx([4 / SIZE, 4 / SIZE], abs=0.005)
    assert np.ptp(stat(moved, "area")) < 1e-3
    scaled = torch.stack([ellipse(a=r, b=r) for r in (3.0, 5.0, 7.0)])
    areas = stat(scaled, "area")
    assert areas[1] / areas[0] == pytest.approx(25 / 9, rel=0.1)
    assert areas[2] / areas[1] == pytest.approx(49 / 25, rel=0.1)
    assert np.ptp(stat(scaled, "x")) < 1e-3


@pytest.mark.parametrize("angle", [-60.0, -20.0, 0.0, 30.0, 75.0])
def test_principal_axis_of_a_rotated_ellipse(angle):
    measured = stat(ellipse(a=9.0, b=4.0, angle_deg=angle)[None], "angle")[0]
    assert (measured - angle + 90) % 180 - 90 == pytest.approx(0.0, abs=2.0)
    # orientation is mod 180°: the ellipse turned half a turn is the same
    assert stat(ellipse(a=9.0, b=4.0, angle_deg=angle + 180)[None], "angle")[0] == pytest.approx(measured, abs=1e-6)


def test_colour_statistics():
    hues = [0.0, 1 / 3, 2 / 3]
    images = torch.stack([ellipse(colour=colorsys.hsv_to_rgb(h, 0.8, 0.9)) for h in hues])
    assert stat(images, "hue") == pytest.approx(hues, abs=0.01)
    assert stat(images, "saturation") == pytest.approx([0.8] * 3, abs=0.05)
    assert stat(images, "value") == pytest.approx([0.9] * 3, abs=0.05)
    assert stat(images, "background") == pytest.approx([0.2] * 3, abs=1e-6)
    lighter = ellipse(background=(0.5, 0.5, 0.5), colour=(0.0, 0.0, 0.0))
    assert stat(lighter[None], "background")[0] == pytest.approx(0.5)
    assert stat(lighter[None], "background_hue")[0] == 0  # grey has no hue
    backgrounds = torch.stack([ellipse(background=colorsys.hsv_to_rgb(h, 0.5, 0.3)) for h in (0.1, 0.4, 0.7)])
    assert stat(backgrounds, "background_hue") == pytest.approx([0.1, 0.4, 0.7], abs=0.01)
    object_hue = stat(backgrounds, "hue")  # the red object's hue stays 0 (circular: 0.998 is 0)
    assert np.minimum(object_hue, 1 - object_hue) == pytest.approx([0.0] * 3, abs=0.01)
    assert stat(lighter[None], "area")[0] == pytest.approx(math.pi * 36 / SIZE**2, rel=0.05)


def test_left_right_asymmetry_and_grayscale_and_empty_images():
    image = ellipse(a=8.0, b=8.0)
    image[:, :, 16:] = torch.tensor(BACKGROUND)[:, None, None]  # the left half-disc: its mass leans right
    left_half = stat(image[None], "asymmetry")[0]
    assert left_half < -0.15 and stat(image.flip(-1)[None], "asymmetry")[0] == pytest.approx(-left_half, abs=1e-6)
    gray = ellipse(colour=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0))[:1]
    stats = image_statistics(gray[None])[0]
    assert stats[STATISTICS.index("hue")] == 0 and stats[STATISTICS.index("saturation")] == 0
    assert stats[STATISTICS.index("value")] == pytest.approx(1.0, abs=0.05)
    haloed = ellipse(a=5.0, b=5.0)  # a faint smear far to one side (a blurry decoder's) is not the shape
    haloed[:, :, 27:] += 0.12
    assert abs(stat(haloed[None], "asymmetry")[0]) < 0.02
    empty = image_statistics(torch.zeros(1, 1, SIZE, SIZE))[0]
    assert empty[STATISTICS.index("x")] == 0.5 and empty[STATISTICS.index("area")] == 0
    assert torch.isfinite(empty).all()


def test_the_rule():
    assert name_from_effects({"x": 0.5, "area": 0.2})["name"] == "moves right"
    assert name_from_effects({"x": -0.5, "area": 0.2})["name"] == "moves left"
    assert name_from_effects({"y": 0.3, "area": 0.1})["name"] == "moves down"
    assert name_from_effects({"area": -0.6, "x": 0.1})["name"] == "smaller"
    assert name_from_effects({"angle": -0.6, "x": 0.1})["name"] == "rotates"
    assert name_from_effects({"background": -0.4, "x": 0.0})["name"] == "darker background"
    assert name_from_effects({"background_hue": 0.6, "background": 0.1})["name"] == "background hue"
    below = name_from_effects({"x": 0.5, "area": 0.5 / DOMINANCE * 1.01})
    assert below["name"] == MIXED and below["statistic"] is None and below["strength"] == 0.5
    assert name_from_effects({"x": MIN_EFFECT * 0.9, "area": 0.0})["name"] == NO_CHANGE


class Blob:
    """A hand-built decoder: z0 moves a disc right, z1 scales it, z2 turns its hue, z3 does nothing."""

    latent_dim = 4

    def __init__(self):
        self.calls = 0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.stack([
            ellipse(cx=16 + 3.0 * float(c[0]), a=6 + 1.2 * float(c[1]), b=6 + 1.2 * float(c[1]),
                    colour=colorsys.hsv_to_rgb((0.1 + 0.08 * float(c[2])) % 1.0, 0.9, 1.0))
            for c in z
        ])


def base_codes(n=8, seed=0) -> torch.Tensor:
    return 0.5 * torch.randn(n, 4, generator=torch.Generator().manual_seed(seed))


def test_a_decoder_whose_dimensions_are_known():
    names = name_model_dimensions(Blob(), active=[0, 1, 2], base_codes=base_codes())
    assert [e["name"] for e in names] == ["moves right", "larger", "hue", INACTIVE]
    assert all(e["strength"] > 0.3 for e in names[:3])
    # active but doing nothing: no visible change
    assert name_model_dimensions(Blob(), active=[3], base_codes=base_codes())[3]["name"] == NO_CHANGE


class DiagonalBlob(Blob):
    """z0 moves the disc right and down together, z1 scales it."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.stack([ellipse(cx=16 + 3.0 * float(c[0]), cy=16 + 3.0 * float(c[0]), a=6 + 1.2 * float(c[1]),
                                    b=6 + 1.2 * float(c[1])) for c in z])


def test_traversal_purity_of_decoders_whose_dimensions_are_known():
    clean = name_model_dimensions(Blob(), active=[0, 1, 2], base_codes=base_codes())
    assert traversal_purity(clean, [1.0, 1.0, 1.0, 0.0]) > 0.95
    diagonal = name_model_dimensions(DiagonalBlob(), active=[0, 1], base_codes=base_codes())
    assert traversal_purity(diagonal, [1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.5, abs=0.03)  # x and y alike
    assert traversal_purity(diagonal, [0.0, 1.0, 0.0, 0.0]) > 0.95  # the scaling dimension alone
    assert traversal_purity(diagonal, [1.0, 1.0, 0.0, 0.0]) == pytest.approx(0.75, abs=0.03)


class CrossedBlob(Blob):
    """z0 moves the disc right and down, z1 right and up (the two diagonals), z2 scales it."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.stack([ellipse(cx=16 + 2.0 * float(c[0] + c[1]), cy=16 + 2.0 * float(c[0] - c[1]),
                                    a=6 + 1.2 * float(c[2]), b=6 + 1.2 * float(c[2])) for c in z])


def test_traversal_exclusivity_of_decoders_whose_dimensions_are_known():
    assert traversal_exclusivity(name_model_dimensions(Blob(), active=[0, 1, 2], base_codes=base_codes())) > 0.95
    # one diagonal dimension changes x and y, but no other dimension does: each statistic has one owner
    assert traversal_exclusivity(name_model_dimensions(DiagonalBlob(), active=[0, 1], base_codes=base_codes())) > 0.95
    crossed = name_model_dimensions(CrossedBlob(), active=[0, 1, 2], base_codes=base_codes())
    position = [{**e, "effects": {k: v for k, v in e["effects"].items() if k in ("x", "y")}} for e in crossed[:2]]
    assert traversal_exclusivity(position) == pytest.approx(0.5, abs=0.03)  # x and y shared by the diagonals
    assert 0.6 < traversal_exclusivity(crossed) < 0.9  # the scaling dimension owns area alone, x and y shared
    assert traversal_exclusivity([{"dim": 0, "name": INACTIVE}]) == 0.0


def test_a_mixed_sweep_and_a_reversed_one():
    values = np.linspace(-2, 2, 9)
    reversed_move = torch.stack([torch.stack([ellipse(cx=16 - 3 * v) for v in values])])
    assert name_sweeps(reversed_move, values)["name"] == "moves left"
    both = torch.stack([torch.stack([ellipse(cx=16 + 2 * v, cy=16 + 2 * v) for v in values])])
    named = name_sweeps(both, values)
    assert named["name"] == MIXED and {named["runner_up"]["statistic"]} <= {"x", "y"}


def test_names_are_stored_per_checkpoint(tmp_path):
    blob = Blob()
    blob.run_dir = tmp_path
    blob.encode = lambda x: type("P", (), {"mean": base_codes(len(x))})()
    blob.validation_sample = lambda n, seed: np.arange(4)
    blob.images = lambda rows: torch.zeros(len(rows), 3, SIZE, SIZE)
    ranking = LatentRanking([1.0, 1.0, 1.0, 0.0], [0, 1, 2, 3], [0, 1, 2], 4, "abc")
    first = stored_dimension_names(blob, ranking)
    stored = json.loads((tmp_path / "eval" / "dimension_names.json").read_text())
    assert stored == json.loads(json.dumps(first)) and stored["checkpoint_sha256"] == "abc"
    assert stored["traversal_purity"] > 0.95  # three clean dimensions, the fourth inactive
    calls = blob.calls
    assert stored_dimension_names(blob, ranking)["dimensions"] == stored["dimensions"] and blob.calls == calls
    assert name_labels(stored) == {0: f"moves right ({stored['dimensions'][0]['strength']:.2f})",
                                   1: f"larger ({stored['dimensions'][1]['strength']:.2f})",
                                   2: f"hue ({stored['dimensions'][2]['strength']:.2f})"}
    assert name_labels(stored, with_inactive=True)[3] == INACTIVE
    stored_dimension_names(blob, LatentRanking([1.0] * 4, [0, 1, 2, 3], [0, 1, 2], 4, "new"))
    assert blob.calls > calls  # a new checkpoint is named afresh
    calls = blob.calls
    older = json.loads((tmp_path / "eval" / "dimension_names.json").read_text())
    (tmp_path / "eval" / "dimension_names.json").write_text(json.dumps({**older, "version": RULE_VERSION - 1}))
    assert stored_dimension_names(blob, LatentRanking([1.0] * 4, [0, 1, 2, 3], [0, 1, 2], 4, "new"))["version"] == RULE_VERSION
    assert blob.calls > calls  # names stored by an older rule are recomputed


def test_traverse_labels_its_rows_with_the_names(tiny_run, tmp_path):
    from PIL import Image

    from betavae.cli import main
    from betavae.evaluation.traverse import write_traversal
    from betavae.runs import RunPaths

    run = shutil.copytree(tiny_run, tmp_path / "run")
    RunPaths(run).disentanglement.unlink(missing_ok=True)
    plain, dims = write_traversal(run, tmp_path / "plain.png", dims="0,1")
    labelled = tmp_path / "named.png"  # through the command line: `betavae traverse --labels`
    assert main(["traverse", str(run), "--dims", "0,1", "--labels", "--out", str(labelled)]) == 0
    names = json.loads(RunPaths(run).dimension_names.read_text())
    assert [e["dim"] for e in names["dimensions"]] == list(range(len(names["dimensions"])))
    widened = any(names["dimensions"][d]["name"] != INACTIVE for d in dims)
    with Image.open(labelled) as with_labels, Image.open(plain) as without:
        assert (with_labels.width > without.width) == widened


def test_evaluate_stores_the_names_and_labels_the_traversals_with_them(tiny_run, tmp_path, monkeypatch):
    from betavae.evaluation.run_eval import EvalOptions, evaluate_run
    from betavae.runs import RunPaths

    run = shutil.copytree(tiny_run, tmp_path / "run")
    seen = []
    monkeypatch.setattr("betavae.evaluation.run_eval.write_figures",
                        lambda inputs, progress=False: seen.append(inputs.labels) or [])
    options = EvalOptions(fid=False, disentanglement=False, progress=False, max_images=16)
    metrics = evaluate_run(run, options)
    names = metrics["dimension_names"]
    assert names == json.loads(RunPaths(run).dimension_names.read_text())
    dims = len(metrics["latents"]["kl_per_dim"])
    assert len(names["dimensions"]) == dims and names["active"] == metrics["latents"]["active_dims"]
    assert {e["dim"] for e in names["dimensions"] if e["name"] == INACTIVE} == (
        set(range(dims)) - set(metrics["latents"]["active_dims"]))
    assert seen == [name_labels(names)]  # no factor labels: the figures' rows carry the names


def test_the_explorer_sliders_fall_back_to_the_names(tiny_run, tmp_path):
    from betavae.explorer.state import load_models
    from betavae.runs import RunPaths

    run = shutil.copytree(tiny_run, tmp_path / "run")
    RunPaths(run).disentanglement.unlink(missing_ok=True)
    model = load_models([run])[0]
    assert model.labels == name_labels(json.loads(RunPaths(run).dimension_names.read_text()))
