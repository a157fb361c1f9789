"""Training: the course's recipe (DDPM Algorithm 1) with EMA, atomic checkpoints and resume.

Each step: pick sprites x_0 and times t ~ U{1..T}, noise them to x_t with √ᾱ_t and √(1-ᾱ_t),
ask the network for the noise, and take the mean squared error. A fraction of the
contexts is zeroed ("no context") so the same model samples with and without one.

Randomness is keyed by (seed, epoch) for the shuffling and (seed, step) for the noise, so
a run resumed from any step continues exactly as if it had never stopped.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import platform
import signal
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import SpriteData, procedural_dataset, sprites_to_tensor
from .errors import BadInput, check_memory, out_folder
from .model import ContextUnet, ModelConfig
from .schedule import DiffusionConfig, make_schedule
from .sprites import CLASS_NAMES, SIZE
from .weights import read_tensors, remove_stale_temps, save_model, save_tensors

__all__ = ["TrainConfig", "train", "train_step", "diffusion_loss", "GraphedTrainStep", "set_lr", "scaled_lr", "TrainingInterrupted", "TrainingDiverged", "pick_device",
           "hardware_name"]

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
PRECISIONS = ("fp32", "bf16")
LOSS_READ_EVERY = 20  # steps between reading the losses back from the device (each read waits for it)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; defaults are the course's (Adam 1e-3 decayed linearly, batch 100)."""

    epochs: int = 32
    batch_size: int = 100
    lr: float = 1e-3  # decays linearly to 0 over the run
    context_dropout: float = 0.1  # fraction of contexts zeroed, for sampling without context
    ema_decay: float = 0.999  # exponential moving average of the weights, used for sampling
    seed: int = 0
    n_sprites: int = 90_000  # procedural sprites, when no --data is given
    data_seed: int = 0
    snapshot_epochs: tuple[int, ...] = ()  # also keep half-precision EMA weights after these epochs
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (0: only at epoch ends)
    augment: bool = False  # random horizontal flips and palette jitter, for small datasets
    precision: str = "fp32"  # or "bf16": the forward pass and loss under bfloat16 autocast (for GPUs)
    # replay each whole step (forward, backward, Adam) from one CUDA graph; None: on when training on
    # CUDA. The same recipe, but the noise comes from the GPU's default generator, so its draws are
    # not those of a run without it. How steps run, not what they compute: a run may resume with the other
    cuda_graph: bool | None = None


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM, once the checkpoint is safely on disk."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """Raised when the loss is NaN or infinite; the last good checkpoint is kept."""


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" is CUDA when present, else the CPU; "cpu", "cuda", "cuda:N" and (on Apple silicon) "mps" as asked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise BadInput(f"unknown device {str(device)!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BadInput(f"there is no {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use cuda:0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInput("device mps (Apple silicon) is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise BadInput(f"device {device.type} is not supported; use auto, cpu or cuda")
    return device


def hardware_name(device: torch.device) -> str:
    """e.g. "NVIDIA A10G" or "AMD EPYC, 2 cores, 2 torch threads"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def scaled_lr(batch_size: int, base_lr: float = 1e-3, base_batch: int = 100) -> float:
    """The course's learning rate (1e-3 at batch 100) scaled by √(batch / 100).

    The square-root rule is the one derived for Adam by Malladi et al. 2022 ("On the SDEs and
    Scaling Rules for Adaptive Gradient Algorithms"); the linear rule is SGD's.
    """
    return base_lr * math.sqrt(batch_size / base_batch)


def make_optimizer(model: torch.nn.Module, lr: float, device: torch.device, capturable: bool = False) -> torch.optim.Adam:
    """Adam; fused (one kernel for the whole update, PyTorch's fastest) on a GPU, where it exists.

    capturable: for a step replayed from a CUDA graph; the learning rate is then a tensor on the
    GPU that the replayed update reads (a number would be baked into the graph); set it with ``set_lr``.
    """
    if capturable:
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device), fused=True, capturable=True)
    return torch.optim.Adam(model.parameters(), lr=lr, fused=device.type == "cuda")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; a tensor one (capturable Adam) is filled in place, with no host sync."""
    for g in opt.param_groups:
        if torch.is_tensor(g["lr"]):
            g["lr"].fill_(lr)
        else:
            g["lr"] = lr


def noise_device(device: torch.device) -> torch.device:
    """Where training draws its noise: on a GPU itself (no host work, no copies), else the CPU."""
    return device if device.type == "cuda" else torch.device("cpu")


def _rng(seed: int, *key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for each (seed, key): no state to save for resume.

    On a GPU the generator lives there too, so drawing the noise costs no host work and no
    copy. The noise is still keyed by (seed, step), so a resumed GPU run draws what an unbroken
    one would (its numbers differ from a CPU run's with the same seed, and cuDNN's backward
    kernels may differ in the last bits from run to run).
    """
    return torch.Generator(device=device).manual_seed(_seed_for(seed, *key))


