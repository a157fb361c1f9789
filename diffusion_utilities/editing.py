"""Editing sprites with a trained model: inpainting, SDEdit and DDIM inversion, all through ``sample``'s loop.

    inpaint   fill the pixels a mask marks as unknown (Lugmayr et al. 2022, RePaint): after every step,
              the known pixels are replaced by the original noised to that step,
              x_prev = m·q(x_prev | x₀) + (1 − m)·x_prev, so the model only draws the rest and sees a
              consistent whole at every step; optionally RePaint's resampling: every ``jump_length``
              steps, noise the merged x back up that far, q(x_t | x_prev), and run those steps again,
              ``resamplings`` times in all, so the drawn pixels can settle with the known ones
    sdedit    noise an input to a strength s in [0, 1] (t₀ = s·T) and denoise from there (Meng et al.
              2022, SDEdit): a low s keeps the input, a high s keeps only its rough layout; with
              another class (or a mix) as the context it restyles the sprite
    invert    run deterministic DDIM (η = 0) upwards, 0 → T, to find the noise x_T that DDIM maps back
              onto the sprite (Song et al. 2021, §4.3; Dhariwal & Nichol 2021, App. F); for a flow
              model, Euler on its ODE run backwards; ``sample(x_T=noise)`` returns the sprite

Inputs are sprites in [-1, 1], (B, C, H, W) at the model's size; a mask is 1 where a pixel is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import real_number, whole_number
from .errors import BadInput
from .sampling import Samples, default_steps, sample
from .schedule import FlowSchedule

__all__ = ["sdedit_grid", "Known", "inpaint", "sdedit", "invert", "region_mask", "REGIONS"]

REGIONS = ("left", "right", "top", "bottom", "centre")


@dataclass
class Known:
    """The pixels inpainting keeps: ``image`` where ``mask`` is 1. ``noise``: one fixed draw ε, so the known
    region follows one forward path x_t = α_t·x₀ + σ_t·ε from the first step to the last."""

    image: torch.Tensor
    mask: torch.Tensor
    schedule: object
    noise: torch.Tensor

    def merge(self, x: torch.Tensor, t, run) -> torch.Tensor:
        """x with its known pixels replaced by the original at time t (the original itself at t = 0)."""
        image, mask, noise = run.put(self.image), run.put(self.mask), run.put(self.noise)
        times = torch.full((x.shape[0],), t, device=x.device)
        noised = image if t == 0 else self.schedule.add_noise(image, times, noise).to(x.dtype)
        return mask * noised + (1 - mask) * x


def region_mask(region: str, size: int = 16) -> torch.Tensor:
    """A (1, 1, size, size) mask, 1 where pixels are known and 0 over ``region`` (the half, or the centre
    square of half the side, to fill)."""
    if region not in REGIONS:
        raise BadInput(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    mask, h = torch.ones(1, 1, size, size), size // 2
    fill = {"left": (slice(None), slice(0, h)), "right": (slice(None), slice(h, None)),
            "top": (slice(0, h), slice(None)), "bottom": (slice(h, None), slice(None)),
            "centre": (slice(h // 2, h // 2 + h), slice(h // 2, h // 2 + h))}[region]
    mask[0, 0][fill] = 0
    return mask


def _check_images(model, images: torch.Tensor, what: str = "images") -> None:
    shape = (model.in_channels, model.h, model.h)
    if not torch.is_tensor(images) or images.dim() != 4 or tuple(images.shape[1:]) != shape:
        got = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise BadInput(f"{what} must be a (B, {', '.join(map(str, shape))}) tensor of sprites in [-1, 1], got {got}")
    if not torch.isfinite(images).all():
        raise BadInput(f"{what} hold NaN or infinite values")


def _check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The mask as a float tensor that broadcasts over the images: 1 (known) or 0 (to fill), nothing else."""
    if not torch.is_tensor(mask) or mask.dim() != 4 or mask.shape[-2:] != images.shape[-2:] or (
            mask.shape[0] not in (1, images.shape[0]) or mask.shape[1] not in (1, images.shape[1])):
        got = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise BadInput(f"the mask must be (1 or B, 1 or C, {images.shape[-2]}, {images.shape[-1]}), 1 where pixels "
                       f"are known and 0 where they are filled, got {got}")
    if not ((mask == 0) | (mask == 1)).all():
        raise BadInput("the mask must hold only 0 (fill) and 1 (keep); threshold it first, e.g. (mask > 0.5).float()")
    return mask.float()


