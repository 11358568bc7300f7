"""evaluate's latent analysis on prepared data with per-image attributes (a fake CelebA)."""
import json

from betavae.config import validate_config
from betavae.evaluation.latent_meaning import attribute_analysis, factor_analysis
from betavae.inference import load
from betavae.runs import RunPaths
from betavae.training import train

from test_prepare import CELEBA_ATTRIBUTES, _celeba_folder, _prepare


def test_attribute_dimensions_of_a_model_trained_on_prepared_celeba(tmp_path):
    _prepare("celeba", _celeba_folder(tmp_path / "celeba"), tmp_path / "prepared")
    config = validate_config({
        "data": {"name": "prepared", "path": str(tmp_path / "prepared"), "image_size": 16},
        "model": {"preset": "tiny"}, "objective": {"reconstruction": "mse_sum"},
        "train": {"max_steps": 2, "batch_size": 4, "progress": False},
    })
    trained = load(train(config, tmp_path / "run").root)
    rows, paths = trained.data().val_indices, RunPaths(tmp_path / "run")
    assert factor_analysis(trained, paths, points=10, dci_points=5, seed=0) is None  # no factors

    result = attribute_analysis(trained, paths, rows, top_k=2)
    report = json.loads(paths.attributes.read_text())
    assert report["images"] == len(rows) and set(report["attributes"]) == set(CELEBA_ATTRIBUTES)
    for name, entries in report["attributes"].items():
        assert len(entries) == 2 and all(0 <= e["dim"] < 4 and 0 <= e["score"] <= 1 for e in entries)
        assert result["top_dims"][name] == [e["dim"] for e in entries]
