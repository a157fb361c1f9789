"""Where does a 4-step distilled student lose sprite-FID, and is it exposure bias? (weights/README.md)

1. Mixed chains: the student for its first k of 4 DDIM steps (t = 500, 375, 250, 125, 0), then the teacher's
   DDIM on its 32-step grid for the rest; judge A's sprite-FID and class accuracy, n = 1,000, seeds 0 to 2
   (the protocol's sampling seeds and reference, docs/evaluation.md).
2. The student's one step against the teacher's eight (RMS in x), on its own path from the noise: where
   sampling takes it, not where training's noised data put it.

    python tools/distill_own_path_study.py STUDENT [--teacher weights/sprites_v.safetensors] [--n 1000]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion_utilities import load_model_and_schedule  # noqa: E402
from diffusion_utilities.distillation import ddim_jump, own_steps, student_times, target_along  # noqa: E402
from diffusion_utilities.evaluation import PROTOCOL  # noqa: E402
from study_common import JudgeA  # noqa: E402

STEPS, SUBSTEPS = 4, 8  # the student's steps, the teacher's per student step


def mixed_chain(student, teacher, schedule, noise, k, c):
    """The student's first k steps on its grid (its own chain, ``own_steps``), then the teacher's SUBSTEPS DDIM
    steps for each student step left."""
    x, fine = own_steps(student, schedule, noise, torch.full((len(noise),), k), STEPS, c), schedule.grid(STEPS * SUBSTEPS)
    for j in range(SUBSTEPS * k, SUBSTEPS * STEPS):
        t, t_next = torch.full((len(x),), fine[j]), torch.full((len(x),), fine[j + 1])
        x = ddim_jump(schedule, x, teacher(x, schedule.model_time(t), c), t, t_next)
    return x


def own_path_errors(student, teacher, schedule, noise, c) -> list[float]:
    """RMS (in x) of the student's step against the teacher's SUBSTEPS steps, from where its own chain is."""
    def at(step):  # where the student's own chain is after ``step`` steps
        return own_steps(student, schedule, noise, torch.full((len(noise),), step), STEPS, c)

    errors = []
    for i in range(STEPS):
        x, times = at(i), student_times(schedule, STEPS, torch.full((len(noise),), i), SUBSTEPS)
        teachers = ddim_jump(schedule, x, target_along(teacher, schedule, x, times, c), times[0], times[-1])
        errors.append((at(i + 1) - teachers).pow(2).mean().sqrt().item())
    return errors


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("student", type=Path)
    p.add_argument("--teacher", type=Path, default=Path("weights/sprites_v.safetensors"))
    p.add_argument("--n", type=int, default=PROTOCOL["n"])
    a = p.parse_args()
    student, schedule, _ = load_model_and_schedule(a.student)
    teacher = load_model_and_schedule(a.teacher)[0]
    protocol = JudgeA(a.n)
    c = protocol.context
    for k in range(STEPS + 1):
        line = protocol.score(lambda z: mixed_chain(student, teacher, schedule, z, k, c).clamp(-1, 1))
        print(f"student's steps 1..{k}, teacher's the rest: {line}", flush=True)
    errors = own_path_errors(student, teacher, schedule, protocol.noise[0], c)
    print("on its own path, RMS in x against the teacher's steps: " + ", ".join(f"{e:.4f}" for e in errors))


if __name__ == "__main__":
    main()
