"""`betavae prepare` on hostile input: odd directory entries, killed and terminated builds, and the
official CelebA download layout."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from betavae.data import imageio, workers
from betavae.data.prepare import PrepareOptions, prepare
from betavae.data.prepared import load_attributes, load_names, load_prepared
from betavae.data.recipes import base, cats, celeba

REPO = Path(__file__).resolve().parents[1]


def _photo(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    image = rng.uniform(40, 215, 3) + x[..., None] * rng.uniform(-60, 60, 3) + y[..., None] * 30
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(seed: int, height: int = 24, width: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_photo(seed, height, width)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _good_folder(root: Path, count: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        (root / f"img_{k:02d}.jpg").write_bytes(_jpeg(k))
    return root


def _prepare(recipe: str, source, out: Path, workers: int = 1, log=lambda message: None, **options):
    opts = PrepareOptions(size=options.pop("size", 16), **options)
    return prepare(recipe, source, out, opts, workers=workers, progress=False, log=log)


def _skipped(manifest: dict) -> dict[str, tuple[str, str]]:
    return {entry["file"]: (entry["reason"], entry["detail"]) for entry in manifest["skipped"]}


def _animated_gif(path: Path, frames: int = 3) -> None:
    images = [Image.new("P", (20, 20), k) for k in range(frames)]
    for image in images:
        image.putpalette([v for k in range(256) for v in (k * 40 % 256, 80, 200)])
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)


# --- every directory entry is used or listed with its reason -------------------------------------


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    """Good images plus every odd kind of directory entry (the FIFO has its own test)."""
    source = _good_folder(tmp_path / "src")
    os.close(os.open(os.path.join(os.fsencode(source), b"bad\xff.jpg"), os.O_CREAT | os.O_WRONLY))
    with open(os.path.join(os.fsencode(source), b"bad\xff.jpg"), "wb") as handle:
        handle.write(_jpeg(40))  # a fine JPEG; only its name is bad
    (source / "dangling.jpg").symlink_to(source / "nowhere.jpg")
    (source / "self.jpg").symlink_to("self.jpg")  # a link to itself: ELOOP
    (source / "sub").mkdir()
    (source / "sub" / "deep.jpg").write_bytes(_jpeg(41))
    (source / "sub" / "up").symlink_to("..", target_is_directory=True)  # a loop to an ancestor
    (source / "top").symlink_to(".", target_is_directory=True)  # a loop to the source itself
    (source / "locked").mkdir()
    (source / "locked" / "hidden_inside.jpg").write_bytes(_jpeg(42))
    _animated_gif(source / "animated.gif", frames=3)
    Image.fromarray(_photo(43)).convert("P").save(source / "still.gif")
    (source / "notes.txt").write_text("not an image")
    (source / ".cache").mkdir()
    (source / ".cache" / "thumb.jpg").write_bytes(_jpeg(44))
    return source


def _refuse_folder(monkeypatch, folder: Path) -> None:
    """Makes os.scandir (what os.walk and the scanner use) refuse ``folder`` as chmod 000 would for
    a user other than root (the tests run as root, who can read anything)."""
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.realpath(os.fsdecode(path)) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_every_directory_entry_is_used_or_listed(tmp_path, hostile_folder, monkeypatch):
    _refuse_folder(monkeypatch, hostile_folder / "locked")
    manifest = _prepare("folder", hostile_folder, tmp_path / "out")
    names = load_names(tmp_path / "out")
    assert names == [f"img_{k:02d}.jpg" for k in range(6)] + ["still.gif", "sub/deep.jpg"]
    skipped = _skipped(manifest)
    reasons = {name: reason for name, (reason, _) in skipped.items()}
    assert reasons == {
        "bad\\xff.jpg": base.BAD_NAME,  # escaped: readable, and valid JSON text
        "dangling.jpg": base.BROKEN_LINK,
        "self.jpg": base.LINK_LOOP,
        "sub/up/": base.LINK_LOOP,
        "top/": base.LINK_LOOP,
        "locked/": base.UNREADABLE,
        "animated.gif": imageio.ANIMATED,
        "notes.txt": base.NOT_IMAGE_FILE,
        ".cache/": base.HIDDEN_FOLDER,
    }
    assert skipped["animated.gif"][1].startswith("3 frames")
    assert "ermission denied" in skipped["locked/"][1]
    assert manifest["counts"]["skipped_by_reason"][base.LINK_LOOP] == 3
    # every entry of the source folder is accounted for, by its escaped name
    top_level = {base.display_name(name) for name in os.listdir(hostile_folder)}
    accounted = {name.split("/")[0] for name in [*names, *skipped]}
    assert top_level == accounted


def test_links_to_folders_are_followed_once(tmp_path):
    """A link to a folder outside is read; one to a folder read anyway is listed, whatever its
    name sorts as (the real folder keeps its own name)."""
    outside = _good_folder(tmp_path / "elsewhere", count=2)
    source = _good_folder(tmp_path / "src", count=2)
    _good_folder(source / "photos", count=2)
    (source / "alias").symlink_to("photos", target_is_directory=True)  # sorts before photos/
    (source / "more").symlink_to(outside, target_is_directory=True)
    manifest = _prepare("folder", source, tmp_path / "out", val_fraction=0.5)
    assert load_names(tmp_path / "out") == [
        "img_00.jpg", "img_01.jpg", "more/img_00.jpg", "more/img_01.jpg",
        "photos/img_00.jpg", "photos/img_01.jpg",
    ]  # fmt: skip
    assert _skipped(manifest) == {"alias/": (base.DUPLICATE_FOLDER, "same folder as photos/")}


def test_chmod_000_folder_is_listed(tmp_path):
    """The real thing: `prepare` in a process that chmod 000 stops. As root (CI), the process runs
    under `setpriv` without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, as an ordinary user would."""
    source = _good_folder(tmp_path / "src")
    (source / "locked").mkdir()
    (source / "locked" / "a.jpg").write_bytes(_jpeg(1))
    (source / "locked").chmod(0)
    unprivileged = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    out = tmp_path / "out"
    try:
        done = subprocess.run(
            [*unprivileged, sys.executable, "-m", "betavae.cli", "prepare", "folder", "--source", str(source),
             "--out", str(out), "--size", "32", "--workers", "1"],
            cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        (source / "locked").chmod(0o755)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert _skipped(manifest)["locked/"] == (base.UNREADABLE, "Permission denied")


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    source = _good_folder(tmp_path / "src")
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if os.fsdecode(path).endswith("img_03.jpg"):
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    manifest = _prepare("folder", source, tmp_path / "out")
    assert _skipped(manifest)["img_03.jpg"][0] == imageio.UNREADABLE


class _FifoRescue:
    """Unblocks anyone stuck reading ``fifo`` after ``seconds`` (a writer that closes at once
    gives the reader end-of-file), so a build that opens a named pipe fails instead of hanging."""

    def __init__(self, fifo: Path, seconds: float = 60.0):
        self.fifo, self.fired, self.stop = fifo, False, threading.Event()
        self.thread = threading.Thread(target=self._run, args=(seconds,), daemon=True)
        self.thread.start()

    def _run(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            return
        while not self.stop.is_set():
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                self.fired = True
            except OSError:  # no reader (ENXIO) at this moment
                pass
            self.stop.wait(0.1)

    def __enter__(self) -> "_FifoRescue":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join()


def test_cat_dataset_survives_odd_entries(tmp_path, monkeypatch):
    source = tmp_path / "cats"
    (source / "CAT_00").mkdir(parents=True)
    for k in range(4):
        image = source / "CAT_00" / f"{k:08d}_000.jpg"
        image.write_bytes(_jpeg(k, 48, 64))
        points = " ".join(f"{10 + 2 * j} {10 + j}" for j in range(9))
        Path(f"{image}.cat").write_text(f"9 {points} ")
    (source / "CAT_00" / "fifo.jpg").write_bytes(_jpeg(9, 48, 64))
    os.mkfifo(source / "CAT_00" / "fifo.jpg.cat")  # reading it would block forever
    (source / "CAT_01").mkdir()
    _refuse_folder(monkeypatch, source / "CAT_01")
    with _FifoRescue(source / "CAT_00" / "fifo.jpg.cat") as rescue:
        manifest = _prepare("cat-faces", source, tmp_path / "out")
    assert not rescue.fired, "the build blocked reading the named pipe fifo.jpg.cat"
    reasons = {name: reason for name, (reason, _) in _skipped(manifest).items()}
    assert reasons == {
        "CAT_00/fifo.jpg": cats.BAD_LANDMARKS,
        "CAT_00/fifo.jpg.cat": imageio.NOT_REGULAR,
        "CAT_01/": base.UNREADABLE,
    }
    assert manifest["counts"]["kept"] == 4


def _run_cli(log: Path, *args: str, timeout: float) -> tuple[int, str]:
    """Exit code and output of `python -m betavae.cli ARGS`. The output goes through a file, not a
    pipe: workers left alive by a dead parent would hold a pipe open, and reading it would hang."""
    command = [sys.executable, "-m", "betavae.cli", *args]
    with open(log, "wb") as output:
        done = subprocess.run(command, cwd=REPO, stdout=output, stderr=output, timeout=timeout)
    return done.returncode, log.read_text(errors="replace")


def test_named_pipe_is_never_opened(tmp_path):
    """A FIFO called x.jpg once blocked the build forever (reading waits for a writer)."""
    source = _good_folder(tmp_path / "src")
    os.mkfifo(source / "x.jpg")
    os.symlink(source / "x.jpg", source / "link_to_fifo.jpg")
    out = tmp_path / "out"
    with _FifoRescue(source / "x.jpg", seconds=1) as rescue:  # any reader at all is a failure
        returncode, output = _run_cli(
            tmp_path / "log", "prepare", "folder", "--source", str(source), "--out", str(out),
            "--size", "16", "--workers", "2", timeout=600,
        )  # fmt: skip
    assert not rescue.fired, "prepare opened the named pipe x.jpg (and would have waited forever)"
    assert returncode == 0, output
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = _skipped(manifest)
    assert skipped["x.jpg"][0] == imageio.NOT_REGULAR and "named pipe" in skipped["x.jpg"][1]
    assert skipped["link_to_fifo.jpg"][0] == imageio.NOT_REGULAR
    assert manifest["counts"]["kept"] == 6


def test_worker_refuses_a_file_that_became_a_pipe(tmp_path):
    """Listed as a file, replaced by a FIFO before a worker reads it: skipped, without blocking."""
    fifo = tmp_path / "late.jpg"
    os.mkfifo(fifo)
    item = base.Item(name="late.jpg", path=str(fifo))
    with _FifoRescue(fifo, seconds=30) as rescue:
        result = base.process_item(item, _options())
    assert not rescue.fired, "reading the FIFO blocked"
    assert result.skip.reason == imageio.NOT_REGULAR


def _options() -> imageio.ImageOptions:
    return imageio.ImageOptions(size=16, channels=3)


def test_animated_gif_is_skipped_and_still_gif_used(tmp_path):
    _animated_gif(tmp_path / "a.gif", frames=5)
    result = base.process_item(base.Item("a.gif", str(tmp_path / "a.gif")), _options())
    assert result.skip.reason == imageio.ANIMATED and result.skip.detail.startswith("5 frames")
    Image.fromarray(_photo(1)).save(tmp_path / "still.png")
    assert base.process_item(base.Item("s", str(tmp_path / "still.png")), _options()).skip is None


def test_unexpected_errors_skip_one_item(tmp_path, monkeypatch):
    """An exception nobody foresaw (here: an encrypted zip member) skips the item, not the build."""
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))

    def broken(data, max_pixels):
        raise RuntimeError("File is encrypted, password required")

    monkeypatch.setattr(imageio, "decode", broken)
    result = base.process_item(base.Item("a.jpg", str(tmp_path / "a.jpg")), _options())
    assert result.skip.reason == base.UNEXPECTED and "encrypted" in result.skip.detail


# --- killed and terminated builds ----------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited (its new parent may not reap it at once)


def _wait_for(condition, limit: float, every: float = 0.05) -> bool:
    """Polls ``condition`` until it is true or ``limit`` seconds passed; returns its last value."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


