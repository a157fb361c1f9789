"""The notebooks' exercises: check a learner's function, or the folded solution while it is a stub.

Each exercise is three cells: a stub ``my_x`` that raises NotImplementedError, a folded solution
under another name (``solution_x``), and a check cell that calls ``check_exercise``. The solution's
own name matters: were it ``my_x`` too, running every cell (Run All) would replace the learner's
function with it before the check, and the check would pass whatever the learner wrote.

A wrong answer is told in a line or two what differs, with a hint, and never shown the expected
answer: the checks below raise ``Mismatch`` with that message, and ``check_exercise`` prints it in
place of a traceback. An answer in another float dtype (float64, say) is compared in the expected
one: the exercises never ask for a dtype.
"""

from __future__ import annotations

import dis
import inspect
from typing import Callable

import torch

from .distillation import distillation_target
from .editing import Known
from .model import ContextUnet
from .sampling import ddpm_step, predict_noise
from .schedule import FlowSchedule, NoiseSchedule, rescale_zero_terminal_snr
from .training import diffusion_loss

__all__ = ["Mismatch", "check_exercise", "compare", "check_cosine_alpha_bar", "check_unet_shapes",
           "check_mean_via_x0", "check_guided_noise", "check_rescale", "check_x0_eps_from_v",
           "check_flow_loss", "check_distillation_target", "check_repaint_merge"]


