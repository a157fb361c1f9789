import math

import pytest
import torch

from diffusion_utilities import BadInput, ContextUnet, NoiseSchedule, ddim_step, ddpm_step, denoise_add_noise, sample, timesteps_for

from conftest import OracleModel


def test_timesteps_match_the_course():
    assert timesteps_for(500, 500) == list(range(500, -1, -1))
    assert timesteps_for(500, 25) == list(range(500, -1, -20))
    ts = timesteps_for(500, 7)
    assert ts[0] == 500 and ts[-1] == 0 and len(ts) == 8 and ts == sorted(ts, reverse=True)


def test_ddpm_step_is_the_courses_denoise_add_noise(schedule):
    gen = torch.Generator().manual_seed(1)
    x, eps, z = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    for t in (1, 37, 500):
        b_t, a_t, ab_t = schedule.b_t, schedule.a_t, schedule.ab_t
        course = (x - eps * ((1 - a_t[t]) / (1 - ab_t[t]).sqrt())) / a_t[t].sqrt() + b_t.sqrt()[t] * z
        torch.testing.assert_close(denoise_add_noise(x, t, eps, schedule, z), course, rtol=0, atol=0)


def test_ddim_eta1_over_all_steps_is_the_ddpm_posterior(schedule):
    # With η = 1 and consecutive steps, DDIM's step is the true posterior q(x_{t-1} | x_t, x̂_0):
    # mean μ̃ = √ᾱ_{t-1} β_t / (1-ᾱ_t) · x̂_0 + √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t) · x_t, variance β̃_t = (1-ᾱ_{t-1}) / (1-ᾱ_t) · β_t.
    gen = torch.Generator().manual_seed(2)
    x, eps = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    ab, a, b = schedule.ab_t.double(), schedule.a_t.double(), schedule.b_t.double()
    s64 = NoiseSchedule(b, a, ab)
    for t in (2, 100, 499):
        mean, sigma = ddim_step(s64, x.double(), eps.double(), t, t - 1, eta=1.0)
        # DDIM uses ᾱ_t / ᾱ_{t-1} for α_t; the course's schedule makes them equal up to float rounding.
        a_t = ab[t] / ab[t - 1]
        x0 = (x.double() - (1 - ab[t]).sqrt() * eps.double()) / ab[t].sqrt()
        mu = ab[t - 1].sqrt() * (1 - a_t) / (1 - ab[t]) * x0 + a_t.sqrt() * (1 - ab[t - 1]) / (1 - ab[t]) * x.double()
        beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * (1 - a_t)
        torch.testing.assert_close(mean, mu, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(sigma**2, beta_tilde, rtol=1e-9, atol=1e-15)
        # The course's DDPM uses σ_t² = β_t instead, which is larger than β̃_t.
        _, sigma_ddpm = ddpm_step(schedule, x, eps, t, t - 1)
        torch.testing.assert_close(sigma_ddpm.double() ** 2, b[t], rtol=1e-6, atol=0)
        assert sigma_ddpm.double() ** 2 > beta_tilde


def test_ddpm_step_mean_equals_posterior_mean(schedule):
    # DDPM's mean (x_t − β_t/√(1−ᾱ_t) ε)/√α_t is the same posterior mean μ̃ as DDIM η=1 gives.
    gen = torch.Generator().manual_seed(3)
    x, eps = torch.randn(1, 3, 4, 4, generator=gen).double(), torch.randn(1, 3, 4, 4, generator=gen).double()
    ab = schedule.ab_t.double()
    a = torch.cat([torch.ones(1, dtype=torch.float64), ab[1:] / ab[:-1]])
    s64 = NoiseSchedule(1 - a, a, ab)  # a schedule where α_t = ᾱ_t / ᾱ_{t-1} holds exactly
    for t in (5, 300):
        m_ddpm, _ = ddpm_step(s64, x, eps, t, t - 1)
        m_ddim, _ = ddim_step(s64, x, eps, t, t - 1, eta=1.0)
        torch.testing.assert_close(m_ddpm, m_ddim, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler, steps", [("ddim", 25), ("ddim", 500), ("dpm-solver++", 10), ("ddpm-no-noise", 500)])
def test_oracle_model_recovers_x0(schedule, sampler, steps):
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    model = OracleModel(x0, schedule)
    out = sample(model, schedule, 3, sampler=sampler, steps=steps, generator=gen)
    torch.testing.assert_close(out.x, x0, atol=2e-3, rtol=0)


def test_oracle_ddpm_with_noise_ends_at_x0(schedule):
    gen = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    out = sample(OracleModel(x0, schedule), schedule, 2, sampler="ddpm", generator=gen)
    # Not exact: the course's ᾱ_1 = α_0·α_1 (ᾱ_0 is set to 1 only after the cumulative product), so
    # DDPM's last step, which uses α_1 alone, removes ~58% of the last noise (std 0.016), not all of it.
    # That leaves ~0.007 of noise: under one 8-bit grey level at the [-1, 1] scale.
    torch.testing.assert_close(out.x, x0, atol=0.04, rtol=0)
    assert (out.x - x0).std() < 0.01


def _smooth_output(x, s):
    """A fixed smooth function of x and s = t/T standing in for a network: not an oracle, so the data
    prediction x̂₀ changes from step to step and DPM-Solver++'s second-order term has something to do."""
    return torch.tanh(x) * (0.5 + s) + 0.3 * math.sin(3 * s) * x


class SmoothModel(torch.nn.Module):
    """``_smooth_output`` as a float64 model: its output is ε or v, as the schedule says."""

    def __init__(self, T):
        super().__init__()
        self.T = T
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))  # float64: sample runs in it
        self.in_channels, self.h, self.n_cfeat = 1, 4, 5

    def forward(self, x, t, c=None):
        step = round(float(t.flatten()[0]) * self.T)  # t/T arrives as float32: back to the exact step
        return _smooth_output(x, step / self.T)


