"""What the latent dimensions mean: disentanglement metrics and factor names on ground-truth data,
and the dimensions most associated with each attribute on data with per-image attributes (CelebA)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from betavae.analysis import attribute_dimensions, disentanglement_report
from betavae.fileio import write_json
from betavae.inference import TrainedModel

ATTRIBUTE_FILE = "attribute_dimensions.json"


def factor_analysis(trained: TrainedModel, out: Path, points: int, dci_points: int, seed: int) -> dict | None:
    """disentanglement_lib's metrics and per-dimension factor names, or None without factors."""
    data = trained.data()
    if data.factors is None:
        return None
    report = disentanglement_report(trained.represent, data, out, rng_seed=seed, num_train=points,
                                    num_eval=max(points // 2, 1), dci_num_train=min(dci_points, points))
    labels = [entry["label"] for entry in sorted(report["dimensions"], key=lambda entry: entry["dim"])]
    return {"summary": report["summary"], "labels": labels,
            "file": "eval/disentanglement.json", "heatmap": "eval/mi_heatmap.png"}


def attribute_analysis(trained: TrainedModel, out: Path, rows: np.ndarray, top_k: int = 3) -> dict | None:
    """The ``top_k`` dimensions most correlated with each per-image attribute, or None without attributes."""
    config = trained.config.data
    if config.name != "prepared":
        return None
    from betavae.data.prepared import PrepareError, load_attributes

    try:
        names, values = load_attributes(config.path)
    except PrepareError:
        return None
    codes = np.concatenate([trained.represent(trained.data().images[rows[i:i + 512]])[0]
                            for i in range(0, len(rows), 512)])
    binary = [k for k in range(values.shape[1]) if np.unique(values[rows, k]).size == 2]
    if not binary:
        return None
    result = attribute_dimensions(codes, values[rows][:, binary], [names[k] for k in binary], top_k=top_k)
    report = {"method": "absolute point-biserial correlation of the encoder mean with the attribute",
              "images": int(len(rows)), "attributes": result}
    write_json(out / ATTRIBUTE_FILE, report)
    return {"file": f"eval/{ATTRIBUTE_FILE}", "top_dims": {name: [e["dim"] for e in entries] for name, entries in result.items()}}
