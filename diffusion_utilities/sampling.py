"""Samplers: one loop, parameterised by a step rule and a list of time steps.

At each step the network's output (ε or v: the schedule knows which) becomes the predicted clean
image x̂₀ and noise ε̂ (``NoiseSchedule.x0_eps``), and a step rule maps (x_t, x̂₀, ε̂, t, t_prev)
to the mean and standard deviation of x_{t_prev}; the loop adds σ·z (z ~ N(0, I)) except on the
final step to t = 0.

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
import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .engine import SamplingNetwork
from .checks import real_number
from .errors import BadInput
from .memory import check_sampling_memory
from .model import ContextUnet
from .schedule import FlowSchedule, NoiseSchedule, timesteps_for

__all__ = [
    "SAMPLERS",
    "Samples",
    "sample",
    "sample_ddpm",
    "sample_ddim",
    "timesteps_for",
    "euler_step",
    "HeunStep",
    "network_calls",
    "default_steps",
    "recommended_sampler",
    "FLOW_SHIFT",
    "denoise_add_noise",
    "ddpm_step",
    "ddim_step",
    "DPMSolverPP2M",
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
      (empty unless ``save_every`` was given); frame_t: the time step of each frame.
    """

    x: torch.Tensor
    frames: torch.Tensor
    frame_t: list[int]


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

    With α = √ᾱ, σ = √(1 − ᾱ), λ = log(α / σ) and h = λ_prev − λ_t:
    1. D_t = x̂_0, the data prediction (as in DDIM step 1, or x0 when given).
    2. From the second step on, extrapolate with the previous prediction:
       D = (1 + 1/(2r)) · D_t − 1/(2r) · D_last,  r = h_last / h.
    3. x_prev = (σ_prev / σ_t) · x_t − α_prev · (e^{−h} − 1) · D
    The step to t = 0 (σ = 0, λ = ∞) returns D_t itself, first order, as the paper advises
    for the final step with few steps.
    """

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.last = None  # (D_last, h_last) from the previous step

    def __call__(self, x, eps, t: int, t_prev: int, x0=None):
        ab = self.schedule.ab_t
        alpha, sigma = ab[t].sqrt(), (1 - ab[t]).sqrt()
        d = (x - sigma * eps) / alpha if x0 is None else x0
        if t_prev == 0:
            return d, 0.0
        alpha_p, sigma_p = ab[t_prev].sqrt(), (1 - ab[t_prev]).sqrt()
        h = torch.log(alpha_p / sigma_p) - torch.log(alpha / sigma)  # +∞ from ᾱ_T = 0: e^{−h} = 0, x_prev = σ_p·x + α_p·D
        d_used = d
        if self.last is not None:
            d_last, h_last = self.last
            r = h_last / h
            d_used = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * d_last
        self.last = (d, h)
        return (sigma_p / sigma) * x - alpha_p * torch.expm1(-h) * d_used, 0.0


def euler_step(x, x0, eps, t: float, t_prev: float):
    """Euler's step on a flow-matching ODE from t to t_prev; returns (x_prev, 0.0).

    x_prev = x_t + (t_prev − t)·u with u = ε̂ − x̂₀. Written with x̂₀ and ε̂ it is (1 − t_prev)·x̂₀ + t_prev·ε̂:
    DDIM's η = 0 step on the straight path (α = 1 − t, σ = t), which is why DDIM is "Euler" too.
    """
    return x + (t_prev - t) * (eps - x0), 0.0


class HeunStep:
    """Heun's method (Karras et al. 2022, Algorithm 1): an Euler step to t_prev, a second look at the
    velocity there, and the step taken again with the average of the two. Two network calls a step,
    except the last step to t = 0, which stays Euler's (it would add a call for little)."""

    def __init__(self, denoise):
        self.denoise = denoise  # (x, t) -> (x̂₀, ε̂): one more network call

    def __call__(self, x, x0, eps, t: float, t_prev: float):
        x_euler, _ = euler_step(x, x0, eps, t, t_prev)
        if t_prev == 0:
            return x_euler, 0.0
        x0_b, eps_b = self.denoise(x_euler, t_prev)
        u = ((eps - x0) + (eps_b - x0_b)) / 2
        return x + (t_prev - t) * u, 0.0


