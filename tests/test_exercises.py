import json
from pathlib import Path

import pytest
import torch

from diffusion_utilities import NoiseSchedule, load_model
from diffusion_utilities.exercises import (Mismatch, check_cosine_alpha_bar, check_exercise, check_flow_loss,
                                           check_guided_noise, check_mean_via_x0, check_unet_shapes, compare)

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _double_check(fn):
    torch.testing.assert_close(fn(torch.arange(3.0)), torch.tensor([0.0, 2.0, 4.0]))


def solution_double(x):
    return 2 * x


def test_a_stub_falls_back_to_the_solution_and_says_so(capsys):
    def my_double(x):
        raise NotImplementedError

    check_exercise(my_double, solution_double, _double_check, "doubles")
    assert "my_double is not written yet; the folded solution doubles" in capsys.readouterr().out


def test_a_written_answer_is_the_one_checked(capsys):
    def my_double(x):
        return x + x

    check_exercise(my_double, solution_double, _double_check, "doubles")
    assert capsys.readouterr().out == "my_double doubles\n"


def test_a_wrong_answer_fails_even_though_the_solution_is_right(capsys):
    def my_double(x):
        return 3 * x

    check_exercise(my_double, solution_double, _double_check, "doubles", hint="twice x")
    out = capsys.readouterr().out.splitlines()
    # two short lines, no traceback: what differs (from assert_close's message), then the hint
    assert out[0].startswith("my_double is not right yet: Tensor-likes are not close!") and out[1] == "Hint: twice x"
    assert len(out) == 2


def test_not_implemented_from_deeper_down_is_shown_not_taken_for_the_stub():
    # A written answer that calls something missing (an op a device lacks, say) must show that error,
    # not "not written yet" with the solution's pass.
    def unsupported(x):
        raise NotImplementedError("aten::op is not implemented for this device")

    def my_double(x):
        return unsupported(x) * 2

    with pytest.raises(NotImplementedError, match="aten::op"):
        check_exercise(my_double, solution_double, _double_check, "doubles")


def test_not_implemented_from_a_torch_op_called_directly_is_shown_too():
    # C++ ops leave no Python frame: the last frame is the learner's, but it raised in a call.
    def my_double(x):
        sparse = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2]]), x, (3,), check_invariants=True)
        return 2 * sparse.view(3)  # view is not implemented for sparse tensors

    with pytest.raises(NotImplementedError):
        check_exercise(my_double, solution_double, _double_check, "doubles")


def test_a_stub_that_raises_an_instance_with_a_message_is_still_the_stub(capsys):
    def my_double(x):
        x = x + 0  # a line of the learner's before the raise
        raise NotImplementedError("write this")

    check_exercise(my_double, solution_double, _double_check, "doubles")
    assert "not written yet" in capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_other_cell_redefines_the_learners_function(path):
    # Run All executes every cell, folded ones too: a solution named like the stub would replace the
    # learner's function before its check, and the check would pass whatever the learner wrote.
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    defined = [{line.split("(")[0][4:] for line in src.splitlines() if line.startswith("def ")} for src in code]
    stubs = {name for src, names in zip(code, defined) if "NotImplementedError" in src for name in names}
    for name in stubs:
        assert sum(name in names for names in defined) == 1, f"{path.name}: {name} is defined in more than one cell"


# Each notebook exercise's check, as the notebook calls it: a right answer in float64 passes (the
# exercises never ask for a dtype), a wrong one gets one or two lines saying what differs and a hint,
# and never the expected answer.

def _run(check, yours, capsys):
    def stub(*args):
        raise NotImplementedError

    check_exercise(yours, stub, check, "passes")
    out = capsys.readouterr().out.splitlines()
    return out == [f"{yours.__name__} passes"], out


def _wrong(check, yours, capsys, *expected_in_message):
    ok, out = _run(check, yours, capsys)
    assert ok is False
    assert 1 <= len(out) <= 2 and out[0].startswith(f"{yours.__name__} is not right yet: "), out
    assert len(out) == 1 or out[1].startswith("Hint: ")
    for text in expected_in_message:
        assert text in out[0], out
    return out


def _cosine(T, s=0.008, dtype=torch.float64):
    t = torch.arange(T + 1, dtype=dtype)
    f = torch.cos((t / T + s) / (1 + s) * torch.pi / 2) ** 2
    return f / f[0]


