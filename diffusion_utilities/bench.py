"""``bench``: the course's loops against this library's, on the same weights, in one process.

baseline  the course's code, re-implemented faithfully: eager sampling under ``no_grad`` with a
          print per step (to a null stream here) and a copy to NumPy every 20 steps (every step
          for DDIM, as the lab keeps all its frames); training through a DataLoader that turns
          each sprite into a tensor with ToTensor + Normalize, batch 100, fp32.
ours      ``sample()`` and ``train_step()`` with their fast paths (BatchNorm folded into the
          convolutions and channels_last for sampling, and on CUDA the network replayed from a
          CUDA graph; the data resident as one tensor and channels_last for training).

Every row runs the same work both ways, repeats, and reports the median; ``speedup`` is
baseline_s / ours_s.

A flow-matching model has no course code to compare with: its sampling rows (``sample-heun9-b32``,
``sample-euler25-b32``, ``sample-heun9-large``) take as baseline the same solver written the labs' way
(``course_style_flow_sample``), and its train row the labs' loop with the flow loss.

Rows with ``+`` suffixes measure candidate fast paths on top of ours, so one run tells which of
them win: ``+bf16`` samples with a bfloat16 copy of the network (training: the forward under
bfloat16 autocast);
``+graph`` replays the whole training step (forward, backward, Adam) from a CUDA graph, its
warm-up and capture counted in the time; ``+eager`` samples without the CUDA graph (ours'
default on CUDA); ``+compile`` and ``+autotune`` sample with ``compile="default"`` or
``"max-autotune"`` (so on CUDA with the sampler's CUDA graph, as sample() runs by default;
training: the network through ``torch.compile``); their first call, which
compiles, is logged apart, and they run only when named: on the CPU compiling lost, and on a GPU
max-autotune's compile is long (docs/benchmarks.md). ``train-large`` trains at batch ``large_batch``; a train
row's baseline_s is the course loop's measured seconds per image (at its batch of 100) times the same number of
images. By default a CUDA run adds the ``+bf16`` and training ``+graph`` rows; a CPU run adds
none (no CUDA graphs, and no bf16 units on most CPUs), though ``--rows`` can ask for the bf16 ones.

For sampling rows, ``overhead`` is ours_s / (steps × one bare forward of
the unmodified model at that batch), below 1 where the fast path beats the model itself, and
``loop_overhead`` the same against one forward of the network ours runs (``inference_copy``):
what the sampling loop costs beyond the network.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .course import CustomDataset, transform
from .data import procedural_dataset, sprites_to_tensor
from .errors import BadInput
from .engine import GraphedTrainStep, inference_copy, make_optimizer
from .model import ContextUnet
from .sampling import network_calls, sample
from .schedule import FlowSchedule, NoiseSchedule
from .sprites import SIZE
from .training import Stream, diffusion_loss, keyed_rng, noise_device, train_step

__all__ = ["BenchRow", "course_sample_ddpm", "course_sample_ddim", "course_style_flow_sample", "bare_forward_s",
           "run_bench"]


@dataclass
class BenchRow:
    name: str
    baseline_s: float
    ours_s: float
    speedup: float
    overhead: float | None = None  # ours_s / (steps × one forward of the model as loaded)
    loop_overhead: float | None = None  # ours_s / (steps × one forward of the network ours runs): the loop's own cost
    images: int = 0  # images per run, for img/s


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def course_sample_ddpm(model, schedule: NoiseSchedule, n: int, device, save_rate: int = 20, out=None):
    """The lab's ``sample_ddpm``, step for step (its globals made arguments)."""
    out = out if out is not None else io.StringIO()
    T, b_t, a_t, ab_t = schedule.T, schedule.b_t, schedule.a_t, schedule.ab_t
    samples = torch.randn(n, 3, model.h, model.h).to(device)
    intermediate = []
    for i in range(T, 0, -1):
        print(f"sampling timestep {i:3d}", end="\r", file=out)
        t = torch.tensor([i / T])[:, None, None, None].to(device)
        z = torch.randn_like(samples) if i > 1 else 0
        eps = model(samples, t)
        noise = b_t.sqrt()[i] * z
        samples = (samples - eps * ((1 - a_t[i]) / (1 - ab_t[i]).sqrt())) / a_t[i].sqrt() + noise
        if i % save_rate == 0 or i == T or i < 8:
            intermediate.append(samples.detach().cpu().numpy())
    return samples, np.stack(intermediate)


