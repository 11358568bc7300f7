"""`betavae prepare`: recipes, bad input, the decode-once cache and its split."""
from __future__ import annotations

import argparse
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from betavae.data import imageio
from betavae.data.cli import add_parser
from betavae.data.prepare import PrepareOptions, prepare
from betavae.data.prepared import (
    PrepareError,
    load_attributes,
    load_names,
    load_prepared,
    read_manifest,
)
from betavae.data.recipes import base, cars, cats, celeba

# --- helpers that write test images ---------------------------------------------------------------


def _photo(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base_colour = rng.uniform(40, 215, size=3)
    slope = rng.uniform(-60, 60, size=(2, 3))
    image = base_colour + x[..., None] * slope[0] + y[..., None] * slope[1]
    return np.clip(image, 0, 255).astype(np.uint8)


def _save(path: Path, image: np.ndarray | Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(path, **kwargs)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def _png(path: Path, width: int, height: int, bit_depth: int, colour_type: int, raw: bytes) -> Path:
    """A PNG written by hand (Pillow cannot write 16-bit RGB)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IEND", b""))
    return path


def _rgb16_png(path: Path, image: np.ndarray) -> Path:
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in image)
    return _png(path, image.shape[1], image.shape[0], 16, 2, rows)


def _bomb_png(path: Path, side: int) -> Path:
    """Only a header claiming ``side × side`` pixels: Pillow's bomb check fires on open."""
    return _png(path, side, side, 8, 0, b"\x00" * 16)


def _filled(size: tuple[int, int], value: list[int], dtype=np.uint8) -> np.ndarray:
    return np.broadcast_to(np.array(value, dtype), (*size, len(value))).copy()


def _quiet(message: str) -> None:
    pass


def _prepare(recipe_name: str, source: Path, out: Path, log=_quiet, workers=1, **options) -> dict:
    """``prepare`` at 16×16 unless told otherwise; ``options`` are PrepareOptions fields."""
    opts = PrepareOptions(size=options.pop("size", 16), **options)
    return prepare(recipe_name, source, out, opts, workers=workers, progress=False, log=log)


def _rows_by_name(out: Path) -> dict[str, np.ndarray]:
    images = load_prepared(out).images
    return {name: images[i] for i, name in enumerate(load_names(out))}


def _skip_reasons(manifest: dict) -> dict[str, str]:
    return {entry["file"]: entry["reason"] for entry in manifest["skipped"]}


def _good_folder(root: Path, count: int = 8) -> Path:
    for k in range(count):
        _save(root / f"img_{k:02d}.jpg", _photo(k, 24, 32), quality=95)
    return root


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_input(tmp_path_factory) -> tuple[Path, dict]:
    """A folder with good images and every kind of bad one, prepared once at 16×16 RGB."""
    root = tmp_path_factory.mktemp("bad")
    source = _good_folder(root / "src", count=6)
    jpeg = io.BytesIO()
    Image.fromarray(_photo(99, 48, 48)).save(jpeg, "JPEG", quality=95)
    (source / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (source / "empty.jpg").write_bytes(b"")
    (source / "notes.png").write_text("this is not an image\n")
    _save(source / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=100)
    gray16 = np.zeros((16, 16), np.uint16)
    gray16[:8, :8], gray16[:8, 8:], gray16[8:, :8], gray16[8:, 8:] = 0, 25700, 65535, 1000
    _save(source / "gray16.png", gray16)
    _rgb16_png(source / "rgb16.png", _filled((16, 16), [65535, 32896, 0], np.uint16))
    _save(source / "rgba.png", _filled((16, 16), [255, 0, 0, 128]))
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (8, 0, 16, 16))
    _save(source / "palette.png", palette, transparency=0)
    _save(source / "gray.png", np.full((16, 16), 77, np.uint8))
    _save(source / "float.tif", np.full((16, 16), 0.5, np.float32))
    _save(source / "small.png", np.full((8, 8, 3), 200, np.uint8))
    _bomb_png(source / "bomb_error.png", 20_000)  # above 2 × Pillow's limit: DecompressionBombError
    _bomb_png(source / "bomb_warning.png", 10_000)  # above the limit: DecompressionBombWarning
    rotated = np.zeros((16, 32), np.uint8)
    rotated[:, 16:] = 255  # stored: left half black; EXIF 6 turns it 90° clockwise → top half black
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(source / "rotated.jpg", rotated, exif=exif, quality=100)
    out = root / "out"
    return out, _prepare("folder", source, out)


def test_bad_files_are_skipped_with_their_reason(bad_input):
    out, manifest = bad_input
    reasons = _skip_reasons(manifest)
    assert reasons == {
        "truncated.jpg": imageio.CORRUPT,
        "empty.jpg": imageio.EMPTY,
        "notes.png": imageio.NOT_AN_IMAGE,
        "float.tif": imageio.UNSUPPORTED,
        "bomb_error.png": imageio.BOMB,
        "bomb_warning.png": imageio.BOMB,
    }
    assert manifest["counts"]["skipped_by_reason"][imageio.BOMB] == 2
    assert manifest["counts"]["kept"] == 6 + 8  # the good ones and every convertible one
    assert not set(reasons) & set(load_names(out))


def test_conversions_give_the_right_pixels(bad_input):
    out, manifest = bad_input
    rows = _rows_by_name(out)
    assert np.abs(rows["cmyk.jpg"].astype(int) - [255, 0, 0]).max() <= 3
    gray16 = rows["gray16.png"]
    assert gray16.shape == (16, 16, 3) and (gray16 == gray16[..., :1]).all()
    corners = [gray16[0, 0, 0], gray16[0, 15, 0], gray16[15, 0, 0], gray16[15, 15, 0]]
    assert corners == [0, 100, 255, 4]  # value / 257
    assert (rows["rgb16.png"] == [255, 128, 0]).all()
    assert (np.abs(rows["rgba.png"].astype(int) - [255, 127, 127]) <= 1).all()  # 50 % red on white
    palette = rows["palette.png"]
    assert (palette[:, :8] == 255).all() and (palette[:, 8:] == [0, 0, 255]).all()
    assert (rows["gray.png"] == 77).all()
    assert (rows["small.png"] == 200).all()
    converted = manifest["counts"]["converted"]
    assert converted[imageio.NOTE_CMYK] == 1 and converted[imageio.NOTE_16BIT] == 1
    assert converted[imageio.NOTE_ALPHA] == 2 and converted[imageio.NOTE_PALETTE] == 1
    assert converted[imageio.NOTE_GRAY_TO_RGB] == 3  # gray, gray16 and rotated
    assert converted[imageio.NOTE_UPSCALED] == 1


def test_exif_orientation_is_applied(bad_input):
    out, manifest = bad_input
    rotated = _rows_by_name(out)["rotated.jpg"][..., 0].astype(int)
    assert rotated[:6].max() < 40 and rotated[-6:].min() > 215  # top black, bottom white
    assert manifest["counts"]["converted"][imageio.NOTE_EXIF_ROTATED] == 1


def test_small_images_can_be_skipped(tmp_path):
    source = _good_folder(tmp_path / "src", count=4)
    _save(source / "tiny.png", np.zeros((8, 12, 3), np.uint8))
    manifest = _prepare("folder", source, tmp_path / "out", small="skip")
    assert _skip_reasons(manifest) == {"tiny.png": imageio.TOO_SMALL}
    assert manifest["counts"]["kept"] == 4


def test_background_colour_and_grayscale(tmp_path):
    source = tmp_path / "src"
    _save(source / "a.png", _filled((16, 16), [0, 0, 0, 0]))
    _save(source / "b.png", _filled((16, 16), [255, 0, 0, 255]))
    _prepare("folder", source, tmp_path / "out", background=(0, 128, 0), val_fraction=0.5)
    rows = _rows_by_name(tmp_path / "out")
    assert (rows["a.png"] == [0, 128, 0]).all() and (rows["b.png"] == [255, 0, 0]).all()
    _prepare("folder", source, tmp_path / "gray", grayscale=True, val_fraction=0.5)
    gray = _rows_by_name(tmp_path / "gray")
    assert gray["b.png"].shape == (16, 16, 1)
    assert (gray["b.png"] == 76).all()  # 0.299 · 255, Pillow's luma


def test_resize_shorter_side_then_centre_crop():
    ramp = np.repeat(np.arange(40, dtype=np.uint8)[None, :] * 6, 20, axis=0)  # 40 wide, 20 high
    image = Image.fromarray(ramp)
    resized, notes = imageio.resize_center_crop(image, 10, "upscale")
    assert resized.size == (10, 10) and notes == []
    columns = np.asarray(resized)[0]
    assert 55 < columns[0] < 70 and 160 < columns[-1] < 182  # the ramp's middle half, x 10 … 30


def test_crop_square_fits_inside_or_skips():
    image = Image.new("RGB", (40, 30))
    assert imageio.crop_square(image, 38, 2, 20).size == (20, 20)  # shifted inside
    assert imageio.crop_square(image, 20, 15, 100).size == (30, 30)  # shrunk to fit
    with pytest.raises(imageio.SkipImage) as raised:
        imageio.crop_square(image, 80, 15, 10)
    assert raised.value.reason == imageio.BAD_REGION


def test_unusable_sources_raise_one_clear_error(tmp_path):
    with pytest.raises(PrepareError, match="does not exist"):
        _prepare("folder", tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no usable image"):
        _prepare("folder", tmp_path / "empty", tmp_path / "out")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_text("text")
    with pytest.raises(PrepareError, match="no usable image"):
        _prepare("folder", tmp_path / "bad", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the cache ------------------------------------------------------------------------------------


def test_load_prepared_round_trip(tmp_path):
    source = _good_folder(tmp_path / "src", count=8)
    manifest = _prepare("folder", source, tmp_path / "out", size=20, seed=3)
    data = load_prepared(tmp_path / "out")
    assert isinstance(data.images, np.memmap) and not data.images.flags.writeable
    assert data.images.shape == (8, 20, 20, 3) and data.images.dtype == np.uint8
    assert (len(data.train_indices), len(data.val_indices)) == (6, 2)
    assert sorted(np.concatenate([data.train_indices, data.val_indices])) == list(range(8))
    assert data.fingerprint == manifest["fingerprint"]
    assert (data.info["recipe"], data.info["images"], data.info["image_size"]) == ("folder", 8, 20)
    with Image.open(source / "img_03.jpg") as opened:
        photo = opened.convert("RGB")  # 32 × 24 → 26 × 20 → centre 20 × 20
    expected = np.asarray(photo.resize((26, 20), Image.BILINEAR))[:, 3:23]
    assert np.array_equal(data.images[3], expected)
    on_disk = read_manifest(tmp_path / "out")
    assert on_disk["shape"] == [8, 20, 20, 3] and on_disk["options"]["size"] == 20


def test_second_prepare_is_a_no_op(tmp_path):
    source = _good_folder(tmp_path / "src")
    out = tmp_path / "out"
    first = _prepare("folder", source, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    messages = []
    second = _prepare("folder", source, out, log=messages.append)
    assert second == first and "up to date" in messages[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_changed_inputs_or_options_rebuild(tmp_path):
    source = _good_folder(tmp_path / "src", count=8)
    out = tmp_path / "out"
    first = _prepare("folder", source, out)
    _save(source / "new.jpg", _photo(50, 24, 32))
    added = _prepare("folder", source, out)
    assert added["counts"]["kept"] == 9 and "new.jpg" in load_names(out)
    resized = _prepare("folder", source, out, size=8)
    assert load_prepared(out).images.shape == (9, 8, 8, 3)
    assert len({first["fingerprint"], added["fingerprint"], resized["fingerprint"]}) == 3
    assert not list(tmp_path.glob(".out.*"))  # no build or old folders left beside the cache


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    source = _good_folder(tmp_path / "src", count=8)
    out = tmp_path / "out"
    real_process_item, calls = base.process_item, []

    def crash_after_three(item, options):
        calls.append(item.name)
        if len(calls) > 3:
            raise RuntimeError("simulated crash")
        return real_process_item(item, options)

    monkeypatch.setattr(base, "process_item", crash_after_three)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _prepare("folder", source, out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    with pytest.raises(PrepareError, match="betavae prepare"):
        load_prepared(out)
    monkeypatch.setattr(base, "process_item", real_process_item)
    (tmp_path / ".out.building-killed").mkdir()  # what a killed process would leave
    manifest = _prepare("folder", source, out)
    assert load_prepared(out).images.shape[0] == 8 == manifest["counts"]["kept"]
    assert not (tmp_path / ".out.building-killed").exists()


def test_interrupted_rebuild_keeps_the_old_cache(tmp_path, monkeypatch):
    source = _good_folder(tmp_path / "src")
    out = tmp_path / "out"
    old = _prepare("folder", source, out)

    def crash(item, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(base, "process_item", crash)
    with pytest.raises(KeyboardInterrupt):
        _prepare("folder", source, out, size=8)
    assert load_prepared(out).fingerprint == old["fingerprint"]


def test_incomplete_folder_is_not_a_cache(tmp_path):
    source = _good_folder(tmp_path / "src")
    out = tmp_path / "out"
    _prepare("folder", source, out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(PrepareError, match="not a complete prepared dataset"):
        load_prepared(out)
    (out / "manifest.json").unlink()
    with pytest.raises(PrepareError, match="run `betavae prepare"):
        load_prepared(out)


def test_foreign_output_folder_is_not_overwritten(tmp_path):
    source = _good_folder(tmp_path / "src", count=4)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(PrepareError, match="not a prepared dataset"):
        _prepare("folder", source, tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_worker_processes_give_the_same_cache(tmp_path):
    source = _good_folder(tmp_path / "src", count=12)
    (source / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    serial = _prepare("folder", source, tmp_path / "serial", workers=1)
    parallel = _prepare("folder", source, tmp_path / "parallel", workers=2)
    assert parallel["fingerprint"] == serial["fingerprint"]
    assert parallel["skipped"] == serial["skipped"] and len(serial["skipped"]) == 1
    serial_images = load_prepared(tmp_path / "serial").images
    assert np.array_equal(serial_images, load_prepared(tmp_path / "parallel").images)


def test_include_list_and_limit(tmp_path):
    source = _good_folder(tmp_path / "src", count=10)
    include = tmp_path / "keep.txt"
    include.write_text("# by hand\nimg_01.jpg\n./img_04.jpg\n\nimg_07.jpg\nimg_99.jpg\nimg_08.jpg")
    manifest = _prepare("folder", source, tmp_path / "inc", include=str(include), val_fraction=0.5)
    assert load_names(tmp_path / "inc") == ["img_01.jpg", "img_04.jpg", "img_07.jpg", "img_08.jpg"]
    assert _skip_reasons(manifest) == {"img_99.jpg": base.NOT_IN_INCLUDE_LIST}
    include.write_text("img_01.jpg\nimg_04.jpg\n")
    shorter = _prepare("folder", source, tmp_path / "inc", include=str(include), val_fraction=0.5)
    assert shorter["counts"]["kept"] == 2
    limited = [
        _prepare("folder", source, tmp_path / f"lim{k}", limit=5, seed=seed)
        for k, seed in enumerate((1, 1, 2))
    ]
    names = [load_names(tmp_path / f"lim{k}") for k in range(3)]
    assert len(names[0]) == 5 and names[0] == names[1] and names[0] != names[2]
    assert limited[0]["fingerprint"] == limited[1]["fingerprint"]


def test_split_is_seeded_and_stored(tmp_path):
    source = _good_folder(tmp_path / "src", count=12)
    splits = []
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        _prepare("folder", source, tmp_path / name, seed=seed)
        data = load_prepared(tmp_path / name)
        splits.append(tuple(data.val_indices))
        assert (len(data.train_indices), len(data.val_indices)) == (9, 3)
    assert splits[0] == splits[1] != splits[2]
    assert read_manifest(tmp_path / "a")["split"]["method"] == "random"


def test_command_line(tmp_path, capsys):
    source = _good_folder(tmp_path / "src", count=4)
    parser = argparse.ArgumentParser(prog="betavae")
    add_parser(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "out")
    args = parser.parse_args(
        ["prepare", "folder", "--source", str(source), "--out", out, "--size", "8", "--workers=1"]
    )
    assert args.func(args) == 0
    assert "prepared folder: 4 images 8x8x3" in capsys.readouterr().out
    assert args.func(args) == 0 and "up to date" in capsys.readouterr().out
    args = parser.parse_args(["prepare", "celeba", "--source", str(source), "--out", out + "-c"])
    assert args.func(args) == 2 and "img_align_celeba" in capsys.readouterr().err
    batik = parser.parse_args(["prepare", "batik", "--source", "s", "--out", "o"])
    assert batik.grayscale is True and batik.patches == 2400 and batik.patch_size == 128


# --- CelebA ---------------------------------------------------------------------------------------

CELEBA_ATTRIBUTES = ("Smiling", "Male", "Young")


def _celeba_files(count: int = 24) -> dict[str, bytes]:
    """Relative path → bytes of a small CelebA: images, partition 16/4/4, attributes."""
    files, partition, attributes = {}, [], [str(count), " ".join(CELEBA_ATTRIBUTES)]
    for k in range(1, count + 1):
        name = f"{k:06d}.jpg"
        jpeg = io.BytesIO()
        Image.fromarray(_photo(k, 27, 22)).save(jpeg, "JPEG", quality=95)
        files[f"img_align_celeba/{name}"] = jpeg.getvalue()
        partition.append(f"{name} {0 if k <= 16 else 1 if k <= 20 else 2}")
        values = [1 if (k >> bit) & 1 else -1 for bit in range(3)]
        attributes.append(f"{name} " + " ".join(f"{v:2d}" for v in values))
    files["list_eval_partition.txt"] = "\n".join(partition).encode()
    files["list_attr_celeba.txt"] = "\n".join(attributes).encode()
    return files


def _celeba_folder(root: Path) -> Path:
    for name, data in _celeba_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_celeba_folder_uses_partition_and_keeps_attributes(tmp_path):
    source = _celeba_folder(tmp_path / "celeba")
    manifest = _prepare("celeba", source, tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    names = load_names(tmp_path / "out")
    assert data.images.shape == (24, 16, 16, 3)
    assert [names[i] for i in data.train_indices] == [f"{k:06d}.jpg" for k in range(1, 17)]
    assert len(data.val_indices) == 8 and manifest["split"]["method"] == "partition"
    attribute_names, values = load_attributes(tmp_path / "out")
    assert attribute_names == CELEBA_ATTRIBUTES and values.shape == (24, 3)
    for row, name in enumerate(names):
        k = int(name[:6])
        assert list(values[row]) == [1 if (k >> bit) & 1 else -1 for bit in range(3)]


def test_celeba_limit_and_random_split(tmp_path):
    source = _celeba_folder(tmp_path / "celeba")
    _prepare("celeba", source, tmp_path / "out", limit=12, seed=4, recipe={"split": "random"})
    data = load_prepared(tmp_path / "out")
    assert data.images.shape[0] == 12 and (len(data.train_indices), len(data.val_indices)) == (9, 3)
    names = load_names(tmp_path / "out")
    _, values = load_attributes(tmp_path / "out")
    assert [int(n[:6]) & 1 for n in names] == [int(v == 1) for v in values[:, 0]]  # still aligned


def test_celeba_zip_matches_the_folder(tmp_path):
    archive = tmp_path / "celeba.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, data in _celeba_files().items():
            handle.writestr(f"celeba/{name}", data)
        handle.writestr("__MACOSX/celeba/img_align_celeba/._000001.jpg", b"resource fork")
    from_zip = _prepare("celeba", archive, tmp_path / "zip", workers=2)
    from_folder = _prepare("celeba", _celeba_folder(tmp_path / "folder"), tmp_path / "dir")
    assert from_zip["fingerprint"] == from_folder["fingerprint"]
    assert from_zip["counts"]["skipped"] == 0
    zip_images = load_prepared(tmp_path / "zip").images
    assert np.array_equal(zip_images, load_prepared(tmp_path / "dir").images)


def test_celeba_zip_of_images_only_finds_lists_beside_it(tmp_path):
    files = _celeba_files()
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, data in files.items():
            if name.startswith("img_align_celeba/"):
                handle.writestr(name, data)
    plain = _prepare("celeba", archive, tmp_path / "plain")
    assert plain["split"]["method"] == "random" and not plain["source"]["partition_file"]
    (tmp_path / "list_eval_partition.txt").write_bytes(files["list_eval_partition.txt"])
    beside = _prepare("celeba", archive, tmp_path / "plain")  # a new list: rebuilt
    assert beside["split"]["method"] == "partition" and beside["split"]["train"] == 16
    with zipfile.ZipFile(archive, "a") as handle:  # the archive changes: rebuilt from the new one
        handle.writestr("img_align_celeba/000025.jpg", files["img_align_celeba/000001.jpg"])
    grown = _prepare("celeba", archive, tmp_path / "plain", recipe={"split": "random"})
    assert grown["counts"]["kept"] == 25 and load_names(tmp_path / "plain")[-1] == "000025.jpg"


def test_celeba_kaggle_csv_lists():
    assert celeba.parse_partition("image_id,partition\n000001.jpg,0\n000002.jpg,2\n") == {
        "000001.jpg": 0,
        "000002.jpg": 2,
    }
    names, values = celeba.parse_attributes("image_id,Smiling,Male\n000001.jpg,1,-1\n")
    assert names == ("Smiling", "Male") and list(values["000001.jpg"]) == [1, -1]
    with pytest.raises(PrepareError, match="line 3"):
        celeba.parse_attributes("2\nSmiling Male\n000001.jpg 1\n")


def test_celeba_layout_errors(tmp_path):
    _good_folder(tmp_path / "photos", count=2)
    with pytest.raises(PrepareError, match="img_align_celeba/"):
        _prepare("celeba", tmp_path / "photos", tmp_path / "out")
    (tmp_path / "other.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    with pytest.raises(PrepareError, match="img_align_celeba/"):
        _prepare("celeba", tmp_path / "other.zip", tmp_path / "out")
    source = _celeba_folder(tmp_path / "celeba")
    (source / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg zero\n")
    with pytest.raises(PrepareError, match="PARTITION 0, 1 or 2"):
        _prepare("celeba", source, tmp_path / "out")


# --- Stanford Cars --------------------------------------------------------------------------------


def _cars_devkit(root: Path, count: int = 10, missing: str | None = None) -> Path:
    """Photos 60×40 of a grey scene with a red car at the annotated box; devkit .mat beside them."""
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    annotations = np.zeros((1, count), dtype=[(f, "O") for f in fields])
    for k in range(count):
        fname = f"{k + 1:05d}.jpg"
        x1, y1 = 3 + k, 5
        annotations[0, k] = (x1, y1, x1 + 29, y1 + 19, k % 3 + 1, fname)
        image = np.full((40, 60, 3), 128, np.uint8)
        image[y1 - 1 : y1 + 19, x1 - 1 : x1 + 29] = (220, 20, 20)
        if fname != missing:
            _save(root / "cars_train" / fname, image, quality=95)
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "devkit" / "cars_train_annos.mat", {"annotations": annotations})
    return root


def test_stanford_cars_with_bbox_crop_include_list_and_classes(tmp_path):
    source = _cars_devkit(tmp_path / "cars", missing="00010.jpg")
    include = tmp_path / "views.txt"
    include.write_text("".join(f"cars_train/{k:05d}.jpg\n" for k in (1, 2, 3, 5, 8, 9, 10)))
    crop = {"bbox_crop": True}
    manifest = _prepare("stanford-cars", source, tmp_path / "out", include=include, recipe=crop)
    assert _skip_reasons(manifest) == {"cars_train/00010.jpg": cars.MISSING_IMAGE}
    assert load_names(tmp_path / "out") == [f"cars_train/{k:05d}.jpg" for k in (1, 2, 3, 5, 8, 9)]
    images = load_prepared(tmp_path / "out").images.astype(int)
    red = (images[..., 0] > 180) & (images[..., 1] < 70)
    assert red.mean() > 0.55  # the square around the box is mostly car
    names, classes = load_attributes(tmp_path / "out")
    assert names == ("class",) and list(classes[:, 0]) == [1, 2, 3, 2, 2, 3]
    whole = _prepare("stanford-cars", source, tmp_path / "whole", include=str(include))
    whole_images = load_prepared(tmp_path / "whole").images.astype(int)
    assert ((whole_images[..., 0] > 180) & (whole_images[..., 1] < 70)).mean() < red.mean()
    assert whole["options"]["recipe"]["bbox_crop"] is False


def test_stanford_cars_layout_errors(tmp_path):
    _good_folder(tmp_path / "photos", count=2)
    with pytest.raises(PrepareError, match="cars_train_annos.mat"):
        _prepare("stanford-cars", tmp_path / "photos", tmp_path / "out")
    source = _cars_devkit(tmp_path / "cars")
    scipy.io.savemat(source / "devkit" / "cars_train_annos.mat", {"annotations": np.zeros((1, 2))})
    with pytest.raises(PrepareError, match="bbox_x1"):
        _prepare("stanford-cars", source, tmp_path / "out")
    (source / "devkit" / "cars_train_annos.mat").write_text("not matlab")
    with pytest.raises(PrepareError, match="cannot read"):
        _prepare("stanford-cars", source, tmp_path / "out")


# --- cat faces ------------------------------------------------------------------------------------


def _cat_dataset(root: Path, count: int = 8) -> Path:
    """Cat Dataset layout: a blue 'face' (its 9 landmarks) on a green photo of 64×48."""
    for k in range(count):
        folder = root / f"CAT_0{k % 2}"
        image = np.full((48, 64, 3), (20, 160, 20), np.uint8)
        x0, y0 = 10 + k, 8
        image[y0 : y0 + 24, x0 : x0 + 24] = (30, 30, 220)
        path = _save(folder / f"{k:08d}_000.jpg", image, quality=95)
        points = [(x0 + 6, y0 + 10), (x0 + 18, y0 + 10), (x0 + 12, y0 + 18),
                  (x0, y0 + 4), (x0 + 2, y0), (x0 + 5, y0 + 3),
                  (x0 + 19, y0 + 3), (x0 + 22, y0), (x0 + 24, y0 + 4)]  # fmt: skip
        Path(f"{path}.cat").write_text("9 " + " ".join(f"{x} {y}" for x, y in points) + " ")
    return root


def test_cat_dataset_landmarks_give_face_crops(tmp_path):
    source = _cat_dataset(tmp_path / "cats")
    _save(source / "CAT_00" / "nolandmarks.jpg", _photo(1, 48, 64))
    _save(source / "CAT_01" / "badlandmarks.jpg", _photo(2, 48, 64))
    (source / "CAT_01" / "badlandmarks.jpg.cat").write_text("3 1 2 3 4 5 6")
    manifest = _prepare("cat-faces", source, tmp_path / "out")
    assert _skip_reasons(manifest) == {
        "CAT_00/nolandmarks.jpg": cats.NO_LANDMARKS,
        "CAT_01/badlandmarks.jpg": cats.BAD_LANDMARKS,
    }
    assert manifest["source"]["layout"] == "cat-dataset"
    images = load_prepared(tmp_path / "out").images.astype(int)
    assert images.shape == (8, 16, 16, 3)
    assert (images[..., 2] > 150).mean() > 0.6  # mostly face (blue); the whole photo is 19 % face


def test_cat_faces_flat_folder(tmp_path):
    source = _good_folder(tmp_path / "cats", count=6)
    manifest = _prepare("cat-faces", source, tmp_path / "out")
    assert manifest["source"]["layout"] == "flat folder" and manifest["counts"]["kept"] == 6


def test_face_square_and_landmark_parsing(tmp_path):
    points = np.array(
        [[10, 10], [30, 10], [20, 25], [5, 0], [8, 2], [10, 4], [30, 4], [32, 2], [35, 0]]
    )
    assert cats.face_square(points) == (20.0, 12.5, pytest.approx(33.0))
    cat_file = tmp_path / "a.jpg.cat"
    cat_file.write_text("9 " + " ".join(str(v) for v in points.ravel()))
    assert np.array_equal(cats.read_landmarks(cat_file), points)
    cat_file.write_text("9 1 2 x")
    with pytest.raises(ValueError):
        cats.read_landmarks(cat_file)


# --- batik ----------------------------------------------------------------------------------------


@pytest.fixture
def batik_photos(tmp_path) -> Path:
    import skimage.data

    source = tmp_path / "batik-megamendung"
    for name in ("brick", "grass", "gravel"):
        _save(source / f"{name}.png", getattr(skimage.data, name)())
    _save(source / "thumb.jpg", _photo(3, 60, 80))  # smaller than the patch size
    return source


def test_batik_patches_are_seeded_grayscale_and_split_by_photo(tmp_path, batik_photos):
    options = {"size": 32, "grayscale": True, "recipe": {"patches": 40, "patch_size": 128}}
    manifest = _prepare("batik", batik_photos, tmp_path / "out", **options)
    data = load_prepared(tmp_path / "out")
    names = load_names(tmp_path / "out")
    assert data.images.shape == (30, 32, 32, 1)  # 10 patches for each of 3 usable photos
    assert _skip_reasons(manifest) == {"thumb.jpg": imageio.TOO_SMALL}
    photo_of = [n.split("#")[0] for n in names]
    val_photos = {photo_of[i] for i in data.val_indices}
    assert val_photos and val_photos.isdisjoint(photo_of[i] for i in data.train_indices)
    assert len({data.images[i].tobytes() for i in range(30)}) == 30  # distinct positions
    again = _prepare("batik", batik_photos, tmp_path / "again", workers=2, **options)
    assert again["fingerprint"] == manifest["fingerprint"]
    other_seed = _prepare("batik", batik_photos, tmp_path / "seed1", seed=1, **options)
    assert other_seed["fingerprint"] != manifest["fingerprint"]


def test_batik_patch_matches_its_photo(tmp_path, batik_photos):
    import skimage.data

    patches = {"patches": 4, "patch_size": 128}
    _prepare("batik", batik_photos, tmp_path / "out", size=128, grayscale=True, recipe=patches)
    patch = _rows_by_name(tmp_path / "out")["brick.png#patch0"][..., 0]
    rng = np.random.default_rng((0, 0))  # seed 0, first photo in name order
    left, top = rng.integers(0, 512 - 128 + 1, size=1)[0], rng.integers(0, 512 - 128 + 1, size=1)[0]
    assert np.array_equal(patch, skimage.data.brick()[top : top + 128, left : left + 128])