def capture_cuda_graph(device: torch.device, fn, warmups: int = 2, warm=None, before_capture=None):
    """Capture one call of ``fn`` in a CUDA graph on ``device``'s GPU; returns (graph, what fn returned).

    PyTorch's recipe: ``warm`` (default ``fn``) runs ``warmups`` times on a side stream first, so
    lazily made state and cuDNN's choices exist, then ``before_capture`` (if given), then the
    capture, on that same stream: not PyTorch's process-wide capture stream, which belongs to
    whichever GPU made the first graph. Replay inside ``torch.cuda.device(device)``.
    """
    with torch.cuda.device(device):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmups):
                (warm or fn)()
        torch.cuda.current_stream(device).wait_stream(side)
        if before_capture is not None:
            before_capture()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            out = fn()
    return graph, out


def _cuda_generator(device: torch.device) -> torch.Generator:
    """The default generator of ``device``'s GPU ("cuda" alone: the current one), which CUDA graphs replay."""
    return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]


def _seed_for(seed: int, *key: int) -> int:
    """A 64-bit seed for (seed, key), independent of every other key's."""
    state = np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class _EMA:
    """θ_ema ← d·θ_ema + (1-d)·θ, with d warmed up as (1+n)/(10+n) so early steps are not lost."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        # the live model's memory layout too, so the foreach updates below take their fused path
        self.model = ContextUnet(**asdict(model.config)).to(next(model.parameters()).device,
                                                            memory_format=torch.channels_last)
        self.model.load_state_dict(model.state_dict())
        self.model.eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - d)
        pairs = list(zip(self.model.buffers(), model.buffers()))  # BatchNorm statistics follow the live model
        for floats in (True, False):  # one dtype per call keeps the copy one fused kernel on a GPU
            group = [(e, b) for e, b in pairs if e.is_floating_point() == floats]
            if group:
                torch._foreach_copy_([e for e, _ in group], [b for _, b in group])


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    groups = [{**g, "lr": float(g["lr"])} for g in sd["param_groups"]]  # a capturable Adam's lr is a tensor
    return tensors, groups


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    """Load saved Adam state into ``opt``, keeping ``opt``'s own implementation flags and memory layout.

    A checkpoint may come from another device: a GPU run's groups say fused=True, which must not
    switch a CPU resume to the fused kernel (or a GPU one off it). And safetensors stores every
    tensor contiguous, while the moments of a channels_last weight must be channels_last too:
    the fused kernel refuses mixed layouts on a GPU and misreads them on a CPU.
    """
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    flags = ("fused", "foreach", "capturable", "differentiable")
    groups = [{**g, **{f: mine[f] for f in flags if f in mine}} for g, mine in zip(groups, opt.param_groups)]
    tensor_lrs = [g["lr"] if torch.is_tensor(g["lr"]) else None for g in opt.param_groups]
    opt.load_state_dict({"state": state, "param_groups": groups})
    for g, lr in zip(opt.param_groups, tensor_lrs):  # a capturable Adam keeps its lr tensor (a graph reads it)
        if lr is not None:
            g["lr"] = lr.fill_(float(g["lr"]))
    for p, st in opt.state.items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[name] = torch.empty_like(p).copy_(v)


_HELD: list[int] = []  # the --out folders train() holds locked, as open file descriptors


def _lock_out_dir(out_dir: Path) -> None:
    """Lock the --out folder for this train() call: a second run into it, in any process, is refused.

    flock on the folder itself: no lock file is left behind, and the kernel drops the lock when the
    process ends, so a killed run never leaves the folder locked. (No fcntl, on Windows: no lock.)
    """
    try:
        import fcntl
    except ImportError:
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise BadInput(f"another train run is using {out_dir}; wait for it to end (or stop it), or choose "
                       f"another --out") from None
    _HELD.append(fd)


def _releases_out_dir_lock(fn):
    """Run ``fn`` (train) and then release the --out locks it took, however it ends."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        held = len(_HELD)
        try:
            return fn(*args, **kwargs)
        finally:
            while len(_HELD) > held:
                os.close(_HELD.pop())
    return run


