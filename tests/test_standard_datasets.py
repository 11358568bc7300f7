"""dSprites, Shapes3D and MPI3D read from their files (small files in the real layouts, reduced grids)."""
from __future__ import annotations

import io
import json
import pickle
import zipfile

import h5py
import numpy as np
import pytest

from betavae.config import ConfigError, validate_config
from betavae.data import DATA_SOURCES, build_data
from betavae.data import standard
from betavae.data.sprites import DSprites
from betavae.data.standard import DatasetFileError, DSpritesFile, FileImages, MPI3DFile, Shapes3DFile

DSPRITES_GRID = (1, 3, 2, 3, 4, 4)  # color, shape, scale, orientation, posX, posY (real: 1, 3, 6, 40, 32, 32)
SHAPES3D_GRID = (2, 2, 3, 2, 2, 3)  # real: 10, 10, 10, 8, 4, 15
MPI3D_GRID = (2, 2, 1, 1, 2, 3, 3)  # real: 6, 6, 2, 3, 3, 40, 40


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BETAVAE_CACHE", str(tmp_path / "cache"))


def _grid(sizes) -> np.ndarray:
    return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1).astype(np.int64)


def write_dsprites(path, compressed=True, grid=DSPRITES_GRID):
    """dSprites' keys and dtypes: imgs uint8 0/1 (N, 64, 64), latents_values float64, latents_classes int64,
    metadata (an object array)."""
    classes = _grid(grid)
    picks = [np.array([0]), np.arange(3), np.array([0, 5]), np.array([0, 10, 20]), np.array([0, 10, 20, 31]),
             np.array([0, 10, 20, 31])]
    sprite_factors = np.stack([picks[k][classes[:, k]] for k in range(1, 6)], axis=1)
    imgs = DSprites().coverage(sprite_factors).astype(np.uint8)
    spaces = [np.ones(1), np.arange(1.0, 4.0), np.linspace(0.5, 1, 6), np.linspace(0, 2 * np.pi, 40),
              np.linspace(0, 1, 32), np.linspace(0, 1, 32)]
    values = np.stack([spaces[k][picks[k][classes[:, k]]] for k in range(6)], axis=1)
    save = np.savez_compressed if compressed else np.savez
    metadata = np.array({"description": "as the real file: a pickled dict"}, dtype=object)
    save(path, imgs=imgs, latents_values=values, latents_classes=classes, metadata=metadata)
    return imgs


def write_shapes3d(path, chunked=False, grid=SHAPES3D_GRID):
    """3dshapes.h5's datasets: images uint8 (N, 64, 64, 3), labels float64 (N, 6) of factor values."""
    classes = _grid(grid)
    spaces = [np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
              np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    labels = np.stack([spaces[k][classes[:, k]] for k in range(6)], axis=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(classes), 64, 64, 3), dtype=np.uint8)
    images[:, :8, :8, 0] = np.arange(len(classes))[:, None, None]  # each image names its row
    with h5py.File(path, "w") as f:
        options = {"chunks": (4, 64, 64, 3), "compression": "gzip"} if chunked else {}
        f.create_dataset("images", data=images, **options)
        f.create_dataset("labels", data=labels)
    return images, labels


def write_mpi3d(path, compressed=False, grid=MPI3D_GRID):
    images = np.random.default_rng(1).integers(0, 256, (int(np.prod(grid)), 64, 64, 3), dtype=np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, images=images)
    return images