# Steps when none are asked for; ddpm and ddpm-no-noise take all T.
DEFAULT_STEPS = {"ddim": 25, "dpm-solver++": 20, "euler": 20, "heun": 10}


def default_steps(sampler: str, schedule) -> int:
    return min(DEFAULT_STEPS.get(sampler, schedule.T), schedule.T)


# A flow model's time-grid shift when none is asked for (sample's --shift): s = 2 scored better than the uniform
# grid for Euler-8/16 and Heun-5/9 at n = 400, by 2.5 to 13 points (tools/flow_shift_study.py, weights/README.md)
FLOW_SHIFT = 2.0


def recommended_sampler(schedule) -> tuple[str, int]:
    """(sampler, steps): the fastest measured to reach DDPM-500's quality for this kind of model (steps at most T).

    The course's schedule: DDPM itself, all T steps (its deterministic samplers fall ~3× short, lesson 7).
    A zero-terminal-SNR v-model: DPM-Solver++ in 10 steps (sprite-FID 29.0 against DDPM-500's 28.7 at
    n = 400; weights/README.md). A flow model: Heun in 9 steps, 17 calls (40.9 on the uniform grid, 38.4 on
    the grid shifted by FLOW_SHIFT, against the course model's DDPM-500 at 55.9 and its own 500-call
    best, Heun-17, at 34.8).
    """
    if isinstance(schedule, FlowSchedule):
        return "heun", min(9, schedule.T)
    return ("dpm-solver++", min(10, schedule.T)) if schedule.ab_t[-1] == 0 else ("ddpm", schedule.T)


