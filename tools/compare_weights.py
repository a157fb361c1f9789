"""Samples from several weights side by side, one row each, from the same noise and contexts.

    python tools/compare_weights.py --out docs/images/h100_recipes.png \
        "shipped=weights/sprites_ddpm.safetensors" "batch 256, 54 s=/path/model.safetensors" ...

Each row: DDPM-500 (the course's sampler) on the CPU, seed 0, the five classes in turn, so the
rows differ only by their weights. Used for docs/benchmarks.md's picture of the GPU recipes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_utilities.plotting import make_grid  # noqa: E402
from diffusion_utilities.sampling import sample  # noqa: E402
from diffusion_utilities.weights import load_model_and_schedule  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rows", nargs="+", help='"label=path/to/model.safetensors"')
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=15, help="sprites per row (a multiple of 5 shows each class equally)")
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(a.rows), 1, figsize=(a.n * 0.55, 0.95 * len(a.rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], a.rows):
        label, _, path = row.partition("=")
        model, schedule, card = load_model_and_schedule(Path(path), "cpu")
        context = torch.eye(model.n_cfeat)[torch.arange(a.n) % model.n_cfeat]
        x = sample(model, schedule, a.n, context=context, generator=torch.Generator().manual_seed(0)).x
        ax.imshow(make_grid(x, nrow=a.n, scale=4), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(label, fontsize=9, loc="left")
        print(f"{label}: done", flush=True)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
