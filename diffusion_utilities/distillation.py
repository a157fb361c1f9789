"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Algorithm 2): a student learns to take in one deterministic DDIM step what its
teacher takes in two, so a round halves the number of sampling steps; the student of one round is
the teacher of the next (16 → 8 → 4 → 2 → 1 steps).

One training example, for a student that samples in N steps on the grid T = t_0 > t_1 > ... > t_N = 0
(``schedule.grid(N)``), whose teacher samples on the grid of 2N steps (which holds every t_i and the
midpoints between them):
1. pick a step i, and x_t = α_t·x₀ + σ_t·ε at t = t_i                  (α = √ᾱ, σ = √(1 − ᾱ))
2. the teacher's two DDIM steps: x_t → x_mid → x_prev (t → t_mid → t_prev = t_{i+1})
3. the clean image x̃ that makes one DDIM step from x_t land on x_prev. A DDIM step is
   x_prev = α_p·x̂ + σ_p·(x_t − α_t·x̂)/σ_t, so
       x̃ = (x_prev − (σ_p/σ_t)·x_t) / (α_p − (σ_p/σ_t)·α_t)              (Algorithm 2, line 8)
4. train the student's output towards what it would be if its x̂₀ were x̃: for a v-model
   ṽ = (α_t·x_t − x̃)/σ_t, whose squared error is the paper's x-space loss weighted by SNR + 1 (§4).

The denominator is never 0: ᾱ falls with t, so α_p/σ_p > α_t/σ_t. At t_prev = 0 (σ_p = 0) the target
is the teacher's own final x̂₀; at t = T on a zero-terminal-SNR schedule (α_t = 0) the v form still holds.

Step 2 may take k > 2 teacher steps (``substeps``): a first round can then learn from a finer grid than
twice its own (the paper's rounds take k = 2; every later round must, as its teacher is the last student).

Step 1 may instead take x_t from the student's own DDIM steps, from pure noise to t_i (``own_steps``): the
inputs it meets when it samples. Trained on noised data only, a student's error on its own trajectory grows
step by step (this repository's 4-step student, RMS in x against its teacher: 0.04 on noised data at each of
its last three steps, 0.04, 0.07 and 0.11 on its own path), the exposure bias of any few-step sampler.
Measured here, it does not pay: 1,200 more steps on its own path cut the last step's error to 0.086 and left
the 4-call sprite-FID where it was (42.0, seeds 38.4 to 47.6, against 37.9; weights/README.md).
"""

from __future__ import annotations

import torch

from .schedule import NoiseSchedule

__all__ = ["ddim_jump", "distillation_target", "own_steps", "student_times", "target_along"]


def _alpha_sigma(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor):
    ab = schedule.ab_t.to(like.device)[t].view(-1, *[1] * (like.dim() - 1))  # (B, 1, 1, 1)
    return ab.sqrt(), (1 - ab).sqrt()


def ddim_jump(schedule: NoiseSchedule, x: torch.Tensor, out: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor):
    """The deterministic DDIM step (η = 0) from x_t to x_{t_prev}, a time per sprite: α_p·x̂₀ + σ_p·ε̂."""
    x0, eps = schedule.x0_eps(x, out, t)
    a_p, s_p = _alpha_sigma(schedule, t_prev, x)
    return a_p * x0 + s_p * eps


def student_times(schedule: NoiseSchedule, steps: int, i: torch.Tensor, substeps: int = 2):
    """The teacher's times across the student's step i of ``steps``: (t_i, ..., t_{i+1}) on the grid of
    substeps·steps, which holds every t_i (T − ⌊T·j/steps⌋ is on both grids); for substeps = 2, (t, t_mid, t_prev)."""
    fine = torch.tensor(schedule.grid(substeps * steps), device=i.device)
    return tuple(fine[substeps * i + j] for j in range(substeps + 1))


@torch.no_grad()
def own_steps(model, schedule: NoiseSchedule, noise: torch.Tensor, i: torch.Tensor, steps: int, c=None) -> torch.Tensor:
    """x at t_i of the model's own ``steps``-step DDIM chain from pure noise (x_T = noise, as the samplers
    start), a step i per sprite; the model runs as it samples (eval mode), i.e. max(i) calls in all."""
    grid = torch.tensor(schedule.grid(steps), device=noise.device)
    was_training = model.training
    model.eval()
    x, at_i = noise, noise.clone()
    for j in range(int(i.max())):
        t = grid[j].expand(len(x))
        x = ddim_jump(schedule, x, model(x, schedule.model_time(t), c), t, grid[j + 1].expand(len(x)))
        at_i[i == j + 1] = x[i == j + 1]
    model.train(was_training)
    return at_i


@torch.no_grad()
def distillation_target(teacher, schedule: NoiseSchedule, x_t, t, t_mid, t_prev, c=None) -> torch.Tensor:
    """What the student should output at x_t (steps 2 to 4 above): teacher(x, t/T, c) is the teacher's
    network output, ε or v as the schedule says."""
    return target_along(teacher, schedule, x_t, (t, t_mid, t_prev), c)


@torch.no_grad()
def target_along(teacher, schedule: NoiseSchedule, x_t, times, c=None) -> torch.Tensor:
    """The same target when the teacher takes the DDIM steps between any ``times`` (t, ..., t_prev)."""
    x = x_t
    for t_from, t_to in zip(times, times[1:]):  # 2.
        x = ddim_jump(schedule, x, teacher(x, schedule.model_time(t_from), c), t_from, t_to)
    t, t_prev = times[0], times[-1]
    a, s = _alpha_sigma(schedule, t, x_t)
    a_p, s_p = _alpha_sigma(schedule, t_prev, x_t)
    x0 = (x - (s_p / s) * x_t) / (a_p - (s_p / s) * a)  # 3.
    eps = (x_t - a * x0) / s  # the noise the same single step implies
    return schedule.target(x0, eps, t)  # 4.
