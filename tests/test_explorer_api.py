"""The explorer's JSON/PNG API on a tiny trained run (FastAPI's TestClient, no network)."""
from __future__ import annotations

import argparse
import base64
import io
import json
import math
import re
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from betavae.explorer.app import create_app
from betavae.explorer.cli import add_parser, run_explorer
from betavae.explorer.state import MAX_UPLOAD_BYTES, load_models, read_labels
from betavae.runs import RunPaths


@pytest.fixture(scope="module")
def models(tiny_run):
    return load_models([tiny_run, tiny_run])


@pytest.fixture(scope="module")
def client(models):
    # The Host a browser sends for http://127.0.0.1:8765 (TestClient's default, "testserver", is refused).
    with TestClient(create_app(models, top_k=2), base_url="http://127.0.0.1:8765") as client:
        yield client


def _png(client, path, body) -> Image.Image:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def _upload(client, data: bytes, name="image.png", model_id=0):
    return client.post(f"/api/models/{model_id}/encode", files={"file": (name, data, "application/octet-stream")})


def _png_file(size=(50, 40), mode="RGB") -> bytes:
    array = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def test_models_are_listed_with_dimensions_ranked_by_kl(client, models):
    listed = client.get("/api/models").json()["models"]
    assert [m["id"] for m in listed] == [0, 1]
    first = listed[0]
    assert (first["latent_dim"], first["image_size"], first["top_k"]) == (4, 32, 2)
    kls = [d["kl"] for d in first["dims"]]
    assert sorted(d["dim"] for d in first["dims"]) == [0, 1, 2, 3]
    assert kls == sorted(kls, reverse=True)
    assert first["dims"][0]["dim"] == int(np.argmax(models[0].kl))
    assert "/" not in first["name"]  # the folder name only, never a path


def test_decode_returns_a_png_of_the_model_size(client):
    image = _png(client, "/api/models/0/decode", {"z": [0.0, 0.5, -0.5, 1.0]})
    assert image.size == (32, 32)
    assert image.mode == "L"  # dSprites has one channel


def test_a_slider_change_changes_the_image(client):
    top = client.get("/api/models").json()["models"][0]["dims"][0]["dim"]
    z = [0.0] * 4
    before = np.asarray(_png(client, "/api/models/0/decode", {"z": z}))
    z[top] = 3.0
    after = np.asarray(_png(client, "/api/models/0/decode", {"z": z}))
    assert np.abs(before.astype(int) - after.astype(int)).sum() > 0
    again = np.asarray(_png(client, "/api/models/0/decode", {"z": z}))
    np.testing.assert_array_equal(after, again)  # decoding is deterministic


@pytest.mark.parametrize("body, status, message", [
    ({"z": [0.0, 0.0, 0.0]}, 400, "needs 4"),
    ({"z": [0.0] * 5}, 400, "needs 4"),
    ({"z": [0.0, 0.0, 0.0, 10.5]}, 400, "finite"),
    ({"z": [0.0, 0.0, 0.0, -1e308]}, 400, "finite"),
    ({"z": ["a", 0.0, 0.0, 0.0]}, 422, None),
    ({"w": [0.0] * 4}, 422, None),
])
def test_bad_latent_vectors_are_refused(client, body, status, message):
    response = client.post("/api/models/0/decode", json=body)
    assert response.status_code == status
    if message:
        assert message in response.json()["detail"]


def test_non_finite_latent_values_are_refused(client):
    for token in ("NaN", "Infinity"):
        response = client.post("/api/models/0/decode", content=f'{{"z": [0, 0, 0, {token}]}}',
                               headers={"content-type": "application/json"})
        assert response.status_code in (400, 422)


def test_unknown_models_are_404(client):
    assert client.post("/api/models/2/decode", json={"z": [0.0] * 4}).status_code == 404
    assert client.get("/api/models/-1/prior").status_code == 404
    assert "no model 7" in client.get("/api/models/7/validation/0").json()["detail"]
    assert client.get("/api/models/..%2F..%2Fetc/prior").status_code in (404, 422)


def test_prior_is_seeded(client):
    first, again = (client.get("/api/models/0/prior?seed=5").json()["z"] for _ in range(2))
    other = client.get("/api/models/0/prior?seed=6").json()["z"]
    assert first == again != other and len(first) == 4


def test_validation_image_is_encoded(client, models):
    body = client.get("/api/models/0/validation/3").json()
    trained = models[0].trained
    expected = trained.encode(trained.images(trained.data().val_indices[3:4])).mean[0]
    np.testing.assert_allclose(body["z"], expected.numpy(), atol=1e-5)
    assert body["image"].startswith("data:image/png;base64,")
    assert client.get("/api/models/0/validation/100000").status_code == 404


def test_upload_is_encoded(client, models):
    response = _upload(client, _png_file(size=(50, 40)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["z"]) == 4 and all(math.isfinite(v) for v in body["z"])
    shown = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1])))
    assert shown.size == (32, 32)


def test_an_uploaded_validation_image_encodes_like_the_validation_endpoint(client, models):
    trained = models[0].trained
    tile = trained.data().images[trained.data().val_indices[2]][..., 0]
    buffer = io.BytesIO()
    Image.fromarray(tile).save(buffer, format="PNG")
    uploaded = _upload(client, buffer.getvalue()).json()["z"]
    np.testing.assert_allclose(uploaded, client.get("/api/models/0/validation/2").json()["z"], atol=1e-5)


@pytest.mark.parametrize("data", [b"not an image at all", b"", _png_file()[:60], b"GIF89a" + b"\0" * 40])
def test_non_image_uploads_are_400(client, data):
    response = _upload(client, data, name="notes.txt")
    assert response.status_code == 400
    assert "not an image" in response.json()["detail"]