@pytest.fixture(scope="module")
def busy_source(tmp_path_factory) -> Path:
    """Enough large JPEGs (hard links to a few) to keep two workers busy for several seconds."""
    root = tmp_path_factory.mktemp("busy") / "src"
    root.mkdir()
    originals = []
    for k in range(6):
        originals.append(root / f"orig_{k}.jpg")
        originals[-1].write_bytes(_jpeg(k, 900, 1200))
    for k in range(1500):
        os.link(originals[k % 6], root / f"img_{k:05d}.jpg")
    return root


@pytest.fixture
def started_build(busy_source, tmp_path):
    """`betavae prepare` started with two workers, once both workers exist; killed at the end."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "betavae.cli", "prepare", "folder", "--source",
               str(busy_source), "--out", str(out), "--size", "32", "--workers", "2"]  # fmt: skip
    log = tmp_path / "stderr.txt"  # a file: orphaned workers holding a pipe would block reading it
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    worker_pids: set[int] = set()

    def started() -> bool:
        return len(_children(process.pid)) >= 2 or process.poll() is not None

    try:
        assert _wait_for(started, 300)
        worker_pids |= _children(process.pid)
        assert process.poll() is None and len(worker_pids) >= 2, "the build ended too soon"
        yield process, worker_pids, out, log
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        for pid in worker_pids:  # what an old build left alive: ours, ended by pid
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_kill_9_of_prepare_ends_its_workers(started_build):
    process, worker_pids, out, _ = started_build
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert _wait_for(lambda: not any(_alive(pid) for pid in worker_pids), 60), (
        f"workers {sorted(p for p in worker_pids if _alive(p))} outlived their killed parent"
    )
    assert not out.exists()  # killed mid-build: nothing loads there


@pytest.mark.parametrize("to", ["parent", "group"])
def test_sigterm_stops_prepare_like_ctrl_c(started_build, to):
    """SIGTERM to prepare (`kill`, `timeout`) or to its whole process group (systemd, Slurm)."""
    process, worker_pids, out, log = started_build
    if to == "group":
        os.killpg(process.pid, signal.SIGTERM)  # its own group: started_build starts a session
    else:
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("prepare did not stop on SIGTERM")
    stderr = log.read_text(errors="replace")
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "terminated" in stderr
    assert _wait_for(lambda: not any(_alive(pid) for pid in worker_pids), 60)
    assert not out.exists() and not list(out.parent.glob(".out.*"))  # the hidden build is gone


def test_parent_watch_fallback_notices_a_dead_parent():
    """Without prctl, workers poll for their parent; the poll sees a process that has exited."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    noticed = threading.Event()
    watcher = threading.Thread(
        target=workers.watch_parent, args=(gone.pid, 0.01, noticed.set), daemon=True
    )
    watcher.start()
    assert noticed.wait(timeout=30)
    alive = threading.Event()
    threading.Thread(
        target=workers.watch_parent, args=(os.getpid(), 0.01, alive.set), daemon=True
    ).start()
    assert not alive.wait(timeout=0.3)  # our own process is alive: no alarm


