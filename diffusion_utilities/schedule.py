"""Noise schedules and the forward process q(x_t | x_0).

The course's names are kept: ``b_t`` (β_t), ``a_t`` (α_t = 1 - β_t) and ``ab_t``
(ᾱ_t = ∏ α_s), each a tensor of length T + 1 indexed by the integer time step t,
with t = 0 meaning "clean image" (ᾱ_0 = 1). ``beta``, ``alpha`` and ``alpha_bar``
are the same tensors under the papers' names.

The schedule also knows what the network predicts (``prediction``): the noise ε (the course)
or v = √ᾱ·ε − √(1−ᾱ)·x₀ (Salimans & Ho 2022, §4). ``NoiseSchedule.x0_eps`` turns either
into the predicted clean image x̂₀ and noise ε̂, the one place the samplers read it from, and
``NoiseSchedule.target`` is what training regresses onto.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace

import torch

from .checks import real_number, whole_number
from .errors import BadInput

__all__ = ["NoiseSchedule", "FlowSchedule", "DiffusionConfig", "make_schedule", "schedule_from_card", "perturb_input",
           "rescale_zero_terminal_snr", "timesteps_for", "diffusion_from_card", "SCHEDULES", "PREDICTIONS", "OBJECTIVES"]

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
OBJECTIVES = ("diffusion", "flow")
MAX_TIMESTEPS = 100_000  # far past any use (DDPM used 1,000); keeps a typo from filling the memory
# a flow model's grid shift s: outside this range nearly every step sits at one end (1e300 is one Euler step)
SHIFT_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class DiffusionConfig:
    """How the data is noised; saved next to the weights so a checkpoint rebuilds its schedule."""

    # (a "help" makes a field a `train` option of the same name; see TrainConfig)
    timesteps: int = field(default=500, metadata={"min": 1, "help": "T, the number of noise levels (the course's 500)"})
    beta1: float = 1e-4  # β at t = 0 (linear schedule)
    beta2: float = 0.02  # β at t = T (linear schedule)
    schedule: str = field(default="linear", metadata={"help": "linear (the course, DDPM) or cosine (Nichol & Dhariwal 2021)"})
    prediction: str = field(default="eps", metadata={
        "help": "what the network learns to predict: eps, the noise (the course), or v (Salimans & Ho 2022)"})
    # at ᾱ_T = 0 the noise is all of x_T, so a network predicting it learns nothing about the sprite: needs "v"
    zero_terminal_snr: bool = field(default=False, metadata={
        "help": "rescale the schedule so x_T is pure noise (Lin et al. 2024, Algorithm 1); needs --prediction v"})
    # "diffusion" (DDPM's discrete chain, the fields above) or "flow": flow matching on the straight path
    # x_t = (1 − t)·x₀ + t·ε, t in [0, 1] (Lipman et al. 2023; Liu et al. 2023), see FlowSchedule
    objective: str = field(default="diffusion", metadata={
        "help": "diffusion (DDPM's chain; the options above) or flow (flow matching on x_t = (1-t)·x0 + t·ε)"})

    def __post_init__(self):  # numpy numbers as Python ones: the config is saved as JSON in the weights' card
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)):
                object.__setattr__(self, f.name, int(v) if isinstance(v, numbers.Integral) else float(v))


@dataclass(frozen=True)
class NoiseSchedule:
    """β_t, α_t and ᾱ_t for t = 0..T as float32 tensors of shape (T + 1,)."""

    b_t: torch.Tensor
    a_t: torch.Tensor
    ab_t: torch.Tensor
    name: str = "linear"
    prediction: str = "eps"  # what the network's output is: "eps" or "v"

    @property
    def T(self) -> int:
        return self.b_t.shape[0] - 1

    # The papers' names for the same tensors.
    @property
    def beta(self) -> torch.Tensor:
        return self.b_t

    @property
    def alpha(self) -> torch.Tensor:
        return self.a_t

    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.ab_t

    @property
    def device(self) -> torch.device:
        return self.b_t.device

    def to(self, device) -> "NoiseSchedule":
        return NoiseSchedule(self.b_t.to(device), self.a_t.to(device), self.ab_t.to(device), self.name, self.prediction)

    def _coefficients(self, t, like: torch.Tensor):
        """√ᾱ_t and √(1 − ᾱ_t) for an integer t or a (B,) tensor of them, shaped to broadcast over ``like``."""
        if not torch.is_tensor(t):  # one step's time: a 0-dim tensor, which mixes with x on any device
            ab = self.ab_t[t]
        else:
            ab = self.ab_t.to(like.device)[t].view(-1, *[1] * (like.dim() - 1))  # (B, 1, 1, 1)
        return ab.sqrt(), (1 - ab).sqrt()

    def x0_eps(self, x: torch.Tensor, out: torch.Tensor, t):
        """(x̂₀, ε̂): the clean image and the noise that the network's output ``out`` at x_t implies.

        With x_t = √ᾱ·x₀ + √(1−ᾱ)·ε:
          eps:  ε̂ = out,                 x̂₀ = (x_t − √(1−ᾱ)·ε̂) / √ᾱ      (DDPM Eq. 15)
          v:    x̂₀ = √ᾱ·x_t − √(1−ᾱ)·v,  ε̂ = √(1−ᾱ)·x_t + √ᾱ·v          (Salimans & Ho §4)
        The v form never divides, so it holds at ᾱ_T = 0, where x̂₀ from ε would be 0/0.
        """
        a, s = self._coefficients(t, x)
        if self.prediction == "v":
            return a * x - s * out, s * x + a * out
        return (x - s * out) / a, out

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to output at x_t: ε, or v = √ᾱ·ε − √(1−ᾱ)·x₀."""
        if self.prediction == "v":
            a, s = self._coefficients(t, x0)
            return a * noise - s * x0
        return noise

    # What training and the sampling loop ask of a schedule (FlowSchedule answers the same questions).
    samplers = ("ddpm", "ddpm-no-noise", "ddim", "dpm-solver++")

    def grid(self, steps: int) -> list[int]:
        """The times a sampler visits with ``steps`` steps: T down to 0, evenly spaced."""
        return timesteps_for(self.T, steps)

    def model_time(self, t):
        """The network's time input: t / T, in [0, 1]."""
        return t / self.T

    def sample_t(self, b: int, gen, device) -> torch.Tensor:
        """Training's times, t ~ U{1..T} (DDPM Algorithm 1, line 3), drawn on ``device`` with ``gen``."""
        return torch.randint(1, self.T + 1, (b,), generator=gen, device=device)

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t for the integer times t: perturb_input."""
        return perturb_input(x0, t, noise, self)

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), shape (T + 1,); infinite at t = 0."""
        return self.ab_t / (1 - self.ab_t)

    @classmethod
    def linear(cls, timesteps: int = 500, beta1: float = 1e-4, beta2: float = 0.02) -> "NoiseSchedule":
        """The course's schedule, built exactly as the course builds it (DDPM §4, linear β).

        β runs from beta1 to beta2 over T + 1 points, and ᾱ is a cumulative product
        taken in log space, with ᾱ_0 forced to 1 so that t = 0 is the clean image.
        """
        _check_timesteps(timesteps)
        if not (0 < beta1 < beta2 < 1):
            raise BadInput(f"need 0 < beta1 < beta2 < 1, got beta1={beta1}, beta2={beta2}")
        b_t = (beta2 - beta1) * torch.linspace(0, 1, timesteps + 1) + beta1
        a_t = 1 - b_t
        ab_t = torch.cumsum(a_t.log(), dim=0).exp()
        ab_t[0] = 1
        return cls(b_t, a_t, ab_t, "linear")

    @classmethod
    def cosine(cls, timesteps: int = 500, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Nichol & Dhariwal 2021, Eq. 17: ᾱ_t = f(t) / f(0), f(t) = cos²(π/2 · (t/T + s) / (1 + s)).

        β_t = 1 - ᾱ_t / ᾱ_{t-1}, clipped at 0.999 (their §3.2) so the last steps stay finite.
        """
        _check_timesteps(timesteps)
        t = torch.arange(timesteps + 1, dtype=torch.float64)
        f = torch.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2
        ab = f / f[0]
        b_t = torch.zeros_like(ab)
        b_t[1:] = (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)
        a_t = 1 - b_t
        ab_t = torch.cumprod(a_t, dim=0)  # equals f/f(0) except where β was clipped
        return cls(b_t.float(), a_t.float(), ab_t.float(), "cosine")

    def rescaled_zero_terminal_snr(self) -> "NoiseSchedule":
        """This schedule with ᾱ_T = 0 (Lin et al. 2024, Algorithm 1), β_T = 1: see rescale_zero_terminal_snr."""
        ab_t = rescale_zero_terminal_snr(self.ab_t)
        a_t = torch.ones_like(ab_t)
        a_t[1:] = ab_t[1:] / ab_t[:-1]  # α_T = 0: the last step forgets the sprite entirely
        return NoiseSchedule(1 - a_t, a_t, ab_t, self.name + "+zero-snr", self.prediction)


def rescale_zero_terminal_snr(ab_t: torch.Tensor) -> torch.Tensor:
    """ᾱ_t rescaled so that ᾱ_T = 0 while ᾱ_0 keeps its value (Lin et al. 2024, Algorithm 1).

    1. take √ᾱ_t;
    2. shift it so that its last value is 0;
    3. scale it so that its first value is what it was: (√ᾱ_t − √ᾱ_T) · √ᾱ_0 / (√ᾱ_0 − √ᾱ_T);
    4. square it back.
    The course's T = 500 with DDPM's β range (chosen for T = 1000) ends at ᾱ_T = 0.0063:
    x_T keeps √0.0063 = 8% of the sprite, which sampling from N(0, I) never has.
    """
    s = ab_t.double().sqrt()
    s0, sT = s[0].clone(), s[-1].clone()
    s = (s - sT) * s0 / (s0 - sT)
    return (s**2).to(ab_t.dtype)


@dataclass(frozen=True)
class FlowSchedule:
    """Flow matching on the straight path x_t = (1 − t)·x₀ + t·ε, t in [0, 1] (Lipman et al. 2023;
    Liu et al. 2023, "rectified flow"; Esser et al. 2024 train Stable Diffusion 3 this way).

    Sign convention: t = 0 is the sprite and t = 1 pure noise, as in the DDPM lessons; the network
    predicts the velocity u = dx_t/dt = ε − x₀, so sampling runs t from 1 down to 0 and each step
    moves x by (t_prev − t)·u. There is no β, no ᾱ and no T: time is continuous, and ``T`` is only
    the finest grid a sampler may ask for.

    shift s: a sampling grid with more steps at high noise, t ↦ s·t / (1 + (s − 1)·t)
    (Esser et al. 2024, §5.3.2); 1 is the uniform grid.
    """

    shift: float = 1.0
    T: int = 1000
    name: str = "flow"
    prediction: str = "velocity"
    samplers = ("euler", "heun")

    def __post_init__(self):
        low, high = SHIFT_RANGE
        object.__setattr__(self, "shift", real_number(self.shift, "shift", low, high, hint="(1: the uniform grid)"))
        object.__setattr__(self, "T", whole_number(self.T, "T (the finest grid)", 1, MAX_TIMESTEPS))

    def to(self, device) -> "FlowSchedule":
        return self  # nothing to move: its numbers are computed from t

    def grid(self, steps: int) -> list[float]:
        u = [1 - k / steps for k in range(steps + 1)]  # 1, ..., 0 evenly
        return [self.shift * t / (1 + (self.shift - 1) * t) for t in u]

    def model_time(self, t):
        return t

    def sample_t(self, b: int, gen, device) -> torch.Tensor:
        """t ~ U[0, 1) (Lipman et al.; Esser et al. also weigh the middle more, which is not done here)."""
        return torch.rand(b, generator=gen, device=device)

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        t = t.to(x0.device).view(-1, *[1] * (x0.dim() - 1))  # (B, 1, 1, 1)
        return (1 - t) * x0 + t * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - x0  # u = d/dt [(1 − t)·x₀ + t·ε]

    def x0_eps(self, x: torch.Tensor, out: torch.Tensor, t):
        """(x̂₀, ε̂) from the velocity u at x_t: x̂₀ = x_t − t·u, ε̂ = x_t + (1 − t)·u."""
        if torch.is_tensor(t) and t.dim():
            t = t.to(x.device).view(-1, *[1] * (x.dim() - 1))
        return x - t * out, x + (1 - t) * out


def timesteps_for(T: int, steps: int) -> list[int]:
    """``steps`` + 1 evenly spaced integer times from T down to 0, e.g. T=500, steps=25: 500, 480, ..., 0."""
    steps = whole_number(steps, "steps", 1, T, hint=f"(T = {T})")
    return [T - (T * k) // steps for k in range(steps + 1)]


def _check_timesteps(timesteps) -> None:
    whole_number(timesteps, "timesteps", 1, MAX_TIMESTEPS, hint="(the course's is 500)")


def make_schedule(config: DiffusionConfig | str = "linear", timesteps: int | None = None) -> NoiseSchedule | FlowSchedule:
    """Build the schedule a :class:`DiffusionConfig` (or a schedule name, or "flow") describes."""
    if isinstance(config, str):
        config = (DiffusionConfig(objective="flow") if config == "flow" else
                  DiffusionConfig(schedule=config, **({"timesteps": timesteps} if timesteps else {})))
    check_diffusion_config(config)
    if config.objective == "flow":
        return FlowSchedule()
    if config.schedule == "linear":
        schedule = NoiseSchedule.linear(config.timesteps, config.beta1, config.beta2)
    else:
        schedule = NoiseSchedule.cosine(config.timesteps)
    schedule = replace(schedule, prediction=config.prediction)
    return schedule.rescaled_zero_terminal_snr() if config.zero_terminal_snr else schedule


def schedule_from_card(card: dict) -> NoiseSchedule | FlowSchedule:
    """The schedule a weights card says its model was trained with (an old card without the key: the course's)."""
    return make_schedule(diffusion_from_card(card))


def diffusion_from_card(card: dict) -> DiffusionConfig:
    """The DiffusionConfig a card records. A flow card written before flow runs refused the diffusion schedule's
    options may hold some (timesteps: 50) that its run never used: they are set aside, as the run set them aside."""
    entry = card.get("diffusion") or {}
    if isinstance(entry, dict) and entry.get("objective") == "flow":
        entry = {k: v for k, v in entry.items() if k not in _DIFFUSION_ONLY}
    return DiffusionConfig(**entry)


def check_diffusion_config(config: DiffusionConfig) -> None:
    """One BadInput line for a schedule, prediction or combination this library cannot build."""
    if config.objective not in OBJECTIVES:
        raise BadInput(f"unknown objective {config.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    if config.objective == "flow":
        _check_flow_config(config)
    if config.schedule not in SCHEDULES:
        raise BadInput(f"unknown schedule {config.schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if config.prediction not in PREDICTIONS:
        raise BadInput(f"unknown prediction {config.prediction!r}; choose one of {', '.join(PREDICTIONS)}")
    _check_timesteps(config.timesteps)
    for name in ("beta1", "beta2"):  # a card's "0.0001" or null, before any tensor is built from it
        real_number(getattr(config, name), name, 0, 1, above=True)
    if not isinstance(config.zero_terminal_snr, bool):
        raise BadInput(f"zero_terminal_snr must be true or false, got {config.zero_terminal_snr!r}")
    if config.zero_terminal_snr and config.prediction == "eps":
        raise BadInput("a zero-terminal-SNR schedule needs v-prediction: at ᾱ_T = 0 the noise is all of x_T, "
                       "so predicting it says nothing about the sprite; add --prediction v")


_DIFFUSION_ONLY = ("timesteps", "beta1", "beta2", "schedule", "prediction", "zero_terminal_snr")


def _check_flow_config(config: DiffusionConfig) -> None:
    """A flow config leaves the diffusion schedule's fields at their defaults (which its card records):
    a value it would ignore, recorded as if it had been used, is refused."""
    default = DiffusionConfig()
    changed = [f for f in fields(config) if f.name in _DIFFUSION_ONLY and getattr(config, f.name) != getattr(default, f.name)]
    if changed:
        named = ", ".join(f"--{f.name.replace('_', '-')}" if "help" in f.metadata else f.name for f in changed)
        raise BadInput(f"flow matching predicts the velocity on its own path, with no noise schedule; drop {named}, "
                       f"which {'is' if len(changed) == 1 else 'are'} the diffusion schedule's")


def perturb_input(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) = N(√ᾱ_t · x_0, (1 - ᾱ_t) · I)   (DDPM Eq. 4).

    x0, noise: (B, C, H, W); t: (B,) integer time steps in 0..T.
    The noise is scaled by √(1 - ᾱ_t), the standard deviation; the course's version
    scales by (1 - ᾱ_t), the variance, which under-noises every step.
    """
    ab = schedule.ab_t.to(x0.device)[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise
