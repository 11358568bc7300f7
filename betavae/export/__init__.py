"""``betavae export``: a run → a weights-only folder in the Hugging Face convention, and back.

:func:`export_run` writes ``config.json``, ``model.safetensors`` (model weights only), ``README.md``
(a model card with YAML front matter), the run's sample and traversal figures, and with ``onnx``
``encoder.onnx``/``decoder.onnx``. :func:`from_pretrained` loads such a folder — or a Hub repo id
with the ``hub`` extra — and :func:`betavae.load` reads run folders and exports alike.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from betavae import __version__
from betavae.export.folder import FORMAT, FORMAT_VERSION, ExportPaths, is_export_folder, read_export_config
from betavae.fileio import atomic_path, write_json, write_text
from betavae.runs import RunPaths

MIN_OPSET = 7  # the oldest opset torch.onnx writes

__all__ = ["ExportPaths", "export_run", "from_pretrained", "is_export_folder", "read_export_config"]


def export_run(run: str | Path, out: str | Path, checkpoint: str = "best", onnx: bool = False,
               license: str = "mit", overwrite: bool = False, opset: int | None = None) -> ExportPaths:
    """Exports a run's ``checkpoint`` weights to ``out`` (see the module docstring).

    ``out`` must be empty or missing; with ``overwrite`` an earlier export there is replaced (never
    any other folder).
    """
    from betavae.inference import load

    run_paths = RunPaths(Path(run))
    if not run_paths.config.is_file():
        raise FileNotFoundError(f"{run_paths.root} is not a run folder (no config.yaml); export takes a run folder")
    if opset is not None and (not onnx or opset < MIN_OPSET):
        raise ValueError(f"--opset {opset}: " + ("it needs --onnx" if not onnx else f"ONNX opsets start at {MIN_OPSET}"))
    if onnx:
        from betavae.export.onnx_export import require_onnx

        require_onnx()
    trained = load(run_paths.root, checkpoint)
    if checkpoint == "best" and trained.weights is not None and trained.weights.name == run_paths.last.name:
        checkpoint = "last"  # load() fell back from a damaged best checkpoint (it warned): say what is exported
    paths = ExportPaths(Path(out))
    _check_target(paths, overwrite)

    # everything is written into a hidden sibling folder, renamed into place only when complete: an
    # interrupted export (Ctrl-C, kill -9, a full disk) never leaves a folder betavae.load accepts
    paths.root.parent.mkdir(parents=True, exist_ok=True)
    staging = ExportPaths(Path(tempfile.mkdtemp(prefix=f".{paths.root.name}.", suffix=".tmp", dir=paths.root.parent)))
    try:
        _write_export(trained, run_paths, staging, checkpoint, onnx, license, opset)
        _move_into_place(staging.root, paths.root)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    return paths


def _write_export(trained, run_paths: RunPaths, paths: ExportPaths, checkpoint: str, onnx: bool, license: str,
                  opset: int | None) -> None:
    from betavae.evaluation.figure_set import FIGURES
    from betavae.export.card import CARD_FIGURES, model_card

    tensors = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    with atomic_path(paths.weights) as tmp:  # (for its ordinary file permissions)
        save_file(tensors, str(tmp), metadata={"format": "pt", "library": "betavae", "betavae_version": __version__})

    figures = []
    for key in CARD_FIGURES:
        source = run_paths.figure(FIGURES[key].file)
        if source.is_file():
            paths.figures.mkdir(exist_ok=True)
            shutil.copyfile(source, paths.figures / source.name)
            figures.append((key, source.name))

    onnx_info = None
    if onnx:
        from betavae.export.onnx_export import OPSET, write_onnx

        onnx_info = write_onnx(trained, paths.encoder_onnx, paths.decoder_onnx, OPSET if opset is None else opset)

    card = model_card(trained.config, run_paths, trained.channels, figures, license, onnx_info, str(checkpoint))
    write_text(paths.card, card)
    write_json(paths.config, export_config(trained, run_paths, checkpoint, onnx_info))
    # mkdtemp makes 0700; an export is an ordinary folder
    umask = os.umask(0)
    os.umask(umask)
    paths.root.chmod(0o777 & ~umask)


def export_config(trained, run_paths: RunPaths, checkpoint: str, onnx_info: dict | None) -> dict:
    """What config.json holds: the format, the model's shape and input/output convention, the run config."""
    config = trained.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "betavae",
        "betavae_version": __version__,
        "architecture": "ConvVAE",
        "image_size": trained.image_size,
        "in_channels": trained.channels,
        "latent_dim": trained.latent_dim,
        "encoder_channels": list(config.model.channels),
        "normalization": config.data.normalization,
        "images": "float32 (N, C, H, W) in [0, 1]; the normalisation is applied inside",
        "model": config.model.model_dump(mode="json"),
        "data": {"name": config.data.name, "image_size": config.data.image_size,
                 "normalization": config.data.normalization},
        "objective": config.objective.model_dump(mode="json"),
        "run_config": config.to_dict(),
        "source": {"run": run_paths.root.name, "checkpoint": checkpoint,
                   "weights": trained.weights.name if trained.weights else None},
        "onnx": onnx_info,
        "torch_dtype": str(next(trained.model.parameters()).dtype).removeprefix("torch."),
    }


def _check_target(paths: ExportPaths, overwrite: bool) -> None:
    """``out`` must be missing, an empty folder, or (with ``overwrite``) an earlier export."""
    root = paths.root
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; pick another folder with --out")
    if root.is_dir() and any(root.iterdir()):
        if not is_export_folder(root):
            raise FileExistsError(f"{root} is not empty and is not a betavae export; betavae never deletes it — "
                                  "pick another folder with --out")
        if not overwrite:
            raise FileExistsError(f"{root} already holds an export; replace it with --overwrite")


def _move_into_place(staging: Path, root: Path) -> None:
    """Renames the finished ``staging`` folder to ``root``; an earlier export there is moved aside
    first and deleted only after the new one is in place."""
    old = None
    if root.is_dir() and any(root.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
        os.replace(root, old)
    elif root.is_dir():
        root.rmdir()  # empty: nothing to keep
    try:
        os.replace(staging, root)
    except BaseException:
        if old is not None:
            os.replace(old, root)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def from_pretrained(name_or_path: str | Path, device: str | torch.device = "cpu", revision: str | None = None,
                    local_files_only: bool | None = None):
    """A :class:`betavae.TrainedModel` from an exported folder, a run folder, or (with the ``hub``
    extra) a Hugging Face Hub repo id — from the local Hub cache when offline."""
    from betavae.export.hub import resolve
    from betavae.inference import load

    return load(resolve(name_or_path, revision, local_files_only), device=device)
