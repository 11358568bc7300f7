"""The model card of an export: ``README.md`` with Hugging Face YAML front matter, then prose.

The front matter holds ``library_name: betavae``, the licence, tags, the training data and — when
the run was evaluated — the headline metrics in the Hub's ``model-index`` format; the text says what
the model was trained on, with which objective and budget, what it scored (with N and the
reference set) and how to load it.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from betavae import __version__
from betavae.config import RunConfig
from betavae.runs import RunPaths, read_info

# Figures the card shows (copied into the export's figures/), in this order, with a heading each.
CARD_FIGURES = {"samples": "Samples from the prior", "traversals": "Latent traversals (top dimensions)",
                "traversals_prior": "Latent traversals from a prior sample", "traversals_gif": "Animated traversals"}


def dataset_id(config: RunConfig, info: dict) -> str:
    """The training data's short name: the built-in generator, or the prepare recipe."""
    if config.data.name == "prepared":
        return str(info.get("data", {}).get("recipe") or "prepared")
    return config.data.name.removesuffix("-file")  # a dataset file (dsprites-file) is that dataset


def evaluation(run: RunPaths) -> tuple[dict, dict] | None:
    """The last evaluation's (headline, full metrics.json), or None when the run was not evaluated."""
    if not run.eval_metrics.is_file():
        return None
    from betavae.evaluation.headline import read_headline

    headline = read_headline(run.root)
    return headline.computed(), json.loads(run.eval_metrics.read_text())


def model_index(name: str, dataset: str, headline: dict) -> list[dict]:
    """The headline's scores (counts left out: they go to the text) as a Hub ``model-index``."""
    from betavae.evaluation.headline import SCORES

    metrics = [{"type": key, "name": SCORES[key].label, "value": float(value), "verified": False}
               for key, value in headline.items() if key in SCORES and not SCORES[key].integer]
    if not metrics:
        return []
    return [{"name": name, "results": [{
        "task": {"type": "unconditional-image-generation", "name": "Image generation and reconstruction"},
        "dataset": {"type": dataset, "name": dataset, "split": "validation"},
        "metrics": metrics,
    }]}]


def front_matter(config: RunConfig, info: dict, headline: dict | None, license: str, onnx: bool) -> dict:
    dataset = dataset_id(config, info)
    tags = ["betavae", "beta-vae", "vae", "pytorch", "safetensors", "image-generation", "disentanglement"]
    if config.objective.name != "beta":
        tags.append(config.objective.name.replace("_", "-"))
    if onnx:
        tags.append("onnx")
    meta = {"library_name": "betavae", "license": license, "tags": tags, "datasets": [dataset],
            "pipeline_tag": "unconditional-image-generation"}
    index = model_index(config.name, dataset, headline or {})
    if index:
        meta["model-index"] = index
    return meta


def _objective_lines(config: RunConfig) -> list[str]:
    objective = config.objective.model_dump(mode="json")
    settings = ", ".join(f"{key} = {value}" for key, value in objective.items() if key != "name")
    lines = [f"- **Objective**: `{objective['name']}` ({settings})"]
    if "beta" in objective:
        beta_w = objective["beta"] * objective.get("kld_weight", 1.0)
        lines.append(f"- **β** = {objective['beta']:g}" + (f", **β·w** = {beta_w:g} (w = KLD weight "
                     f"{objective['kld_weight']:g})" if "kld_weight" in objective else ""))
    return lines


def _data_lines(config: RunConfig, info: dict, channels: int) -> list[str]:
    data, seen = config.data, info.get("data", {})
    if data.name == "prepared":
        where = f"prepared with the `{seen.get('recipe', '?')}` recipe"
    elif data.path:
        where = (f"dataset file `{Path(data.path).name}`, a seeded choice of {data.num_images:,} images, "
                 f"seed {data.seed}")
    else:
        where = f"built-in generator, {data.num_images:,} images, seed {data.seed}"
    split = f"{seen['train']:,} training / {seen['val']:,} validation images" if "train" in seen else \
        f"validation fraction {data.val_fraction}"
    return [f"- **Training data**: `{dataset_id(config, info)}` ({where}); {split}",
            f"- **Images**: {data.image_size}×{data.image_size}, {channels} channel(s), normalisation "
            f"`{data.normalization}`{', random horizontal flips' if data.hflip else ''}"]