def inpaint(model, schedule, images: torch.Tensor, mask: torch.Tensor, *, sampler: str = "ddim", steps=None,
            context=None, guidance: float = 0.0, eta: float = 1.0, generator=None, resamplings: int = 1,
            jump_length: int = 5, **kwargs) -> Samples:
    """Fill the pixels where ``mask`` is 0, keeping those where it is 1; a ``sample`` run otherwise.

    eta: DDIM's noise (default 1, as a DDPM step): the merge adds fresh noise to the known region at every
    step, and a stochastic sampler lets the filled region settle with it (lesson 11 measures η = 0 against it).
    resamplings r, jump_length j: RePaint's resampling (their r = 10, j = 10 over 250 steps); r = 1 (the
    default) runs the grid once; r > 1 costs about r times the network calls (lesson 11 measures it).
    """
    _check_images(model, images)
    mask = _check_mask(mask, images)
    steps = default_steps(sampler, schedule) if steps is None else whole_number(steps, "steps", 1, schedule.T)
    resamplings = whole_number(resamplings, "resamplings", 1, 100, hint="(1: no resampling)")
    if resamplings > 1:
        jump_length = whole_number(jump_length, "jump_length", 1, steps, hint=f"(at most the {steps} steps)")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    draw = lambda: torch.randn(images.shape, generator=gen, device=gen.device).to(images.device)  # noqa: E731
    known = Known(images, mask, schedule, draw())
    options = dict(sampler=sampler, context=context, guidance=guidance, eta=eta if sampler == "ddim" else 0.0,
                   generator=gen, known=known, **kwargs)
    if resamplings == 1:
        return sample(model, schedule, images.shape[0], steps=steps, **options)
    grid, x = schedule.grid(steps), draw()
    for k in range(0, steps, jump_length):  # RePaint's schedule: each stretch of j steps, r times
        stretch = grid[k:k + jump_length + 1]
        for r in range(resamplings):
            if r:  # back up the stretch: x_t ~ q(x_t | x_prev), t the stretch's start
                x = _noise_up(schedule, x, stretch[-1], stretch[0], draw())
            x = sample(model, schedule, steps=len(stretch) - 1, x_T=x, grid=stretch, **options).x
    return Samples(x, torch.empty(0), [])


def _noise_up(schedule, x: torch.Tensor, t_from, t_to, noise: torch.Tensor) -> torch.Tensor:
    """A draw of x at the later time t_to given x at t_from, by the forward process: with x_t = α_t·x₀ + σ_t·ε,
    x_to = (α_to/α_from)·x_from + √(σ_to² − (α_to/α_from)²·σ_from²)·z (DDPM Eq. 2 over several steps)."""
    coefficients = [(schedule.add_noise(torch.ones(1), torch.tensor([t]), torch.zeros(1)).item(),
                     schedule.add_noise(torch.zeros(1), torch.tensor([t]), torch.ones(1)).item())
                    for t in (t_from, t_to)]
    (a_from, s_from), (a_to, s_to) = coefficients
    ratio = a_to / a_from
    return ratio * x + max(s_to ** 2 - ratio ** 2 * s_from ** 2, 0.0) ** 0.5 * noise


def sdedit(model, schedule, images: torch.Tensor, strength: float, *, sampler: str = "ddim", steps=None,
           context=None, guidance: float = 0.0, eta: float = 0.0, generator=None, **kwargs) -> Samples:
    """Noise ``images`` to t₀ = strength·T and denoise them with ``sampler``: the part of its ``steps``-step
    grid below t₀ (at least one step). strength 0 returns the images; 1 is plain sampling from pure noise."""
    _check_images(model, images)
    strength = real_number(strength, "strength", 0, 1, hint="(0 keeps the input, 1 ignores it)")
    steps = default_steps(sampler, schedule) if steps is None else whole_number(steps, "steps", 1, schedule.T)
    grid = sdedit_grid(schedule, strength, steps)
    t0 = grid[0]
    if t0 == 0:
        return Samples(images.clone(), torch.empty(0), [])
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    noise = torch.randn(images.shape, generator=gen, device=gen.device).to(images.device)
    times = torch.full((images.shape[0],), t0, device=images.device)
    x_t0 = schedule.add_noise(images, times, noise)
    return sample(model, schedule, sampler=sampler, steps=len(grid) - 1, context=context, guidance=guidance,
                  eta=eta, x_T=x_t0, generator=gen, grid=grid, **kwargs)


def sdedit_grid(schedule, strength: float, steps: int) -> list:
    """The times SDEdit visits: t₀ = strength·T (rounded to a whole step; a flow model's t is continuous), then the
    times of the ``steps``-step grid below it. Its length less one is the steps (network calls) SDEdit takes."""
    t0 = strength * (1.0 if isinstance(schedule, FlowSchedule) else schedule.T)
    t0 = t0 if isinstance(schedule, FlowSchedule) else round(t0)
    return [t0] + [t for t in schedule.grid(steps) if t < t0]


def invert(model, schedule, images: torch.Tensor, steps: int = 50, *, context=None, **kwargs) -> torch.Tensor:
    """The noise x_T from which deterministic sampling in ``steps`` steps (DDIM with η = 0; Euler for a flow
    model) returns ``images``: the same steps run from t = 0 up to T. Exact in the limit of many steps."""
    _check_images(model, images)
    steps = whole_number(steps, "steps", 1, schedule.T)
    sampler = "euler" if isinstance(schedule, FlowSchedule) else "ddim"
    grid = list(reversed(schedule.grid(steps)))
    return sample(model, schedule, sampler=sampler, steps=steps, context=context, x_T=images, grid=grid, **kwargs).x
