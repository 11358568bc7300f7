"""`betavae evaluate` and `betavae traverse` on a tiny trained run."""
import argparse
import csv
import html
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from betavae.evaluation import EvalOptions, evaluate_run, run_eval
from betavae.evaluation.cli import add_parsers
from betavae.evaluation.figure_set import FIGURES
from betavae.evaluation.headline import SCORES, read_headline
from betavae.evaluation.reconstruction import load_folder, load_image
from betavae.evaluation.sample_quality import parse_reference, reference_indices
from betavae.inference import load
from betavae.metrics import psnr, ssim
from betavae.metrics.fid import FeatureExtractor
from betavae.runs import RunPaths



@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BETAVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BETAVAE_FID_WEIGHTS", raising=False)


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the session's tiny run (evaluation writes into the run folder)."""
    return shutil.copytree(tiny_run, tmp_path / "run")


@pytest.fixture
def outside_folder(tmp_path):
    """Two usable photos of other sizes and modes, and one file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8), "L").save(folder / "gray.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


class StandIn(nn.Module):
    """Tiny fixed feature network; counts the images it sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 5, kernel_size=23, stride=23)
        self.images_seen = 0

    def forward(self, x):
        self.images_seen += len(x)
        return F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 1).flatten(1)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="betavae")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_writes_every_file_and_caches_the_reference(run_copy, outside_folder, tmp_path):
    network = StandIn()
    extractor = FeatureExtractor(network, "stand-in:1", batch_size=32, progress=False, record={"network": "stand-in"})
    options = EvalOptions(images=outside_folder, fid_samples=40, kid=True, cache_dir=tmp_path / "fidcache",
                          top_k=3, progress=False, disentanglement_points=300, dci_points=100)
    with pytest.warns(UserWarning, match="below 2048"):
        metrics = evaluate_run(run_copy, options, extractor=extractor)

    paths = RunPaths(run_copy)
    for path in (paths.eval_metrics, paths.per_image, paths.disentanglement, paths.latents):
        assert path.is_file(), path
    for key, spec in FIGURES.items():  # every registered figure applies to this run (factors, outside
        # images) but the curve of the disentanglement checks during training, which it did not have
        assert paths.figure(spec.file).is_file() == (key != "factor_metrics"), spec.file
    assert metrics == json.loads(paths.eval_metrics.read_text())
    headline = metrics["headline"]
    assert read_headline(run_copy).computed() == headline and set(headline) <= set(SCORES)
    n_train, n_val = 192, 64
    assert network.images_seen == n_train + 40

    quality = metrics["sample_quality"]
    assert np.isfinite(headline["fid"]) and headline["fid"] > 0 and headline["fid_n_samples"] == 40
    assert quality["reference"]["n"] == n_train and "all 192 images of the training split" in quality["reference"]["set"]
    assert quality["reference"]["from_cache"] is False and quality["resize_filter"].startswith("bilinear")
    assert quality["weights"] == {"network": "stand-in"} and quality["feature_dim"] == 5
    assert "caveat" in quality and quality["kid_settings"]["subsets"] == 100 and headline["kid_std"] >= 0

    recon = metrics["reconstruction"]
    assert recon["convention"]["data_range"] == 1.0 and "5 px from the border" in recon["convention"]["ssim"]
    assert headline["n_val"] == recon["validation"]["n"] == n_val
    assert headline["n_outside"] == 2 and recon["outside"]["skipped"] == {"not an image": 1}
    assert len(metrics["latents"]["kl_per_dim"]) == 4 and headline["active_dims"] == len(metrics["latents"]["active_dims"])

    # Per-image values are the metrics of the images against their reconstructions from μ.
    with paths.per_image.open() as per_image:
        rows = list(csv.DictReader(per_image))
    assert len(rows) == n_val + 2 and {r["set"] for r in rows} == {"validation", "outside"}
    trained = load(run_copy)
    first = trained.images(np.array([int(rows[0]["item"])]))
    assert float(rows[0]["psnr"]) == pytest.approx(psnr(first, trained.reconstruct(first)).item(), abs=1e-5)
    assert float(rows[0]["ssim"]) == pytest.approx(ssim(first, trained.reconstruct(first)).item(), abs=1e-5)
    assert headline["psnr_val"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows[:n_val]]), abs=1e-5)

    # The tiny run is on dSprites-like data: its factors give disentanglement metrics and dim names.
    for key in ("mig", "sap", "dci_disentanglement", "beta_vae", "factor_vae"):
        assert 0.0 <= headline[key] <= 1.0, key
    assert len(metrics["disentanglement"]["labels"]) == 4  # one factor name (or "—") per latent dimension
    assert metrics["attributes"] == {"skipped": "the data have no per-image attributes"}

    with Image.open(paths.figure(FIGURES["traversals_gif"].file)) as gif:  # closed: a leaked file warns in a later test
        assert gif.n_frames == 30
    page = paths.index.read_text()
    for key, spec in FIGURES.items():  # each figure the run has once, with its caption from the registry
        shown = key != "factor_metrics"
        assert page.count(f'src="figures/{spec.file}"') == shown and (html.escape(spec.caption) in page) == shown
    assert "psnr_val" in page and "FID" in page

    # A second evaluation on the same data only computes its own samples.
    with pytest.warns(UserWarning, match="below 2048"):
        again = evaluate_run(run_copy, EvalOptions(fid_samples=40, cache_dir=tmp_path / "fidcache", max_images=10,
                                                   progress=False, disentanglement=False), extractor=extractor)
    assert network.images_seen == n_train + 40 + 40
    assert again["sample_quality"]["reference"]["from_cache"] is True
    assert again["headline"]["fid"] == pytest.approx(headline["fid"], rel=1e-9)
    assert again["headline"]["n_val"] == 10 and "seeded random subset" in again["reconstruction"]["validation"]["images"]
    assert again["disentanglement"] == {"skipped": "--no-disentanglement"}
    # what no longer applies is gone: the outside images' figure, the factor report and its heatmap
    assert not paths.figure(FIGURES["reconstructions_outside"].file).exists()
    assert not paths.disentanglement.exists() and not paths.figure(FIGURES["mi_heatmap"].file).exists()
    assert "mig" not in again["headline"] and "n_outside" not in again["headline"]