def _budget_line(config: RunConfig, info: dict, checkpoint: str) -> str:
    steps = info.get("step")
    if steps is None:
        return "- **Budget**: unknown (no run.json)"
    images = int(steps) * config.train.batch_size
    best = ""
    if checkpoint == "best" and info.get("best_step"):
        best = f"; weights of step {info['best_step']:,} (best validation loss)"
    elif checkpoint != "best":
        best = f"; weights of the `{checkpoint}` checkpoint"
    return (f"- **Budget**: {int(steps):,} steps × batch {config.train.batch_size} = {images:,} training images "
            f"seen{best}; status `{info.get('status', '?')}`")


def _metric_lines(headline: dict | None, metrics: dict | None, checkpoint: str) -> list[str]:
    """The evaluation's headline as a table, then N, the reference set and the checkpoint (one paragraph each)."""
    if not headline or not metrics:
        return ["Not evaluated: run `betavae evaluate RUN` before exporting to include the metrics."]
    from betavae.evaluation.headline import SCORES

    lines = ["| metric | value | what |", "|---|---|---|"]
    lines += [f"| {SCORES[key].label} | {SCORES[key].format(value)} | {SCORES[key].description} |"
              for key, value in headline.items() if key in SCORES]
    validation = metrics.get("reconstruction", {}).get("validation", {})
    if validation:
        lines += ["", f"Reconstruction metrics: N = {validation.get('n')} ({validation.get('images')}), "
                  "reconstruction from μ, images in [0, 1], data range 1."]
    quality = metrics.get("sample_quality", {})
    if "fid" in quality:
        reference = quality.get("reference", {})
        lines += ["", f"FID: N = {quality.get('n_samples')} prior samples against {reference.get('n')} reference "
                  f"images ({reference.get('set')}); compare FIDs only at equal N and reference set."]
    elif quality.get("skipped"):
        lines += ["", f"FID: not computed ({quality['skipped']})."]
    evaluated = metrics.get("evaluated", {})
    lines += ["", f"Evaluated with betavae {evaluated.get('betavae_version', '?')} on checkpoint "
              f"`{evaluated.get('checkpoint', '?')}`."]
    if evaluated.get("checkpoint", checkpoint) != checkpoint:
        lines.append(f"**These numbers are of the `{evaluated['checkpoint']}` checkpoint; this export holds "
                     f"`{checkpoint}`.**")
    return lines


def model_card(config: RunConfig, run: RunPaths, channels: int, figures: list[tuple[str, str]], license: str,
               onnx: dict | None, checkpoint: str = "best") -> str:
    """The text of the export's README.md."""
    info = read_info(run)
    evaluated = evaluation(run)
    headline, metrics = evaluated if evaluated else (None, None)
    meta = front_matter(config, info, headline, license, onnx is not None)
    lines = [f"# {config.name}: a β-VAE trained with betavae", "",
             f"A convolutional β-VAE ({config.model.latent_dim} latent dimensions, encoder channels "
             f"{config.model.channels}) trained with betavae "
             f"{info.get('environment', {}).get('betavae', __version__)}; exported with betavae {__version__}.",
             "", "## Training", "", *_data_lines(config, info, channels), *_objective_lines(config),
             _budget_line(config, info, checkpoint), "", "## Metrics", "",
             *_metric_lines(headline, metrics, checkpoint), ""]
    if figures:
        lines += ["## Figures", ""]
        for key, file in figures:
            lines += [f"### {CARD_FIGURES[key]}", "", f"![{key}](figures/{file})", ""]
    lines += ["## How to load", "", "```python", "import betavae", "",
              'm = betavae.from_pretrained("path/to/this/folder")   # or a Hub repo id, with betavae[hub]',
              "z, images = m.sample(16, seed=0)       # images: float (N, C, H, W) in [0, 1]",
              "mu = m.encode(images).mean            # Posterior(mean, logvar)",
              "x = m.decode(mu)", "```", "",
              "Loading reads config.json and model.safetensors only: no code is executed (no pickle)."]
    if onnx:
        lines += ["", f"`encoder.onnx` (image in [0, 1] `(N, {channels}, {config.data.image_size}, "
                  f"{config.data.image_size})` → `mu`, `logvar`) and `decoder.onnx` (`z` `(N, "
                  f"{config.model.latent_dim})` → image in [0, 1]) run without betavae, e.g. in "
                  f"onnxruntime (opset {onnx['opset']}, dynamic batch)."]
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n" + "\n".join(lines) + "\n"


def parse_front_matter(text: str) -> dict:
    """The YAML front matter of a model card (``---`` … ``---`` at its top)."""
    if not text.startswith("---\n"):
        raise ValueError("the card has no YAML front matter")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end]) or {}
