"""``betavae export``: a run → a weights-only folder in the Hugging Face convention, and back.

:func:`export_run` writes ``config.json``, ``model.safetensors`` (model weights only), ``README.md``
(a model card with YAML front matter), the run's sample and traversal figures, and with ``onnx``
``encoder.onnx``/``decoder.onnx``. :func:`from_pretrained` loads such a folder — or a Hub repo id
with the ``hub`` extra — and :func:`betavae.load` reads run folders and exports alike.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from betavae import __version__
from betavae.export.folder import FORMAT, FORMAT_VERSION, ExportPaths, is_export_folder, read_export_config
from betavae.fileio import atomic_path, write_json, write_text
from betavae.runs import RunPaths

__all__ = ["ExportPaths", "export_run", "from_pretrained", "is_export_folder", "read_export_config"]


def export_run(run: str | Path, out: str | Path, checkpoint: str = "best", onnx: bool = False,
               license: str = "mit", overwrite: bool = False, opset: int | None = None) -> ExportPaths:
    """Exports a run's ``checkpoint`` weights to ``out`` (see the module docstring).

    ``out`` must be empty or missing; with ``overwrite`` an earlier export there is replaced (never
    any other folder).
    """
    from betavae.export.card import CARD_FIGURES, model_card
    from betavae.inference import load

    run_paths = RunPaths(Path(run))
    if not run_paths.config.is_file():
        raise FileNotFoundError(f"{run_paths.root} is not a run folder (no config.yaml); export takes a run folder")
    if onnx:
        from betavae.export.onnx_export import require_onnx

        require_onnx()
    trained = load(run_paths.root, checkpoint)
    paths = ExportPaths(Path(out))
    _prepare_folder(paths, overwrite)

    tensors = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    with atomic_path(paths.weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "library": "betavae", "betavae_version": __version__})

    figures = []
    for key in CARD_FIGURES:
        from betavae.evaluation.figure_set import FIGURES

        source = run_paths.figure(FIGURES[key].file)
        if source.is_file():
            paths.figures.mkdir(exist_ok=True)
            shutil.copyfile(source, paths.figures / source.name)
            figures.append((key, source.name))

    onnx_info = None
    if onnx:
        from betavae.export.onnx_export import OPSET, write_onnx

        onnx_info = write_onnx(trained, paths.encoder_onnx, paths.decoder_onnx, opset or OPSET)

    write_json(paths.config, export_config(trained, run_paths, checkpoint, onnx_info))
    card = model_card(trained.config, run_paths, trained.channels, figures, license, onnx_info, str(checkpoint))
    write_text(paths.card, card)
    return paths


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


def _prepare_folder(paths: ExportPaths, overwrite: bool) -> None:
    root = paths.root
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; pick another folder with --out")
    if root.is_dir() and any(root.iterdir()):
        if not is_export_folder(root):
            raise FileExistsError(f"{root} is not empty and is not a betavae export; betavae never deletes it — "
                                  "pick another folder with --out")
        if not overwrite:
            raise FileExistsError(f"{root} already holds an export; replace it with --overwrite")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def from_pretrained(name_or_path: str | Path, device: str | torch.device = "cpu", revision: str | None = None,
                    local_files_only: bool | None = None):
    """A :class:`betavae.TrainedModel` from an exported folder, a run folder, or (with the ``hub``
    extra) a Hugging Face Hub repo id — from the local Hub cache when offline."""
    from betavae.export.hub import resolve
    from betavae.inference import load

    return load(resolve(name_or_path, revision, local_files_only), device=device)
