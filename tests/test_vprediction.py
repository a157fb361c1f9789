"""v-prediction and the zero-terminal-SNR schedule (Lin et al. 2024; Salimans & Ho 2022)."""

import pytest
import torch

from diffusion_utilities import BadInput, DiffusionConfig, make_schedule, perturb_input, sample
from diffusion_utilities.sampling import denoise_add_noise, predict_noise
from diffusion_utilities.schedule import rescale_zero_terminal_snr

from conftest import OracleModel


@pytest.fixture(scope="module")
def vsched():
    return make_schedule(DiffusionConfig(prediction="v", zero_terminal_snr=True))


def test_rescale_ends_in_pure_noise_and_keeps_the_start(schedule, vsched):
    assert schedule.ab_t[-1] == pytest.approx(0.0063, abs=1e-4)  # the leak the rescale removes
    assert vsched.ab_t[-1] == 0 and vsched.ab_t[0] == 1
    assert (vsched.ab_t[1:] < vsched.ab_t[:-1]).all()  # still strictly noisier at every step
    # Algorithm 1 is affine in √ᾱ: (√ᾱ − √ᾱ_T)·√ᾱ_0 / (√ᾱ_0 − √ᾱ_T)
    s, sT = schedule.ab_t.double().sqrt(), schedule.ab_t.double()[-1].sqrt()
    torch.testing.assert_close(vsched.ab_t.double().sqrt(), (s - sT) / (1 - sT), rtol=0, atol=1e-6)
    # α_t = ᾱ_t / ᾱ_{t-1}, and β_T = 1: the last step forgets everything
    torch.testing.assert_close(vsched.a_t[1:], vsched.ab_t[1:] / vsched.ab_t[:-1])
    assert vsched.b_t[-1] == 1
    torch.testing.assert_close(rescale_zero_terminal_snr(torch.tensor([1.0, 0.25])), torch.tensor([1.0, 0.0]))


def test_eps_with_zero_terminal_snr_is_refused():
    with pytest.raises(BadInput, match="needs v-prediction"):
        make_schedule(DiffusionConfig(zero_terminal_snr=True))
    with pytest.raises(BadInput, match="unknown prediction 'x0'"):
        make_schedule(DiffusionConfig(prediction="x0"))


@pytest.mark.parametrize("zero_snr", [False, True])
def test_v_target_and_its_inversion(zero_snr):
    s = make_schedule(DiffusionConfig(prediction="v", zero_terminal_snr=zero_snr))
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 3, 8, 8, generator=gen)
    t = torch.tensor([1, 250, 499, 500])
    ab = s.ab_t[t].view(-1, 1, 1, 1)
    v = s.target(x0, eps, t)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)  # Salimans & Ho §4
    x0_hat, eps_hat = s.x0_eps(perturb_input(x0, t, eps, s), v, t)
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(eps_hat, eps, rtol=0, atol=1e-5)


def test_eps_schedule_reads_the_output_as_noise(schedule):
    x, out = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    x0, eps = schedule.x0_eps(x, out, 100)
    assert eps is out
    torch.testing.assert_close(schedule.ab_t[100].sqrt() * x0 + (1 - schedule.ab_t[100]).sqrt() * eps, x)
    assert schedule.target(x, out, torch.tensor([3, 4])) is out


@pytest.mark.parametrize("sampler, steps", [("ddim", 25), ("ddim", 10), ("dpm-solver++", 10), ("ddpm-no-noise", 500),
                                            ("ddpm", 500), ("ddpm", 25)])
def test_oracle_v_model_recovers_x0_from_pure_noise(vsched, sampler, steps):
    # The first step starts at ᾱ_T = 0, where x̂₀ from ε would be 0/0 and DDPM's (x − …)/√α_T divides
    # by zero: every rule must take x̂₀ from the v form there.
    gen = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 3, 8, 8, generator=gen) * 2 - 1
    out = sample(OracleModel(x0, vsched, target="v"), vsched, 3, sampler=sampler, steps=steps, generator=gen)
    assert torch.isfinite(out.x).all()
    torch.testing.assert_close(out.x, x0, atol=0.05 if sampler == "ddpm" else 2e-3, rtol=0)