# ----- dSprites ---------------------------------------------------------------------------------
def test_dsprites_compressed_file_is_cached_bit_packed_once_and_read_by_factor(tmp_path):
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    imgs = write_dsprites(path)
    data = DSpritesFile(path)
    assert data.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert data.factor_sizes == DSPRITES_GRID[1:] and len(data) == len(imgs) and data.channels == 1
    assert np.allclose(data.factor_values("scale"), [0.5, 1.0])
    cached = list((tmp_path / "cache" / "datasets").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith(".npy") and "packbits" in cached[0].name
    assert cached[0].stat().st_size < imgs.nbytes / 7  # 8 pixels a byte
    assert "cache" in data.describe()["access"]
    factors = data.sample_factors(50, np.random.default_rng(0))
    rows = data.factors_to_index(factors)
    assert np.array_equal(data.render(factors), imgs[rows][..., None] * 255)
    stamp = cached[0].stat().st_mtime_ns
    again = DSpritesFile(path)  # the cache is reused, not rewritten
    assert cached[0].stat().st_mtime_ns == stamp and np.array_equal(again.render(factors), data.render(factors))
    cached[0].write_bytes(cached[0].read_bytes()[:-512])  # a damaged cache is reported, not read
    assert "delete the cache file" in _one_line_error(lambda: DSpritesFile(path))


def test_dsprites_stored_file_is_read_in_place(tmp_path):
    path = tmp_path / "d.npz"
    imgs = write_dsprites(path, compressed=False)
    data = DSpritesFile(path)
    assert data.describe()["access"] == "read in place from the file (uncompressed zip member)"
    assert not (tmp_path / "cache").exists()
    assert np.array_equal(data.render(data.index_to_factors(np.arange(len(imgs)))), imgs[..., None] * 255)


def test_restrict_and_smaller_image_sizes(tmp_path):
    path = tmp_path / "d.npz"
    imgs = write_dsprites(path)
    small = DSpritesFile(path, image_size=32)
    rendered = small.render(np.array([[1, 1, 0, 2, 2]]))
    assert rendered.shape == (1, 32, 32, 1) and set(np.unique(rendered)) <= {0, 64, 128, 191, 255}
    row = small.factors_to_index(np.array([[1, 1, 0, 2, 2]]))[0]
    expected = np.rint(imgs[row].reshape(32, 2, 32, 2).mean(axis=(1, 3)) * 255)  # as the built-in dsprites
    assert np.array_equal(rendered[0, :, :, 0], expected)
    only = DSpritesFile(path).restrict(shape=[2])
    assert only.factor_sizes == (1, 2, 3, 4, 4) and set(only.sample_factors(40, np.random.default_rng(0))[:, 0]) == {2}


# ----- Shapes3D ---------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True])
def test_shapes3d_reads_grid_from_labels_and_images_by_row(tmp_path, chunked):
    path = tmp_path / "3dshapes.h5"
    images, labels = write_shapes3d(path, chunked=chunked)
    data = Shapes3DFile(path)
    assert data.factor_sizes == SHAPES3D_GRID and data.channels == 3
    assert np.allclose(data.factor_values("scale"), labels[:, 3][[0, 6]])
    access = data.describe()["access"]
    assert ("h5py" in access) if chunked else ("read in place" in access)
    rows = np.array([40, 3, 3, 70, 0])  # any order, repeats
    assert np.array_equal(data.render(data.index_to_factors(rows)), images[rows])
    assert np.array_equal(pickle.loads(pickle.dumps(data)).render(data.index_to_factors(rows)), images[rows])
    assert np.array_equal(data.read(np.arange(20, 60)), images[20:60])  # one run of consecutive rows
    resized = Shapes3DFile(path, image_size=32).render(data.index_to_factors(rows))
    assert resized.shape == (5, 32, 32, 3) and abs(float(resized.mean()) - float(images[rows].mean())) < 2


# ----- MPI3D ------------------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_mpi3d_grid_and_rows(tmp_path, compressed):
    path = tmp_path / "mpi3d_toy.npz"
    images = write_mpi3d(path, compressed=compressed)
    data = MPI3DFile(path, factor_sizes=MPI3D_GRID)
    assert data.factor_names[-2:] == ("horizontal_axis", "vertical_axis") and data.factor_sizes == MPI3D_GRID
    assert ("cache" in data.describe()["access"]) == compressed
    rows = np.array([71, 0, 35, 36])
    assert np.array_equal(data.render(data.index_to_factors(rows)), images[rows])
    assert np.array_equal(pickle.loads(pickle.dumps(data)).render(data.index_to_factors(rows)), images[rows])
    with pytest.raises(DatasetFileError, match=r"1036800, 64, 64, 3.*found 'images' uint8 \(72, 64, 64, 3\)"):
        MPI3DFile(path)  # the published grid does not match this small file


# ----- wrong files ------------------------------------------------------------------------------
def _one_line_error(call) -> str:
    with pytest.raises(DatasetFileError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and "expected" in message
    return message


def test_wrong_or_truncated_files_name_what_was_expected_and_found(tmp_path):
    good = tmp_path / "good.npz"
    write_dsprites(good)
    missing = tmp_path / "missing.npz"
    np.savez(missing, imgs=np.zeros((4, 64, 64), np.uint8))
    message = _one_line_error(lambda: DSpritesFile(missing))
    assert "latents_classes" in message and "found 'imgs' uint8 (4, 64, 64)" in message
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "not a readable dSprites .npz" in _one_line_error(lambda: DSpritesFile(truncated))
    assert "does not exist" in _one_line_error(lambda: DSpritesFile(tmp_path / "nothing.npz"))
    shuffled = tmp_path / "shuffled.npz"
    with np.load(good) as f:
        np.savez(shuffled, imgs=f["imgs"], latents_values=f["latents_values"],
                 latents_classes=f["latents_classes"][::-1])
    assert "row-major grid" in _one_line_error(lambda: DSpritesFile(shuffled))

    h5 = tmp_path / "3dshapes.h5"
    write_shapes3d(h5)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    assert "not a readable Shapes3D .h5 (" in _one_line_error(lambda: Shapes3DFile(cut))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("pictures", data=np.zeros((2, 64, 64, 3), np.uint8))
    message = _one_line_error(lambda: Shapes3DFile(tmp_path / "other.h5"))
    assert "'images' uint8 (480000, 64, 64, 3)" in message and "found 'pictures' uint8 (2, 64, 64, 3)" in message
    assert "not a readable Shapes3D" in _one_line_error(lambda: Shapes3DFile(good))  # an npz is not an h5

    stored = tmp_path / "mpi3d.npz"
    write_mpi3d(stored)
    head = tmp_path / "mpi3d_head.npz"
    head.write_bytes(stored.read_bytes()[:-100])  # a download cut short: the zip directory is lost
    assert "not a readable MPI3D .npz" in _one_line_error(lambda: MPI3DFile(head, factor_sizes=MPI3D_GRID))
    short = tmp_path / "mpi3d_short.npz"  # a readable zip whose member has less data than its header says
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (72, 64, 64, 3)})
    with zipfile.ZipFile(short, "w", zipfile.ZIP_STORED) as z:
        z.writestr("images.npy", header.getvalue() + bytes(1000))
    assert "'images' is truncated" in _one_line_error(lambda: MPI3DFile(short, factor_sizes=MPI3D_GRID))