def _dpm_solver_pp_2m_in_sigma_space(x_T, steps, ab, prediction, second_order=True):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), written independently of the library: in the
    variance-exploding variables of k-diffusion's ``sample_dpmpp_2m``, y = x / α and σ = √(1 − ᾱ) / √ᾱ,
    with s = −log σ (the library works in λ = log(α / σ) on x itself).

    1. D_i = x̂₀ at (x_i, t_i): (x − √(1−ᾱ)·ε) / √ᾱ for ε, √ᾱ·x − √(1−ᾱ)·v for v.
    2. h = s_{i+1} − s_i; from the second step on, r = h_last / h and
       D = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}  (second_order=False keeps D_i: DDIM, first order).
    3. y_{i+1} = (σ_{i+1} / σ_i)·y_i − (e^{−h} − 1)·D; the step to σ = 0 returns D_i.
    Returns (x_0, [D_0, D_1, ...]).
    """
    sigma = lambda k: ((1 - ab[k]) / ab[k]).sqrt()  # noqa: E731
    y = x_T / ab[steps[0]].sqrt()
    d_last = h_last = None
    ds = []
    for k, k_next in zip(steps[:-1], steps[1:]):
        alpha, sigma_vp = ab[k].sqrt(), (1 - ab[k]).sqrt()
        x = alpha * y
        out = _smooth_output(x, k / (len(ab) - 1))
        d = (x - sigma_vp * out) / alpha if prediction == "eps" else alpha * x - sigma_vp * out
        ds.append(d)
        if k_next == 0:
            return d, ds
        h = torch.log(sigma(k)) - torch.log(sigma(k_next))
        d_used = d
        if d_last is not None and second_order:
            r = h_last / h
            d_used = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_last
        y = sigma(k_next) / sigma(k) * y - torch.expm1(-h) * d_used
        d_last, h_last = d, h
    raise AssertionError("the grid must end at t = 0")


@pytest.mark.parametrize("prediction, steps", [("eps", 7), ("eps", 20), ("v", 10)])
def test_dpm_solver_pp_2m_is_the_papers_update_for_a_model_that_is_not_an_oracle(schedule, prediction, steps):
    # With an oracle every step's x̂₀ is the same x₀, so any second-order coefficient would pass; here
    # x̂₀ moves from step to step. 7 steps over T = 500 make an uneven grid (r changes from step to step).
    s64 = NoiseSchedule(schedule.b_t.double(), schedule.a_t.double(), schedule.ab_t.double(), prediction=prediction)
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    grid = timesteps_for(schedule.T, steps)
    want, ds = _dpm_solver_pp_2m_in_sigma_space(x_T, grid, s64.ab_t, prediction)
    first_order, _ = _dpm_solver_pp_2m_in_sigma_space(x_T, grid, s64.ab_t, prediction, second_order=False)
    # the test can tell: consecutive predictions differ, and the second-order term moves the result
    assert min((a - b).abs().max() for a, b in zip(ds[1:], ds[:-1])) > 0.03
    assert (want - first_order).abs().max() > 0.1
    got = sample(SmoothModel(schedule.T), s64, sampler="dpm-solver++", steps=steps, x_T=x_T).x
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)  # float64 throughout: only rounding differs


def test_frames_and_reproducibility(tiny_model, schedule):
    run = lambda: sample(tiny_model, schedule, 4, sampler="ddpm", steps=50,
                         generator=torch.Generator().manual_seed(0), save_every=10)
    a, b = run(), run()
    assert torch.equal(a.x, b.x)
    assert a.frames.shape == (6, 4, 3, 16, 16) and a.frame_t == [500, 400, 300, 200, 100, 0]
    c = sample(tiny_model, schedule, 4, sampler="ddpm", steps=50, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-no-noise", "ddim", "dpm-solver++"])
def test_same_seed_same_bits_every_sampler(tiny_model, schedule, sampler):
    ctx = torch.eye(5)[[0, 1, 2]]
    run = lambda: sample(tiny_model, schedule, 3, sampler=sampler, steps=20, context=ctx, guidance=1.0,
                         generator=torch.Generator().manual_seed(7)).x
    assert torch.equal(run(), run())


def test_guidance_formula(tiny_model, schedule):
    from diffusion_utilities import predict_noise

    x, c = torch.randn(2, 3, 16, 16), torch.eye(5)[:2]
    # one t/T for the batch, or one per sprite (the two halves of the guided batch each get theirs)
    for t in (torch.tensor([0.5]), torch.tensor([0.9, 0.1]), torch.tensor([0.9, 0.1])[:, None, None, None]):
        with torch.no_grad():
            want = 3 * tiny_model(x, t, c) - 2 * tiny_model(x, t, torch.zeros_like(c))
            torch.testing.assert_close(predict_noise(tiny_model, x, t, c, 2.0), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sampler="rk4"), "unknown sampler 'rk4'"),
        (dict(sampler="euler"), "sampler euler does not fit a diffusion model; choose one of ddpm,"),
        (dict(steps=0), "steps must be a whole number from 1 to 500 \\(T = 500\\)"),
        (dict(steps=501), "steps must be a whole number from 1 to 500 \\(T = 500\\)"),
        (dict(guidance=float("nan"), context=torch.eye(5)[:2]), "guidance must be a finite number ≥ 0"),
        (dict(guidance=1.0), "guidance needs a context"),
        (dict(context=torch.rand(2, 4)), r"expected \(2, 5\)"),
        (dict(context=torch.tensor([[float("nan"), 0, 0, 0, 0]] * 2)), "negative, NaN"),
        (dict(context=-torch.eye(5)[:2]), "negative, NaN"),
        (dict(x_T=torch.randn(2, 3, 12, 12)), "x_T must be"),
    ],
)
def test_bad_sampler_arguments(tiny_model, schedule, kwargs, message):
    with pytest.raises(BadInput, match=message):
        sample(tiny_model, schedule, 2, **kwargs)


from hypothesis import given, settings
from hypothesis import strategies as st

torch.manual_seed(0)
_TINY = (ContextUnet(3, 16, 5, 16).eval(), NoiseSchedule.linear())
_values = st.sampled_from([0.0, 1.0, -1.0, 0.5, float("nan"), float("inf"), 3.0])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(-2, 4),
    steps=st.integers(-3, 600) | st.sampled_from([None]),
    sampler=st.sampled_from(["ddpm", "ddim", "ddpm-no-noise", "dpm-solver++", "DDIM", ""]),
    guidance=_values,
    ctx_shape=st.sampled_from([None, (2, 5), (3, 5), (2, 4), (5,)]),
    ctx_value=_values,
    ctx_dtype=st.sampled_from([torch.float32, torch.float64, torch.int64]),
)
def test_sampler_entry_works_or_raises_badinput(n, steps, sampler, guidance, ctx_shape,
                                                ctx_value, ctx_dtype):
    tiny_model, schedule = _TINY
    context = None if ctx_shape is None else torch.full(ctx_shape, ctx_value).to(ctx_dtype)
    try:
        out = sample(tiny_model, schedule, n, sampler=sampler, steps=min(steps, 3) if steps and steps > 0 else steps,
                     context=context, guidance=guidance, generator=torch.Generator().manual_seed(0))
    except BadInput as e:
        assert "\n" not in str(e)
        return
    assert out.x.shape == (n, 3, 16, 16) and torch.isfinite(out.x).all()


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 25), ("dpm-solver++", 10)])
def test_fast_path_gives_the_plain_models_samples(sampler, steps):
    # BatchNorm folding and channels_last reorder float sums; over a whole run the difference stays tiny.
    from test_model import _with_trained_looking_batchnorm

    torch.manual_seed(0)
    model = _with_trained_looking_batchnorm(ContextUnet(n_feat=16))
    schedule = NoiseSchedule.linear(100, 1e-4, 0.02)
    ctx = torch.eye(5)[torch.arange(6) % 5]
    runs = [sample(model, schedule, 6, sampler=sampler, steps=steps, context=ctx, guidance=1.0,
                   generator=torch.Generator().manual_seed(3), fast=fast).x for fast in (True, False)]
    torch.testing.assert_close(runs[0], runs[1], atol=2e-3, rtol=0)


def test_bf16_sampling_stays_close_to_fp32_but_is_not_the_same():
    # Why bf16 is opt-in: it is close on average, but it is not float rounding (the shipped model
    # moves single pixels by up to 100 of 255 grey levels in DDIM-25).
    from test_model import _with_trained_looking_batchnorm

    torch.manual_seed(0)
    model = _with_trained_looking_batchnorm(ContextUnet(n_feat=16))
    schedule = NoiseSchedule.linear(100, 1e-4, 0.02)
    runs = [sample(model, schedule, 4, sampler="ddim", steps=10, generator=torch.Generator().manual_seed(3),
                   precision=p).x for p in ("fp32", "bf16")]
    assert runs[1].dtype == torch.float32 and torch.isfinite(runs[1]).all()
    diff = (runs[0] - runs[1]).abs().mean().item()
    assert 0 < diff < 0.05, diff


def test_bf16_runs_a_bfloat16_copy_made_once_per_set_of_weights():
    from diffusion_utilities import engine

    torch.manual_seed(0)
    model = ContextUnet(n_feat=16).eval()
    schedule = NoiseSchedule.linear(20, 1e-4, 0.02)
    run = lambda: sample(model, schedule, 2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0),  # noqa: E731
                         precision="bf16").x
    first = run()
    folded = engine.cached_inference_copy(model)
    bf16_run = engine._DERIVED[folded][("bf16", None)]
    torch.testing.assert_close(run(), first, rtol=0, atol=0)  # same copy, same bits
    assert engine._DERIVED[folded][("bf16", None)] is bf16_run
    assert next(model.parameters()).dtype == torch.float32  # the model itself is left alone
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # new weights: a new folded copy, so a new bf16 copy
    assert not torch.equal(run(), first)


@pytest.mark.slow
def test_compiled_sampling_gives_the_same_samples_and_is_compiled_once(monkeypatch):
    torch.manual_seed(0)
    model = ContextUnet(n_feat=8).eval()
    schedule = NoiseSchedule.linear(20, 1e-4, 0.02)
    calls = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(k) or real_compile(*a, **k))
    run = lambda **k: sample(model, schedule, 2, sampler="ddpm", steps=4, generator=torch.Generator().manual_seed(0),  # noqa: E731
                             **k).x
    compiled = run(compile="default")
    torch.testing.assert_close(compiled, run(), rtol=0, atol=1e-4)
    run(compile="default")
    assert calls == [{"mode": None}]  # the second call reused the compiled network


def test_a_network_that_cannot_compile_is_one_line(monkeypatch):
    def broken(net, **_):
        def run(*args):
            raise RuntimeError("no C compiler found\nlong traceback ...")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(BadInput, match=r"torch.compile could not compile the network \(RuntimeError: no C compiler "
                                        r"found\); sample without compile$"):
        sample(ContextUnet(n_feat=8).eval(), NoiseSchedule.linear(10, 1e-4, 0.02), 2, compile="max-autotune")


def test_cached_compiled_networks_go_with_the_weights_they_were_made_from(monkeypatch):
    import gc
    import weakref

    from diffusion_utilities import engine

    class Compiled:  # like torch.compile's module, it holds what it compiled
        def __init__(self, net):
            self.net = net

        def __call__(self, *args):
            return self.net(*args)

    monkeypatch.setattr(torch, "compile", lambda net, **_: Compiled(net))
    model = ContextUnet(n_feat=8).eval()
    schedule = NoiseSchedule.linear(10, 1e-4, 0.02)
    sample(model, schedule, 2, steps=2, compile="default")
    old = weakref.ref(engine.cached_inference_copy(model))
    with torch.no_grad():
        next(model.parameters()).add_(0.5)  # new weights: a new folded copy
    sample(model, schedule, 2, steps=2, compile="default")
    gc.collect()
    assert old() is None  # the old copy and its compiled network are gone, not kept by the cache


def test_running_out_of_memory_is_not_called_a_compile_failure(monkeypatch):
    def oom(net, **_):
        def run(*args):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return run

    monkeypatch.setattr(torch, "compile", oom)
    with pytest.raises(torch.OutOfMemoryError):
        sample(ContextUnet(n_feat=8).eval(), NoiseSchedule.linear(10, 1e-4, 0.02), 2, compile="default")


@pytest.mark.parametrize("kwargs,message", [({"cuda_graph": True}, "cuda_graph needs the model on a CUDA device"),
                                            ({"precision": "fp16"}, "precision must be fp32 or bf16"),
                                            ({"compile": "fast"}, "compile must be one of default, max-autotune")])
def test_gpu_options_refuse_what_they_cannot_do(kwargs, message):
    with pytest.raises(BadInput, match=message):
        sample(ContextUnet(n_feat=8).eval(), NoiseSchedule.linear(10, 1e-4, 0.02), 2, **kwargs)


def test_float64_context_and_start_are_taken_in_the_models_precision(tiny_model, schedule):
    # Found by the property test above: a float64 context passed the checks, then broke the float32 network.
    ctx = torch.eye(5, dtype=torch.float64)[:2]
    x_T = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = sample(tiny_model, schedule, sampler="ddim", steps=3, context=ctx, guidance=1.0, x_T=x_T)
    ref = sample(tiny_model, schedule, sampler="ddim", steps=3, context=ctx.float(), guidance=1.0, x_T=x_T.float())
    assert out.x.dtype == torch.float32
    torch.testing.assert_close(out.x, ref.x, rtol=0, atol=0)


@pytest.mark.parametrize("fast", [True, False])
def test_a_float64_model_samples_in_float64_from_the_same_noise(schedule, fast):
    model = ContextUnet(3, 8, 5, 16).eval()
    x32 = sample(model, schedule, 2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(1), fast=fast).x
    x64 = sample(model.double(), schedule, 2, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(1), fast=fast).x
    assert x64.dtype == torch.float64  # the starting noise used to stay float32 and stop the first forward
    torch.testing.assert_close(x64.float(), x32, rtol=1e-4, atol=1e-4)  # a seed draws the same noise in any precision
