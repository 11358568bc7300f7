"""betavae as a real package: the built wheel holds every resource, and installed from the wheel alone
(not editable, in a fresh venv) it trains, evaluates, exports and loads a model."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import betavae

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list, cwd: Path, timeout: int = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (so no build/ folder appears in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "betavae", source / "betavae", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source],
         cwd=tmp)
    (built,) = (tmp / "dist").glob("betavae-*.whl")
    return built


def test_the_wheel_holds_every_resource_the_license_and_the_version(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    resources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "betavae").rglob("*")
                 if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert {"betavae/explorer/page.html", "betavae/resources/demo.yaml", "betavae/py.typed"} <= resources
    assert resources <= names, f"left out of the wheel: {sorted(resources - names)}"
    assert f"betavae-{betavae.__version__}.dist-info/licenses/LICENSE" in names
    assert wheel.name.startswith(f"betavae-{betavae.__version__}-")
    metadata = zipfile.ZipFile(wheel).read(f"betavae-{betavae.__version__}.dist-info/METADATA").decode()
    for line in (f"Version: {betavae.__version__}", "License-Expression: MIT", "Provides-Extra: hub",
                 "Provides-Extra: onnx", "Project-URL: Homepage", "Classifier: Typing :: Typed"):
        assert line in metadata, line


def test_the_package_files_exist():
    assert "MIT License" in (ROOT / "LICENSE").read_text() and "betavae contributors" in (ROOT / "LICENSE").read_text()
    import yaml

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] and citation["title"] and citation["authors"]


@pytest.mark.slow
def test_installed_from_the_wheel_it_trains_evaluates_exports_and_loads(wheel, tmp_path):
    """A fresh venv with the wheel installed (--no-deps) sees the dependencies of the test's own
    environment through a path file, but not its editable betavae; everything runs outside the checkout."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).strip())
    # A plain path line: the dependencies are importable, the .pth files there (the editable install) are not run.
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "deps.pth").write_text("".join(f"{path}\n" for path in ours))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], cwd=tmp_path)

    located = _run([python, "-c", "import betavae, importlib.resources as r; print(betavae.__file__); "
                    "print(len((r.files('betavae') / 'explorer' / 'page.html').read_text()))"], tmp_path).split()
    assert Path(located[0]).is_relative_to(venv) and int(located[1]) > 1000
    assert _run([venv / "bin" / "betavae", "--version"], tmp_path).strip() == f"betavae {betavae.__version__}"
    assert _run([python, "-m", "betavae", "--version"], tmp_path).strip() == f"betavae {betavae.__version__}"

    (tmp_path / "tiny.yaml").write_text(
        "data: {name: dsprites, num_images: 128, image_size: 32}\nmodel: {preset: tiny}\n"
        "objective: {name: beta, beta: 2.0}\n"
        "train: {max_steps: 4, batch_size: 16, progress: false, checkpoint_every: 4, val_every: 4}\n")
    betavae_cmd = venv / "bin" / "betavae"
    _run([betavae_cmd, "train", "--config", "tiny.yaml", "--out", "run", "--no-figures"], tmp_path)
    _run([betavae_cmd, "evaluate", "run", "--no-fid", "--quiet", "--disentanglement-points", "100",
          "--dci-points", "100", "--max-images", "16"], tmp_path)
    _run([betavae_cmd, "export", "run", "--out", "model"], tmp_path)
    check = ("import betavae, torch; a = betavae.load('run'); b = betavae.from_pretrained('model'); "
             "z = torch.randn(3, a.latent_dim); print(torch.equal(a.decode(z), b.decode(z)), b.latent_dim)")
    assert _run([python, "-c", check], tmp_path).split() == ["True", "4"]
    assert "model-index" in (tmp_path / "model" / "README.md").read_text()
