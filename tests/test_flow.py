"""Flow matching: the straight path, its velocity target, and the Euler and Heun samplers."""

from pathlib import Path

import pytest
import torch

from diffusion_utilities import BadInput, sample
from diffusion_utilities.sampling import euler_step, network_calls
from diffusion_utilities.schedule import DiffusionConfig, FlowSchedule, make_schedule

ROOT = Path(__file__).resolve().parents[1]


def test_path_target_and_inversion():
    f = make_schedule(DiffusionConfig(objective="flow"))
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 8, 8, generator=gen), torch.randn(3, 3, 8, 8, generator=gen)
    t = torch.tensor([0.0, 0.3, 1.0])
    x_t = f.add_noise(x0, t, eps)
    torch.testing.assert_close(x_t[0], x0[0]) and torch.testing.assert_close(x_t[2], eps[2])
    torch.testing.assert_close(x_t[1], 0.7 * x0[1] + 0.3 * eps[1])
    u = f.target(x0, eps, t)
    torch.testing.assert_close(u, eps - x0)  # d/dt of (1 − t)·x0 + t·ε
    x0_hat, eps_hat = f.x0_eps(x_t, u, t)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-6)


def test_grids():
    assert make_schedule("flow").grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    g = FlowSchedule(shift=3.0).grid(4)
    assert g[0] == 1 and g[-1] == 0 and g == sorted(g, reverse=True)
    assert g[2] == pytest.approx(0.75)  # 3·0.5 / (1 + 2·0.5): more of the steps at high noise


def test_euler_is_ddim_on_the_straight_path():
    gen = torch.Generator().manual_seed(1)
    x, x0, eps = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    torch.testing.assert_close(euler_step(x, eps - x0, 0.8, 0.5), x + (0.5 - 0.8) * (eps - x0))
    # and with the velocity u = ε̂ − x̂₀ of an x consistent with (x̂₀, ε̂) at t = 0.8 it lands on (1 − t_prev)·x̂₀ + t_prev·ε̂
    x = 0.2 * x0 + 0.8 * eps
    torch.testing.assert_close(euler_step(x, eps - x0, 0.8, 0.5), 0.5 * x0 + 0.5 * eps)


class VelocityOracle(torch.nn.Module):
    """Knows x0, so predicts the true velocity ε − x0 with ε = (x_t − (1 − t)·x0) / t; counts its calls."""

    def __init__(self, x0):
        super().__init__()
        self.x0, self.calls = x0, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.in_channels, self.h, self.n_cfeat = x0.shape[1], x0.shape[2], 5

    def forward(self, x, t, c=None):
        self.calls += 1
        t = float(t.flatten()[0])
        return (x - (1 - t) * self.x0) / t - self.x0


@pytest.mark.parametrize("sampler, steps", [("euler", 1), ("euler", 7), ("heun", 1), ("heun", 4)])
def test_oracle_flow_model_recovers_x0_and_counts_calls(sampler, steps):
    gen = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    model = VelocityOracle(x0)
    out = sample(model, make_schedule("flow"), 2, sampler=sampler, steps=steps, generator=gen)
    torch.testing.assert_close(out.x, x0, rtol=0, atol=1e-5)  # the true velocity is constant on the straight path
    assert model.calls == network_calls(sampler, steps) == (2 * steps - 1 if sampler == "heun" else steps)


def test_samplers_must_fit_the_model(tiny_model, schedule):
    with pytest.raises(BadInput, match="sampler ddpm does not fit a flow-matching model; choose one of euler, heun"):
        sample(tiny_model, make_schedule("flow"), 2, sampler="ddpm", steps=3)
    with pytest.raises(BadInput, match="sampler heun does not fit a diffusion model"):
        sample(tiny_model, schedule, 2, sampler="heun", steps=3)
    with pytest.raises(BadInput, match="flow matching predicts the velocity"):
        make_schedule(DiffusionConfig(objective="flow", prediction="v"))


