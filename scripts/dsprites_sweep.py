"""β sweep on the built-in dSprites-like data: train, score disentanglement, write a Markdown table.

    .venv/bin/python scripts/dsprites_sweep.py --out runs/sweep --steps 2000

Sized for 2 CPU cores (32×32 images, a few thousand steps); the table and traversals it writes
are the ones in the README. Finished runs are skipped when the script is run again.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from betavae.analysis import disentanglement_report
from betavae.config import validate_config
from betavae.inference import load
from betavae.run_figures import write_run_figures
from betavae.runs import RunPaths, read_info
from betavae.training import train_or_resume

OBJECTIVES = {
    "beta1": {"name": "beta", "beta": 1.0},
    "beta4": {"name": "beta", "beta": 4.0},
    "beta16": {"name": "beta", "beta": 16.0},
    "tcvae6": {"name": "beta_tcvae", "beta": 6.0},
}
COLUMNS = ("beta_vae", "factor_vae", "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness")


def config_for(name: str, objective: dict, steps: int, seed: int):
    return validate_config({
        "name": name,
        "data": {"name": "dsprites", "num_images": 30000, "image_size": 32, "seed": seed},
        "model": {"channels": [32, 32, 64], "latent_dim": 10, "batch_norm": False},
        "objective": {"reconstruction": "bernoulli", **objective},
        "train": {"max_steps": steps, "batch_size": 64, "lr": 1e-3, "seed": seed, "channels_last": True,
                  "val_every": 500, "checkpoint_every": 500},
    })


def run_one(out: Path, name: str, objective: dict, args) -> dict:
    root = out / name
    started = time.perf_counter()
    train_or_resume(config_for(name, objective, args.steps, args.seed), root)
    trained = load(root)
    report_path = root / "eval" / "disentanglement.json"
    if not report_path.is_file():
        write_run_figures(root)
        disentanglement_report(trained.represent, trained.data(), root / "eval", num_train=args.points,
                               num_eval=args.points // 2, dci_num_train=args.dci_points)
    report = json.loads(report_path.read_text())
    info = read_info(RunPaths(root))
    return {"name": name, "objective": objective, "seconds": round(time.perf_counter() - started),
            "val_recon": info.get("best_val_loss"), **report["summary"],
            "active_units": report.get("active_units", {}).get("count"),
            "labels": [d["label"] for d in report["dimensions"]]}


def markdown(rows: list[dict]) -> str:
    header = "| run | objective | " + " | ".join(COLUMNS) + " | active dims |\n"
    header += "|---" * (len(COLUMNS) + 3) + "|\n"
    lines = [
        f"| {r['name']} | {r['objective']['name']} β={r['objective']['beta']:g} | "
        + " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + f" | {r['active_units']} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"), help="folder of the runs")
    parser.add_argument("--steps", type=int, default=2000, help="training steps per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training")
    parser.add_argument("--points", type=int, default=2000, help="metric training points (eval: half)")
    parser.add_argument("--dci-points", type=int, default=1000, help="DCI training points (gradient boosting is slow)")
    args = parser.parse_args()
    rows = [run_one(args.out, name, objective, args) for name, objective in OBJECTIVES.items()]
    (args.out / "table.md").write_text(markdown(rows))
    (args.out / "table.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