def test_guidance_rescale(tiny_model):
    x, c, t = torch.randn(3, 3, 16, 16), torch.eye(5)[:3], torch.tensor([0.7])

    def model(x, t, c):  # a context that changes the output a lot, as a trained model's does
        return x * (1 + 2 * c[:, :1, None, None]) + c[:, 1:2, None, None]

    cond = model(x, t, c)
    plain = predict_noise(model, x, t, c, 4.0)
    full = predict_noise(model, x, t, c, 4.0, guidance_rescale=1.0)
    half = predict_noise(model, x, t, c, 4.0, guidance_rescale=0.5)
    torch.testing.assert_close(predict_noise(model, x, t, c, 4.0, guidance_rescale=0.0), plain)
    dims = (1, 2, 3)
    torch.testing.assert_close(full.std(dim=dims), cond.std(dim=dims), rtol=1e-4, atol=1e-5)  # Lin et al. Eq. 15
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain, rtol=1e-4, atol=1e-5)  # Eq. 16
    assert not torch.allclose(full, plain)
    with pytest.raises(BadInput, match="guidance_rescale must be a number from 0 to 1"):
        sample(tiny_model, make_schedule("linear"), 3, context=c, guidance=1.0, guidance_rescale=1.5, steps=2)


def test_course_helpers_refuse_a_v_schedule(vsched):
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(BadInput, match="predicts v"):
        denoise_add_noise(x, 10, x, vsched)


def test_v_training_regresses_onto_v(vsched, tiny_model):
    from diffusion_utilities.training import diffusion_loss

    gen = torch.Generator().manual_seed(3)
    x0 = torch.rand(4, 3, 16, 16) * 2 - 1
    loss = diffusion_loss(tiny_model, vsched, x0, gen=gen)
    gen = torch.Generator().manual_seed(3)  # the same draws: noise, then t
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(1, vsched.T + 1, (4,), generator=gen)
    with torch.no_grad():
        pred = tiny_model(perturb_input(x0, t, noise, vsched), t / vsched.T)
    ab = vsched.ab_t[t].view(-1, 1, 1, 1)
    want = ((pred - (ab.sqrt() * noise - (1 - ab).sqrt() * x0)) ** 2).mean()
    torch.testing.assert_close(loss.detach(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_v_model_defaults_to_dpm_solver_and_refuses_the_labs_export(tmp_path):
    from test_cli import cli

    r = cli("train", "--prediction", "v", "--zero-terminal-snr", "--n-sprites", 40, "--batch-size", 20, "--epochs", 1,
            "--n-feat", 16, "--out", tmp_path / "run", "--no-progress")
    assert r.returncode == 0, r.stderr
    weights = tmp_path / "run" / "model.safetensors"
    r = cli("sample", "--weights", weights, "--n", 4, "--out", tmp_path / "s", "--no-gif")
    assert r.returncode == 0 and "with dpm-solver++ in 10 steps" in r.stdout, r.stderr
    r = cli("export-course-weights", "--weights", weights, "--out", tmp_path / "labs")
    assert r.returncode == 2 and "predicts v" in r.stderr
    assert not list((tmp_path / "labs").glob("*.pth"))
    r = cli("sample", "--weights", weights, "--shift", 2, "--out", tmp_path / "s2")
    assert r.returncode == 2 and "--shift sets a flow model's time grid" in r.stderr
    r = cli("train", "--zero-terminal-snr", "--out", tmp_path / "bad", "--no-progress")
    assert r.returncode == 2 and "needs v-prediction" in r.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_fine_tuning_a_course_model_into_a_v_model_records_where_it_started(tmp_path):
    from test_cli import cli

    r = cli("train", "--n-sprites", 40, "--batch-size", 20, "--epochs", 1, "--n-feat", 16, "--out", tmp_path / "eps",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    r = cli("train", "--prediction", "v", "--zero-terminal-snr", "--init-from", tmp_path / "eps" / "model.safetensors",
            "--n-sprites", 40, "--batch-size", 20, "--epochs", 1, "--n-feat", 16, "--out", tmp_path / "v", "--no-progress")
    assert r.returncode == 0, r.stderr
    import json

    card = json.loads((tmp_path / "v" / "model.json").read_text())
    assert card["diffusion"]["prediction"] == "v" and card["diffusion"]["zero_terminal_snr"] is True
    assert card["init_from"]["diffusion"]["prediction"] == "eps"  # the start's config, kept