def test_evaluate_cli_passes_fid_options(run_copy, tmp_path, monkeypatch, capsys):
    requested = {}

    def fake_inception(weights, batch_size, device, progress, precision):
        requested.update(weights=weights, batch_size=batch_size, device=device, progress=progress, precision=precision)
        return FeatureExtractor(StandIn(), "stand-in:2", batch_size, device, progress=progress)

    monkeypatch.setattr(run_eval, "inception_extractor", fake_inception)
    weights = tmp_path / "w.pt"
    with pytest.warns(UserWarning, match="below 2048"):
        code = _cli(["evaluate", str(run_copy), "--fid-samples", "5", "--fid-reference", "7", "--kid", "--max-images", "8",
                     "--fid-weights", str(weights), "--fid-batch-size", "4", "--top-k", "2", "--quiet",
                     "--cache-dir", str(tmp_path / "fidcache"), "--no-disentanglement"])
    assert code == 0 and '"fid"' in capsys.readouterr().out
    assert requested == {"weights": weights, "batch_size": 4, "device": "cpu", "progress": False, "precision": "fp32"}
    metrics = json.loads(RunPaths(run_copy).eval_metrics.read_text())
    quality = metrics["sample_quality"]
    assert quality["n_samples"] == 5 and quality["reference"]["n"] == 7
    assert "seeded random subset" in quality["reference"]["set"] and list((tmp_path / "fidcache").glob("*.npz"))
    headline = metrics["headline"]
    assert np.isfinite(headline["fid"]) and np.isfinite(headline["kid"]) and headline["n_val"] == 8
    assert metrics["latents"]["traversal"]["top_k"] == 2
    assert metrics["disentanglement"] == {"skipped": "--no-disentanglement"}