@torch.no_grad()
def course_sample_ddim(model, schedule: NoiseSchedule, n: int, device, steps: int = 25, out=None):
    """The lab's ``sample_ddim``: stride T // steps, a NumPy copy of every step."""
    out = out if out is not None else io.StringIO()
    T, ab_t = schedule.T, schedule.ab_t
    samples = torch.randn(n, 3, model.h, model.h).to(device)
    intermediate = []
    step_size = T // steps
    for i in range(T, 0, -step_size):
        print(f"sampling timestep {i:3d}", end="\r", file=out)
        t = torch.tensor([i / T])[:, None, None, None].to(device)
        eps = model(samples, t)
        ab, ab_prev = ab_t[i], ab_t[i - step_size]
        samples = ab_prev.sqrt() / ab.sqrt() * (samples - (1 - ab).sqrt() * eps) + (1 - ab_prev).sqrt() * eps
        intermediate.append(samples.detach().cpu().numpy())
    return samples, np.stack(intermediate)


@torch.no_grad()
def course_style_flow_sample(model, schedule: FlowSchedule, n: int, device, sampler: str = "heun", steps: int = 9,
                             out=None):
    """Euler or Heun on a flow model written the way the labs write their loops: eager, a print per
    step, a NumPy copy of every step (there is no course code for flow matching to copy)."""
    out = out if out is not None else io.StringIO()
    samples = torch.randn(n, 3, model.h, model.h).to(device)
    intermediate = []
    ts = schedule.grid(steps)
    for i, (t, t_prev) in enumerate(zip(ts[:-1], ts[1:])):
        print(f"sampling step {i:3d}", end="\r", file=out)
        u = model(samples, torch.tensor([t])[:, None, None, None].to(device))
        if sampler == "heun" and t_prev > 0:
            ahead = samples + (t_prev - t) * u
            u = (u + model(ahead, torch.tensor([t_prev])[:, None, None, None].to(device))) / 2
        samples = samples + (t_prev - t) * u
        intermediate.append(samples.detach().cpu().numpy())
    return samples, np.stack(intermediate)


@torch.inference_mode()
def bare_forward_s(model, batch: int, device, repeats: int = 20) -> float:
    """Median seconds of one forward pass of ``model`` itself at ``batch``, after warm-up."""
    x = torch.randn(batch, model.in_channels, model.h, model.h, device=device)
    t = torch.full((1,), 0.5, device=device)
    for _ in range(3):
        model(x, t)
    return median_time(lambda: model(x, t), device, repeats)