def test_oversize_uploads_are_refused(client):
    response = _upload(client, b"\x89PNG" + b"\0" * MAX_UPLOAD_BYTES)
    assert response.status_code == 413
    assert "MB" in response.json()["detail"]


def test_traversal_strip_has_one_image_per_step(client):
    strip = _png(client, "/api/models/0/traverse", {"z": [0.0] * 4, "dim": 1, "steps": 5})
    assert strip.size == (5 * (32 + 2) + 2, 32 + 4)
    assert client.post("/api/models/0/traverse", json={"z": [0.0] * 4, "dim": 4}).status_code == 400
    assert client.post("/api/models/0/traverse", json={"z": [0.0] * 4, "dim": 0, "steps": 500}).status_code == 422


def test_export_zip_has_n_pngs_and_a_manifest_of_the_fixed_and_swept_values(client):
    body = {"n": 5, "seed": 3, "fixed": {"0": 1.5}, "sweeps": {"2": [-2.0, 2.0]}}
    response = client.post("/api/models/1/export", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    pngs = sorted(n for n in archive.namelist() if n.endswith(".png"))
    assert len(pngs) == 5 and set(archive.namelist()) == {*pngs, "manifest.json"}
    assert Image.open(archive.open(pngs[0])).size == (32, 32)
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["fixed"] == {"0": 1.5} and manifest["sweeps"] == {"2": [-2.0, 2.0]}
    assert (manifest["seed"], manifest["model_id"], manifest["latent_dim"]) == (3, 1, 4)
    assert "/" not in manifest["run"]
    codes = np.array([s["z"] for s in manifest["samples"]])
    assert [s["file"] for s in manifest["samples"]] == pngs
    np.testing.assert_allclose(codes[:, 0], 1.5)
    np.testing.assert_allclose(codes[:, 2], np.linspace(-2, 2, 5), atol=1e-6)
    assert codes[:, 1].std() > 0  # free dims are drawn from the prior


@pytest.mark.parametrize("body, status", [
    ({"n": 1001}, 422),
    ({"n": 0}, 422),
    ({"n": 3, "fixed": {"9": 0.0}}, 400),
    ({"n": 3, "fixed": {"0": 50.0}}, 400),
    ({"n": 3, "fixed": {"0": 1.0}, "sweeps": {"0": [-1.0, 1.0]}}, 400),
])
def test_bad_exports_are_refused(client, body, status):
    assert client.post("/api/models/0/export", json=body).status_code == status


def test_page_is_self_contained(client):
    page = client.get("/").text
    assert "<script" in page and "/api/models" in page
    assert "http://" not in page and "https://" not in page
    assert re.search(r"<script[^>]*\bsrc=|<link", page) is None


def test_labels_come_from_the_disentanglement_report(tmp_path):
    assert read_labels(tmp_path) == {}
    report = RunPaths(tmp_path).disentanglement
    report.parent.mkdir()
    report.write_text("{not json")
    assert read_labels(tmp_path) == {}
    report.write_text(json.dumps({"dimensions": [{"dim": 1, "label": "scale"}, {"dim": 2}]}))
    assert read_labels(tmp_path) == {1: "scale"}


def test_cli_defaults_bind_localhost_and_a_missing_run_is_an_error(tmp_path):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explore", str(tmp_path / "missing")])
    assert (args.host, args.port, args.top_k, args.func) == ("127.0.0.1", 8765, 10, run_explorer)
    assert args.allow_host == []
    with pytest.raises(FileNotFoundError, match="missing"):
        args.func(args)


@pytest.fixture(scope="module")
def data_client(tiny_run, tmp_path_factory):
    """A client over a private copy of the run (the gmm sampler is fitted and stored into it on first use)."""
    import shutil

    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("explorer-samplers") / "run")
    with TestClient(create_app(load_models([run]), top_k=2), base_url="http://127.0.0.1:8765") as client:
        yield client, run


def test_a_code_like_the_data_comes_from_the_fitted_sampler(data_client):
    client, run = data_client
    body = client.get("/api/models/0/prior?seed=5&sampler=gmm").json()
    assert body["sampler"] == "gmm" and len(body["z"]) == 4 and all(abs(v) <= 10 for v in body["z"])
    assert client.get("/api/models/0/prior?seed=5&sampler=gmm").json()["z"] == body["z"]
    assert RunPaths(run).sampler("gmm").is_file()
    prior = client.get("/api/models/0/prior?seed=5&sampler=prior").json()["z"]
    assert prior == client.get("/api/models/0/prior?seed=5").json()["z"]
    for bad in ("vamp", "", "../gmm", "GMM"):
        assert client.get(f"/api/models/0/prior?seed=5&sampler={bad}").status_code == 422


def test_the_export_manifest_names_the_sampler_and_its_settings(data_client):
    client, _ = data_client
    body = {"n": 4, "seed": 2, "fixed": {"0": 1.25}, "sampler": "gmm"}
    response = client.post("/api/models/0/export", json=body)
    assert response.status_code == 200, response.text
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(response.content)).read("manifest.json"))
    assert manifest["sampler"]["kind"] == "gmm" and "components" in manifest["sampler"]
    assert "active_dims" in manifest["sampler"] and manifest["fixed"] == {"0": 1.25}
    np.testing.assert_allclose([s["z"][0] for s in manifest["samples"]], 1.25)
    prior = json.loads(zipfile.ZipFile(io.BytesIO(client.post("/api/models/0/export", json={"n": 2}).content))
                       .read("manifest.json"))
    assert prior["sampler"]["kind"] == "prior"
    assert client.post("/api/models/0/export", json={"n": 2, "sampler": "vamp"}).status_code == 422
    assert client.post("/api/models/0/export", json={"n": 2, "sampler": 1}).status_code == 422
