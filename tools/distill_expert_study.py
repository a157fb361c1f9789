"""Does the 4-step student train better with its BatchNorm frozen, and does one step gain from a network of its own?

Fine-tunes the K = 8 student (weights/README.md) on distillation_loss's target (the teacher's eight DDIM substeps
across a student step, data noised to its start), either on all four of its steps (the default) or on one step
alone, an "expert" for one time range (as eDiff-I's ensemble of expert denoisers, Balaji et al. 2022; the same
sampling cost, as each call is one network of the same size). --batchnorm frozen trains in eval mode, on the
student's running statistics, which are what sampling uses; --batchnorm train is the control, batch statistics
as ``train`` runs it. Measured: each step's RMS error in x against the teacher's eight substeps, on held-out
sprites noised to its start and on the chain's own path; sprite-FID (judge A, n = 1,000, seeds 0 to 2) of the
4-step chain.

    python tools/distill_expert_study.py runs/distill_k8/steps_4/model.safetensors --steps 500 \
        --out runs/expert/all_frozen_bn.safetensors
    python tools/distill_expert_study.py runs/distill_k8/steps_4/model.safetensors --steps 500 --batchnorm train \
        --out runs/expert/all_bn_train.safetensors
    python tools/distill_expert_study.py runs/distill_k8/steps_4/model.safetensors --step 3 --batchnorm train \
        --steps 500 --out runs/expert/step3_bn_train.safetensors

An --out that exists is scored, not trained again.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion_utilities import load_model_and_schedule, sprites_to_tensor  # noqa: E402
from diffusion_utilities.data import procedural_dataset  # noqa: E402
from diffusion_utilities.distillation import ddim_jump, student_times, target_along  # noqa: E402
from diffusion_utilities.weights import save_model  # noqa: E402
from study_common import JudgeA, ema_update  # noqa: E402

STEPS, SUBSTEPS = 4, 8


def step_loss(model, teacher, schedule, x0, c, i, gen):
    """distillation_loss's, at step i of the 4 (None: a step drawn per sprite, as distillation_loss draws)."""
    noise = torch.randn(x0.shape, generator=gen)
    keep = (torch.rand(len(x0), generator=gen) >= 0.1).float()[:, None]
    i = torch.randint(0, STEPS, (len(x0),), generator=gen) if i is None else torch.full((len(x0),), i)
    times = student_times(schedule, STEPS, i, SUBSTEPS)
    x_t = schedule.add_noise(x0, times[0], noise)
    target = target_along(teacher, schedule, x_t, times, c * keep)
    return F.mse_loss(model(x_t, schedule.model_time(times[0]), c * keep), target)


def train_expert(a, student, teacher, schedule, card):
    data = procedural_dataset(a.n_sprites, a.data_seed)
    x, labels = sprites_to_tensor(data.sprites), torch.from_numpy(data.labels)
    # BatchNorm frozen at the student's running statistics (eval mode, still trained): a batch all at one t has
    # statistics far from those of the mixed-t batches the student learned with, and in train mode the student's
    # own step-3 loss is 0.51 where in eval mode it is 0.005 (a first run of this study trained that way and spent
    # its 500 steps recovering, ending at 0.03)
    # (--batchnorm train: the control, BatchNorm on batch statistics as ``train`` runs it, the EMA following its buffers)
    model, ema = copy.deepcopy(student).train(a.batchnorm == "train"), copy.deepcopy(student).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen, start = torch.Generator().manual_seed(a.seed), time.time()
    for k in tqdm(range(a.steps), desc=f"expert for step {'s 0-3' if a.step is None else a.step}"):
        for g in opt.param_groups:
            g["lr"] = a.lr * (1 - k / a.steps)
        idx = torch.randint(0, len(x), (100,), generator=gen)
        loss = step_loss(model, teacher, schedule, x[idx], labels[idx], a.step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, model, k)  # its buffers unchanged when BatchNorm is frozen
    note = {"expert": {"student": str(a.student), "step": a.step, "batchnorm": a.batchnorm, "steps": a.steps, "lr": a.lr,
                       "wall_time_s": round(time.time() - start), "last_loss": loss.item()}}
    save_model(ema, a.out, {**card, **note})
    print(note, flush=True)
    return ema


@torch.no_grad()
def step_error(net, teacher, schedule, x, i, c) -> float:
    times = student_times(schedule, STEPS, torch.full((len(x),), i), SUBSTEPS)
    goal = ddim_jump(schedule, x, target_along(teacher, schedule, x, times, c), times[0], times[-1])
    mine = ddim_jump(schedule, x, net(x, schedule.model_time(times[0]), c), times[0], times[-1])
    return (mine - goal).pow(2).mean().sqrt().item()


@torch.no_grad()
def walk(student, expert, schedule, noise, steps, upto, c):
    """The 4-step DDIM chain from the noise, ``upto`` steps of it: the expert takes the ``steps`` it was trained
    for, the student the rest."""
    x, grid = noise, schedule.grid(STEPS)
    for j in range(upto):
        t, t_next = torch.full((len(x),), grid[j]), torch.full((len(x),), grid[j + 1])
        x = ddim_jump(schedule, x, (expert if j in steps else student)(x, schedule.model_time(t), c), t, t_next)
    return x


@torch.no_grad()
def report(a, student, expert, teacher, schedule):
    steps = range(STEPS) if a.step is None else [a.step]
    held = procedural_dataset(200, 991)
    x0, c200 = sprites_to_tensor(held.sprites), torch.from_numpy(held.labels)
    protocol = JudgeA()
    c, noise = protocol.context, protocol.noise
    for who, net in (("student", student), ("expert", expert)):
        noised, on_path = [], []
        for i in steps:
            t_i = student_times(schedule, STEPS, torch.full((200,), i), SUBSTEPS)[0]
            x_t = schedule.add_noise(x0, t_i, torch.randn(x0.shape, generator=torch.Generator().manual_seed(5 + i)))
            noised.append(step_error(net, teacher, schedule, x_t, i, c200))
            on_path.append(step_error(net, teacher, schedule, walk(student, net, schedule, noise[0], steps, i, c), i, c))
        line = protocol.score(lambda z: walk(student, net, schedule, z, steps, STEPS, c).clamp(-1, 1))
        print(f"steps {list(steps)} by the {who}: RMS error in x "
              f"{', '.join(f'{e:.4f}' for e in noised)} on noised held-out sprites, "
              f"{', '.join(f'{e:.4f}' for e in on_path)} on its own path; 4-call {line}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("student", type=Path)
    p.add_argument("--teacher", type=Path, default=Path("weights/sprites_v.safetensors"))
    p.add_argument("--step", type=int, default=None, help="the one step (0-3) the expert takes; default: all four")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batchnorm", choices=("frozen", "train"), default="frozen",
                   help="frozen: the student's running statistics, trained in eval mode; train: batch statistics")
    p.add_argument("--n-sprites", type=int, default=60_000)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    student, schedule, card = load_model_and_schedule(a.student)
    teacher = load_model_and_schedule(a.teacher)[0]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    expert = load_model_and_schedule(a.out)[0] if a.out.exists() else train_expert(a, student, teacher, schedule, card)
    report(a, student.eval(), expert.eval(), teacher.eval(), schedule)


if __name__ == "__main__":
    main()
