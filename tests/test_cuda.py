"""The CUDA paths: run on a machine with an NVIDIA GPU (``tools/device_check.sh``); skipped elsewhere.

What they hold the GPU code to: the fast paths give the plain path's samples, a CUDA graph
gives the same arithmetic as eager launches, and neither the training step nor the sampling
loop waits on the GPU once per step.
"""

import warnings

import pytest
import torch

from safetensors.torch import load_file

from diffusion_utilities import ContextUnet, ModelConfig, NoiseSchedule, TrainConfig, procedural_dataset, sample, train
from diffusion_utilities.engine import GraphedTrainStep, make_optimizer, set_lr
from diffusion_utilities.training import Stream, diffusion_loss, keyed_rng, train_step

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
    fast = _samples(model, sampler=sampler, steps=steps, cuda_graph=False)
    graphed = _samples(model, sampler=sampler, steps=steps)  # on CUDA the default
    print(f"{sampler}: max |fast - plain| {(fast - plain).abs().max().item():.2e}, "
          f"max |graph - fast| {(graphed - fast).abs().max().item():.2e}")
    torch.testing.assert_close(fast, plain, atol=2e-3, rtol=0)  # the CPU test's tolerance
    torch.testing.assert_close(graphed, fast, atol=1e-5, rtol=0)  # the same kernels, launched as one graph


@pytest.mark.parametrize("kwargs", [{"precision": "bf16"}, {"compile": "default"},
                                    {"compile": "default", "precision": "bf16"}])
def test_bf16_copy_and_compiled_networks_replay_from_a_cuda_graph_as_they_run_eagerly(kwargs):
    # sample()'s CUDA graph around the bf16 copy and around torch.compile's code: the same samples
    # as the same network launched kernel by kernel (compiled code captured after its compiling call)
    model = _model()
    eager = _samples(model, sampler="ddim", steps=10, cuda_graph=False, **kwargs)
    graphed = _samples(model, sampler="ddim", steps=10, **kwargs)
    plain = _samples(model, sampler="ddim", steps=10, cuda_graph=False)
    print(f"{kwargs}: max |graph - eager| {(graphed - eager).abs().max().item():.2e}, "
          f"max |this - fp32| {(eager - plain).abs().max().item():.2e}")
    torch.testing.assert_close(graphed, eager, atol=1e-5, rtol=0)
    if "precision" not in kwargs:
        torch.testing.assert_close(eager, plain, atol=2e-3, rtol=0)  # compiling reorders sums, no more


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
    step = lambda k: train_step(model, opt, schedule, x0, c, gen=keyed_rng(0, Stream.NOISE, k, device=CUDA),  # noqa: E731
                                context_dropout=0.1, precision=precision)
    first = step(0)  # warm-up outside the count: cuDNN and the fused optimiser set themselves up
    assert _syncs(lambda: [step(k) for k in range(1, 6)]) == 0
    losses = [step(k) for k in range(6, 60)]
    assert torch.isfinite(torch.stack(losses)).all()
    assert torch.stack(losses[-10:]).mean().item() < first.item()


def _graph_or_eager_steps(graph: bool, precision: str = "fp32", steps: int = 8):
    """``steps`` training steps at batch 32 from one seed, replayed from a graph or run eagerly."""
    torch.manual_seed(0)
    model = ContextUnet(n_feat=16).to(CUDA, memory_format=torch.channels_last).train()
    opt = make_optimizer(model, 1e-3, CUDA, capturable=True)
    schedule = NoiseSchedule.linear(500, 1e-4, 0.02).to(CUDA)
    x_all = (torch.rand(100, 3, 16, 16, device=CUDA) > 0.5).float() * 2 - 1
    c_all = torch.eye(5, device=CUDA)[torch.arange(100, device=CUDA) % 5]
    torch.cuda.manual_seed(5)
    loss_of = lambda idx: diffusion_loss(model, schedule, x_all[idx], c_all[idx], context_dropout=0.1,  # noqa: E731
                                         precision=precision)
    graphed = GraphedTrainStep(model, opt, loss_of, 32, CUDA) if graph else None
    losses = []
    for k in range(steps):
        idx = (torch.arange(32, device=CUDA) + 16 * k) % 100
        set_lr(opt, 1e-3 * (1 - k / steps))
        losses.append(graphed(idx) if graph else train_step(model, opt, schedule, x_all[idx], c_all[idx],
                                                              context_dropout=0.1, precision=precision))
    return torch.stack(losses), model.state_dict()