def test_flow_training_regresses_onto_the_velocity(tiny_model):
    from diffusion_utilities.training import diffusion_loss

    f = make_schedule("flow")
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    loss = diffusion_loss(tiny_model, f, x0, gen=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)  # the same draws: noise, then t
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.rand(4, generator=gen)
    with torch.no_grad():
        pred = tiny_model((1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise, t)
    torch.testing.assert_close(loss.detach(), ((pred - (noise - x0)) ** 2).mean(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_trains_and_samples_a_flow_model(tmp_path):
    from test_cli import cli

    r = cli("train", "--objective", "flow", "--n-sprites", 40, "--batch-size", 20, "--epochs", 1, "--n-feat", 16,
            "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "run" / "model.safetensors"
    r = cli("sample", "--weights", weights, "--n", 4, "--out", tmp_path / "s", "--no-gif")
    assert r.returncode == 0, r.stderr
    # a flow model's default sampler (not DDPM's) on its measured grid
    assert "with heun in 9 steps on the time grid shifted by 2:" in r.stdout, r.stdout
    r = cli("sample", "--weights", weights, "--n", 4, "--sampler", "euler", "--steps", 3, "--shift", 3,
            "--out", tmp_path / "s2", "--no-gif")
    assert r.returncode == 0 and "with euler in 3 steps on the time grid shifted by 3:" in r.stdout, r.stderr
    r = cli("sample", "--weights", weights, "--sampler", "ddim", "--out", tmp_path / "s3")
    assert r.returncode == 2 and "does not fit a flow-matching model" in r.stderr
    assert not (tmp_path / "s3").exists()
    r = cli("train", "--objective", "flow", "--prediction", "v", "--out", tmp_path / "bad", "--no-progress")
    assert r.returncode == 2 and "flow matching predicts the velocity" in r.stderr
    assert not (tmp_path / "bad").exists()


def test_evaluation_rows_by_name():
    from diffusion_utilities.evaluation import row_spec

    assert row_spec("heun-4") == ("heun", 4, 0.0, 0.0, 0.0)
    assert row_spec("dpm-solver++-15") == ("dpm-solver++", 15, 0.0, 0.0, 0.0)
    assert row_spec("ddim") == ("ddim", 25, 0.0, 0.0, 0.0)
    assert row_spec("cfg-w2-rescaled") == ("ddim", 25, 2.0, 0.0, 0.7)
    for bad in ("heun-0", "rk4-10", "ddim-x"):
        with pytest.raises(BadInput, match="unknown evaluation row"):
            row_spec(bad)


class GaussianDataVelocity(torch.nn.Module):
    """The exact flow-matching velocity for data x₀ ~ N(μ, s²) in every pixel: what a perfect model of that
    data learns. x_t = (1 − t)·x₀ + t·ε is then N(m, S²) with m = (1 − t)·μ and S² = (1 − t)²·s² + t²,
    and u(x, t) = E[ε − x₀ | x_t = x] = m' + (x − m)·S'/S. Its trajectories x_t = m(t) + S(t)·x₁ are curved
    (S is not linear in t), so neither solver is exact; the one from x₁ ends at x₀ = μ + s·x₁."""

    MU, S = 0.8, 0.5

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))  # float64: sample runs in it
        self.in_channels, self.h, self.n_cfeat = 1, 4, 5

    def forward(self, x, t, c=None):
        t = float(t.flatten()[0])
        mu, s = self.MU, self.S
        return -mu + (x - (1 - t) * mu) * (t - (1 - t) * s**2) / ((1 - t) ** 2 * s**2 + t**2)


@pytest.mark.parametrize("sampler, order", [("euler", 1), ("heun", 2)])
def test_euler_and_heun_converge_at_their_orders_on_a_curved_path(sampler, order):
    # The error at t = 0 against the exact solution, for 8 to 64 steps on the uniform grid: its slope
    # against the step count on a log-log plot is the solver's order. Heun's last step (to t = 0) is
    # Euler's in this library, but that one step's error is O(h²), the same order as Heun's accumulated
    # error, so the slope at t = 0 still measures 2; were every step Euler's, it would be 1.
    x_1 = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = GaussianDataVelocity.MU + GaussianDataVelocity.S * x_1
    steps = [8, 16, 32, 64]
    errors = [(sample(GaussianDataVelocity(), FlowSchedule(), sampler=sampler, steps=k, x_T=x_1).x - exact).abs().max()
              for k in steps]
    log_k, log_e = torch.tensor(steps, dtype=torch.float64).log(), torch.stack(errors).log()
    slope = -((log_k - log_k.mean()) * (log_e - log_e.mean())).sum() / ((log_k - log_k.mean()) ** 2).sum()
    assert abs(slope - order) < 0.2, (slope, errors)


def test_the_commands_and_the_playground_share_one_sampling_policy():
    # sampling_policy is the one place that says how a model is sampled when nobody says: the sample and edit
    # commands and the playground all take a flow model's time grid from it; sample() runs what it is given
    from diffusion_utilities.playground import Choice, Playground
    from diffusion_utilities.sampling import FLOW_SHIFT, sampling_policy

    sampler, steps, schedule = sampling_policy(FlowSchedule(), {})
    assert (sampler, steps, schedule.shift) == ("heun", 9, FLOW_SHIFT) and FlowSchedule().shift == 1
    assert sampling_policy(FlowSchedule(), {}, shift=3.0)[2].shift == 3.0
    v = make_schedule(DiffusionConfig(prediction="v", zero_terminal_snr=True))
    assert sampling_policy(v, {})[:2] == ("dpm-solver++", 10) and sampling_policy(v, {})[2] is v
    playground = Playground(ROOT / "weights", n=2, models={"flow": Choice("sprites_flow", "heun", 3)})
    assert playground.models["flow"][1].shift == FLOW_SHIFT
