"""The CUDA paths: run on a machine with an NVIDIA GPU (``tools/device_check.sh``); skipped elsewhere.

What they hold the GPU code to: the fast paths give the plain path's samples, a CUDA graph
gives the same arithmetic as eager launches, and neither the training step nor the sampling
loop waits on the GPU once per step.
"""

import warnings

import pytest
import torch

from diffusion_utilities import ContextUnet, NoiseSchedule, sample
from diffusion_utilities.training import _rng, make_optimizer, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_fp32():
    """fp32 convolutions and matrix products (not TF32, PyTorch's GPU default), and cuDNN's
    deterministic kernels, so "agrees to float rounding" means the same on a GPU as on a CPU."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.deterministic = saved


def _model():
    from test_model import _with_trained_looking_batchnorm

    torch.manual_seed(0)
    return _with_trained_looking_batchnorm(ContextUnet(n_feat=16)).to(CUDA)


def _samples(model, generator_device=CUDA, **kwargs):
    ctx = torch.eye(5)[torch.arange(6) % 5]
    return sample(model, NoiseSchedule.linear(100, 1e-4, 0.02), 6, context=ctx, guidance=1.0,
                  generator=torch.Generator(generator_device).manual_seed(3), **kwargs).x


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 25), ("dpm-solver++", 10)])
def test_fast_path_and_cuda_graph_give_the_plain_models_samples_on_cuda(sampler, steps):
    model = _model()
    plain = _samples(model, sampler=sampler, steps=steps, fast=False)
    fast = _samples(model, sampler=sampler, steps=steps)
    graphed = _samples(model, sampler=sampler, steps=steps, cuda_graph=True)
    print(f"{sampler}: max |fast - plain| {(fast - plain).abs().max().item():.2e}, "
          f"max |graph - fast| {(graphed - fast).abs().max().item():.2e}")
    torch.testing.assert_close(fast, plain, atol=2e-3, rtol=0)  # the CPU test's tolerance
    torch.testing.assert_close(graphed, fast, atol=1e-5, rtol=0)  # the same kernels, launched as one graph


def test_how_far_tf32_moves_the_samples():
    # Not a pass/fail: PyTorch lets cuDNN round fp32 convolutions to TF32 by default; this prints by how much.
    model = _model()
    full = _samples(model, sampler="ddim", steps=25)
    torch.backends.cudnn.allow_tf32 = True
    tf32 = _samples(model, sampler="ddim", steps=25)
    print(f"DDIM-25: max |TF32 - fp32| {(tf32 - full).abs().max().item():.2e}")
    assert torch.isfinite(tf32).all()


def _syncs(fn) -> int:
    """How many synchronising CUDA calls ``fn`` makes (PyTorch's sync debug mode, counted as warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_the_sync_counter_sees_a_sync():
    assert _syncs(lambda: torch.ones(1, device=CUDA).item()) >= 1


@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("generator_device", ["cuda", "cpu"])  # the CLI, evaluate and the notebooks draw on the CPU
def test_sampling_does_not_wait_on_the_gpu_once_per_step(cuda_graph, generator_device):
    model = _model()
    run = lambda steps: _samples(model, generator_device, sampler="ddpm", steps=steps, cuda_graph=cuda_graph)  # noqa: E731
    run(10)  # warm-up: folding, cuDNN choices
    few, many = _syncs(lambda: run(10)), _syncs(lambda: run(100))
    assert few >= 1  # at least the context's copy to the GPU: the counter works here
    assert many == few, f"{few} syncs for 10 steps but {many} for 100: something in the loop waits on the GPU"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_training_step_never_waits_on_the_gpu_and_learns(precision):
    torch.manual_seed(0)
    model = ContextUnet(n_feat=16).to(CUDA, memory_format=torch.channels_last).train()
    opt = make_optimizer(model, 1e-3, CUDA)
    schedule = NoiseSchedule.linear(500, 1e-4, 0.02).to(CUDA)
    x0 = (torch.rand(64, 3, 16, 16, device=CUDA) > 0.5).float() * 2 - 1
    c = torch.eye(5, device=CUDA)[torch.arange(64, device=CUDA) % 5]
    step = lambda k: train_step(model, opt, schedule, x0, c, _rng(0, 1, k, device=CUDA), 0.1, 500, precision)  # noqa: E731
    first = step(0)  # warm-up outside the count: cuDNN and the fused optimiser set themselves up
    assert _syncs(lambda: [step(k) for k in range(1, 6)]) == 0
    losses = [step(k) for k in range(6, 60)]
    assert torch.isfinite(torch.stack(losses)).all()
    assert torch.stack(losses[-10:]).mean().item() < first.item()