def test_missing_fid_weights_fail_before_any_work(run_copy, monkeypatch):
    monkeypatch.setenv("BETAVAE_FID_WEIGHTS", str(run_copy / "missing.pt"))
    before = {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")}
    with pytest.raises(FileNotFoundError, match="--no-fid"):
        _cli(["evaluate", str(run_copy), "--quiet"])
    assert {p: p.stat().st_mtime_ns for p in run_copy.rglob("*")} == before  # nothing written or changed


def test_evaluate_without_fid(run_copy, recwarn, capsys):
    assert _cli(["evaluate", str(run_copy), "--no-fid", "--quiet", "--disentanglement-points", "200",
                 "--dci-points", "50"]) == 0
    assert not recwarn.list, [str(w.message) for w in recwarn.list]  # no library warning escapes
    assert capsys.readouterr().err == ""  # --quiet: no progress bars
    metrics = json.loads(RunPaths(run_copy).eval_metrics.read_text())
    assert metrics["sample_quality"] == {"skipped": "--no-fid"} and "fid" not in metrics["headline"]
    report = json.loads(RunPaths(run_copy).disentanglement.read_text())
    assert report["points"]["num_train"] == 200 and report["dci"]["num_train"] == 50
    assert report["beta_vae"]["num_train"] == 200 and report["factor_vae"]["num_eval"] == 100  # min(200, 1000)
    assert report["dci"]["backend"] == "hist"
    # 50 points for factors of up to 40 values: scikit-learn's warning is recorded, not printed
    assert report["dci"]["warnings"] and any(note.startswith("DCI:") for note in report["notes"])
    factors = metrics["disentanglement"]
    assert factors["notes"] == report["notes"] and factors["points"]["dci_backend"] == "hist"
    assert metrics["evaluated"]["options"]["fid_precision"] == "fp32"
    assert not RunPaths(run_copy).figure(FIGURES["reconstructions_outside"].file).exists()


def test_evaluate_shows_a_progress_bar_for_every_slow_stage(run_copy, capsys):
    assert _cli(["evaluate", str(run_copy), "--no-fid", "--disentanglement-points", "200", "--dci-points", "100",
                 "--rendered-points", "60", "--dci-backend", "exact"]) == 0
    err = capsys.readouterr().err
    for stage in ("reconstruction (validation)", "encoding MIG/SAP/DCI points", "SAP (LinearSVC fits)",
                  "DCI (exact gradient boosting)", "BetaVAE score (images)", "FactorVAE score (images)", "figures"):
        assert stage in err, stage
    assert "<" in err and "100%" in err  # tqdm's elapsed<remaining (ETA)
    report = json.loads(RunPaths(run_copy).disentanglement.read_text())
    assert report["dci"]["backend"] == "exact" and "GradientBoostingClassifier()" in report["dci"]["classifier"]
    assert report["beta_vae"]["num_train"] == 60 and report["mig"]["num_points"] == 200


def _parsed_options(monkeypatch, argv):
    """The EvalOptions the CLI would evaluate with (evaluate_run replaced)."""
    captured = {}

    def fake_evaluate(run, options):
        captured["options"] = options
        return {}

    monkeypatch.setattr(run_eval, "evaluate_run", fake_evaluate)
    assert _cli(["evaluate", "some-run", *argv]) == 0
    return captured["options"]


def test_cli_defaults_are_the_options_defaults(monkeypatch):
    assert _parsed_options(monkeypatch, []) == EvalOptions()


def test_disentanglement_options(monkeypatch):
    options = _parsed_options(monkeypatch, ["--disentanglement-lib-counts", "--dci-backend", "exact"])
    assert (options.disentanglement_points, options.dci_points, options.rendered_points) == (10_000,) * 3
    assert options.dci_backend == "exact"
    options = _parsed_options(monkeypatch, ["--disentanglement-points", "3000", "--rendered-points", "40"])
    assert (options.disentanglement_points, options.dci_points, options.rendered_points) == (3000, 10_000, 40)
    defaults = EvalOptions()
    assert (defaults.disentanglement_points, defaults.dci_points, defaults.rendered_points) == (10_000, 10_000, None)
    with pytest.raises(SystemExit):
        _cli(["evaluate", "some-run", "--disentanglement-lib-counts", "--rendered-points", "100"])
    with pytest.raises(SystemExit):
        _cli(["evaluate", "some-run", "--dci-backend", "lightgbm"])
    with pytest.raises(ValueError, match="hist.*exact"):
        EvalOptions(dci_backend="lightgbm")


def test_fid_precision_reaches_the_inception_network(monkeypatch):
    assert _parsed_options(monkeypatch, []).fid_precision == "fp32"
    assert _parsed_options(monkeypatch, ["--fid-precision", "bf16"]).fid_precision == "bf16"
    calls = []

    def with_precision(weights, batch_size, device, progress, precision="fp32"):
        calls.append(precision)
        raise RuntimeError("stop here")

    monkeypatch.setattr(run_eval, "inception_extractor", with_precision)
    for precision in ("fp32", "bf16"):
        with pytest.raises(RuntimeError, match="stop here"):
            evaluate_run("some-run", EvalOptions(fid_precision=precision))
    assert calls == ["fp32", "bf16"]
    with pytest.raises(ValueError, match="fp32.*bf16"):
        EvalOptions(fid_precision="fp16")


def test_cli_option_errors_name_the_flag(monkeypatch):
    for argv, flag in ((["--steps", "1"], "--steps"), (["--index", "-1"], "--index"), (["--seed", "-2"], "--seed")):
        with pytest.raises(ValueError, match=flag):
            _parsed_options(monkeypatch, argv)


def test_traverse_an_image_file(run_copy, outside_folder, tmp_path, capsys):
    out = tmp_path / "t.png"
    assert _cli(["traverse", str(run_copy), "--image", str(outside_folder / "wide.png"), "--dims", "1,3",
                 "--range", "-3", "3", "--steps", "7", "--out", str(out)]) == 0
    assert "dimensions 1, 3" in capsys.readouterr().out
    size, label_width, pad, scale = 32, 44, 2, 2
    width = (label_width + 8 * (size + pad) + pad) * scale  # the input, then 7 values
    height = (2 * (size + pad) + pad) * scale
    with Image.open(out) as image:
        assert image.size == (width, height)


def test_traverse_a_validation_image_by_default_dims(run_copy, tmp_path):
    out = tmp_path / "v.png"
    assert _cli(["traverse", str(run_copy), "--index", "3", "--steps", "5", "--scale", "1", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size[1] == 4 * 34 + 2  # the tiny model's 4 dimensions, one row each
    with pytest.raises(ValueError, match="0..3"):
        _cli(["traverse", str(run_copy), "--dims", "4", "--out", str(out)])
    with pytest.raises(ValueError, match="--index 999"):
        _cli(["traverse", str(run_copy), "--index", "999", "--out", str(out)])


def test_every_option_has_help():
    parser = argparse.ArgumentParser(prog="betavae")
    commands = parser.add_subparsers(dest="command")
    add_parsers(commands)
    assert set(commands.choices) == {"evaluate", "traverse"}
    for sub in commands.choices.values():
        for action in sub._actions:
            assert action.help, f"{sub.prog} {action.dest} has no help"


def test_reference_choice():
    train = np.arange(100, 200)
    rows, described = reference_indices(train, "all")
    assert np.array_equal(rows, train) and "all 100" in described
    rows, described = reference_indices(train, 30)
    assert len(rows) == 30 and set(rows) <= set(train) and "seed 0" in described
    assert np.array_equal(rows, reference_indices(train, 30)[0]) and len(set(rows)) == 30  # the same subset each time
    assert reference_indices(train, 500)[1] == reference_indices(train, "all")[1]  # more than there are: all
    assert parse_reference("all") == "all" and parse_reference("2400") == 2400
    with pytest.raises(ValueError, match="all"):
        parse_reference("-5")


def test_outside_images_are_transformed_like_training_data(outside_folder):
    wide = load_image(outside_folder / "wide.png", 32, 3)
    assert wide.shape == (32, 32, 3) and wide.dtype == np.uint8
    assert load_image(outside_folder / "wide.png", 32, 1).shape == (32, 32, 1)
    with Image.open(outside_folder / "wide.png") as original:
        expected = np.asarray(original.resize((64, 32), Image.BILINEAR).crop((16, 0, 48, 32)))
    assert np.array_equal(wide, expected)
    folder = load_folder(outside_folder, 32, 3, max_images=1)
    assert folder.names == ["gray.jpg"] and folder.images.shape == (1, 32, 32, 3)


def test_a_run_whose_images_changed_since_training_is_warned_about(run_copy, caplog):
    with caplog.at_level("WARNING", logger="betavae"):
        load(run_copy).data()
    assert "trained on other images" not in caplog.text  # the images it was trained on
    paths = RunPaths(run_copy)
    info = json.loads(paths.info.read_text())
    info["data"]["fingerprint"] = "drawn-by-an-older-betavae"
    paths.info.write_text(json.dumps(info))
    with caplog.at_level("WARNING", logger="betavae"):
        load(run_copy).data()
    assert "trained on other images" in caplog.text and "drawn-by-an-older-betavae" in caplog.text
