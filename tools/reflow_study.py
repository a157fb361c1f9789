"""Reflow (Liu et al. 2023, "Flow straight and fast", §2.3): does straightening the flow model on the v-model's
own noise-to-sprite pairs reach the distillation bar at 4 calls for less CPU than progressive distillation?

1. pairs: z ~ N(0, I) and the teacher's deterministic sample x₀ from exactly that z (its zero-terminal-SNR
   schedule starts from pure noise, so z is the whole of its input), for random classes. Written in chunks,
   so a killed run keeps what it made and goes on from there.
2. train: the flow network (started from ``--init``) fitted by flow matching on the pairs, not on independent
   noise and data: x_t = (1 − t)·x₀ + t·z, target z − x₀. Each step costs the student alone (no teacher calls).
3. score: Euler on its uniform grid at 1, 2, 4 and 8 calls, judge A, n = 1,000, seeds 0 to 2 (docs/evaluation.md).

    python tools/reflow_study.py pairs --out runs/reflow/pairs
    python tools/reflow_study.py train --pairs runs/reflow/pairs --out runs/reflow/student
    python tools/reflow_study.py train --pairs runs/reflow/pairs --init runs/reflow/student/model_4000.safetensors \
        --grid 4 --steps 1500 --lr 1e-4 --seed 4 --out runs/reflow/grid4
    python tools/reflow_study.py score runs/reflow/student/model_4000.safetensors runs/reflow/grid4/model_1500.safetensors

What it measured (weights/README.md; docs/measurements/cpu_2026-12-08_reflow.txt): no, not on this CPU. After
4,000 steps the reflowed flow model scores 78.9 at 4 calls (the flow model: 163.3; the progressive students: 36.9),
and training it on the 4-step grid's times only (Liu et al.'s k-step distillation) made that worse, 103.4.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion_utilities import load_model_and_schedule, sample  # noqa: E402
from diffusion_utilities.weights import save_model  # noqa: E402
from study_common import CLASSES, JudgeA, ema_update  # noqa: E402

CHUNK = 1000


def make_pairs(a) -> None:
    teacher, schedule, _ = load_model_and_schedule(a.teacher)
    a.out.mkdir(parents=True, exist_ok=True)
    for k in tqdm(range(a.n // CHUNK), desc="pairs"):
        path = a.out / f"chunk_{k:04d}.safetensors"
        if path.exists():
            continue
        gen = torch.Generator().manual_seed(a.seed * 100_000 + k)
        z = torch.randn(CHUNK, 3, 16, 16, generator=gen)
        labels = torch.randint(0, CLASSES, (CHUNK,), generator=gen)
        x0 = sample(teacher, schedule, CHUNK, sampler=a.sampler, steps=a.steps, x_T=z,
                    context=F.one_hot(labels, CLASSES).float()).x.clamp(-1, 1)
        tmp = path.with_suffix(".tmp")
        save_file({"z": z, "x0": x0.contiguous(), "labels": labels}, str(tmp))
        tmp.rename(path)


def load_pairs(folder: Path):
    chunks = [load_file(str(p)) for p in sorted(folder.glob("chunk_*.safetensors"))]
    return tuple(torch.cat([c[k] for c in chunks]) for k in ("z", "x0", "labels"))


def reflow_loss(model, z, x0, c, gen, context_dropout: float, grid: int = 0):
    """Flow matching on coupled pairs; grid K > 0: t only at the K-step Euler grid's times (Liu et al.'s k-step
    distillation of a reflowed flow), else t ~ U[0, 1)."""
    t = torch.rand(len(z), generator=gen)
    if grid:
        t = 1 - torch.randint(0, grid, (len(z),), generator=gen).float() / grid
    keep = (torch.rand(len(z), generator=gen) >= context_dropout).float()[:, None]
    tt = t.view(-1, 1, 1, 1)
    return F.mse_loss(model((1 - tt) * x0 + tt * z, t, c * keep), z - x0)


def train(a) -> None:
    z, x0, labels = load_pairs(a.pairs)
    model, schedule, card = load_model_and_schedule(a.init)
    ema = load_model_and_schedule(a.init)[0].eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    start, losses = time.time(), []
    model.train()
    for step in tqdm(range(a.steps), desc="reflow"):
        for g in opt.param_groups:
            g["lr"] = a.lr * (1 - step / a.steps)
        idx = torch.randint(0, len(z), (a.batch,), generator=gen)
        loss = reflow_loss(model, z[idx], x0[idx], F.one_hot(labels[idx], CLASSES).float(), gen, 0.1, a.grid)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        ema_update(ema, model, step)
        if (step + 1) % a.save_every == 0 or step + 1 == a.steps:
            note = {"reflow": {"pairs": str(a.pairs), "n_pairs": len(z), "init": str(a.init), "steps": step + 1,
                               "lr": a.lr, "grid": a.grid, "batch": a.batch, "seed": a.seed, "wall_time_s": round(time.time() - start),
                               "loss_last_100": sum(losses[-100:]) / len(losses[-100:])}}
            save_model(ema, a.out / f"model_{step + 1}.safetensors", {**card, **note})
            print(json.dumps(note), flush=True)


@torch.no_grad()
def score(a) -> None:
    protocol = JudgeA()
    for weights in a.weights:
        model, schedule, _ = load_model_and_schedule(weights)
        schedule = replace(schedule, shift=a.shift)
        for steps in a.calls:
            line = protocol.score(lambda z: sample(model, schedule, sampler=a.sampler, steps=steps, x_T=z,
                                                   context=protocol.context).x.clamp(-1, 1))
            print(f"{weights} {a.sampler}-{steps} shift {a.shift}: {line}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("pairs")
    q.add_argument("--teacher", type=Path, default=Path("weights/sprites_v.safetensors"))
    q.add_argument("--sampler", default="dpm-solver++")
    q.add_argument("--steps", type=int, default=10)
    q.add_argument("--n", type=int, default=50_000)
    q.add_argument("--seed", type=int, default=11)
    q.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("train")
    q.add_argument("--pairs", type=Path, required=True)
    q.add_argument("--init", type=Path, default=Path("weights/sprites_flow.safetensors"))
    q.add_argument("--steps", type=int, default=4000)
    q.add_argument("--batch", type=int, default=100)
    q.add_argument("--lr", type=float, default=2e-4)
    q.add_argument("--seed", type=int, default=3)
    q.add_argument("--save-every", type=int, default=500)
    q.add_argument("--grid", type=int, default=0, help="train only at the K-step Euler grid's times (0: all t)")
    q.add_argument("--out", type=Path, required=True)
    q = sub.add_parser("score")
    q.add_argument("weights", type=Path, nargs="+")
    q.add_argument("--sampler", default="euler")
    q.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 8])
    q.add_argument("--shift", type=float, default=1.0)
    a = p.parse_args()
    {"pairs": make_pairs, "train": train, "score": score}[a.cmd](a)


if __name__ == "__main__":
    main()
