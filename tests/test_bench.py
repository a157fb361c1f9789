"""The benchmark's baseline must be the course's computation, so its ratios compare like with like."""

import pytest
import torch

from diffusion_utilities import ContextUnet, NoiseSchedule
from diffusion_utilities.bench import course_sample_ddim, course_sample_ddpm, run_bench
from diffusion_utilities.errors import BadInput
from diffusion_utilities.sampling import sample


def _model():
    torch.manual_seed(0)
    return ContextUnet(n_feat=8, n_cfeat=5, height=16).eval()


def test_course_ddpm_loop_is_the_same_computation_as_ours():
    # Both draw x_T then one z per step before t = 1 from the global RNG, in the same order.
    model, schedule = _model(), NoiseSchedule.linear(20, 1e-4, 0.02)
    torch.manual_seed(5)
    course, frames = course_sample_ddpm(model, schedule, 4, torch.device("cpu"), save_rate=5)
    torch.manual_seed(5)
    ours = sample(model, schedule, 4, sampler="ddpm").x
    torch.testing.assert_close(course, ours, atol=1e-4, rtol=1e-4)
    assert frames.shape == (10, 4, 3, 16, 16)  # i = 20, 15, 10 and every i < 8 (5 among them)


def test_course_ddim_loop_is_the_same_computation_as_ours():
    model, schedule = _model(), NoiseSchedule.linear(20, 1e-4, 0.02)
    torch.manual_seed(6)
    course, frames = course_sample_ddim(model, schedule, 4, torch.device("cpu"), steps=5)
    torch.manual_seed(6)
    ours = sample(model, schedule, 4, sampler="ddim", steps=5).x
    torch.testing.assert_close(course, ours, atol=1e-4, rtol=1e-4)
    assert len(frames) == 5


@pytest.mark.parametrize("row,T,message", [("fast", 500, "unknown bench row 'fast'"),
                                           ("sample-ddim25-b32+graph", 500, "the \\+graph rows need CUDA"),
                                           ("sample-ddim25-b32", 20, "need a model with T ≥ 25.*T=20")])
def test_bad_rows_are_one_clear_error(row, T, message):
    with pytest.raises(BadInput, match=message):
        run_bench(_model(), NoiseSchedule.linear(T, 1e-4, 0.02), torch.device("cpu"), rows=(row,))


def test_bf16_variant_rows_run_on_cpu_and_count_their_images():
    model, schedule = _model(), NoiseSchedule.linear(500, 1e-4, 0.02)
    rows = run_bench(model, schedule, torch.device("cpu"), repeats=1, large_batch=8, train_steps=1,
                     rows=("sample-ddim25-b32+bf16", "train", "train-large+bf16"), log=lambda *_: None)
    assert [r.name for r in rows] == ["sample-ddim25-b32+bf16", "train", "train-large+bf16"]
    assert [r.images for r in rows] == [32, 100, 8]
    # The large-batch row's baseline is the course loop's seconds per image times its images.
    assert abs(rows[2].baseline_s - rows[1].baseline_s * 8 / 100) < 1e-9



def test_the_flow_baseline_is_the_same_computation_as_ours_and_a_flow_model_benches():
    from diffusion_utilities.bench import course_style_flow_sample
    from diffusion_utilities.schedule import FlowSchedule

    model, schedule = _model(), FlowSchedule()
    for sampler, steps in (("euler", 6), ("heun", 4)):
        torch.manual_seed(7)
        course, frames = course_style_flow_sample(model, schedule, 4, torch.device("cpu"), sampler, steps)
        torch.manual_seed(7)
        ours = sample(model, schedule, 4, sampler=sampler, steps=steps).x
        torch.testing.assert_close(course, ours, atol=1e-4, rtol=1e-4)
        assert len(frames) == steps
    rows = run_bench(model, schedule, torch.device("cpu"), repeats=1, large_batch=2, train_steps=1,
                     log=lambda *_: None)
    assert [r.name for r in rows] == ["sample-heun9-b32", "sample-euler25-b32", "sample-heun9-large", "train"]
    assert all(r.baseline_s > 0 and r.ours_s > 0 for r in rows)
    with pytest.raises(BadInput, match="unknown bench row 'sample-ddpm500-b32'"):  # no DDPM for a flow model
        run_bench(model, schedule, torch.device("cpu"), rows=("sample-ddpm500-b32",))
