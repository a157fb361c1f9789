"""Issue 30's speed bar, side by side in one process: 32 sprites from the distilled student in 4 DDIM calls
against the course model's DDPM in 500, same device, same batch, median of several runs.

    python tools/student_speed.py [--device cpu|cuda] [--repeats 5]

Prints each median and their ratio; the measured numbers go to docs/benchmarks.md. Nothing here is used by
the library.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_utilities import load_model_and_schedule, sample  # noqa: E402
from diffusion_utilities.devices import hardware_name, pick_device  # noqa: E402


def median_seconds(run, repeats: int, device: torch.device) -> float:
    run()  # a warm-up: first calls pay for allocation (and on a GPU, kernel selection)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--student", type=Path, default=ROOT / "weights" / "sprites_distilled.safetensors")
    a = p.parse_args()
    device = pick_device(a.device)
    course, course_sch, _ = load_model_and_schedule(ROOT / "weights" / "sprites_ddpm.safetensors", device)
    student, student_sch, card = load_model_and_schedule(a.student, device)
    context = F.one_hot(torch.arange(32) % 5, 5).float().to(device)
    gen = lambda: torch.Generator(device).manual_seed(0)
    slow = median_seconds(lambda: sample(course, course_sch, 32, sampler="ddpm", context=context, generator=gen()),
                          a.repeats, device)
    fast = median_seconds(lambda: sample(student, student_sch, 32, sampler="ddim", steps=4, context=context,
                                         generator=gen()), a.repeats, device)
    print(f"{hardware_name(device)}, torch {torch.__version__}, 32 sprites, median of {a.repeats}")
    print(f"course model, DDPM-500:   {slow:8.3f} s")
    print(f"student, DDIM-4:          {fast:8.3f} s")
    print(f"ratio: {slow / fast:.0f}×")


if __name__ == "__main__":
    main()
