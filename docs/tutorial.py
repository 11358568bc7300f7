"""Tutorial: your folder of images → a model → a synthetic dataset with chosen factors fixed → an
exported model.

Run it on any folder of images (photos, product shots, textures; a few hundred or more):

    .venv/bin/python docs/tutorial.py ~/my-images --out tutorial-work

Each step is one ``betavae`` command (printed before it runs, so you can copy it); the script
stops at the first one that fails. ``--steps`` sets the training budget (default 3,000: about ten
minutes on 2 CPU cores at 64×64); the tests run the whole tutorial on a small generated folder
with a few steps.
"""
from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from betavae.cli import main as betavae


def step(title: str, *argv: str) -> None:
    """Prints the command, runs it, and stops the tutorial when it fails."""
    print(f"\n## {title}\n$ betavae {shlex.join(argv)}", flush=True)
    code = betavae(list(argv))
    if code != 0:
        raise SystemExit(f"`betavae {argv[0]}` failed with exit code {code}")


def run(images: Path, out: Path, size: int = 64, steps: int = 3000, batch_size: int = 64) -> Path:
    """The whole tutorial; returns the exported model's folder."""
    data, run_dir, export = out / "data", out / "run", out / "model"
    step("1. Prepare the images once (decoded, centre-cropped, resized, split 75/25)",
         "prepare", "folder", "--source", str(images), "--out", str(data), "--size", str(size))
    step("2. Train a β-VAE on them (Gaussian-like MSE per image, 10 latents, β = 4)",
         "train", "--out", str(run_dir), "--overwrite",
         "--set", f"data={{name: prepared, path: {data}, image_size: {size}}}",
         "--set", "model.latent_dim=10", "--set", "objective={name: beta, reconstruction: mse_sum, beta: 4}",
         "--set", f"train.max_steps={steps}", "--set", f"train.batch_size={batch_size}",
         "--set", f"train.val_every={max(steps // 4, 1)}",
         "--set", f"train.checkpoint_every={max(steps // 4, 1)}", "--set", "train.progress=false")
    step("3. Evaluate it: PSNR/SSIM, every figure, the dimensions ranked and named (FID left out: it "
         "needs the Inception weights and takes a while on a CPU)", "evaluate", str(run_dir), "--no-fid", "--quiet")
    top = json.loads((run_dir / "latents.json").read_text())["order"][0]
    step(f"4. Synthetic images that look like the data, with the most informative dimension (z{top}) "
         "fixed: a Gaussian mixture fitted to the training codes, conditioned on the fixed value",
         "sample", str(run_dir), "-n", "32", "--sampler", "gmm", "--fix", f"{top}=1.5",
         "--out", str(out / "synthetic"))
    step("5. Export the model (weights, config and a model card) to share it",
         "export", str(run_dir), "--out", str(export), "--overwrite")
    print(f"\nDone. Open {run_dir / 'index.html'}; the synthetic images and their codes are in "
          f"{out / 'synthetic'} (manifest.json); load the model anywhere with betavae.load('{export}').")
    return export


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, help="a folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("tutorial-work"), help="working folder (default tutorial-work)")
    parser.add_argument("--size", type=int, default=64, help="image side after preparing (default 64)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per training step (default 64)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    run(args.images, args.out, args.size, args.steps, args.batch_size)
