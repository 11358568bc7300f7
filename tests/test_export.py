"""`betavae export`: a run → a weights-only Hugging Face-style folder, loaded back by `betavae.load`,
`betavae.from_pretrained` (also from a Hub cache, offline) and by onnxruntime."""
from __future__ import annotations

import json
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

import betavae
from betavae.cli import main as cli
from betavae.evaluation import EvalOptions, evaluate_run
from betavae.evaluation.headline import read_headline
from betavae.export import export_run, from_pretrained
from betavae.export.card import parse_front_matter
from betavae.export.folder import is_export_folder
from betavae.inference import TrainedModel


@pytest.fixture(scope="module")
def evaluated_run(tiny_run, tmp_path_factory):
    """The tiny run, evaluated (no FID, few points), in a private folder."""
    root = shutil.copytree(tiny_run, tmp_path_factory.mktemp("export") / "run")
    evaluate_run(root, EvalOptions(fid=False, progress=False, disentanglement_points=200, dci_points=100))
    return root


@pytest.fixture(scope="module")
def exported(evaluated_run, tmp_path_factory):
    return export_run(evaluated_run, tmp_path_factory.mktemp("export") / "model", onnx=True).root


def test_export_then_load_decodes_identically(evaluated_run, exported):
    run, model = betavae.load(evaluated_run), betavae.load(exported)
    again = from_pretrained(str(exported))
    assert isinstance(model, TrainedModel) and model.run_dir == exported
    z = torch.randn(6, run.latent_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(run.decode(z), model.decode(z))
    assert torch.equal(run.decode(z), again.decode(z))
    x = run.decode(z)
    assert torch.equal(run.encode(x).mean, model.encode(x).mean)
    assert (model.image_size, model.channels, model.latent_dim) == (run.image_size, run.channels, run.latent_dim)


def test_export_holds_model_weights_only_and_a_complete_config(evaluated_run, exported):
    with safe_open(str(exported / "model.safetensors"), framework="pt") as handle:
        names = list(handle.keys())
    assert names and not any(n.startswith(("optimizer", "rng", "model.")) for n in names)
    assert set(names) == set(betavae.load(evaluated_run).model.state_dict())
    config = json.loads((exported / "config.json").read_text())
    assert config["library_name"] == "betavae" and config["betavae_version"] == betavae.__version__
    assert (config["image_size"], config["in_channels"], config["latent_dim"]) == (32, 1, 4)
    assert config["normalization"] == "unit" and config["model"]["channels"] == [8, 16]
    assert config["onnx"]["opset"] == 17
    assert {p.name for p in (exported / "figures").iterdir()} >= {"samples.png", "traversals.png"}
    assert not (exported / "checkpoints").exists() and is_export_folder(exported)


def test_the_card_has_front_matter_with_the_headline(evaluated_run, exported):
    card = (exported / "README.md").read_text()
    meta = parse_front_matter(card)
    assert meta["library_name"] == "betavae" and meta["license"] == "mit"
    assert meta["datasets"] == ["dsprites"] and "beta-vae" in meta["tags"] and "onnx" in meta["tags"]
    results = meta["model-index"][0]["results"][0]
    metrics = {m["type"]: m["value"] for m in results["metrics"]}
    headline = read_headline(evaluated_run).computed()
    assert metrics["psnr_val"] == pytest.approx(headline["psnr_val"]) and "mig" in metrics
    assert "n_val" not in metrics  # counts are stated in the text, not as metrics
    assert results["dataset"]["type"] == "dsprites" and results["task"]["type"]
    for text in ("β** = 1", "β·w** = 1", "8 steps × batch 16 = 128 training images", "N = 64",
                 "FID: not computed", "figures/samples.png", "figures/traversals.png", "from_pretrained"):
        assert text in card, text
    for link in ("figures/samples.png", "figures/traversals.png"):
        assert (exported / link).is_file()


def test_an_unevaluated_run_exports_without_metrics(tiny_run, tmp_path):
    out = export_run(tiny_run, tmp_path / "m").root
    meta = parse_front_matter((out / "README.md").read_text())
    assert "model-index" not in meta and meta["library_name"] == "betavae"
    assert "Not evaluated" in (out / "README.md").read_text()
    assert not (out / "encoder.onnx").exists() and json.loads((out / "config.json").read_text())["onnx"] is None


def test_loading_an_export_never_unpickles(exported, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading an export")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = betavae.load(exported)
    assert model.decode(torch.zeros(1, model.latent_dim)).shape == (1, 1, 32, 32)


def test_onnx_graphs_match_pytorch_with_a_dynamic_batch(exported):
    import onnxruntime

    model = betavae.load(exported)
    encoder = onnxruntime.InferenceSession(str(exported / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = onnxruntime.InferenceSession(str(exported / "decoder.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        z = torch.randn(batch, model.latent_dim, generator=torch.Generator().manual_seed(batch))
        images = model.decode(z)
        (onnx_images,) = decoder.run(None, {"z": z.numpy()})
        assert onnx_images.shape == (batch, 1, 32, 32)
        assert np.abs(onnx_images - images.numpy()).max() <= 1e-4
        assert onnx_images.min() >= 0 and onnx_images.max() <= 1
        mu, logvar = encoder.run(None, {"image": images.numpy()})
        posterior = model.encode(images)
        assert np.abs(mu - posterior.mean.numpy()).max() <= 1e-4
        assert np.abs(logvar - posterior.logvar.numpy()).max() <= 1e-4


def test_from_pretrained_reads_a_repo_id_from_the_hub_cache_offline(exported, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache, revision = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--tiny-betavae"
    shutil.copytree(exported, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)  # no local folder named someone/tiny-betavae
    model = betavae.from_pretrained("someone/tiny-betavae")
    z = torch.randn(3, model.latent_dim)
    assert torch.equal(model.decode(z), betavae.load(exported).decode(z))
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face Hub cache"):
        betavae.from_pretrained("someone/not-downloaded")


def test_a_repo_id_without_the_hub_extra_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"betavae\[hub\]"):
        betavae.from_pretrained("someone/tiny-betavae")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        betavae.from_pretrained("./missing/folder/x")


def test_load_tells_a_run_from_an_export_and_neither(tiny_run, exported, tmp_path):
    assert betavae.load(tiny_run).weights.name == "best.safetensors"
    assert betavae.load(exported).weights.name == "model.safetensors"
    with pytest.raises(ValueError, match="one set of weights"):
        betavae.load(exported, checkpoint="last")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        betavae.load(tmp_path / "empty")


def test_export_cli_refuses_other_folders_and_replaces_only_exports(tiny_run, tmp_path, capsys):
    out = tmp_path / "model"
    assert cli(["export", str(tiny_run), "--out", str(out)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    assert cli(["export", str(tiny_run), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["export", str(tiny_run), "--out", str(out), "--overwrite", "--checkpoint", "last"]) == 0
    assert json.loads((out / "config.json").read_text())["source"]["checkpoint"] == "last"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert cli(["export", str(tiny_run), "--out", str(other), "--overwrite"]) == 2
    assert "never deletes" in capsys.readouterr().err and (other / "notes.txt").is_file()
    assert cli(["export", str(out), "--out", str(tmp_path / "again")]) == 2  # an export is not a run
    assert "not a run folder" in capsys.readouterr().err


def test_push_to_uploads_the_folder(tiny_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs["private"]))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir())))
            return "https://huggingface.co/someone/tiny/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert cli(["export", str(tiny_run), "--out", str(tmp_path / "m"), "--push-to", "someone/tiny", "--private"]) == 0
    assert calls[0] == ("create", "someone/tiny", True)
    assert calls[1][0] == "upload" and {"config.json", "model.safetensors", "README.md"} <= set(calls[1][2])
    assert "pushed to someone/tiny" in capsys.readouterr().out


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        cli(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"betavae {betavae.__version__}"


def test_the_card_names_the_training_data():
    from conftest import tiny_config

    from betavae.export.card import _data_lines, dataset_id

    assert dataset_id(tiny_config(), {}) == "dsprites"
    prepared = tiny_config(data={"name": "prepared", "path": "data/celeba"})
    assert dataset_id(prepared, {"data": {"recipe": "celeba"}}) == "celeba"
    assert "`celeba` recipe" in _data_lines(prepared, {"data": {"recipe": "celeba"}}, 3)[0]
    from_file = tiny_config(data={"name": "dsprites-file", "path": "/data/dsprites.npz"})
    assert dataset_id(from_file, {}) == "dsprites"
    assert "dataset file `dsprites.npz`" in _data_lines(from_file, {}, 1)[0]


def test_an_interrupted_export_leaves_no_loadable_folder_and_keeps_the_old_one(tiny_run, tmp_path, monkeypatch):
    import betavae.export.card as card

    out = tmp_path / "m"
    export_run(tiny_run, out)
    before = (out / "model.safetensors").read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(card, "model_card", interrupted)  # after the weights, before config.json
    with pytest.raises(KeyboardInterrupt):
        export_run(tiny_run, out, checkpoint="last", overwrite=True)
    assert (out / "model.safetensors").read_bytes() == before and is_export_folder(out)  # the old export, whole
    with pytest.raises(KeyboardInterrupt):
        export_run(tiny_run, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging folder left behind


def test_export_refuses_a_bad_opset_and_push_without_the_extra(tiny_run, tmp_path, monkeypatch, capsys):
    assert cli(["export", str(tiny_run), "--out", str(tmp_path / "a"), "--opset", "0"]) != 0
    assert cli(["export", str(tiny_run), "--out", str(tmp_path / "a"), "--onnx", "--opset", "0"]) != 0
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    assert cli(["export", str(tiny_run), "--out", str(tmp_path / "a"), "--push-to", "someone/tiny"]) != 0
    assert "betavae[hub]" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # checked before anything is written


def test_a_damaged_best_checkpoint_exports_last_and_says_so(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    best = run / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="damaged"):
        paths = export_run(run, tmp_path / "m")
    source = json.loads(paths.config.read_text())["source"]
    assert source == {"run": "run", "checkpoint": "last", "weights": "last.safetensors"}