def test_a_graphed_training_step_is_the_eager_step():
    # the warm-up before capture is undone, the replays draw the eager steps' noise, the lr tensor is read
    eager_losses, eager = _graph_or_eager_steps(False)
    graph_losses, graphed = _graph_or_eager_steps(True)
    print(f"graphed training: max |loss diff| {(graph_losses - eager_losses).abs().max().item():.2e}, "
          f"max |weight diff| {max((graphed[k].float() - eager[k].float()).abs().max().item() for k in eager):.2e}")
    torch.testing.assert_close(graph_losses, eager_losses, atol=1e-5, rtol=1e-5)
    for k in eager:
        torch.testing.assert_close(graphed[k], eager[k], atol=1e-5, rtol=1e-5, msg=k)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_training_never_waits_on_the_gpu_and_learns(precision):
    losses, _ = _graph_or_eager_steps(True, precision, steps=60)
    assert torch.isfinite(losses).all() and losses[-10:].mean() < losses[:3].mean()
    torch.manual_seed(0)
    model = ContextUnet(n_feat=16).to(CUDA, memory_format=torch.channels_last).train()
    opt = make_optimizer(model, 1e-3, CUDA, capturable=True)
    x_all = torch.rand(64, 3, 16, 16, device=CUDA) * 2 - 1
    schedule = NoiseSchedule.linear(500, 1e-4, 0.02).to(CUDA)
    graphed = GraphedTrainStep(model, opt, lambda idx: diffusion_loss(model, schedule, x_all[idx], precision=precision),
                               32, CUDA)
    idx = torch.arange(32, device=CUDA)
    graphed(idx)
    assert _syncs(lambda: [(set_lr(opt, 1e-4), graphed(idx)) for _ in range(5)]) == 0


def test_a_cuda_graph_run_stopped_mid_epoch_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    # 250 sprites at batch 64: three graphed steps and one short eager step an epoch, 12 in all
    import signal

    import diffusion_utilities.training as training
    from diffusion_utilities.weights import read_card

    data = procedural_dataset(250, 0)
    config = TrainConfig(epochs=3, batch_size=64, n_sprites=250, ema_decay=0.9, checkpoint_every=0, cuda_graph=True)
    run = lambda out, **kw: train(config, out, data, ModelConfig(n_feat=16), device="cuda",  # noqa: E731
                                  progress=False, **kw)
    ref = run(tmp_path / "ref")
    calls = []
    real_set_lr = training.set_lr

    def stop_at_step_6(opt, lr):  # SIGTERM as the 7th step begins: the run stops after it, mid-epoch
        calls.append(lr)
        if len(calls) == 7:
            signal.raise_signal(signal.SIGTERM)
        real_set_lr(opt, lr)

    monkeypatch.setattr(training, "set_lr", stop_at_step_6)
    with pytest.raises(training.TrainingInterrupted):
        run(tmp_path / "run")
    assert read_card(tmp_path / "run" / "checkpoint.safetensors")["state"]["step"] == 7
    monkeypatch.setattr(training, "set_lr", real_set_lr)
    resumed = run(tmp_path / "run", resume=True)
    a, b = load_file(tmp_path / "ref" / "model.safetensors"), load_file(tmp_path / "run" / "model.safetensors")
    print(f"cuda-graph resume: max |weight diff| {max((a[k].float() - b[k].float()).abs().max().item() for k in a):.2e}")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-6, msg=k)
    assert resumed["epoch_losses"] == pytest.approx(ref["epoch_losses"], abs=1e-6)
