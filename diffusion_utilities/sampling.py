"""Samplers: one loop, parameterised by a step rule and a list of time steps.

The loop is DDPM Algorithm 2's: draw x_T, and for each (t, t_prev) of the grid ask the step rule for
the mean and standard deviation σ of x_{t_prev}, adding σ·z (z ~ N(0, I)) except on the final step
to t = 0. Every step rule has one signature, rule(net, x, t, t_prev) -> (mean, σ), where net(x, t)
is the network's output at x_t: ε or v for a diffusion model (``NoiseSchedule.x0_eps`` reads either
as the predicted clean image x̂₀ and noise ε̂), the velocity u for a flow model. A rule calls net
once a step (Heun twice); DPM-Solver++(2M) is multistep and remembers its previous step.

    ddpm           DDPM Algorithm 2 (Ho et al. 2020), σ_t² = β_t as in the course
    ddpm-no-noise  the same update with z = 0: the course's ablation, which collapses
    ddim           DDIM Eq. 12 (Song et al. 2021) with η (η = 0: deterministic)
    dpm-solver++   DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), deterministic, second order
    euler, heun    for a flow-matching model (FlowSchedule): Euler's method and Heun's second-order
                   method on the ODE dx/dt = u(x, t), as Karras et al. 2022 (Algorithm 1) use them

Classifier-free guidance (Ho & Salimans 2022), in the convention
ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅): w = 0 is plain conditioning; optionally rescaled
(Lin et al. 2024, §3.4) so that strong guidance does not over-expose.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from . import engine
from .checks import is_whole, real_number, whole_number
from .errors import BadInput
from .schedule import FlowSchedule, NoiseSchedule, timesteps_for

__all__ = [
    "SAMPLERS",
    "Samples",
    "sample",
    "sample_ddpm",
    "sample_ddim",
    "timesteps_for",
    "euler_step",
    "heun_step",
    "step_rule",
    "network_calls",
    "default_steps",
    "recommended_sampler",
    "sampling_policy",
    "FLOW_SHIFT",
    "denoise_add_noise",
    "ddpm_step",
    "ddim_step",
    "DPMSolverPP2M",
    "guided_output",
    "predict_noise",
    "check_context",
    "eval_mode",
]

SAMPLERS = NoiseSchedule.samplers + FlowSchedule.samplers


@dataclass
class Samples:
    """What a sampling run returns.

    x: (B, C, H, W) final images in about [-1, 1]
    frames: (F, B, C, H, W) float16 on the CPU, x_T first and the final images last
      (empty unless ``save_every`` was given); frame_t: the time of each frame, a step t (an int)
      of a diffusion schedule or a flow model's t in [0, 1] (a float).
    """

    x: torch.Tensor
    frames: torch.Tensor
    frame_t: list[int] | list[float]


def denoise_add_noise(x, t: int, pred_noise, schedule: NoiseSchedule, z=None):
    """The course's helper, one DDPM step from t to t - 1 (DDPM Algorithm 2, line 4):

    x_{t-1} = (x_t − (1 − α_t) / √(1 − ᾱ_t) · ε) / √α_t + √β_t · z
    """
    if schedule.prediction != "eps":
        raise BadInput(f"denoise_add_noise is the course's step for a noise-predicting model; this schedule's model "
                       f"predicts {schedule.prediction}: use sample(model, schedule, n, sampler='ddpm')")
    if z is None:
        z = torch.randn_like(x)
    mean, sigma = ddpm_step(schedule, x, pred_noise, t, t - 1)
    return mean + sigma * z


def ddpm_step(schedule: NoiseSchedule, x, eps, t: int, t_prev: int, x0=None):
    """Mean and σ of the DDPM ancestral step from t to t_prev; returns (mean, sigma).

    1. α = α_t for consecutive steps (the course's arithmetic exactly); for a stride,
       α = ᾱ_t / ᾱ_{t_prev}, the α of the respaced chain.
    2. mean = (x_t − (1 − α) / √(1 − ᾱ_t) · ε) / √α
       At α = 0 (the first step of a zero-terminal-SNR schedule) this is 0/0; the posterior mean
       (DDPM Eq. 7) there is √ᾱ_prev · x̂₀, which needs x0 (x̂₀) to be given.
    3. σ = √(1 − α) = √β: the course's choice, not the posterior's β̃ (see ddim_step with η = 1).
    """
    ab = schedule.ab_t[t]
    a = schedule.a_t[t] if t_prev == t - 1 else ab / schedule.ab_t[t_prev]
    if a == 0:
        if x0 is None:
            raise BadInput("at α_t = 0 (a zero-terminal-SNR schedule's first step) the DDPM step needs x0, "
                           "the predicted clean image")
        mean = schedule.ab_t[t_prev].sqrt() * x0
    else:
        mean = (x - eps * ((1 - a) / (1 - ab).sqrt())) / a.sqrt()
    sigma = schedule.b_t[t].sqrt() if t_prev == t - 1 else (1 - a).sqrt()
    return mean, sigma


def ddim_step(schedule: NoiseSchedule, x, eps, t: int, t_prev: int, eta: float = 0.0, x0=None):
    """Mean and σ of the DDIM step from t to t_prev (DDIM Eq. 12 and 16); returns (mean, sigma).

    1. x̂_0 = (x_t − √(1 − ᾱ_t) · ε) / √ᾱ_t                      the predicted clean image
       (or x0 itself when given: a v-model's, NoiseSchedule.x0_eps)
    2. σ = η · √((1 − ᾱ_prev) / (1 − ᾱ_t)) · √(1 − ᾱ_t / ᾱ_prev)  η = 1 gives DDPM's posterior β̃_t
    3. mean = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ²) · ε              "direction pointing to x_t"
    """
    ab, ab_prev = schedule.ab_t[t], schedule.ab_t[t_prev]
    if x0 is None:
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt() if eta else 0.0
    mean = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps
    return mean, sigma


class DPMSolverPP2M:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a multistep solver of the diffusion ODE.

    A step rule, rule(net, x, t, t_prev) -> (x_prev, 0.0), that remembers its previous step: make
    one per run, and call it on the grid's steps in order. With α = √ᾱ, σ = √(1 − ᾱ), λ = log(α / σ)
    and h = λ_prev − λ_t:
    1. D_t = x̂_0, the data prediction (``schedule.x0_eps`` of the network's output).
    2. From the second step on, extrapolate with the previous prediction:
       D = (1 + 1/(2r)) · D_t − 1/(2r) · D_last,  r = h_last / h.
    3. x_prev = (σ_prev / σ_t) · x_t − α_prev · (e^{−h} − 1) · D
    The step to t = 0 (σ = 0, λ = ∞) returns D_t itself, first order, as the paper advises
    for the final step with few steps.
    """

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.last = None  # (D_last, h_last) from the previous step

    def __call__(self, net, x, t: int, t_prev: int):
        ab = self.schedule.ab_t
        d, _ = self.schedule.x0_eps(x, net(x, t), t)  # 1.
        if t_prev == 0:
            return d, 0.0
        alpha, sigma = ab[t].sqrt(), (1 - ab[t]).sqrt()
        alpha_p, sigma_p = ab[t_prev].sqrt(), (1 - ab[t_prev]).sqrt()
        h = torch.log(alpha_p / sigma_p) - torch.log(alpha / sigma)  # +∞ from ᾱ_T = 0: e^{−h} = 0, x_prev = σ_p·x + α_p·D
        d_used = d
        if self.last is not None:
            d_last, h_last = self.last
            r = h_last / h
            d_used = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_last  # 2.
        self.last = (d, h)
        return (sigma_p / sigma) * x - alpha_p * torch.expm1(-h) * d_used, 0.0  # 3.


def euler_step(x, u, t: float, t_prev: float):
    """Euler's step on the flow-matching ODE dx/dt = u from t to t_prev: x_prev = x_t + (t_prev − t)·u.

    With u = ε̂ − x̂₀ at x_t = (1 − t)·x̂₀ + t·ε̂ it lands on (1 − t_prev)·x̂₀ + t_prev·ε̂: DDIM's η = 0
    step on the straight path (α = 1 − t, σ = t), which is why DDIM is "Euler" too.
    """
    return x + (t_prev - t) * u


def heun_step(net, x, t: float, t_prev: float):
    """Heun's method (Karras et al. 2022, Algorithm 1) from t to t_prev, a step rule; returns (x_prev, 0.0).

    1. u = net(x, t), the velocity at x_t, and Euler's step x' = x_t + (t_prev − t)·u
    2. u' = net(x', t_prev), a second look at the velocity where Euler's step landed
    3. x_prev = x_t + (t_prev − t)·(u + u')/2
    Two network calls a step, but the step to t = 0 stays Euler's (step 1 alone: a call more for little).
    """
    u = net(x, t)
    x_euler = euler_step(x, u, t, t_prev)
    if t_prev == 0:
        return x_euler, 0.0
    return euler_step(x, (u + net(x_euler, t_prev)) / 2, t, t_prev), 0.0


# Steps when none are asked for; ddpm and ddpm-no-noise take all T.
DEFAULT_STEPS = {"ddim": 25, "dpm-solver++": 20, "euler": 20, "heun": 10}


def default_steps(sampler: str, schedule) -> int:
    return min(DEFAULT_STEPS.get(sampler, schedule.T), schedule.T)


# A flow model's time-grid shift when none is asked for (sample's --shift): s = 2 scored better than the uniform
# grid for Euler-8/16 and Heun-5/9 at n = 400, by 2.5 to 13 points (tools/flow_shift_study.py, weights/README.md)
FLOW_SHIFT = 2.0


def recommended_sampler(schedule, card: dict | None = None) -> tuple[str, int]:
    """(sampler, steps): the fastest measured to reach DDPM-500's quality for this kind of model (steps at most T;
    the measurements: docs/evaluation.md's protocol table).

    A distilled student's card names the sampler it was trained for (DDIM in its steps): that one.
    The course's schedule: DDPM itself, all T steps (its deterministic samplers fall well short, lesson 7).
    A zero-terminal-SNR v-model: DPM-Solver++ in 10 steps. A flow model: Heun in 9 steps, 17 calls.
    """
    taught = (card or {}).get("sampler")
    if isinstance(taught, dict) and taught.get("sampler") in schedule.samplers:
        return taught["sampler"], min(whole_number(taught.get("steps"), "the card's sampler steps", 1), schedule.T)
    if isinstance(schedule, FlowSchedule):
        return "heun", min(9, schedule.T)
    return ("dpm-solver++", min(10, schedule.T)) if schedule.ab_t[-1] == 0 else ("ddpm", schedule.T)


def sampling_policy(schedule, card: dict | None = None, shift: float | None = None):
    """(sampler, steps, schedule): how the commands and the playground sample a model they are not told how to
    sample. ``recommended_sampler``'s sampler and steps; for a flow model, its time grid shifted by ``shift``
    (default FLOW_SHIFT), which scored better than the uniform grid it was trained on (weights/README.md).
    ``sample`` itself runs the schedule it is given, as a lesson gives it."""
    sampler, steps = recommended_sampler(schedule, card)
    if isinstance(schedule, FlowSchedule):
        schedule = replace(schedule, shift=FLOW_SHIFT if shift is None else shift)  # FlowSchedule checks it
    return sampler, steps, schedule


def network_calls(sampler: str, steps: int) -> int:
    """How many times ``sampler`` calls the network in ``steps`` steps (Heun: twice a step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def step_rule(sampler: str, schedule, eta: float = 0.0):
    """``sampler``'s step rule: rule(net, x, t, t_prev) -> (mean, σ) of x_{t_prev}, given x_t.

    net(x, t) is the network's output at x_t (ε, v or a flow model's velocity). Each call of a
    DPM-Solver++ rule depends on the one before, so a run makes its own.
    """
    if sampler == "euler":
        return lambda net, x, t, t_prev: (euler_step(x, net(x, t), t, t_prev), 0.0)
    if sampler == "heun":
        return heun_step
    if sampler == "dpm-solver++":
        return DPMSolverPP2M(schedule)
    if sampler not in ("ddpm", "ddpm-no-noise", "ddim"):
        raise BadInput(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")

    def rule(net, x, t, t_prev):
        x0, eps = schedule.x0_eps(x, net(x, t), t)
        if sampler == "ddim":
            return ddim_step(schedule, x, eps, t, t_prev, eta, x0)
        mean, sigma = ddpm_step(schedule, x, eps, t, t_prev, x0)
        return mean, (0.0 if sampler == "ddpm-no-noise" else sigma)  # the course's ablation: z = 0

    return rule


def check_context(context, n: int, n_cfeat: int) -> None:
    """One BadInput line unless context is None or an (n, n_cfeat) tensor of finite, non-negative weights."""
    if context is None:
        return
    if not torch.is_tensor(context) or not context.is_floating_point():
        raise BadInput(f"context must be a float tensor of shape ({n}, {n_cfeat}), got {type(context).__name__}"
                       f"{'' if not torch.is_tensor(context) else ' of ' + str(context.dtype)}")
    if tuple(context.shape) != (n, n_cfeat):
        raise BadInput(f"context has shape {tuple(context.shape)}; expected ({n}, {n_cfeat}): one row of class weights per sprite")
    if not torch.isfinite(context).all() or (context < 0).any():
        raise BadInput("context has negative, NaN or infinite weights; use weights ≥ 0 (one-hot or a mix)")
    if (context > MAX_CONTEXT_WEIGHT).any():  # the model learnt weights 0 and 1: far past them its sprites overflow to NaN
        raise BadInput(f"context has a weight of {context.max().item():g}; use weights from 0 to {MAX_CONTEXT_WEIGHT:g} "
                       f"(one-hot rows, or mixes of them)")


MAX_CONTEXT_WEIGHT = 10.0


def guided_output(model, x, t_norm: torch.Tensor, context=None, guidance: float = 0.0, guidance_rescale: float = 0.0):
    """The network's output with classifier-free guidance w: (1 + w)·out(x, c) − w·out(x, ∅), both halves
    in one batch; out(x, t, c) itself when w = 0 or there is no context.

    The output is ε, v or a flow model's velocity: guidance is linear in each. t_norm is the model's
    time input, one for the whole batch or one per sprite, as for the model.
    guidance_rescale φ (Lin et al. 2024, §3.4, Eq. 15–16): scale the guided output back to the
    per-sprite standard deviation of the conditional one, and mix: φ·rescaled + (1 − φ)·guided.
    Strong guidance otherwise inflates it, which shows as over-saturated, over-exposed sprites.
    """
    guidance = real_number(guidance, "guidance", 0, hint="(the classifier-free guidance weight w; 0 is none)")
    guidance_rescale = real_number(guidance_rescale, "guidance_rescale", 0, 1, hint="(φ; Lin et al. use 0.7)")
    if context is None or guidance == 0:
        return model(x, t_norm, context)
    t_both = t_norm if t_norm.numel() == 1 else torch.cat([t_norm, t_norm])
    out_c, out_u = model(torch.cat([x, x]), t_both, torch.cat([context, torch.zeros_like(context)])).chunk(2)
    guided = (1 + guidance) * out_c - guidance * out_u
    if guidance_rescale:
        dims = list(range(1, guided.dim()))  # per sprite: (B, 1, 1, 1)
        rescaled = guided * (out_c.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = guidance_rescale * rescaled + (1 - guidance_rescale) * guided
    return guided


predict_noise = guided_output  # the course-era name, which lesson 6's exercise and tools/ still import


def _whole(v):
    """A numpy or other integral number as an int (for n and steps); anything else as it is, for the checks to refuse."""
    return int(v) if is_whole(v) else v


def _check_args(model, schedule, n, sampler, steps, guidance, guidance_rescale, eta, x_T, context) -> int:
    """Every argument of ``sample`` checked before any work; returns the number of sprites."""
    if sampler not in SAMPLERS:
        raise BadInput(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler not in schedule.samplers:
        kind = "a flow-matching" if isinstance(schedule, FlowSchedule) else "a diffusion"
        raise BadInput(f"sampler {sampler} does not fit {kind} model; choose one of {', '.join(schedule.samplers)}")
    T = schedule.T
    whole_number(steps, "steps", 1, T, hint=f"(T = {T})")
    real_number(guidance, "guidance", 0)
    real_number(guidance_rescale, "guidance_rescale", 0, 1, hint="(Lin et al. use 0.7)")
    real_number(eta, "eta", 0)
    if eta and sampler != "ddim":
        raise BadInput(f"eta is the ddim sampler's noise level; {sampler} ignores it, so drop it or use sampler ddim")
    if x_T is not None:
        shape = (model.in_channels, model.h, model.h)
        if not torch.is_tensor(x_T) or x_T.dim() != 4 or tuple(x_T.shape[1:]) != shape:
            raise BadInput(f"x_T must be a (B, {', '.join(map(str, shape))}) tensor")
        if not torch.isfinite(x_T).all():  # NaN noise gives NaN sprites, silently
            raise BadInput("x_T holds NaN or infinite values; start from finite noise, e.g. torch.randn")
        n = x_T.shape[0]
    n = _whole(n)
    n = whole_number(n, "n (the number of sprites)", 1)
    check_context(context, n, model.n_cfeat)
    if guidance and context is None:
        raise BadInput("guidance needs a context to guide towards; pass --context or set guidance to 0")
    return n


@contextmanager
def eval_mode(model):
    """``with eval_mode(model):`` the model in eval mode, each module's own mode restored afterwards.

    Sampling in training mode would normalise each batch by its own statistics and overwrite BatchNorm's
    running means and variances with those of noise, changing every later sample.
    """
    training = [m for m in model.modules() if m.training] if isinstance(model, torch.nn.Module) else []
    for m in training:
        m.eval()
    try:
        yield model
    finally:
        for m in training:
            m.train()


def _in_eval_mode(fn):
    """Run ``fn(model, ...)`` with ``model`` in eval mode (``eval_mode``): sample() on a model left in training mode."""
    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        with eval_mode(model):
            return fn(model, *args, **kwargs)
    return run


@_in_eval_mode
@torch.inference_mode()
def sample(model, schedule: NoiseSchedule | FlowSchedule, n: int | None = None, *, sampler: str = "ddpm",
           steps: int | None = None, context: torch.Tensor | None = None, guidance: float = 0.0,
           guidance_rescale: float = 0.0, eta: float = 0.0, x_T: torch.Tensor | None = None,
           generator: torch.Generator | None = None, save_every: int | None = None, progress: bool = False,
           fast: bool = True, cuda_graph: bool | None = None, precision: str = "fp32", compile: str | None = None,
           grid: list | None = None, known=None) -> Samples:
    """Draw ``n`` images from ``model`` by running ``sampler`` over ``steps`` time steps (default: T).

    context: (n, n_cfeat) weights or None; guidance: the classifier-free guidance weight w;
    guidance_rescale: φ in [0, 1] (Lin et al. 2024 §3.4; they use 0.7), see ``guided_output``;
    x_T: (n, C, H, W) starting noise (default: drawn from ``generator``, on its own device, or
    without one on the model's); save_every: keep a frame every that many steps, for animations.
    grid, known: what editing.py asks of the loop: grid, the times to visit (default
    ``schedule.grid(steps)``: SDEdit starts lower, DDIM inversion runs it upwards); known, a
    ``editing.Known`` whose pixels replace the model's after each step (inpainting).
    fast, cuda_graph, precision, compile: how the network runs, not what it computes
    (``engine.SamplingRun``): fast=True (BatchNorm folded, channels_last; agrees with the model to
    float rounding), cuda_graph=None (on for the fast path on a GPU), precision="fp32" or "bf16"
    (faster on GPUs, but moves the samples by more than rounding, so never the default), compile=None,
    "default" or "max-autotune" (torch.compile; pays only for long runs). The timings behind these
    defaults are in docs/benchmarks.md. A model left in training mode is sampled in eval mode (its
    BatchNorm running statistics) and handed back in its own mode, unchanged.
    """
    steps = schedule.T if steps is None else _whole(steps)
    n = _check_args(model, schedule, n, sampler, steps, guidance, guidance_rescale, eta, x_T, context)
    # the engine: the network made fast, the noise drawn on its device, and far too many sprites refused
    run = engine.SamplingRun(model, schedule, generator, sprites=None if x_T is not None else n, guided=guidance > 0,
                             fast=fast, cuda_graph=cuda_graph, precision=precision, compile=compile)
    x = run.noise((n, model.in_channels, model.h, model.h)) if x_T is None else run.put(x_T)  # x_T ~ N(0, I)
    ts = schedule.grid(steps) if grid is None else grid  # T, ..., 0 (a flow model: 1.0, ..., 0.0)
    guided = functools.partial(guided_output, context=run.put(context), guidance=guidance,
                               guidance_rescale=guidance_rescale)
    net = run.network_fn(guided, ts, x)  # a plain function: net(x, t) is the network's (guided) output at x_t
    rule = step_rule(sampler, run.schedule, eta)
    frames = [(ts[0], x.half().cpu())] if save_every else []
    for i, (t, t_prev) in enumerate(tqdm(list(zip(ts[:-1], ts[1:])), disable=not progress, desc=sampler)):
        mean, sigma = rule(net, x, t, t_prev)
        x = mean + sigma * run.noise(x.shape) if t_prev > 0 and not _is_zero(sigma) else mean  # no noise into x_0
        if known is not None:  # inpainting: the known pixels at t_prev, as the forward process noises them
            x = known.merge(x, t_prev, run)
        if save_every and ((i + 1) % save_every == 0 or t_prev == 0):
            frames.append((t_prev, x.half().cpu()))
    return Samples(x, torch.stack([f for _, f in frames]) if frames else torch.empty(0), [t for t, _ in frames])


def _is_zero(sigma) -> bool:
    return isinstance(sigma, float) and sigma == 0.0


def sample_ddpm(model, schedule: NoiseSchedule, n_sample: int, save_rate: int | None = 20, **kwargs) -> Samples:
    """The course's ``sample_ddpm``: all T steps of DDPM, keeping a frame every ``save_rate`` steps."""
    return sample(model, schedule, n_sample, sampler="ddpm", save_every=save_rate, **kwargs)


def sample_ddim(model, schedule: NoiseSchedule, n_sample: int, n: int = 25, **kwargs) -> Samples:
    """The course's ``sample_ddim``: ``n_sample`` sprites in ``n`` DDIM steps (η = 0), keeping every frame.

    Mind the course's names: here ``n`` counts steps, where ``sample``'s ``n`` counts sprites (its
    steps are ``steps``); the labs call ``sample_ddim(n_sample, n=25)``, so the names stay."""
    kwargs.setdefault("save_every", 1)
    return sample(model, schedule, n_sample, sampler="ddim", steps=n, **kwargs)
