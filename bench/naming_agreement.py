"""How often the unsupervised dimension names agree with the ground-truth factor labels.

For evaluated runs on data with ground-truth factors (``betavae evaluate RUN`` wrote
``eval/disentanglement.json`` and ``eval/dimension_names.json``): every active dimension whose
supervised label (the factor of highest normalised MI with it, at least ``--min-mi``) is a factor
the names can express — position, scale, orientation or a hue — counts; it agrees when its name
comes from the matching statistic (posX → x, posY → y, scale → area, orientation → angle,
object_hue → hue, background_hue → background_hue). Prints a row per dimension and the total.

    .venv/bin/python bench/naming_agreement.py runs/demo runs/tuned-*
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from betavae.runs import RunPaths

STATISTIC_OF_FACTOR = {"posX": "x", "posY": "y", "scale": "area", "orientation": "angle",
                       "object_hue": "hue", "background_hue": "background_hue"}


def run_rows(run: Path, min_mi: float) -> list[dict]:
    """One row per active dimension of ``run`` whose label is a nameable factor."""
    paths = RunPaths(run)
    for needed in (paths.disentanglement, paths.dimension_names):
        if not needed.is_file():
            raise SystemExit(f"{run}: no {needed.relative_to(run)}; run `betavae evaluate {run}` on ground-truth data first")
    labels = json.loads(paths.disentanglement.read_text())["dimensions"]
    names = {d["dim"]: d for d in json.loads(paths.dimension_names.read_text())["dimensions"]}
    rows = []
    for label in labels:
        named = names.get(label["dim"], {})
        if named.get("name") in (None, "inactive") or label["factor"] not in STATISTIC_OF_FACTOR:
            continue
        if label["score"] < min_mi:
            continue
        rows.append({"run": str(run), "dim": label["dim"], "factor": label["factor"], "mi": label["score"],
                     "name": named["name"], "agrees": named.get("statistic") == STATISTIC_OF_FACTOR[label["factor"]]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="evaluated run folders")
    parser.add_argument("--min-mi", type=float, default=0.0,
                        help="count only dimensions whose normalised MI with their factor is at least this")
    args = parser.parse_args()
    rows = [row for run in args.runs for row in run_rows(run, args.min_mi)]
    print("| run | dim | factor (normalised MI) | name | agrees |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['dim']} | {row['factor']} ({row['mi']:.2f}) | {row['name']} | "
              f"{'yes' if row['agrees'] else 'no'} |")
    agreeing = sum(row["agrees"] for row in rows)
    print(f"\n{agreeing} of {len(rows)} labelled active dimensions agree"
          + (f" ({100 * agreeing / len(rows):.0f} %)" if rows else ""))


if __name__ == "__main__":
    main()