def test_workers_are_armed_against_parent_death():
    """On Linux the pool's initializer sets PR_SET_PDEATHSIG (read back with PR_GET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("prctl is Linux only")
    with workers.worker_pool(1) as pool:
        assert pool.submit(workers.parent_death_signal).result(timeout=60) == signal.SIGKILL


# --- CelebA as the official download unpacks ------------------------------------------------------

ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
COUNT = 8


def _attribute_values(k: int) -> list[int]:
    return [1 if (k + j) % 3 == 0 else -1 for j in range(len(ATTRIBUTES))]


def _celeba_texts() -> tuple[str, str]:
    """list_eval_partition.txt and list_attr_celeba.txt in their real formats."""
    split = {k: 0 if k <= 5 else 1 if k <= 6 else 2 for k in range(1, COUNT + 1)}
    partition = "".join(f"{k:06d}.jpg {part}\n" for k, part in split.items())
    lines = [f"{COUNT}", " ".join(ATTRIBUTES) + " "]
    for k in range(1, COUNT + 1):
        lines.append(f"{k:06d}.jpg " + " ".join(f"{v:2d}" for v in _attribute_values(k)))
    return partition, "\n".join(lines) + "\n"


def _official_celeba(root: Path, unpacked: bool = False) -> Path:
    """CelebA/Img/img_align_celeba.zip (or the folder unpacked), Anno/ and Eval/, as downloaded."""
    (root / "Img").mkdir(parents=True)
    (root / "Anno").mkdir()
    (root / "Eval").mkdir()
    images = {f"img_align_celeba/{k:06d}.jpg": _jpeg(k, 27, 22) for k in range(1, COUNT + 1)}
    if unpacked:
        for name, data in images.items():
            (root / "Img" / name).parent.mkdir(exist_ok=True)
            (root / "Img" / name).write_bytes(data)
    else:
        with zipfile.ZipFile(root / "Img" / "img_align_celeba.zip", "w") as archive:
            for name, data in images.items():
                archive.writestr(name, data)
    partition, attributes = _celeba_texts()
    (root / "Eval" / "list_eval_partition.txt").write_text(partition)
    (root / "Anno" / "list_attr_celeba.txt").write_text(attributes)
    (root / "Anno" / "identity_CelebA.txt").write_text("000001.jpg 2880\n")
    (root / "README.txt").write_text("CelebA dataset\n")
    return root


def _check_official(out: Path, manifest: dict) -> None:
    assert manifest["split"]["method"] == "partition"
    assert (manifest["split"]["train"], manifest["split"]["val"]) == (5, 3)
    names = load_names(out)
    assert names == [f"{k:06d}.jpg" for k in range(1, COUNT + 1)]
    attribute_names, values = load_attributes(out)
    assert list(attribute_names) == ATTRIBUTES and values.shape == (COUNT, 40)
    for row, name in enumerate(names):
        assert list(values[row]) == _attribute_values(int(name[:6]))


@pytest.mark.parametrize("given", ["folder", "zip", "unpacked"])
def test_celeba_official_download_layout(tmp_path, given):
    root = _official_celeba(tmp_path / "CelebA", unpacked=given == "unpacked")
    source = root / "Img" / "img_align_celeba.zip" if given == "zip" else root
    manifest = _prepare("celeba", source, tmp_path / "out")
    _check_official(tmp_path / "out", manifest)
    assert manifest["source"]["partition_file"] and manifest["source"]["attribute_file"]
    assert "list_eval_partition.txt" in manifest["source"]["partition_source"]


def test_celeba_zip_without_lists_warns(tmp_path):
    root = _official_celeba(tmp_path / "CelebA")
    (root / "Eval" / "list_eval_partition.txt").unlink()
    (root / "Anno" / "list_attr_celeba.txt").unlink()
    messages: list[str] = []
    archive = root / "Img" / "img_align_celeba.zip"
    manifest = _prepare("celeba", archive, tmp_path / "out", log=messages.append)
    assert manifest["split"]["method"] == "random" and "attributes.npz" not in manifest["files"]
    warnings = [m for m in messages if m.startswith("warning")]
    assert any("list_eval_partition" in m for m in warnings)
    assert any("list_attr_celeba" in m for m in warnings)
    assert manifest["source"]["warnings"] == [w.removeprefix("warning: ") for w in warnings]


def test_celeba_folder_with_odd_entries(tmp_path, monkeypatch):
    root = _official_celeba(tmp_path / "CelebA", unpacked=True)
    image_dir = root / "Img" / "img_align_celeba"
    os.mkfifo(image_dir / "000099.jpg")
    (image_dir / "000098.jpg").symlink_to("missing.jpg")
    with _FifoRescue(image_dir / "000099.jpg") as rescue:
        manifest = _prepare("celeba", root, tmp_path / "out")
    assert not rescue.fired
    reasons = {name: reason for name, (reason, _) in _skipped(manifest).items()}
    assert reasons == {"000099.jpg": imageio.NOT_REGULAR, "000098.jpg": base.BROKEN_LINK}
    assert manifest["counts"]["kept"] == COUNT