def _course_train(model, dataset, steps: int, schedule, device) -> None:
    """The lab's training loop over a DataLoader of ToTensor + Normalize, for ``steps`` batches of 100."""
    loader = DataLoader(dataset, batch_size=100, shuffle=True, num_workers=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    batches = iter(loader)
    for _ in range(steps):
        x, _ = next(batches)
        opt.zero_grad()
        x = x.to(device)
        noise = torch.randn_like(x)
        # the course's t ~ U{1..T}, √ᾱ·x + √(1 − ᾱ)·ε and target ε, through the schedule, so that a v- or
        # flow model's loop does its own arithmetic (t ~ U[0, 1), its path and target) at the same cost
        t = schedule.sample_t(x.shape[0], None, "cpu").to(device)
        x_pert = schedule.add_noise(x, t, noise)
        loss = F.mse_loss(model(x_pert, schedule.model_time(t)), schedule.target(x, noise, t))
        loss.backward()
        opt.step()


def _course_dataset(data):
    """The lab's CustomDataset, read from .npy files as the lab reads them."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "s.npy", data.sprites)
        np.save(Path(tmp) / "l.npy", data.labels)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the shapes
            return CustomDataset(Path(tmp) / "s.npy", Path(tmp) / "l.npy", transform, null_context=False)


def _our_train(model, x_all: torch.Tensor, steps: int, schedule, device, batch: int = 100,
               precision: str = "fp32", cuda_graph: bool = False, compile: bool = False) -> None:
    """Our training steps on ``x_all``, the sprites already on the device as one tensor (as ``train`` holds them).

    cuda_graph: the steps replayed from a CUDA graph, its warm-up and capture timed with them.
    compile: the network through ``torch.compile`` (compiled at its first call, cached after that).
    """
    model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    opt = make_optimizer(model, 1e-3, device, capturable=cuda_graph)
    model.train()
    perm = torch.randperm(len(x_all), generator=keyed_rng(0, Stream.SHUFFLE, 0)).to(device)
    graphed = None
    if cuda_graph:
        graphed = GraphedTrainStep(model, opt, lambda idx: diffusion_loss(model, schedule, x_all[idx], precision=precision),
                                   batch, device)
    for k in range(steps):
        idx = perm[k * batch:(k + 1) * batch]
        if graphed:
            graphed(idx)
        else:
            train_step(model, opt, schedule, x_all[idx], gen=keyed_rng(0, Stream.NOISE, k, device=noise_device(device)),
                       precision=precision)


MODS = {"graph": {"cuda_graph": True}, "eager": {"cuda_graph": False}, "bf16": {"precision": "bf16"},
        "compile": {"compile": "default"}, "autotune": {"compile": "max-autotune"}}


def run_bench(model: ContextUnet, schedule: NoiseSchedule, device: torch.device, repeats: int = 3,
              large_batch: int | None = None, train_steps: int = 20, rows=None, log=print) -> list[BenchRow]:
    """Time each row baseline and ours; returns the rows (see the module docstring)."""
    large_batch = large_batch or (1024 if device.type == "cuda" else 128)
    schedule = schedule.to(device)
    model = model.to(device).eval()
    specs = _sample_specs(schedule, large_batch)
    wanted = _check_rows(rows, specs, schedule, device, model.h, log)
    out: list[BenchRow] = []
    course_train: dict = {}  # train_steps batches of 100 through the course's loop: measured once, shared by the train rows
    for name in wanted:
        base_name, *mods = name.split("+")
        extra = {k: v for mod in mods for k, v in MODS[mod].items()}
        compiled = "compile" in mods or "autotune" in mods
        if base_name in specs:
            row = _sample_row(name, model, schedule, device, *specs[base_name], extra, compiled, repeats, log)
        else:
            extra.pop("compile", None)  # training's compile is _our_train's own flag
            batch = large_batch if base_name == "train-large" else 100
            row = _train_row(name, model, schedule, device, batch, train_steps, extra, compiled, repeats, course_train, log)
        out.append(row)
        log(format_row(row))
    return out


def _sample_specs(schedule, large_batch: int) -> dict[str, tuple[str, int, int]]:
    """The sampling rows, {name: (sampler, steps, batch)}: DDPM-500 and DDIM-25 for a diffusion model (the
    course's loops are the baseline), Heun-9 (its default) and Euler-25 for a flow model."""
    if isinstance(schedule, FlowSchedule):
        return {"sample-heun9-b32": ("heun", 9, 32), "sample-euler25-b32": ("euler", 25, 32),
                "sample-heun9-large": ("heun", 9, large_batch)}
    return {"sample-ddpm500-b32": ("ddpm", 500, 32), "sample-ddim25-b32": ("ddim", 25, 32),
            "sample-ddpm500-large": ("ddpm", 500, large_batch)}


def _check_rows(rows, specs: dict, schedule, device, height: int, log) -> tuple[str, ...]:
    """The rows to run (by default: the sampling rows and train, and on CUDA the bf16 and graph ones), checked
    now, not after the sampling rows. The default leaves out, and says so, what this model cannot run."""
    # on CUDA, sampling replays a CUDA graph by default: "+eager" rows time it without one
    on_cuda = [f"{r}+bf16" for r in specs] + ["train+bf16", "train-large+bf16", "train+graph", "train+graph+bf16",
                                              "train-large+graph+bf16"]
    variants = on_cuda + [f"{r}+eager" for r in specs] + [f"{r}+graph" for r in specs]
    # torch.compile: 1.10x on the CPU after a 16 s compile, 84 s to compile on an H100: asked for by name only
    large = next(r for r in specs if r.endswith("-large"))
    variants += [f"{large}+compile", f"{large}+compile+bf16", f"{large}+autotune+bf16",
                 "train+compile", "train+compile+graph", "train-large+compile+graph+bf16"]
    wanted = rows or (*specs, "train", *(on_cuda if device.type == "cuda" else ()))
    unknown = [r for r in wanted if r not in (*specs, "train", *variants)]
    if unknown:
        raise BadInput(f"unknown bench row {unknown[0]!r}; choose from {', '.join((*specs, 'train', *variants))}")
    cannot = {"sampling": (f"they need a model with T ≥ 25 (DDIM-25); these weights have T={schedule.T}",
                           lambda r: r.partition("+")[0] in specs and schedule.T < 25),
              "train": (f"they train on bench's {SIZE}×{SIZE} procedural sprites and this model draws {height}×{height} ones",
                        lambda r: r.startswith("train") and height != SIZE)}
    for kind, (why, fails) in cannot.items():
        if any(map(fails, wanted)) and rows:
            raise BadInput(f"the {kind} rows cannot run: {why}; leave them out")
        if any(map(fails, wanted)):
            wanted = [r for r in wanted if not fails(r)]
            log(f"{kind} rows left out: {why}")
    if not wanted:
        raise BadInput("no bench row can run on these weights: " + "; ".join(why for why, _ in cannot.values()))
    if device.type != "cuda" and any("+graph" in r for r in wanted):
        raise BadInput("the +graph rows need CUDA; pass --device cuda or leave them out")
    return tuple(wanted)


def _sample_row(name, model, schedule, device, sampler, steps, b, extra, compiled, repeats, log) -> BenchRow:
    steps = schedule.T if sampler == "ddpm" else steps
    course = {"ddpm": course_sample_ddpm, "ddim": course_sample_ddim}.get(sampler, course_style_flow_sample)
    kwargs = {} if sampler == "ddpm" else {"steps": steps} if sampler == "ddim" else {"sampler": sampler, "steps": steps}
    bare = bare_forward_s(model, b, device)  # also the warm-up: allocator, kernels, caches
    bare_ours = bare_forward_s(inference_copy(model), b, device)
    base = median_time(lambda: course(model, schedule, b, device, **kwargs), device, repeats)
    if compiled:  # sample()'s compile option; its first call (timed apart) compiles
        warm = median_time(lambda: sample(model, schedule, b, sampler=sampler, steps=2, **extra), device, 1)
        log(f"{name}: first call (compiling) {warm:.1f} s")
    ours = median_time(lambda: sample(model, schedule, b, sampler=sampler, steps=steps, **extra), device, repeats)
    calls = network_calls(sampler, steps)
    return BenchRow(name, base, ours, base / ours, ours / (calls * bare), ours / (calls * bare_ours), b)


def _train_row(name, model, schedule, device, batch, train_steps, extra, compiled, repeats, course_train, log) -> BenchRow:
    x_all = sprites_to_tensor(procedural_dataset(batch * (train_steps + 1), 0).sprites).to(device)
    fresh = lambda: ContextUnet(**asdict(model.config)).to(device)  # noqa: E731
    if compiled:  # one network, reset before each run, so that its compiled code is reused
        net = fresh()
        start = {k: v.clone() for k, v in net.state_dict().items()}
        fresh = lambda: (net.load_state_dict(start), net)[1]  # noqa: E731
    if "s" not in course_train:
        dataset = _course_dataset(procedural_dataset(100 * (train_steps + 1), 0))
        _course_train(fresh(), dataset, 2, schedule, device)  # warm-up
        course_train["s"] = median_time(lambda: _course_train(fresh(), dataset, train_steps, schedule, device),
                                         device, repeats)
    base = course_train["s"] * batch / 100  # the same number of images at the course loop's measured rate
    warm = median_time(lambda: _our_train(fresh(), x_all, 2, schedule, device, batch, compile=compiled, **extra),
                        device, 1)  # warm-up at this batch and precision
    if compiled:
        log(f"{name}: first call (compiling) {warm:.1f} s")
    ours = median_time(lambda: _our_train(fresh(), x_all, train_steps, schedule, device, batch,
                                           compile=compiled, **extra), device, repeats)
    return BenchRow(name, base, ours, base / ours, None, None, batch * train_steps)


def format_row(r: BenchRow) -> str:
    overhead = "" if r.overhead is None else f"  overhead {r.overhead:5.3f} (loop {r.loop_overhead:5.3f})"
    return (f"{r.name:22s} baseline {r.baseline_s:8.3f} s  ours {r.ours_s:8.3f} s  speedup {r.speedup:5.2f}×"
            f"  ({r.images / r.ours_s:8.1f} img/s){overhead}")