@_releases_out_dir_lock
def train(
    config: TrainConfig,
    out_dir: Path,
    data: SpriteData | None = None,
    model_config: ModelConfig | None = None,
    diffusion: DiffusionConfig = DiffusionConfig(),
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    command: str = "",
    init_from: Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a ContextUnet and write ``out_dir/model.safetensors`` (EMA weights) and its card.

    ``out_dir/checkpoint.safetensors`` holds everything needed to resume (weights, EMA,
    Adam state, position); it is replaced atomically at every epoch end, every
    ``checkpoint_every`` steps and on SIGINT/SIGTERM. Returns the final card.

    init_from: weights to start from instead of random ones (fine-tuning, or training on for
    longer with a fresh learning-rate schedule); the card records them as ``init_from``.

    A folder that already holds a run is refused unless ``resume`` (continue it) or
    ``overwrite`` (start a new run there; its checkpoint and snapshots are replaced), and so is a
    folder another train() is using (it is locked while a call runs); temporary files that a killed
    run left there are removed.
    """
    from tqdm.auto import tqdm

    config = _plain_numbers(config)
    _check_config(config)
    out_dir = Path(out_dir)
    schedule = make_schedule(diffusion)  # bad arguments fail here, before a folder or the sprites are made
    device = pick_device(device)
    if config.cuda_graph is None:
        config = replace(config, cuda_graph=device.type == "cuda")
    if config.cuda_graph and device.type != "cuda":
        raise BadInput(f"--cuda-graph needs a CUDA GPU and this run is on {device.type}; drop --cuda-graph or use --device cuda")
    # before the out folder is made and, for procedural sprites, minutes are spent making them
    _check_tensor_memory(*((config.n_sprites, SIZE) if data is None else (len(data), data.sprites.shape[1])))
    # the model, and the weights it starts from, before the out folder too: a bad --n-feat or --init-from
    # leaves nothing behind (procedural sprites are 16×16 in 5 classes)
    height, n_classes = (SIZE, len(CLASS_NAMES)) if data is None else (data.sprites.shape[1], data.labels.shape[1])
    model_config = model_config or ModelConfig(height=height, n_cfeat=max(n_classes, 1))
    if model_config.height != height:
        raise BadInput(f"sprites are {height}×{height} but the model is built for height={model_config.height}")
    if n_classes and model_config.n_cfeat != n_classes:
        raise BadInput(f"the data has {n_classes} classes but the model has n_cfeat={model_config.n_cfeat}")
    torch.manual_seed(config.seed)  # initial weights
    # channels_last: about 15% faster convolutions on CPU (measured: 153 vs 131 img/s on 2 cores)
    model = ContextUnet(**asdict(model_config)).to(device, memory_format=torch.channels_last)
    model_config = model.config  # plain ints, whatever numbers it was given: the card is JSON
    start = _load_start(Path(init_from), model_config) if init_from is not None else None
    _prepare_out_dir(out_dir, resume, overwrite)
    if data is None:
        data = procedural_dataset(config.n_sprites, config.data_seed)
    schedule = schedule.to(device)
    T = schedule.T
    gen_device = noise_device(device)

    x_all = sprites_to_tensor(data.sprites).to(device)  # (N, 3, H, W), the whole set stays in memory
    c_all = torch.from_numpy(data.labels).to(device) if n_classes else None
    n = len(x_all)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch

    opt = make_optimizer(model, config.lr, device, capturable=config.cuda_graph)
    ema = _EMA(model, config.ema_decay)
    card = {
        "format": "diffusion_utilities/1",
        "model": asdict(model_config),
        "diffusion": asdict(diffusion),
        "training": asdict(config),
        "data": {**{k: v for k, v in data.meta.items() if k != "files"}, "count": n},
        "class_names": data.class_names,
        "command": command,
    }
    if init_from is not None:
        card["init_from"] = _warm_start(Path(init_from), start, model, ema, card)
    card = json.loads(json.dumps(card))  # tuples become lists, as they will be when read back
    step, wall, losses, running = 0, 0.0, [], []  # running: the losses of the epoch in progress
    ckpt = out_dir / CHECKPOINT
    cuda_rng = None  # a --cuda-graph run's generator position: {"seed": ..., "offset": ...}
    if resume and ckpt.exists():
        step, wall, losses, running, cuda_rng = _resume(ckpt, model, ema, opt, card, steps_per_epoch, total_steps)
    elif resume:
        print(f"no checkpoint in {out_dir}; starting from scratch")

    def kept():
        return f"kept the last good checkpoint {ckpt}" if ckpt.exists() else "no checkpoint had been written yet"

    def save_checkpoint():
        if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():  # one read-back, not one per tensor
            raise TrainingDiverged(f"weights became NaN or infinite by step {step}; {kept()} — try a lower --lr")
        tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()},
                   **{f"ema.{k}": v for k, v in ema.model.state_dict().items()}}
        opt_tensors, groups = _optimizer_tensors(opt)
        # running: this epoch's losses so far, so that a resumed run's epoch loss averages the whole epoch
        state = {"step": step, "wall_time_s": wall, "losses": losses, "running": running, "param_groups": groups}
        if default_gen is not None:
            state["cuda_rng"] = {"seed": default_gen.initial_seed(), "offset": default_gen.get_offset()}
        save_tensors(ckpt, {**tensors, **opt_tensors}, {**card, "state": state})

    if overwrite:
        _clear_earlier_run(out_dir)
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc="train", unit="step")
    t_start = time.perf_counter()  # the graph's warm-up and capture count as training time
    model.train()  # (captured in this mode)
    graphed, default_gen = None, None
    if config.cuda_graph:  # its noise comes from the GPU's default generator, set here and saved in checkpoints
        default_gen = _cuda_generator(device)
        # no saved position (a fresh run, or one that ran without a graph until now): a seed for this step
        default_gen.manual_seed(cuda_rng["seed"] if cuda_rng else _seed_for(config.seed, 1, step))
        default_gen.set_offset(cuda_rng["offset"] if cuda_rng else 0)
        if n >= config.batch_size:  # the graph runs full batches; an epoch's short last batch runs eagerly
            graphed = GraphedTrainStep(model, opt, schedule, x_all, c_all, config.batch_size, config.context_dropout,
                                       T, config.precision, config.augment)
    pending: list[torch.Tensor] = []  # losses not read back yet: on a GPU a read waits for all queued work

    def read_losses():
        values = torch.stack(pending).tolist() if pending else []
        pending.clear()
        for j, value in enumerate(values):
            if not math.isfinite(value):
                bar.close()
                raise TrainingDiverged(f"loss became {value} at step {step - len(values) + j}; {kept()} "
                                       f"— try a lower --lr")
        running.extend(values)
    model.train()
    perm, perm_epoch = None, -1
    with _StopFlag() as stop:
        while step < total_steps:
            epoch, k = divmod(step, steps_per_epoch)
            if perm_epoch != epoch:
                perm = torch.randperm(n, generator=_rng(config.seed, 0, epoch)).to(device)
                perm_epoch = epoch
            idx = perm[k * config.batch_size:(k + 1) * config.batch_size]
            set_lr(opt, config.lr * (1 - step / total_steps))
            if graphed is not None and len(idx) == config.batch_size:
                pending.append(graphed(idx))
            else:
                keyed = not config.cuda_graph  # else the default generator, as the graph draws
                x0 = x_all[idx]
                if config.augment:
                    x0 = _augment(x0, _rng(config.seed, 2, step, device=gen_device) if keyed else None)
                pending.append(train_step(model, opt, schedule, x0, None if c_all is None else c_all[idx],
                                          _rng(config.seed, 1, step, device=gen_device) if keyed else None,
                                          config.context_dropout, T, config.precision))
            ema.update(model, step)
            step += 1
            bar.update(1)
            end_of_epoch = step % steps_per_epoch == 0
            checkpoint_due = end_of_epoch or stop.signum or (config.checkpoint_every and step % config.checkpoint_every == 0)
            if checkpoint_due or step % LOSS_READ_EVERY == 0:
                read_losses()  # raises TrainingDiverged before a bad step can reach a checkpoint
                bar.set_postfix(loss=f"{np.mean(running[-100:]):.4f}" if running else "–")
            now = time.perf_counter()
            if end_of_epoch:
                losses.append(float(np.mean(running)))
                running.clear()
            if checkpoint_due:
                wall += now - t_start
                t_start = now
                save_checkpoint()
            if end_of_epoch and (step // steps_per_epoch) in config.snapshot_epochs:
                e = step // steps_per_epoch
                save_model(ema.model, out_dir / "snapshots" / f"epoch_{e:02d}.safetensors",
                           {**card, "epoch": e, "step": step}, half=True)
            if stop.signum:
                bar.close()
                raise TrainingInterrupted(f"stopped by signal {stop.signum} at step {step}; "
                                          f"checkpoint saved — continue with --resume", stop.signum)
    read_losses()
    bar.close()
    wall += time.perf_counter() - t_start
    save_checkpoint()
    earlier = card.get("init_from", {}).get("images_seen_total", 0)
    seen = config.epochs * n  # each epoch's last batch is short when the batch size does not divide n
    final = {**card, "epochs_done": config.epochs, "steps": step, "images_seen": seen,
             "images_seen_total": earlier + seen,
             "final_loss": losses[-1] if losses else None, "epoch_losses": [round(v, 5) for v in losses],
             "wall_time_s": round(wall, 1), "hardware": hardware_name(device), "torch": torch.__version__}
    return save_model(ema.model, out_dir / MODEL, final)


def _prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create out_dir before any work, and refuse to start a new run over an earlier one."""
    if resume and overwrite:
        raise BadInput("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    out_folder(out_dir, CHECKPOINT, MODEL)
    _lock_out_dir(out_dir)
    # only now, with the lock held, can no other run be writing them
    remove_stale_temps(out_dir, CHECKPOINT, MODEL, Path(MODEL).with_suffix(".json").name)
    remove_stale_temps(out_dir / "snapshots", "epoch_*")
    has_checkpoint, has_model = (out_dir / CHECKPOINT).exists(), (out_dir / MODEL).exists()
    if resume and has_model and not has_checkpoint:
        raise BadInput(f"{out_dir} holds a finished model but no {CHECKPOINT} to resume from; start a new run "
                       f"there with --overwrite, or choose another --out")
    if (has_checkpoint or has_model) and not resume and not overwrite:
        hint = "continue it with --resume, replace it" if has_checkpoint else "replace it"
        raise BadInput(f"{out_dir} already holds a training run ({CHECKPOINT if has_checkpoint else MODEL}); "
                       f"{hint} with --overwrite, or choose another --out")


def _clear_earlier_run(out_dir: Path) -> None:
    """For --overwrite, once every input has been checked: the old checkpoint and snapshots go.

    model.safetensors stays until the new run replaces it at the end.
    """
    snapshots = out_dir / "snapshots"
    for old in [out_dir / CHECKPOINT, *snapshots.glob("epoch_*.safetensors"), *snapshots.glob("epoch_*.json")]:
        old.unlink(missing_ok=True)


def _augment(x0: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Flip half the sprites left-right and scale each one's colour channels by 0.85..1.15 (in [0, 1] terms).

    gen: a generator, or None for x0's device's default one.
    """
    b = x0.shape[0]
    where = gen.device if gen is not None else x0.device
    flip = (torch.rand(b, generator=gen, device=where) < 0.5).to(x0.device)[:, None, None, None]
    x = torch.where(flip, x0.flip(-1), x0)
    gain = (0.85 + 0.3 * torch.rand(b, 3, 1, 1, generator=gen, device=where)).to(x0.device)
    return (((x + 1) / 2 * gain).clamp(0, 1) * 2 - 1)


def diffusion_loss(model, schedule, x0, c, gen, context_dropout, T, precision: str = "fp32") -> torch.Tensor:
    """DDPM Algorithm 1's loss on one batch: ‖ε − ε_θ(√ᾱ_t·x0 + √(1−ᾱ_t)·ε, t/T, c)‖².

    The schedule says what differs for the other objectives, in the lines marked (*):
      v-prediction (Salimans & Ho 2022): the target is v = √ᾱ_t·ε − √(1−ᾱ_t)·x0;
      flow matching (Lipman et al. 2023): t ~ U[0, 1), x_t = (1 − t)·x0 + t·ε, target ε − x0.
    T is the schedule's T (what t/T divides by; the schedule's own is used).

    gen draws, in this order, the noise ε, the times t and the context dropout; None
    draws from x0's device's default generator (what a CUDA graph can replay).
    """
    b, device = x0.shape[0], x0.device
    where = gen.device if gen is not None else device
    noise = torch.randn(x0.shape, generator=gen, device=where).to(device)
    t = schedule.sample_t(b, gen, where).to(device)  # (*)
    if c is not None:
        keep = (torch.rand(b, generator=gen, device=where) >= context_dropout).to(device)
        c = c * keep[:, None]  # zeroed rows mean "no context"
    x_t = schedule.add_noise(x0, t, noise).contiguous(memory_format=torch.channels_last)  # (*)
    # no weight-cast cache: each weight is used once per forward, and a cache breaks CUDA graph capture
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
        pred = model(x_t, schedule.model_time(t), c)
    return F.mse_loss(pred.float(), schedule.target(x0, noise, t))  # (*)


def train_step(model, opt, schedule, x0, c, gen, context_dropout, T, precision: str = "fp32") -> torch.Tensor:
    """One step of DDPM Algorithm 1; returns the loss (a 0-dim tensor, not read back: no host sync).

    x0: (B, C, H, W) clean sprites in [-1, 1]; c: (B, K) contexts or None; gen: a generator (on
    the CPU or on x0's GPU), or None for the device's default one: see ``diffusion_loss``.
    precision "bf16": the forward pass under bfloat16 autocast, the loss in fp32.
    """
    loss = diffusion_loss(model, schedule, x0, c, gen, context_dropout, T, precision)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


class GraphedTrainStep:
    """Training steps at one batch size replayed from a CUDA graph: forward, backward and Adam in one launch.

    At batch 100 a step of this network is hundreds of short kernels, and launching them one by
    one from Python takes longer than the GPU needs to run them; a replay leaves only the GPU's
    time. The step reads fixed tensors: the batch's indices into ``x_all`` (copied in by each call),
    the optimizer's lr tensor (``set_lr``) and the GPU's default generator, whose seed and
    offset each replay reads and advances. Call it with (B,) indices; it returns the loss, not read back.

    PyTorch captures a training step only after warm-up steps (so Adam's state, the gradients'
    and cuDNN's choices exist); their effect on the weights, BatchNorm statistics, Adam's state and
    the generator is undone before capture, so the first replay is the run's next step.
    opt must come from ``make_optimizer(..., capturable=True)``.
    """

    WARMUP = 3

    def __init__(self, model, opt, schedule, x_all, c_all, batch: int, context_dropout: float, T: int,
                 precision: str = "fp32", augment: bool = False):
        self.device = device = x_all.device
        self.idx = torch.zeros(batch, dtype=torch.long, device=device)

        def step():
            x0 = x_all[self.idx]
            if augment:
                x0 = _augment(x0, None)
            c = None if c_all is None else c_all[self.idx]
            loss = diffusion_loss(model, schedule, x0, c, None, context_dropout, T, precision)
            loss.backward()
            opt.step()
            return loss.detach()

        def warm():
            opt.zero_grad(set_to_none=True)
            step()

        weights = {k: v.clone() for k, v in model.state_dict().items()}
        adam = {p: {k: v.clone() for k, v in st.items()} for p, st in opt.state.items()}

        def undo_warm_up():
            model.load_state_dict(weights)  # in place: the graph will use these tensors
            for p, st in opt.state.items():
                for k, v in st.items():
                    if p in adam:
                        v.copy_(adam[p][k])
                    else:  # state the warm-up made starts at zero, as Adam makes it
                        v.zero_()
            opt.zero_grad(set_to_none=True)  # the graph's backward makes its own gradients

        gen = _cuda_generator(device)  # the one a capture on this GPU registers
        seed, offset = gen.initial_seed(), gen.get_offset()
        self.graph, self.loss = capture_cuda_graph(device, step, self.WARMUP, warm, undo_warm_up)
        gen.manual_seed(seed)  # in place: the graph reads this generator's state at each replay
        gen.set_offset(offset)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):
            self.idx.copy_(idx)
            self.graph.replay()
            return self.loss.clone()


def _check_tensor_memory(n: int, height: int) -> None:
    """The float32 copy of the sprites must fit in host memory (sprites_to_tensor converts in place)."""
    check_memory(n * 3 * height * height * 4, f"holding {n:,} sprites as float32 tensors",
                 "train on fewer sprites (--n-sprites, or a smaller --data set)")


def _load_start(path: Path, model_config: ModelConfig) -> tuple[ContextUnet, dict]:
    """The --init-from weights and card, checked (found, finite, a matching model) before any work."""
    from .weights import load_model

    if not path.exists():
        raise BadInput(f"--init-from weights not found: {path}")
    start, start_card = load_model(path)
    # The number of classes may differ, and so may the diffusion config: a course model is a good start
    # for a v-model on a rescaled schedule (the card keeps the start's config under init_from).
    ours = asdict(model_config)
    theirs = {k: v for k, v in (start_card.get("model") or {}).items() if k != "n_cfeat"}
    if theirs != {k: v for k, v in ours.items() if k != "n_cfeat"}:
        raise BadInput(f"{path} has a different model config ({json.dumps(start_card.get('model'))}) from this run's "
                       f"({json.dumps(ours)}); pass a matching --n-feat or drop --init-from")
    return start, start_card


def _warm_start(path: Path, loaded: tuple[ContextUnet, dict], model, ema, card: dict) -> dict:
    """Load the --init-from weights (from ``_load_start``) into the model and its EMA; returns what the card
    records about them."""
    from .weights import sha256_file

    start, start_card = loaded
    # Another number of classes: the context embeddings' input weights start fresh; their biases are
    # kept, so "no context" (all zeros) still means what it meant to the starting model.
    state = model.state_dict()
    fresh = [k for k, v in start.state_dict().items() if v.shape != state[k].shape]
    state.update({k: v for k, v in start.state_dict().items() if k not in fresh})
    model.load_state_dict(state)
    ema.model.load_state_dict(state)
    lineage = {k: start_card.get(k) for k in ("command", "steps", "images_seen", "wall_time_s", "hardware", "data")}
    start_diffusion = {**asdict(DiffusionConfig()), **(start_card.get("diffusion") or {})}
    if start_diffusion != card["diffusion"]:  # e.g. a course model fine-tuned into a v-model
        lineage["diffusion"] = start_card.get("diffusion")
    lineage["class_names"] = start_card.get("class_names")
    lineage["reinitialised"] = fresh
    lineage["images_seen_total"] = start_card.get("images_seen_total", start_card.get("images_seen", 0))
    return {"file": path.name, "sha256": sha256_file(path), **lineage}


def _resume(ckpt: Path, model, ema, opt, card, steps_per_epoch: int, total_steps: int
            ) -> tuple[int, float, list, list, dict | None]:
    tensors, saved = read_tensors(ckpt)
    for key, config in (("training", TrainConfig()), ("diffusion", DiffusionConfig())):
        if isinstance(saved.get(key), dict):  # fields added since the checkpoint was written take their defaults
            defaults = json.loads(json.dumps(asdict(config)))
            saved[key] = {**{k: v for k, v in defaults.items() if k not in saved[key]}, **saved[key]}
    if not isinstance(saved.get("state"), dict) or not any(k.startswith("ema.") for k in tensors):
        raise BadInput(f"{ckpt} is not a training checkpoint (model weights?); move it away, or train into another --out")
    for key in ("model", "diffusion", "training", "data", "init_from"):
        theirs, ours = saved.get(key), card.get(key)
        if key == "training" and isinstance(theirs, dict) and isinstance(ours, dict):  # how the steps run, not
            # what they compute: a GPU run may go on without a graph
            theirs, ours = ({k: v for k, v in d.items() if k != "cuda_graph"} for d in (theirs, ours))
        if theirs != ours:
            raise BadInput(f"{ckpt} was made with a different {key} config ({_differences(theirs, ours)}); "
                           f"use the same arguments or another --out folder")
    problem = _checkpoint_problem(tensors, saved["state"], model, opt, steps_per_epoch, total_steps)
    if problem:  # now, not minutes into the run (or never: a fresh Adam would pass for a resumed one)
        raise BadInput(f"{ckpt} is damaged: {problem}; restore it, or start the run again with --overwrite")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state = saved["state"]
    _load_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")}, state["param_groups"])
    print(f"resuming from step {state['step']} ({ckpt})")
    # "running" is missing from checkpoints written before it was saved: their epoch loss after a
    # mid-epoch resume averages only the steps after it, as it always did
    return state["step"], state["wall_time_s"], state["losses"], list(state.get("running", [])), state.get("cuda_rng")


def _checkpoint_problem(tensors: dict, state: dict, model, opt, steps_per_epoch: int, total_steps: int) -> str | None:
    """What is wrong with a checkpoint's tensors and state, in a few words; None if it can be resumed."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    step = state.get("step")
    if "step" not in state:
        return "it has no step"
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= total_steps:
        return f"step {step!r} is outside this run's steps 0..{total_steps}"
    losses, running = state.get("losses"), state.get("running", [])
    if not (isinstance(losses, list) and all(map(number, losses)) and len(losses) == step // steps_per_epoch):
        return f"its losses {json.dumps(losses)[:40]} are not {step // steps_per_epoch} numbers, one per epoch done"
    if not (isinstance(running, list) and all(map(number, running))):
        return f"its running losses {json.dumps(running)[:40]} are not a list of numbers"
    if not (number(state.get("wall_time_s")) and state["wall_time_s"] >= 0):
        return f"its wall_time_s {state.get('wall_time_s')!r} is not a number of seconds"
    rng = state.get("cuda_rng")
    if rng is not None and not (isinstance(rng, dict) and all(isinstance(rng.get(k), int) and rng[k] >= 0
                                                              for k in ("seed", "offset"))):
        return f"its cuda_rng {json.dumps(rng)[:40]} is not a generator's seed and offset"
    expected = {}  # name -> (shape, floating point)
    for prefix, net in (("model.", model), ("ema.", model)):  # the EMA copy has the model's tensors
        expected.update({prefix + k: (v.shape, v.is_floating_point()) for k, v in net.state_dict().items()})
    params = [p for g in opt.param_groups for p in g["params"]]
    if step:  # Adam's state for every weight: its step count and two moments
        for i, p in enumerate(params):
            expected.update({f"optim.{i}.step": (torch.Size([]), True), f"optim.{i}.exp_avg": (p.shape, True),
                             f"optim.{i}.exp_avg_sq": (p.shape, True)})
        if not any(k.startswith("optim.") for k in tensors):
            return "it has no optimizer state (Adam's moments), so a resumed run would not continue this one"
    groups = state.get("param_groups")
    mine = opt.param_groups
    if not (isinstance(groups, list) and len(groups) == len(mine) and all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and len(g["params"]) == len(m["params"])
            and all(number(g.get(k)) for k in ("lr", "eps", "weight_decay"))
            and isinstance(g.get("betas"), list) and len(g["betas"]) == 2 and all(map(number, g["betas"]))
            for g, m in zip(groups, mine))):
        return f"its param_groups {json.dumps(groups)[:60]} are not Adam's settings for this model"
    ours = {k for k in tensors if k.startswith(("model.", "ema.", "optim."))}
    missing, unexpected = sorted(set(expected) - ours), sorted(ours - set(expected))
    if missing or unexpected:
        return f"{missing[0]} is missing" if missing else f"{unexpected[0]} is not a tensor of this model or its Adam"
    for key, (shape, floating) in expected.items():
        v = tensors[key]
        if v.shape != shape:
            return f"{key} is {tuple(v.shape)}, where this model has {tuple(shape)}"
        if floating and not v.is_floating_point():
            return f"{key} is {str(v.dtype).removeprefix('torch.')}, not floating point"
        if floating and not bool(torch.isfinite(v).all()):
            return f"{key} holds NaN or infinite values"
    return None


def _differences(saved, now) -> str:
    """e.g. "epochs: checkpoint 2, now 1; lr: checkpoint 0.001, now 0.002" (whole values if not both dicts)."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return f"checkpoint {json.dumps(saved)[:80]}, now {json.dumps(now)[:80]}"
    keys = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: checkpoint {json.dumps(saved.get(k))[:60]}, now {json.dumps(now.get(k))[:60]}" for k in keys)


def _plain_numbers(config: TrainConfig) -> TrainConfig:
    """numpy numbers (np.int64(32) epochs, an np.float32 lr) as Python ones: the recipe is saved as JSON."""
    swap = {}
    for f in fields(config):
        v = getattr(config, f.name)
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)):
            swap[f.name] = int(v) if isinstance(v, numbers.Integral) else float(v)
    return replace(config, **swap)


def _check_config(config: TrainConfig) -> None:
    for f in fields(config):
        v = getattr(config, f.name)
        if f.name in ("epochs", "batch_size", "n_sprites") and (not isinstance(v, int) or v < 1):
            raise BadInput(f"{f.name} must be a positive integer, got {v!r}")
    if not 0 < config.lr < 1:  # Adam with a step of 1 or more diverges at once (and 1e300 overflows float32)
        raise BadInput(f"lr must be a number between 0 and 1 (the course's is 1e-3), got {config.lr}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise BadInput(f"seed must be a whole number from 0 to 2**63 - 1, got {config.seed!r}")
    if not isinstance(config.checkpoint_every, int) or config.checkpoint_every < 0:
        raise BadInput(f"checkpoint_every must be a whole number ≥ 0 (0: only at epoch ends), got {config.checkpoint_every!r}")
    outside = [e for e in config.snapshot_epochs if not 1 <= e <= config.epochs]
    if outside:
        raise BadInput(f"snapshot_epochs {outside} are outside this run's epochs 1..{config.epochs}")
    if not 0 <= config.context_dropout < 1:
        raise BadInput(f"context_dropout must be in [0, 1), got {config.context_dropout}")
    if config.precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if not 0 <= config.ema_decay < 1:
        raise BadInput(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if not (config.cuda_graph is None or isinstance(config.cuda_graph, bool)):
        raise BadInput(f"cuda_graph must be True, False or None (on for CUDA), got {config.cuda_graph!r}")
