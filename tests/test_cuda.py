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


def _model():
    from test_model import _with_trained_looking_batchnorm

    torch.manual_seed(0)
    return _with_trained_looking_batchnorm(ContextUnet(n_feat=16)).to(CUDA)


def _samples(model, **kwargs):
    ctx = torch.eye(5)[torch.arange(6) % 5]
    return sample(model, NoiseSchedule.linear(100, 1e-4, 0.02), 6, context=ctx, guidance=1.0,
                  generator=torch.Generator(CUDA).manual_seed(3), **kwargs).x


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 25), ("dpm-solver++", 10)])
def test_fast_path_and_cuda_graph_give_the_plain_models_samples_on_cuda(sampler, steps):
    model = _model()
    plain = _samples(model, sampler=sampler, steps=steps, fast=False)
    fast = _samples(model, sampler=sampler, steps=steps)
    graphed = _samples(model, sampler=sampler, steps=steps, cuda_graph=True)
    print(f"{sampler}: max |fast - plain| {(fast - plain).abs().max().item():.2e}, "
          f"max |graph - fast| {(graphed - fast).abs().max().item():.2e}")
    # cuDNN's fp32 convolutions may use TF32 (PyTorch's default); both paths do, so they agree closely.
    torch.testing.assert_close(fast, plain, atol=1e-2, rtol=0)
    torch.testing.assert_close(graphed, fast, atol=1e-5, rtol=0)  # the same kernels, launched as one graph


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


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_sampling_does_not_wait_on_the_gpu_once_per_step(cuda_graph):
    model = _model()
    _samples(model, sampler="ddpm", steps=10, cuda_graph=cuda_graph)  # warm-up: folding, cuDNN choices
    few = _syncs(lambda: _samples(model, sampler="ddpm", steps=10, cuda_graph=cuda_graph))
    many = _syncs(lambda: _samples(model, sampler="ddpm", steps=100, cuda_graph=cuda_graph))
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