class Mismatch(AssertionError):
    """A wrong answer: ``what`` differs (one line, no expected values) and a ``hint``."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.what, self.hint = what, hint


def check_exercise(yours: Callable, solution: Callable, check: Callable[[Callable], None], passed: str,
                   hint: str = "") -> None:
    """Run ``check(yours)``; while ``yours`` is still the stub, run ``check(solution)``.

    The stub is told apart by a NotImplementedError raised in ``yours``'s own body; one raised by
    something it calls (an operation a device lacks, say) is the learner's error to see, and propagates.
    A wrong answer (an AssertionError from ``check``) prints what differs and a hint, not a traceback.
    Returns None, so that a check cell shows only what it prints.

    check: raises ``Mismatch`` (or any AssertionError, e.g. from ``torch.testing.assert_close``)
    when a function is wrong.
    passed: what a function that passes has shown, e.g. "matches the library's ddim_step".
    hint: printed under a plain AssertionError; a ``Mismatch`` brings its own.
    """
    name = getattr(yours, "__name__", "your function")
    try:
        check(yours)
    except NotImplementedError as e:
        if not _raised_by(yours, e):  # written, but something it calls is not implemented: show that
            raise
        check(solution)
        print(f"{name} is not written yet; the folded solution {passed}. Fill in {name} and run this cell again.")
        return
    except AssertionError as e:
        what = e.what if isinstance(e, Mismatch) else _first_lines(str(e))
        print(f"{name} is not right yet: {what}")
        hint = e.hint if isinstance(e, Mismatch) and e.hint else hint
        if hint:
            print(f"Hint: {hint}")
        return
    print(f"{name} {passed}")


def _first_lines(message: str, n: int = 2) -> str:
    """The gist of a long assertion message (assert_close's say what and how much, then list values)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return "; ".join(lines[:n]) or "the check failed"


def compare(yours, expected: torch.Tensor, what: str, hint: str = "", rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """Raise ``Mismatch`` saying how ``yours`` differs from ``expected``, without showing ``expected``.

    yours: a tensor (any float dtype: it is compared in ``expected``'s), or anything
    ``torch.as_tensor`` takes. what: how to name it in the message, e.g. "ᾱ at T = 500".
    """
    if not isinstance(yours, torch.Tensor):
        try:
            yours = torch.as_tensor(yours)
        except (TypeError, ValueError, RuntimeError):
            raise Mismatch(f"{what} is a {type(yours).__name__}, not a tensor", hint) from None
    if tuple(yours.shape) != tuple(expected.shape):
        raise Mismatch(f"{what} has shape {tuple(yours.shape)}; it should have shape {tuple(expected.shape)}", hint)
    yours = yours.detach().to(expected.device, expected.dtype)
    bad = ~torch.isclose(yours, expected, rtol=rtol, atol=atol)
    if not yours.isfinite().all():
        i = tuple(int(k) for k in (~yours.isfinite()).nonzero()[0])
        raise Mismatch(f"{what} has {yours[i].item()} at index {_index(i)}", hint)
    if bad.any():
        i = tuple(int(k) for k in bad.nonzero()[0])
        worst = (yours - expected).abs().max().item()
        raise Mismatch(f"{what}: {int(bad.sum())} of {bad.numel()} values are off, the first at index {_index(i)}, "
                       f"by up to {worst:.3g}", hint)


def _index(i: tuple) -> str:
    return str(i[0]) if len(i) == 1 else str(i)


def check_cosine_alpha_bar(fn: Callable) -> None:
    """Lesson 1: ``fn(T)`` is the cosine schedule's ᾱ_t for t = 0..T, as ``NoiseSchedule.cosine`` builds it."""
    T = 500
    yours, expected = fn(T), NoiseSchedule.cosine(T).ab_t
    if isinstance(yours, torch.Tensor) and yours.ndim == 1 and len(yours) != T + 1:
        raise Mismatch(f"fn({T}) has {len(yours)} entries; it should have T + 1 = {T + 1}, one for each t = 0..T",
                       "torch.arange(T + 1) gives every t from 0 to T.")
    # the library clips β at 0.999, which changes only the last entry: compare t < T
    yours = yours[:T] if isinstance(yours, torch.Tensor) and yours.ndim == 1 else yours
    compare(yours, expected[:T], f"ᾱ_t for T = {T}", rtol=1e-4, atol=1e-7,
            hint="ᾱ_0 must be 1 (divide by f(0)); f(t) = cos² of (t/T + s)/(1 + s)·π/2, with s = 0.008.")


UNET_BLOCKS = ("init_conv", "down1", "down2", "to_vec", "up0", "up1", "up2", "out")


def check_unet_shapes(fn: Callable, heights=(16, 28, 32), batch: int = 8, n_feat: int = 64) -> None:
    """Lesson 2: ``fn(height)`` is {block: output shape} of a ContextUnet, as its forward hooks record them."""
    for height in heights:
        net, seen = ContextUnet(3, n_feat=n_feat, n_cfeat=5, height=height).eval(), {}
        hooks = [getattr(net, name).register_forward_hook(
            lambda mod, inp, out, name=name: seen.__setitem__(name, tuple(out.shape))) for name in UNET_BLOCKS]
        with torch.no_grad():
            net(torch.randn(batch, 3, height, height), torch.full((batch,), 0.5))
        for h in hooks:
            h.remove()
        yours = fn(height)
        if not isinstance(yours, dict):
            raise Mismatch(f"my_shapes({height}) returned a {type(yours).__name__}, not a dict of block name -> shape")
        missing = [b for b in UNET_BLOCKS if b not in yours]
        if missing:
            raise Mismatch(f"my_shapes({height}) has no entry for {', '.join(missing)}",
                           f"one entry for each of {', '.join(UNET_BLOCKS)}")
        for block in UNET_BLOCKS:
            try:
                shape = tuple(int(d) for d in yours[block])
            except (TypeError, ValueError):
                raise Mismatch(f"at height {height}, {block}'s shape {yours[block]!r} is not a tuple of numbers") from None
            if shape != seen[block]:
                raise Mismatch(f"at height {height}, {block} is {shape}, not what the network gives "
                               f"({'the channels' if shape[1] != seen[block][1] else 'the size'} differ)",
                               _SHAPE_HINTS[block])


_SHAPE_HINTS = {
    "init_conv": "init_conv keeps the size and turns 3 colours into n_feat feature maps.",
    "down1": "each down block halves the height and width.",
    "down2": "each down block halves the height and width; down2 also doubles the channels.",
    "to_vec": "to_vec averages each feature map to a single number.",
    "up0": "up0 blows the vector back up to down2's size.",
    "up1": "the up path mirrors the down path: up1 has down1's shape.",
    "up2": "the up path mirrors the down path: up2 has init_conv's shape.",
    "out": "the output is the predicted noise: it has the input's shape.",
}


def check_mean_via_x0(fn: Callable, schedule, x: torch.Tensor, eps: torch.Tensor, ts=(500, 250, 10, 2)) -> None:
    """Lesson 3: ``fn(x, t, eps)`` is the DDPM step's mean, computed through x̂₀ (DDPM Eq. 7)."""
    for t in ts:
        mean, _ = ddpm_step(schedule, x, eps, t, t - 1)
        compare(fn(x, t, eps), mean, f"the mean at t = {t}", rtol=0, atol=1e-3,
                hint="x̂₀ = (x − √(1 − ᾱ_t)·ε)/√ᾱ_t first; in the two weights, ᾱ_{t−1} is ab_t[t - 1] and β_t is b_t[t].")


def check_guided_noise(fn: Callable, model, x: torch.Tensor, t_norm: torch.Tensor, c: torch.Tensor,
                       ws=(0.0, 1.0, 4.0)) -> None:
    """Lesson 6: ``fn(x, t_norm, c, w)`` is classifier-free guidance's (1 + w)·ε(x, c) − w·ε(x, ∅)."""
    # one batch of 20 (the library) or two of 10 may round differently; a GPU may round convolutions
    # to TF32 (10-bit mantissa), and w = 4 scales that by 9
    tol = 1e-4 if x.device.type == "cpu" else 1e-2
    with torch.no_grad():
        for w in ws:
            compare(fn(x, t_norm, c, w), predict_noise(model, x, t_norm, c, guidance=w), f"the guided noise for w = {w:g}",
                    rtol=tol, atol=tol,
                    hint="w = 0 must give ε(x, c) itself; ∅ is an all-zero context of c's shape.")


def check_rescale(fn: Callable) -> None:
    """Lesson 8: ``fn(ab_t)`` is Lin et al.'s Algorithm 1, as ``rescale_zero_terminal_snr`` computes it."""
    for T in (500, 1000):
        ab = NoiseSchedule.linear(T).ab_t
        yours = fn(ab.clone())
        compare(yours, rescale_zero_terminal_snr(ab), f"the rescaled ᾱ_t for T = {T}", rtol=1e-4, atol=1e-6,
                hint="work on √ᾱ_t: subtract its last value (so ᾱ_T becomes 0), multiply so that its first value "
                     "is what it was, then square.")


def check_x0_eps_from_v(fn: Callable, schedule, ts=(500, 250, 1)) -> None:
    """Lesson 8: ``fn(x, v, t)`` is (x̂₀, ε̂) for a v-model, as ``schedule.x0_eps`` gives them."""
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    for t in ts:
        yours = fn(x, v, t)
        if not (isinstance(yours, (tuple, list)) and len(yours) == 2):
            raise Mismatch(f"fn(x, v, {t}) should return two tensors, (x0_hat, eps_hat)")
        x0, eps = schedule.x0_eps(x, v, t)
        hint = "x̂₀ = √ᾱ·x − √(1 − ᾱ)·v and ε̂ = √(1 − ᾱ)·x + √ᾱ·v: the rotation from (x₀, ε) to (x_t, v), run backwards."
        compare(yours[0], x0, f"x̂₀ at t = {t}", hint=hint)
        compare(yours[1], eps, f"ε̂ at t = {t}", hint=hint)


def check_distillation_target(fn: Callable, teacher, schedule, steps=(1, 2, 4)) -> None:
    """Lesson 10: ``fn(teacher, x_t, t, t_mid, t_prev, c)`` is progressive distillation's target for the student's
    output, as ``distillation.distillation_target`` computes it, at every step of 1-, 2- and 4-step students."""
    g = torch.Generator().manual_seed(0)
    x_t, c = torch.randn(4, 3, 16, 16, generator=g), torch.eye(5)[:4]
    hint = ("two DDIM steps with the teacher (x̂₀, ε̂ from schedule.x0_eps, then √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε̂), "
            "then x̃ = (x_prev − (σ_p/σ_t)·x_t) / (α_p − (σ_p/σ_t)·α_t) and the v that gives it: (α_t·x_t − x̃)/σ_t")
    for n in steps:
        grid, fine = schedule.grid(n), schedule.grid(2 * n)
        for i in range(n):
            t, t_mid, t_prev = grid[i], fine[2 * i + 1], grid[i + 1]
            with torch.no_grad():
                yours = fn(teacher, x_t, t, t_mid, t_prev, c)
                full = [torch.full((4,), s) for s in (t, t_mid, t_prev)]
                expected = distillation_target(teacher, schedule, x_t, *full, c)
            compare(yours, expected, f"the target at t = {t} (a {n}-step student's step to {t_prev})", hint=hint,
                    rtol=1e-4, atol=1e-4)


def check_repaint_merge(fn: Callable, schedule, ts=(500, 250, 20, 0)) -> None:
    """Lesson 11: ``fn(x, image, mask, t, noise)`` is RePaint's merge after a step to time t, as
    ``editing.Known.merge`` computes it: the known pixels (mask 1) from the image noised to t with ``noise``,
    the rest from x; at t = 0 the image itself."""
    g = torch.Generator().manual_seed(0)
    x, image, noise = (torch.randn(3, 3, 16, 16, generator=g) for _ in range(3))
    mask = (torch.rand(3, 1, 16, 16, generator=g) > 0.5).float()
    on_cpu = type("Run", (), {"put": staticmethod(lambda tensor: tensor)})()  # the engine's device placement
    hint = "mask·(√ᾱ_t·image + √(1 − ᾱ_t)·noise) + (1 − mask)·x: schedule.add_noise(image, t, noise) noises it"
    for t in ts:
        with torch.no_grad():
            yours = fn(x, image, mask, t, noise)
        compare(yours, Known(image, mask, schedule, noise).merge(x, t, on_cpu), f"the merge at t = {t}", hint=hint)


def check_flow_loss(fn: Callable, model, x0: torch.Tensor, c: torch.Tensor | None, seeds=(0, 1),
                    context_dropout: float = 0.1) -> None:
    """Lesson 9: ``fn(model, x0, c, gen, context_dropout)`` is flow matching's loss on one batch, as
    ``diffusion_loss`` with a ``FlowSchedule`` computes it from a generator seeded the same way (it draws
    the noise ε, then the times t, then the context dropout)."""
    flow = FlowSchedule()
    # a GPU may round convolutions to TF32; the library also runs the network on a channels_last x_t
    tol = 1e-4 if x0.device.type == "cpu" else 1e-2
    hint = ("start from ddpm_loss and keep its draws in their order; then t ~ U[0, 1) (torch.rand), "
            "x_t = (1 − t)·x₀ + t·ε, the network's time input is t itself, and the target is ε − x₀.")
    with torch.no_grad():
        for seed in seeds:
            expected = diffusion_loss(model, flow, x0, c, gen=torch.Generator().manual_seed(seed),
                                      context_dropout=context_dropout)
            yours = fn(model, x0, c, torch.Generator().manual_seed(seed), context_dropout)
            if torch.is_tensor(yours) and yours.numel() != 1:
                raise Mismatch(f"the loss should be one number; yours has shape {tuple(yours.shape)}",
                               "average the squared error over every pixel of every sprite (F.mse_loss does).")
            if torch.is_tensor(yours):
                yours = yours.reshape(())
            if _close(yours, _flow_loss(model, x0, c, seed, context_dropout, sign=-1), tol) and \
                    not _close(yours, expected, tol):
                raise Mismatch("your loss is the one for the target x₀ − ε: the velocity's sign is flipped",
                               "the target is dx_t/dt; x_t moves from the sprite (t = 0) towards the noise (t = 1).")
            if not _close(yours, expected, tol):
                try:
                    off = abs(float(yours) - expected.item())
                except (TypeError, ValueError, RuntimeError):
                    raise Mismatch(f"the loss is a {type(yours).__name__}, not a number", hint) from None
                raise Mismatch(f"the loss of the batch drawn with seed {seed} is off by {off:.3g}", hint)


def _flow_loss(model, x0, c, seed: int, context_dropout: float, sign: int) -> torch.Tensor:
    """The flow-matching loss with the draws ``diffusion_loss`` makes, and the target's sign given."""
    gen = torch.Generator().manual_seed(seed)
    b, dev = x0.shape[0], x0.device
    noise = torch.randn(x0.shape, generator=gen).to(dev)
    t = torch.rand(b, generator=gen).to(dev)
    keep = (torch.rand(b, generator=gen) >= context_dropout).to(dev)
    t4 = t.view(-1, 1, 1, 1)
    pred = model((1 - t4) * x0 + t4 * noise, t, None if c is None else c * keep[:, None])
    return ((pred - sign * (noise - x0)) ** 2).mean()


def _close(yours, expected: torch.Tensor, tol: float) -> bool:
    try:
        yours = torch.as_tensor(yours).detach().to(expected.device, expected.dtype)
    except (TypeError, ValueError, RuntimeError):
        return False
    return yours.shape == expected.shape and bool(torch.isclose(yours, expected, rtol=tol, atol=tol).all())


def _raised_by(fn: Callable, error: BaseException) -> bool:
    """Whether ``error`` came from a ``raise`` statement in ``fn``'s own body (the stub).

    Not from something it called: a Python helper leaves a frame of its own, and a C++ operation
    (a tensor op a device lacks) leaves none, so the last frame is fn's but the instruction that
    raised is a call, not a raise.
    """
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:  # a partial or a callable object: cannot tell, so take it for the stub
        return True
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    if tb.tb_frame.f_code is not code:
        return False
    ops = {i.offset: i.opname for i in dis.get_instructions(code)}
    return ops.get(tb.tb_lasti, "RAISE_VARARGS") == "RAISE_VARARGS"  # unknown offset: as before