def network_calls(sampler: str, steps: int) -> int:
    """How many times ``sampler`` calls the network in ``steps`` steps (Heun: twice a step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def _step_rule(sampler: str, schedule, eta: float, denoise=None):
    """rule(x, x0, eps, t, t_prev) -> (mean, sigma) for ``sampler``; denoise(x, t) -> (x̂₀, ε̂) for Heun."""
    if sampler == "euler":
        return euler_step
    if sampler == "heun":
        return HeunStep(denoise)
    if sampler == "ddpm":
        return lambda x, x0, eps, t, tp: ddpm_step(schedule, x, eps, t, tp, x0)
    if sampler == "ddpm-no-noise":
        return lambda x, x0, eps, t, tp: (ddpm_step(schedule, x, eps, t, tp, x0)[0], 0.0)
    if sampler == "ddim":
        return lambda x, x0, eps, t, tp: ddim_step(schedule, x, eps, t, tp, eta, x0)
    if sampler == "dpm-solver++":
        solver = DPMSolverPP2M(schedule)
        return lambda x, x0, eps, t, tp: solver(x, eps, t, tp, x0)
    raise BadInput(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


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


def predict_noise(model, x, t_norm: torch.Tensor, context=None, guidance: float = 0.0, guidance_rescale: float = 0.0):
    """ε(x, t, c), or with guidance w: (1 + w)·ε(x, c) − w·ε(x, ∅), both halves in one batch.

    The same for a v-model's output (guidance is linear in it). t_norm is one t/T for the whole
    batch or one per sprite, as for the model.
    guidance_rescale φ (Lin et al. 2024, §3.4, Eq. 15–16): scale the guided output back to the
    per-sprite standard deviation of the conditional one, and mix: φ·rescaled + (1 − φ)·guided.
    Strong guidance otherwise inflates it, which shows as over-saturated, over-exposed sprites.
    """
    if context is None or guidance == 0:
        return model(x, t_norm, context)
    t_both = t_norm if t_norm.numel() == 1 else torch.cat([t_norm, t_norm])
    eps = model(torch.cat([x, x]), t_both, torch.cat([context, torch.zeros_like(context)]))
    eps_c, eps_u = eps.chunk(2)
    guided = (1 + guidance) * eps_c - guidance * eps_u
    if guidance_rescale:
        dims = list(range(1, guided.dim()))  # per sprite: (B, 1, 1, 1)
        rescaled = guided * (eps_c.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
        guided = guidance_rescale * rescaled + (1 - guidance_rescale) * guided
    return guided


def _whole(v):
    """A numpy or other integral number as an int (for n and steps); anything else as it is, for the checks to refuse."""
    return int(v) if isinstance(v, numbers.Integral) and not isinstance(v, bool) else v


def _check_args(model, schedule, n, sampler, steps, guidance, guidance_rescale, eta, x_T, context) -> int:
    """Every argument of ``sample`` checked before any work; returns the number of sprites."""
    if sampler not in SAMPLERS:
        raise BadInput(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if sampler not in schedule.samplers:
        kind = "a flow-matching" if isinstance(schedule, FlowSchedule) else "a diffusion"
        raise BadInput(f"sampler {sampler} does not fit {kind} model; choose one of {', '.join(schedule.samplers)}")
    T = schedule.T
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise BadInput(f"steps must be an integer from 1 to T={T}, got {steps!r}")
    if not isinstance(guidance, numbers.Real) or not math.isfinite(guidance) or guidance < 0:
        raise BadInput(f"guidance must be a finite number ≥ 0, got {guidance!r}")
    real_number(guidance_rescale, "guidance_rescale", 0, 1, hint="(Lin et al. use 0.7)")
    if not isinstance(eta, numbers.Real) or not math.isfinite(eta) or eta < 0:
        raise BadInput(f"eta must be a finite number ≥ 0, got {eta!r}")
    if eta and sampler != "ddim":
        raise BadInput(f"eta is the ddim sampler's noise level; {sampler} ignores it, so drop it or use sampler ddim")
    if x_T is not None:
        shape = (model.in_channels, model.h, model.h)
        if not torch.is_tensor(x_T) or x_T.dim() != 4 or tuple(x_T.shape[1:]) != shape:
            raise BadInput(f"x_T must be a (B, {', '.join(map(str, shape))}) tensor")
        n = x_T.shape[0]
    n = _whole(n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise BadInput(f"n (the number of sprites) must be a positive integer, got {n!r}")
    check_context(context, n, model.n_cfeat)
    if guidance and context is None:
        raise BadInput("guidance needs a context to guide towards; pass --context or set guidance to 0")
    if x_T is None and isinstance(model, ContextUnet):  # as the CLI checks: far too many is one line, not a kill
        check_sampling_memory(model, n, guidance, f"sampling {n:,} sprites at once", "sample fewer at a time")
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
def sample(
    model,
    schedule: NoiseSchedule | FlowSchedule,
    n: int | None = None,
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    context: torch.Tensor | None = None,
    guidance: float = 0.0,
    guidance_rescale: float = 0.0,
    eta: float = 0.0,
    x_T: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    save_every: int | None = None,
    progress: bool = False,
    fast: bool = True,
    cuda_graph: bool | None = None,
    precision: str = "fp32",
    compile: str | None = None,
) -> Samples:
    """Draw ``n`` images from ``model`` by running ``sampler`` over ``steps`` time steps (default: T).

    context: (n, n_cfeat) weights or None; guidance: the classifier-free guidance weight w;
    guidance_rescale: φ in [0, 1] (Lin et al. 2024 §3.4; they use 0.7), see ``predict_noise``;
    x_T: (n, C, H, W) starting noise (default: drawn from ``generator``, on its own device, or
    without one on the model's); save_every: keep a frame every that many steps, for animations.
    fast, cuda_graph, precision, compile: how the network runs, not what it computes
    (``engine.SamplingNetwork``): fast=True (BatchNorm folded, channels_last; agrees with the model to float rounding), cuda_graph=None (on
    for the fast path on a GPU: DDPM-500 at batch 32 took 0.28 s instead of 1.42 s on an H100),
    precision="fp32" or "bf16" (faster on GPUs, but moves the samples by more than rounding, so never
    the default), compile=None, "default" or "max-autotune" (torch.compile; pays only for long runs).
    The timings behind these defaults are in docs/benchmarks.md. A model left in training mode is sampled in
    eval mode (its BatchNorm running statistics) and handed back in its own mode, unchanged.
    """
    steps = schedule.T if steps is None else _whole(steps)
    n = _check_args(model, schedule, n, sampler, steps, guidance, guidance_rescale, eta, x_T, context)
    network = SamplingNetwork(model, fast=fast, cuda_graph=cuda_graph, precision=precision, compile=compile)
    device, dtype = network.device, network.dtype
    schedule = schedule.to("cpu")  # coefficients are 0-dim CPU tensors: no kernel launches for scalar math
    context = None if context is None else context.to(device, dtype)  # e.g. float64 weights for a float32 model
    noise = _noise_source(generator, device, dtype)
    shape = (n, model.in_channels, model.h, model.h)
    x = noise(shape) if x_T is None else x_T.to(device, dtype).clone()
    ts = schedule.grid(steps)  # T, ..., 0 (a flow model: 1.0, ..., 0.0)
    t_in = torch.tensor([schedule.model_time(t) for t in ts], device=device)  # one copy to the device, not one per step
    at = {t: i for i, t in enumerate(ts)}
    net = network.predictor(lambda net, x, t: predict_noise(net, x, t, context, guidance, guidance_rescale), x, t_in[:1])

    def denoise(x, t):
        """(x̂₀, ε̂): what the network's ε, v or velocity at (x, t) says about the clean sprite and the noise."""
        return schedule.x0_eps(x, net(x, t_in[at[t]:at[t] + 1]), t)

    rule = _step_rule(sampler, schedule, eta, denoise)
    return sampling_loop(x, ts, denoise, rule, noise, save_every=save_every, progress=progress, desc=sampler)


def sampling_loop(x, ts, denoise, rule, noise, *, save_every=None, progress=False, desc="sample") -> Samples:
    """The loop every sampler shares (DDPM Algorithm 2's shape): from x at ts[0], for each (t, t_prev),
    predict (x̂₀, ε̂), let the step rule give the next mean and σ, and add σ·z but on the step to 0."""
    frames, frame_t = ([x.half().cpu()], [ts[0]]) if save_every else ([], [])
    for i, (t, t_prev) in enumerate(tqdm(list(zip(ts[:-1], ts[1:])), disable=not progress, desc=desc)):
        x0, eps = denoise(x, t)
        mean, sigma = rule(x, x0, eps, t, t_prev)
        x = mean + sigma * noise(x.shape) if t_prev > 0 and not _is_zero(sigma) else mean
        if save_every and ((i + 1) % save_every == 0 or t_prev == 0):
            frames.append(x.half().cpu())
            frame_t.append(t_prev)
    return Samples(x, torch.stack(frames) if frames else torch.empty(0), frame_t)


def _noise_source(generator, device, dtype):
    """z ~ N(0, I) of a shape, drawn with ``generator`` on its own device (default: the model's)."""
    def noise(shape):
        g_dev = generator.device if generator is not None else device
        z = torch.randn(shape, generator=generator, device=g_dev)  # float32 always: a seed gives the same noise
        if g_dev.type == "cpu" and device.type == "cuda":  # CPU-drawn noise (reproducible across devices):
            return z.pin_memory().to(device, dtype, non_blocking=True)  # a pinned copy does not wait for the GPU
        return z.to(device, dtype)  # in the model's precision, e.g. float64 weights
    return noise


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