def test_lesson1_cosine_exercise(capsys):
    def my_cosine_alpha_bar(T):
        return _cosine(T)  # float64: right

    assert _run(check_cosine_alpha_bar, my_cosine_alpha_bar, capsys)[0] is True

    def my_cosine_alpha_bar(T):
        return _cosine(T)[1:]  # one entry short

    _wrong(check_cosine_alpha_bar, my_cosine_alpha_bar, capsys, "500 entries", "501")

    def my_cosine_alpha_bar(T):
        t = torch.arange(T + 1, dtype=torch.float64)
        return torch.cos((t / T + 0.008) / 1.008 * torch.pi / 2) ** 2  # not divided by f(0)

    out = _wrong(check_cosine_alpha_bar, my_cosine_alpha_bar, capsys, "values are off", "index 0")
    assert "f(0)" in out[1]
    assert f"{NoiseSchedule.cosine(500).ab_t[1].item():.4f}" not in "\n".join(out)  # no expected values


def _shapes(height, batch=8, n_feat=64, container=tuple):
    h, n = height, n_feat
    shapes = {"init_conv": (batch, n, h, h), "down1": (batch, n, h // 2, h // 2), "down2": (batch, 2 * n, h // 4, h // 4),
              "to_vec": (batch, 2 * n, 1, 1), "up0": (batch, 2 * n, h // 4, h // 4), "up1": (batch, n, h // 2, h // 2),
              "up2": (batch, n, h, h), "out": (batch, 3, h, h)}
    return {k: container(v) for k, v in shapes.items()}


def test_lesson2_shapes_exercise(capsys):
    def my_shapes(height, batch=8, n_feat=64):
        return _shapes(height, batch, n_feat, container=torch.Size)  # another sequence type: right

    assert _run(check_unet_shapes, my_shapes, capsys)[0] is True

    def my_shapes(height, batch=8, n_feat=64):
        shapes = _shapes(height, batch, n_feat)
        shapes["down2"] = (batch, n_feat, height // 4, height // 4)  # forgot the doubled channels
        return shapes

    out = _wrong(check_unet_shapes, my_shapes, capsys, "height 16", "down2", "channels")
    assert "doubles the channels" in out[1]
    assert "(8, 128, 4, 4)" not in "\n".join(out) and "init_conv': (" not in "\n".join(out)  # not the answer

    def my_shapes(height, batch=8, n_feat=64):
        return {k: v for k, v in _shapes(height).items() if k != "out"}

    _wrong(check_unet_shapes, my_shapes, capsys, "no entry for out")


def _lesson3_inputs():
    schedule = NoiseSchedule.linear(500, 1e-4, 0.02)
    g = torch.Generator().manual_seed(0)
    return schedule, torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)


def test_lesson3_mean_via_x0_exercise(capsys):
    schedule, x, eps = _lesson3_inputs()
    ab, a, b = (v.double() for v in (schedule.ab_t, schedule.a_t, schedule.b_t))

    def my_mean_via_x0(x, t, eps):  # right, in float64
        x, eps = x.double(), eps.double()
        x0 = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        return ab[t - 1].sqrt() * b[t] / (1 - ab[t]) * x0 + a[t].sqrt() * (1 - ab[t - 1]) / (1 - ab[t]) * x

    check = lambda fn: check_mean_via_x0(fn, schedule, x, eps)
    assert _run(check, my_mean_via_x0, capsys)[0] is True

    def my_mean_via_x0(x, t, eps):  # the weights use ᾱ_t where ᾱ_{t-1} belongs
        x0 = (x - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        return ab[t].sqrt() * b[t] / (1 - ab[t]) * x0 + a[t].sqrt() * (1 - ab[t]) / (1 - ab[t]) * x

    _wrong(check, my_mean_via_x0, capsys, "the mean at t = ", "values are off")


def test_lesson6_guided_noise_exercise(capsys):
    # the shipped weights: a freshly initialised network all but ignores its context
    model, _ = load_model(Path(__file__).resolve().parents[1] / "weights" / "sprites_ddpm.safetensors", "cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn((10, 3, 16, 16), generator=g)
    t_norm = torch.full((10,), 0.6)
    c = torch.nn.functional.one_hot(torch.arange(10) % 5, 5).float()
    check = lambda fn: check_guided_noise(fn, model, x, t_norm, c)

    def my_guided_noise(x, t_norm, c, w):  # right, returned in float64
        return ((1 + w) * model(x, t_norm, c) - w * model(x, t_norm, torch.zeros_like(c))).double()

    assert _run(check, my_guided_noise, capsys)[0] is True

    def my_guided_noise(x, t_norm, c, w):  # the signs swapped
        return (1 + w) * model(x, t_norm, torch.zeros_like(c)) - w * model(x, t_norm, c)

    _wrong(check, my_guided_noise, capsys, "w = 0")


def _flow_loss_by_hand(model, x0, c, gen, context_dropout, target_sign=1, reversed_path=False):
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.rand(b, generator=gen)
    keep = (torch.rand(b, generator=gen) >= context_dropout).float()
    t4 = t.view(-1, 1, 1, 1)
    x_t = t4 * x0 + (1 - t4) * noise if reversed_path else (1 - t4) * x0 + t4 * noise
    pred = model(x_t, t, c * keep[:, None])
    return ((pred.double() - target_sign * (noise - x0).double()) ** 2).mean()  # float64 throughout


def test_lesson9_flow_loss_exercise(tiny_model, capsys):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    c = torch.nn.functional.one_hot(torch.arange(6) % 5, 5).float()
    check = lambda fn: check_flow_loss(fn, tiny_model, x0, c)

    def my_flow_loss(model, x0, c, gen, context_dropout=0.1):  # right, in float64
        return _flow_loss_by_hand(model, x0, c, gen, context_dropout)

    assert _run(check, my_flow_loss, capsys)[0] is True

    def my_flow_loss(model, x0, c, gen, context_dropout=0.1):  # the target x0 - eps: the sign flipped
        return _flow_loss_by_hand(model, x0, c, gen, context_dropout, target_sign=-1)

    out = _wrong(check, my_flow_loss, capsys, "x₀ − ε", "sign")
    assert "towards the noise" in out[1]

    def my_flow_loss(model, x0, c, gen, context_dropout=0.1):  # time running the other way: t = 0 is noise
        return _flow_loss_by_hand(model, x0, c, gen, context_dropout, reversed_path=True)

    out = _wrong(check, my_flow_loss, capsys, "the loss of the batch drawn with seed 0 is off by")
    assert "x_t = (1 − t)·x₀ + t·ε" in out[1]
    from diffusion_utilities.schedule import FlowSchedule
    from diffusion_utilities.training import diffusion_loss

    value = diffusion_loss(tiny_model, FlowSchedule(), x0, c, gen=torch.Generator().manual_seed(0), context_dropout=0.1).item()
    assert f"{value:.3f}" not in "\n".join(out) and f"{value:.4g}" not in "\n".join(out)  # not the answer

    def my_flow_loss(model, x0, c, gen, context_dropout=0.1):  # the squared error not averaged
        noise = torch.randn(x0.shape, generator=gen)
        return (noise - x0) ** 2

    _wrong(check, my_flow_loss, capsys, "one number", "shape (6, 3, 16, 16)")


def test_compare_names_a_non_tensor_and_a_shape():
    with pytest.raises(Mismatch, match="is a NoneType, not a tensor"):
        compare(None, torch.zeros(3), "your answer")
    with pytest.raises(Mismatch, match=r"shape \(2,\); it should have shape \(3,\)"):
        compare(torch.zeros(2), torch.zeros(3), "your answer")


def test_lesson10_distillation_target_exercise(capsys):
    from diffusion_utilities.exercises import check_distillation_target
    from diffusion_utilities.schedule import DiffusionConfig, make_schedule

    schedule = make_schedule(DiffusionConfig(prediction="v", zero_terminal_snr=True))
    torch.manual_seed(0)
    teacher = __import__("diffusion_utilities").ContextUnet(3, 16, 5, 16).eval()
    check = lambda fn: check_distillation_target(fn, teacher, schedule)

    def ddim(x, s, s_prev, c):  # written out by hand in float64, independent of the library's step code
        ab, ab_p = schedule.ab_t[s].double(), schedule.ab_t[s_prev].double()
        v = teacher(x, torch.tensor([s / schedule.T]), c).double()
        x0, eps = ab.sqrt() * x.double() - (1 - ab).sqrt() * v, (1 - ab).sqrt() * x.double() + ab.sqrt() * v
        return (ab_p.sqrt() * x0 + (1 - ab_p).sqrt() * eps).float()

    def my_target(teacher_, x_t, t, t_mid, t_prev, c, one_step=False):
        x_prev = ddim(x_t, t, t_prev, c) if one_step else ddim(ddim(x_t, t, t_mid, c), t_mid, t_prev, c)
        a, s = schedule.ab_t[t].sqrt(), (1 - schedule.ab_t[t]).sqrt()
        a_p, s_p = schedule.ab_t[t_prev].sqrt(), (1 - schedule.ab_t[t_prev]).sqrt()
        x_tilde = (x_prev - s_p / s * x_t) / (a_p - s_p / s * a)
        return (a * x_t - x_tilde) / s

    with torch.no_grad():
        assert _run(check, my_target, capsys)[0] is True

        def my_distillation_target(*args):  # the teacher's one step instead of two: its own v back
            return my_target(*args, one_step=True)

        _wrong(check, my_distillation_target, capsys, "the target at t = 500 (a 1-step student's step to 0)")
