"""Does the shifted time grid of Esser et al. (2024, §5.3.2) sample the flow model better than the uniform one?

Sprite-FID and class accuracy at n sprites per row, the same noise and classes as `evaluate` uses
(seed 0, balanced classes), for Euler and Heun at a few step counts and grid shifts s (1: uniform;
s > 1 puts more steps at high noise, t ↦ s·t / (1 + (s − 1)·t)).

    python tools/flow_shift_study.py [--weights weights/sprites_flow.safetensors] [--n 400]
"""

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion_utilities import load_model_and_schedule, sample  # noqa: E402
from diffusion_utilities.evaluation import Evaluator, load_classifier, real_fid_blocks, row_spec  # noqa: E402
from diffusion_utilities.sampling import network_calls  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=Path("weights/sprites_flow.safetensors"))
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--rows", default="euler-8,euler-16,heun-5,heun-9")
    p.add_argument("--shifts", default="1,2,3")
    a = p.parse_args()
    model, schedule, card = load_model_and_schedule(a.weights)
    ev = Evaluator(load_classifier(Path("weights/sprite_classifier.safetensors")), card)
    labels = torch.arange(a.n) % 5
    context = F.one_hot(labels, 5).float()
    blocks = real_fid_blocks(ev.classifier, ev.ref_features, a.n)
    print(f"{a.weights}, n = {a.n}, seed 0; real held-out sprites: five disjoint draws of {a.n} score "
          f"{blocks.min():.1f} to {blocks.max():.1f} (the floor and its spread)")
    print(f"{'row':10s} {'calls':>5s} " + " ".join(f"{'s=' + s:>14s}" for s in a.shifts.split(",")))
    for row in a.rows.split(","):
        sampler, steps, *_ = row_spec(row)
        cells = []
        for shift in (float(s) for s in a.shifts.split(",")):
            start = time.perf_counter()
            x = sample(model, replace(schedule, shift=shift), a.n, sampler=sampler, steps=steps, context=context,
                       generator=torch.Generator().manual_seed(0)).x
            r = ev.row(row, x, labels, time.perf_counter() - start, (sampler, steps, 0.0, 0.0, 0.0))
            cells.append(f"{r.fid:7.1f} ({r.class_accuracy:.3f})")
        print(f"{row:10s} {network_calls(sampler, steps):5d} " + " ".join(f"{c:>14s}" for c in cells), flush=True)
    print("cells: sprite-FID (class accuracy)")


if __name__ == "__main__":
    main()
