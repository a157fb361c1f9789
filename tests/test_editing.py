"""Editing (issue 31): inpainting, SDEdit and DDIM inversion through sample's loop, and the `edit` command."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_utilities import ContextUnet, load_model_and_schedule
from diffusion_utilities.cli import main
from diffusion_utilities.data import procedural_dataset, sprites_to_tensor
from diffusion_utilities.editing import _noise_up, inpaint, invert, region_mask, sdedit
from diffusion_utilities.errors import BadInput
from diffusion_utilities.evaluation import HELD_OUT_SEED
from diffusion_utilities.sampling import sample
from diffusion_utilities.schedule import DiffusionConfig, FlowSchedule, make_schedule

ROOT = Path(__file__).resolve().parents[1]
SCHEDULES = {"eps": make_schedule(DiffusionConfig()), "v": make_schedule(DiffusionConfig(prediction="v",
             zero_terminal_snr=True)), "flow": FlowSchedule()}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ContextUnet(3, 16, 5, 16).eval()


@pytest.fixture(scope="module")
def sprites():
    return sprites_to_tensor(procedural_dataset(6, HELD_OUT_SEED).sprites)


@pytest.mark.parametrize("kind", SCHEDULES)
def test_inpainting_keeps_the_known_pixels_and_draws_the_rest(net, sprites, kind):
    schedule, mask = SCHEDULES[kind], region_mask("left")
    sampler = "euler" if kind == "flow" else "ddim"
    out = inpaint(net, schedule, sprites, mask, sampler=sampler, steps=10, generator=torch.Generator().manual_seed(1)).x
    torch.testing.assert_close(out * mask, sprites * mask)  # the last merge is at t = 0: the original itself
    plain = sample(net, schedule, len(sprites), sampler=sampler, steps=10, generator=torch.Generator().manual_seed(1)).x
    assert not torch.allclose(out * (1 - mask), plain * (1 - mask))  # the known half steered the rest


@pytest.mark.parametrize("kind, times", [("v", (100, 300)), ("v", (0, 500)), ("flow", (0.2, 0.7))])
def test_resampling_noises_back_up_as_the_forward_process_does(kind, times):
    # RePaint's jump: x_from ~ q(x_from | x0), then _noise_up to t_to, must be distributed as q(x_to | x0)
    schedule, (a, b) = SCHEDULES[kind], times
    g, n = torch.Generator().manual_seed(0), 4000
    x0 = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    at = lambda t: torch.full((n,), t)  # noqa: E731
    x_from = schedule.add_noise(x0, at(a), torch.randn(x0.shape, generator=g))
    via = _noise_up(schedule, x_from, a, b, torch.randn(x0.shape, generator=g))
    alpha = schedule.add_noise(torch.ones(1), torch.tensor([b]), torch.zeros(1)).item()
    sigma = schedule.add_noise(torch.zeros(1), torch.tensor([b]), torch.ones(1)).item()
    residual = via - alpha * x0  # must be N(0, σ_b²), independent of x0
    assert abs(residual.mean().item()) < 0.01 and abs(residual.std().item() - sigma) < 0.01
    assert abs(torch.corrcoef(torch.stack([residual.flatten(), x0.flatten()]))[0, 1].item()) < 0.01


def test_resampled_inpainting_keeps_the_known_pixels_and_calls_the_network_r_times_as_often(sprites):
    calls = []
    torch.manual_seed(0)
    net = ContextUnet(3, 16, 5, 16).eval()
    net.register_forward_hook(lambda *_: calls.append(1))
    schedule, mask = SCHEDULES["v"], region_mask("centre")
    once = inpaint(net, schedule, sprites, mask, steps=10, fast=False).x
    n_once, calls[:] = len(calls), []
    thrice = inpaint(net, schedule, sprites, mask, steps=10, resamplings=3, jump_length=5, fast=False).x
    assert len(calls) == 3 * n_once == 30
    torch.testing.assert_close(thrice * mask, sprites * mask)
    assert not torch.allclose(thrice, once)


def test_the_merge_happens_at_every_step_not_only_the_last(net, sprites):
    # At every frame the known pixels lie on one forward path from the original: x_t = α_t·x₀ + σ_t·ε, so
    # (x_t − α_t·x₀)/σ_t is the same ε at every step
    schedule, mask = SCHEDULES["v"], region_mask("top")
    out = inpaint(net, schedule, sprites, mask, steps=5, save_every=1, generator=torch.Generator().manual_seed(2))
    eps = []
    for t, frame in zip(out.frame_t[1:-1], out.frames[1:-1].float()):
        ab = schedule.ab_t[t]
        eps.append(((frame - ab.sqrt() * sprites) / (1 - ab).sqrt()) * mask)
    for e in eps[1:]:
        torch.testing.assert_close(e, eps[0], atol=2e-2, rtol=0)  # float16 frames


def test_sdedit_at_strength_0_returns_the_input_and_at_1_ignores_it(net, sprites):
    schedule = SCHEDULES["v"]
    torch.testing.assert_close(sdedit(net, schedule, sprites, 0.0).x, sprites)
    gen = lambda: torch.Generator().manual_seed(3)
    full = sdedit(net, schedule, sprites, 1.0, steps=10, generator=gen()).x
    # at strength 1 on a zero-terminal-SNR schedule x_T is pure noise: the input is gone
    noise = torch.randn(sprites.shape, generator=gen())
    plain = sample(net, schedule, sampler="ddim", steps=10, x_T=noise).x
    torch.testing.assert_close(full, plain)
    low = sdedit(net, schedule, sprites, 0.2, steps=10).x
    assert (low - sprites).pow(2).mean() < (full - sprites).pow(2).mean()


@pytest.mark.slow  # 110 network calls a model
@pytest.mark.parametrize("kind", ["v", "flow"])
def test_inversion_round_trip_gets_closer_with_more_steps(net, sprites, kind):
    schedule = SCHEDULES[kind]
    errors = []
    for steps in (5, 50):
        z = invert(net, schedule, sprites, steps)
        sampler = "euler" if kind == "flow" else "ddim"
        back = sample(net, schedule, sampler=sampler, steps=steps, x_T=z).x
        errors.append((back - sprites).pow(2).mean().sqrt().item())
    assert errors[1] < errors[0] / 2, errors


@pytest.mark.slow  # 100 calls of the shipped model
def test_inverting_the_shipped_v_model_at_50_steps_stays_as_measured():
    # Lesson 11's round trip: the first 32 of its 400 held-out sprites, each with its class, DDIM-50 there and
    # back. The lesson printed these two numbers (tests/test_lesson_claims.py checks that it still does); this
    # fails if either regresses by 20%. The RMS is far above the median: a few sprites come back as others.
    model, schedule, _ = load_model_and_schedule(ROOT / "weights" / "sprites_v.safetensors", torch.device("cpu"))
    data = procedural_dataset(400, HELD_OUT_SEED)
    x, c = sprites_to_tensor(data.sprites[:32]), torch.from_numpy(data.labels[:32]).float()
    back = sample(model, schedule, sampler="ddim", steps=50, context=c, x_T=invert(model, schedule, x, 50, context=c)).x
    rms, median = (back - x).pow(2).mean().sqrt().item(), (back - x).pow(2).mean((1, 2, 3)).sqrt().median().item()
    assert rms <= 1.2 * PINNED_INVERSION_RMS and median <= 1.2 * PINNED_INVERSION_MEDIAN, (rms, median)


PINNED_INVERSION_RMS, PINNED_INVERSION_MEDIAN = 0.0863, 0.0187


@pytest.mark.parametrize("call, message", [
    (lambda n, s, x: inpaint(n, s, x, torch.full((1, 1, 16, 16), 0.5)), "only 0 \\(fill\\) and 1 \\(keep\\)"),
    (lambda n, s, x: inpaint(n, s, x, torch.ones(1, 1, 8, 8)), "the mask must be"),
    (lambda n, s, x: inpaint(n, s, x[:, :, :8], region_mask("left")), "must be a \\(B, 3, 16, 16\\) tensor"),
    (lambda n, s, x: sdedit(n, s, x, 1.5), "strength must be a number from 0 to 1"),
    (lambda n, s, x: sdedit(n, s, x, float("nan")), "strength must be"),
    (lambda n, s, x: invert(n, s, x, 0), "steps must be a whole number"),
    (lambda n, s, x: region_mask("middle"), "unknown region"),
    (lambda n, s, x: inpaint(n, s, x, region_mask("left"), resamplings=0), "resamplings must be a whole number"),
    (lambda n, s, x: inpaint(n, s, x, region_mask("left"), steps=10, resamplings=2, jump_length=11), "at most the 10 steps"),
])
def test_bad_edits_are_one_line(net, sprites, call, message):
    with pytest.raises(BadInput, match=message):
        call(net, SCHEDULES["v"], sprites)


@pytest.fixture
def images(tmp_path):
    data = procedural_dataset(2, 5)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, s in enumerate(data.sprites):
        Image.fromarray(s).save(folder / f"s{i}.png")
    Image.fromarray(data.sprites[0]).resize((32, 32)).save(tmp_path / "big.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    mask[0, 0] = 100
    Image.fromarray(mask).save(tmp_path / "grey.png")
    return tmp_path


def test_edit_writes_each_sprite_a_grid_and_a_gif_and_never_overwrites(images, capsys):
    args = ["edit", "--weights", str(ROOT / "weights" / "sprites_v.safetensors"), "--input", str(images / "in"),
            "--mask", str(images / "mask.png"), "--steps", "3", "--out", str(images / "out")]
    assert main(args) == 0
    written = sorted(p.name for p in (images / "out").iterdir())
    assert written == ["edit.gif", "edit.png", "s0.png", "s1.png"]
    edited = np.asarray(Image.open(images / "out" / "s0.png"))
    original = np.asarray(Image.open(images / "in" / "s0.png"))
    assert edited.shape == (16, 16, 3) and (edited[:, 8:] == original[:, 8:]).all()  # black in the mask: kept
    before = (images / "out" / "s0.png").read_bytes()
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    assert "add --overwrite" in capsys.readouterr().err and (images / "out" / "s0.png").read_bytes() == before
    assert main([*args, "--seed", "1", "--overwrite"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--input", "big.png", "--strength", "0.5"], "is 32×32 and the model draws 16×16 sprites"),
    (["--input", "in", "--mask", "grey.png"], "has grey pixels"),
    (["--input", "in", "--strength", "1.5"], "--strength must be a number from 0 to 1"),
    (["--input", "in", "--strength", "0.5", "--region", "left"], "give one of the two"),
    (["--input", "in"], "edit needs --mask or --region"),
    (["--input", "in", "--region", "left", "--resamplings", "0"], "--resamplings must be a whole number"),
    (["--input", "in", "--strength", "0.5", "--resamplings", "3"], "--resamplings is inpainting's"),
    (["--input", "in", "--region", "left", "--jump-length", "2"], "add --resamplings R"),
    (["--input", "in", "--region", "left", "--resamplings", "2", "--steps", "4", "--jump-length", "6"],
     "--jump-length must be a whole number from 1 to 4 (at most the 4 sampling steps, --steps)"),
    (["--input", "nothing.png", "--region", "left"], "not found"),
])
def test_edit_refuses_bad_input_in_one_line_with_exit_2(images, capsys, extra, message):
    extra = [str(images / e) if e.endswith((".png", "in")) and e != "--input" else e for e in extra]
    code = main(["edit", "--weights", str(ROOT / "weights" / "sprites_v.safetensors"), *extra,
                 "--out", str(images / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err
    assert not (images / "out").exists()


def _edit(images, *extra):
    return main(["edit", "--weights", str(ROOT / "weights" / "sprites_v.safetensors"), "--steps", "2", "--no-gif",
                 *[str(e) for e in extra]])


def test_edit_overwrite_replaces_a_link_instead_of_writing_through_it(images, capsys):
    victim = images / "victim.txt"
    victim.write_text("precious")
    (images / "out").mkdir()
    (images / "out" / "s0.png").symlink_to(victim)
    assert _edit(images, "--input", images / "in", "--region", "left", "--out", images / "out", "--overwrite") == 0
    assert victim.read_text() == "precious" and not (images / "out" / "s0.png").is_symlink()


@pytest.mark.parametrize("second", ["s0.bmp", "edit.png"])
def test_edit_refuses_inputs_whose_edits_would_share_a_file(images, capsys, second):
    Image.open(images / "in" / "s1.png").save(images / "in" / second)
    assert _edit(images, "--input", images / "in", "--region", "left", "--out", images / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "rename one" in err and second in err, err  # was: one edit silently lost
    assert not (images / "out").exists()


def test_edit_inputs_that_are_pipes_or_huge_images_are_one_line_before_decoding(images, capsys):
    import os
    import struct
    import zlib

    os.mkfifo(images / "pipe.png")
    for option in ("--input", "--mask"):  # a FIFO blocked forever
        args = ["--input", images / "in", "--mask", images / "pipe.png"] if option == "--mask" else ["--input", images / "pipe.png", "--region", "left"]
        assert _edit(images, *args, "--out", images / "out") == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "not a regular file" in err, err

    def header_only(path, side):  # a PNG header promising side×side pixels, and no pixels
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        chunk = b"IHDR" + ihdr
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)))

    header_only(images / "bomb.png", 20000)  # was Pillow's DecompressionBombError traceback
    header_only(images / "big8k.png", 8000)  # was decoded first (gigabytes), then refused for its size
    for name, extra in (("bomb.png", ["--resize", "area"]), ("big8k.png", ["--resize", "area"]), ("big8k.png", [])):
        assert _edit(images, "--input", images / name, "--region", "left", *extra, "--out", images / "out") == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err and name in err, err
    assert _edit(images, "--input", images / "in", "--mask", images / "bomb.png", "--out", images / "out") == 2
    assert "bomb.png" in capsys.readouterr().err


def test_edit_says_how_many_steps_sdedit_runs_and_refuses_a_strength_below_one_step(images, capsys):
    assert _edit(images, "--input", images / "in", "--strength", "0.3", "--out", images / "out") == 0
    assert "in 1 step:" in capsys.readouterr().out  # the 2-step grid has one time below t₀ = 150: one call, not 2
    assert _edit(images, "--input", images / "in", "--strength", "1e-9", "--out", images / "out2") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nothing would change" in err, err
