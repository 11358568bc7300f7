"""The run's ``index.html``: every figure of ``figures/`` and ``eval/`` plus the key numbers."""
from __future__ import annotations

import html
import json
from pathlib import Path

from betavae.fileio import write_text
from betavae.runs import RunPaths, read_info

# Known figures in display order, with captions; any other PNG/GIF found is appended by name.
CAPTIONS = {
    "curves.png": "Training curves: reconstruction loss and KL, train and validation",
    "reconstructions.png": "Validation images (odd rows) and their reconstructions from μ (even rows)",
    "samples.png": "Random samples decoded from z ~ N(0, I)",
    "traversals.png": "Latent traversals of one encoded image, dimensions ranked by mean KL",
    "kl_per_dim.png": "Mean KL per latent dimension on validation data",
    "random_samples.png": "Evaluation: random samples from z ~ N(0, I)",
    "reconstructions_validation.png": "Evaluation: validation images (odd rows) and reconstructions from μ",
    "reconstructions_outside_images.png": "Evaluation: outside images (odd rows) and reconstructions",
    "kl_per_dimension.png": "Evaluation: mean KL per dimension (active dimensions highlighted)",
    "traversals_top_dims_from_image.png": "Evaluation: top dimensions by KL traversed from an encoded image",
    "traversals_top_dims_from_prior.png": "Evaluation: top dimensions traversed from a prior sample",
    "traversals_all_dims.png": "Evaluation: every dimension traversed from an encoded image",
    "traversals_top_dims.gif": "Evaluation: animated traversals of the top dimensions",
    "mi_heatmap.png": "Evaluation: normalised mutual information between factors and latent dimensions",
}


def _figures(root: Path) -> list[tuple[str, str]]:
    found = [p for folder in ("figures", "eval") for p in sorted((root / folder).glob("*")) if p.suffix in (".png", ".gif")]
    order = {name: i for i, name in enumerate(CAPTIONS)}
    found.sort(key=lambda p: (order.get(p.name, len(order)), str(p)))
    return [(str(p.relative_to(root)), CAPTIONS.get(p.name, p.stem.replace("_", " "))) for p in found]


def _summary_rows(root: Path) -> list[tuple[str, str]]:
    info = read_info(RunPaths(root))
    rows = [(key, str(info[key])) for key in ("status", "step", "best_step", "best_val_loss", "parameters", "device", "precision") if key in info]
    if "data" in info:
        rows.append(("data", f"{info['data'].get('name', '')} — {info['data'].get('train')} train / {info['data'].get('val')} val"))
    metrics = root / "eval" / "metrics.json"
    if metrics.is_file():
        rows += [(k, json.dumps(v)) for k, v in json.loads(metrics.read_text()).items() if not isinstance(v, dict)]
    return rows


def write_run_index(run_dir: str | Path) -> Path:
    """Writes ``index.html`` linking the run's figures (relative paths) and summary numbers."""
    root = Path(run_dir)
    title = html.escape(root.name)
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(root))
    figures = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for src, caption in _figures(root)
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>betavae run {title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{text-align:left;padding:2px 12px;border-bottom:1px solid #ddd}}
figure{{margin:1.5em 0}}img{{max-width:100%;image-rendering:pixelated}}figcaption{{color:#555}}</style></head>
<body><h1>Run {title}</h1><table>{table}</table>{figures}
<p>Config: <a href="config.yaml">config.yaml</a> · logs: <a href="metrics/train.csv">train.csv</a>,
<a href="metrics/val.csv">val.csv</a></p></body></html>
"""
    index = RunPaths(root).index
    write_text(index, page)
    return index