def test_truncated_compressed_member_fails_and_leaves_no_cache(tmp_path):
    path = tmp_path / "d.npz"
    write_dsprites(path)
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    broken = tmp_path / "broken.npz"
    with zipfile.ZipFile(broken, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in members.items():
            z.writestr(name, content[: len(content) // 2] if name == "imgs.npy" else content)
    message = _one_line_error(lambda: DSpritesFile(broken))
    assert "'imgs' is truncated" in message
    assert not any((tmp_path / "cache" / "datasets").glob("*"))


def test_unusable_cache_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    write_dsprites(path)
    (tmp_path / "not_a_folder").write_text("x")
    monkeypatch.setenv("BETAVAE_CACHE", str(tmp_path / "not_a_folder"))
    with pytest.raises(DatasetFileError) as error:
        DSpritesFile(path)
    message = str(error.value)
    assert "\n" not in message and "BETAVAE_CACHE" in message and "cannot convert 'imgs'" in message


def test_interrupted_conversion_leaves_no_cache_that_is_trusted(tmp_path, monkeypatch):
    path = tmp_path / "d.npz"
    imgs = write_dsprites(path)
    monkeypatch.setattr(standard, "_COPY_BYTES", 64 * 64)  # one row per step, so the stop is mid-member
    real_read, calls = standard._read_exactly, []

    def interrupted(stream, size):
        calls.append(size)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the conversion
        return real_read(stream, size)

    monkeypatch.setattr(standard, "_read_exactly", interrupted)
    with pytest.raises(KeyboardInterrupt):
        DSpritesFile(path)
    cache = tmp_path / "cache" / "datasets"
    assert not any(cache.glob("*"))
    monkeypatch.setattr(standard, "_read_exactly", real_read)
    (cache / ".leftover-of-a-kill-9.tmp").write_bytes(b"half")  # what SIGKILL can leave: ignored
    data = DSpritesFile(path)
    assert np.array_equal(data.read(np.arange(len(imgs)))[..., 0] // 255, imgs)


# ----- configs, build_data, train and evaluate ---------------------------------------------------
def test_config_names_derive_from_the_registry_and_need_a_path(tmp_path):
    assert {"dsprites-file", "shapes3d-file", "mpi3d-file", "dsprites", "prepared"} <= set(DATA_SOURCES)
    with pytest.raises(ConfigError, match="data.path is required when data.name is 'shapes3d-file'"):
        validate_config({"data": {"name": "shapes3d-file"}})
    with pytest.raises(ConfigError, match="mpi3d-file"):
        validate_config({"data": {"name": "no-such-data"}})
    config = validate_config({"data": {"name": "dsprites-file", "path": "x.npz"}})
    assert config.data.path == "x.npz"


def test_build_data_takes_a_seeded_subset_read_lazily(tmp_path):
    path = tmp_path / "d.npz"
    imgs = write_dsprites(path)
    config = validate_config({"data": {"name": "dsprites-file", "path": str(path), "num_images": 100,
                                       "image_size": 32, "seed": 3}, "model": {"preset": "tiny"}})
    data, again = build_data(config.data), build_data(config.data)
    assert isinstance(data.images, FileImages) and data.images.shape == (100, 32, 32, 1)
    assert np.array_equal(data.images.rows, again.images.rows) and data.fingerprint == again.fingerprint
    assert len(data.train_indices) == 75 and len(data.val_indices) == 25
    assert np.array_equal(data.factors, data.source.index_to_factors(data.images.rows))
    picks = np.array([7, 2, 2, 99])
    assert np.array_equal(data.images[picks], data.source.render(data.factors[picks]))
    assert np.array_equal(data.images[5:8], data.images[[5, 6, 7]]) and data.images[4].shape == (32, 32, 1)
    expected = np.rint(imgs[data.images.rows[picks]].reshape(4, 32, 2, 32, 2).mean(axis=(2, 4)) * 255)
    assert np.array_equal(data.images[picks][..., 0], expected)
    whole = build_data(validate_config({"data": {"name": "dsprites-file", "path": str(path),
                                                 "num_images": 10**6}}).data)
    assert len(whole.images) == len(imgs) and whole.info["num_images"] == len(imgs)
    other = validate_config({"data": {"name": "dsprites-file", "path": str(path), "num_images": 100, "seed": 4}})
    assert build_data(other.data).fingerprint != build_data(validate_config(
        {"data": {"name": "dsprites-file", "path": str(path), "num_images": 100, "seed": 3}}).data).fingerprint


def test_mpi3d_and_shapes3d_through_the_config(tmp_path, monkeypatch):
    monkeypatch.setattr(standard, "MPI3D_FACTOR_SIZES", MPI3D_GRID)
    write_mpi3d(tmp_path / "mpi3d_real.npz")
    write_shapes3d(tmp_path / "3dshapes.h5")
    for name, file in (("mpi3d-file", "mpi3d_real.npz"), ("shapes3d-file", "3dshapes.h5")):
        config = validate_config({"data": {"name": name, "path": str(tmp_path / file), "num_images": 40}})
        data = build_data(config.data)
        assert data.images.shape == (40, 64, 64, 3) and data.factors.shape[1] == len(data.factor_names)
        assert np.array_equal(data.images[[0, 39]], data.source.render(data.factors[[0, 39]]))


def test_train_and_evaluate_on_a_dsprites_file(tmp_path, capsys):
    from betavae.cli import main
    from betavae.runs import RunPaths

    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    write_dsprites(path)
    out = tmp_path / "run"
    overrides = ["--set", "data.name=dsprites-file", "--set", f"data.path={path}", "--set", "data.num_images=200",
                 "--set", "data.image_size=32", "--set", "model.preset=tiny", "--set", "train.max_steps=4",
                 "--set", "train.batch_size=16", "--set", "train.progress=false", "--set", "train.val_every=2"]
    assert main(["train", *overrides, "--out", str(out)]) == 0
    assert main(["evaluate", str(out), "--no-fid", "--quiet", "--disentanglement-points", "120",
                 "--dci-points", "60", "--rendered-points", "40"]) == 0
    report = json.loads(RunPaths(out).disentanglement.read_text())
    assert report["points"]["origin"] == "rendered from the ground-truth generator"
    assert report["factor_names"] == ["shape", "scale", "orientation", "posX", "posY"]
    for key in ("mig", "sap", "dci_disentanglement", "beta_vae", "factor_vae"):
        assert np.isfinite(report["summary"][key]), key
