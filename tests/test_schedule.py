import math

import pytest
import torch

from diffusion_utilities import BadInput, DiffusionConfig, NoiseSchedule, make_schedule, perturb_input


def test_linear_schedule_is_the_courses(schedule):
    # The course: b_t = (beta2 - beta1) * linspace(0, 1, T + 1) + beta1; ab_t = exp(cumsum(log(1 - b_t))); ab_t[0] = 1
    assert schedule.T == 500 and schedule.b_t.shape == (501,)
    assert schedule.ab_t[0].item() == 1.0
    pinned = {1: 0.9997602105140686, 10: 0.9967158436775208, 100: 0.8094670176506042,
              250: 0.2785598039627075, 500: 0.006288761273026466}
    for t, value in pinned.items():
        assert schedule.ab_t[t].item() == pytest.approx(value, rel=1e-6), t
    assert schedule.b_t[0].item() == pytest.approx(1e-4) and schedule.b_t[500].item() == pytest.approx(0.02)
    assert schedule.beta is schedule.b_t and schedule.alpha_bar is schedule.ab_t


def test_cosine_schedule_follows_nichol_dhariwal():
    s = NoiseSchedule.cosine(1000)
    t = torch.tensor([0, 250, 500, 750])
    f = torch.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(s.ab_t[t], (f / f[0]).float(), rtol=1e-5, atol=1e-6)
    assert (s.ab_t[1:] < s.ab_t[:-1]).all() and s.b_t.max() <= 0.999 + 1e-6


def test_schedule_moves_with_to():
    s = make_schedule(DiffusionConfig()).to("meta")
    assert s.ab_t.device.type == "meta" and s.b_t.device.type == "meta" and s.name == "linear"


def test_forward_process_mean_and_variance(schedule):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 3, 4, 4, generator=gen) * 2 - 1
    n = 40_000
    for t in (10, 250, 500):
        noise = torch.randn(n, 3, 4, 4, generator=gen)
        x_t = perturb_input(x0.expand(n, -1, -1, -1), torch.full((n,), t), noise, schedule)
        ab = schedule.ab_t[t]
        torch.testing.assert_close(x_t.mean(0), ab.sqrt() * x0[0], atol=0.02, rtol=0)
        torch.testing.assert_close(x_t.var(0), (1 - ab).expand(3, 4, 4), atol=0.03, rtol=0.03)


def test_forward_process_is_not_the_courses_variance_scaling(schedule):
    # The course scaled the noise by (1 - ᾱ); the correct scale is √(1 - ᾱ).
    x0, noise, t = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2), torch.tensor([100])
    got = perturb_input(x0, t, noise, schedule)
    torch.testing.assert_close(got, (1 - schedule.ab_t[100]).sqrt().expand(1, 3, 2, 2))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_timesteps(bad):
    with pytest.raises(BadInput, match="timesteps"):
        NoiseSchedule.linear(bad)


def test_unknown_schedule_name():
    with pytest.raises(BadInput, match="unknown schedule 'quadratic'"):
        make_schedule("quadratic")
