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
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from enum import IntEnum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoints import (CHECKPOINT, MODEL, OutDirLock, RunState, clear_earlier_run, prepare_out_dir, resume_from,
                          save_checkpoint)
from .checks import real_number, whole_number
from .data import SpriteData, procedural_dataset, sprites_to_tensor
from .devices import hardware_name, pick_device
from .distillation import own_steps, student_times, target_along
from .distributed import (agreed_checks, agreed_signal, any_rank, average_over_ranks, check_batch_size, check_same_on_every_rank,
                          convert_sync_batchnorm, data_parallel, distributed_context, is_main, rank_device, shard, wait_for_all,
                          SAGEMAKER_CHECKPOINT_MINUTES)
from .engine import PRECISIONS, GraphedTrainStep, cuda_generator, make_optimizer, set_lr, training_forward
from .errors import BadInput
from .memory import check_memory
from .model import ContextUnet, ModelConfig
from .schedule import DiffusionConfig, make_schedule
from .sprites import CLASS_NAMES, SIZE
from .files import sha256_file
from .weights import load_model, save_model

__all__ = ["TrainConfig", "check_train_config", "train", "train_step", "diffusion_loss", "scaled_lr", "Stream", "keyed_rng", "TrainingInterrupted",
           "TrainingDiverged"]

LOSS_READ_EVERY = 20  # steps between reading the losses back from the device (each read waits for it)


DISTILL_INPUTS = ("data", "student")  # where a distillation step's x_t comes from: distillation_loss


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; defaults are the course's (Adam 1e-3 decayed linearly, batch 100)."""

    # Each field with a "help" is a `train` option of the same name (--batch-size for batch_size), with
    # this default; "min" is the smallest whole number it takes, checked by argparse and by _check_config.
    epochs: int = field(default=32, metadata={"min": 1, "help": "passes over the sprites"})
    batch_size: int = field(default=100, metadata={"min": 1, "help": "sprites per step; under torchrun the global "
                                                                    "batch, split evenly over the processes"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate, decayed linearly to 0 (default 1e-3 at "
                                                      "batch 100, scaled by √(batch/100) for other batches; under torchrun the same, for the global batch)"})
    context_dropout: float = field(default=0.1, metadata={
        "help": "fraction of contexts zeroed, so the model also samples without one (and with guidance)"})
    ema_decay: float = field(default=0.999, metadata={
        "help": "decay of the moving average of the weights that the model file holds"})
    seed: int = field(default=0, metadata={"min": 0, "help": "the initial weights, shuffling and noise"})
    n_sprites: int = field(default=90_000, metadata={"min": 1, "help": "procedural sprites to make when there is no --data (default 90000)"})
    data_seed: int = 0
    snapshot_epochs: tuple[int, ...] = field(default=(), metadata={
        "help": "e.g. 1,4,16: also keep half-precision EMA weights after these epochs"})
    checkpoint_every: int = field(default=500, metadata={
        "min": 0, "help": "steps between mid-epoch checkpoints (0: only at epoch ends)"})
    # a clock as well as a step count: a kill that no SIGTERM announces (a spot interruption) loses at most this
    checkpoint_minutes: float | None = field(default=None, metadata={
        "help": "also checkpoint when this many minutes have passed since the last one, checked every "
                f"{LOSS_READ_EVERY} steps (default: {SAGEMAKER_CHECKPOINT_MINUTES:g} in a SageMaker training job, "
                "otherwise off)"})
    distill_steps: int = field(default=0, metadata={
        "min": 0, "help": "progressive distillation (Salimans & Ho 2022): the DDIM steps the student learns to sample "
                          "in, half its --teacher's; 0 (the default) trains on the data itself"})
    teacher_substeps: int = field(default=2, metadata={
        "min": 2, "help": "the teacher's DDIM steps per student step: 2 halves the steps (Salimans & Ho); more lets a "
                          "first round learn from a finer grid than twice the student's"})
    distill_inputs: str = field(default="data", metadata={
        "help": "where a distillation step's x_t comes from: data (the sprites noised to t; Salimans & Ho) or "
                "student (the student's own DDIM steps from pure noise, the inputs it meets when it samples; "
                "measured on the 4-step student, it did not improve sprite-FID: weights/README.md)"})
    augment: bool = field(default=False, metadata={"help": "random horizontal flips and palette jitter (small sets)"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32, or bf16 (the forward pass and loss under bfloat16 autocast; for GPUs with bfloat16 units)"})
    # The same recipe, but the noise comes from the GPU's default generator, so its draws are not those
    # of a run without it. How steps run, not what they compute: a run may resume with the other
    cuda_graph: bool | None = field(default=None, metadata={
        "help": "replay each whole step (forward, backward, Adam) from one CUDA graph (default: on for CUDA)"})


class TrainingInterrupted(RuntimeError):
    """Raised after SIGINT/SIGTERM, once the checkpoint is safely on disk."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """Raised when the loss is NaN or infinite; the last good checkpoint is kept."""


def scaled_lr(batch_size: int, base_lr: float = 1e-3, base_batch: int = 100) -> float:
    """The course's learning rate (1e-3 at batch 100) scaled by √(batch / 100).

    The square-root rule is the one derived for Adam by Malladi et al. 2022 ("On the SDEs and
    Scaling Rules for Adaptive Gradient Algorithms"); the linear rule is SGD's.
    """
    return base_lr * math.sqrt(batch_size / base_batch)


def noise_device(device: torch.device) -> torch.device:
    """Where training draws its noise: on a GPU itself (no host work, no copies), else the CPU."""
    return device if device.type == "cuda" else torch.device("cpu")


class Stream(IntEnum):
    """The run's random streams: each draw is keyed by (seed, stream, epoch or step)."""

    SHUFFLE = 0  # the order of the sprites, once per epoch
    NOISE = 1  # ε, t and the context dropout, once per step
    AUGMENT = 2  # flips and palette jitter (--augment), once per step


def keyed_rng(seed: int, stream: Stream, key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for each (seed, key): no state to save for resume.

    On a GPU the generator lives there too, so drawing the noise costs no host work and no
    copy. The noise is still keyed by (seed, step), so a resumed GPU run draws what an unbroken
    one would (its numbers differ from a CPU run's with the same seed, and cuDNN's backward
    kernels may differ in the last bits from run to run).
    """
    return torch.Generator(device=device).manual_seed(_seed_for(seed, stream, key))


def _seed_for(seed: int, stream: Stream, key: int) -> int:
    """A 64-bit seed for (seed, stream, key), independent of every other's."""
    state = np.random.SeedSequence([seed, int(stream), key]).generate_state(2, dtype=np.uint32)
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
        # θ_ema.lerp_(θ, 1 − d) for every weight in one call. torch._foreach_* is private API (PyTorch's public
        # EMA, swa_utils.get_ema_multi_avg_fn, makes this same call); it buys a few fused launches a step on a GPU
        # where a loop of lerp_ and copy_ makes one per tensor, 158 of them (docs/benchmarks.md, "The EMA update")
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - d)
        pairs = list(zip(self.model.buffers(), model.buffers()))  # BatchNorm statistics follow the live model
        for floats in (True, False):  # one dtype per call keeps the copy one fused kernel on a GPU
            group = [(e, b) for e, b in pairs if e.is_floating_point() == floats]
            if group:
                torch._foreach_copy_([e for e, _ in group], [b for _, b in group])


def train(
    config: TrainConfig,
    out_dir: Path,
    data: SpriteData | None = None,
    model_config: ModelConfig | None = None,
    diffusion: DiffusionConfig = DiffusionConfig(),
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    command: str = "",
    init_from: Path | None = None,
    overwrite: bool = False,
    teacher: Path | None = None,
) -> dict:
    """Train a ContextUnet and write ``out_dir/model.safetensors`` (EMA weights) and its card; returns the card.

    DDPM Algorithm 1, repeated until the epochs are done: take a batch of sprites x₀ (shuffled
    each epoch), draw t and ε, take a gradient step on the loss (``train_step``), and keep an
    exponential moving average of the weights, which is what the model file holds. The learning
    rate falls linearly to 0.

    ``out_dir/checkpoint.safetensors`` holds everything needed to resume (weights, EMA, Adam
    state, position); it is replaced atomically at every epoch end, every ``checkpoint_every``
    steps and on SIGINT/SIGTERM. init_from: weights to start from instead of random ones
    (fine-tuning); teacher: distil it (``config.distill_steps``; ``distillation_loss``). A folder
    that already holds a run is refused unless ``resume`` or ``overwrite``, and so is one in use.

    Under torchrun (``torchrun --nproc_per_node N -m diffusion_utilities train ...``) the N processes
    train one model with DistributedDataParallel: ``config.batch_size`` is the global batch, split
    over the ranks, and the learning rate means what it means in one process; rank 0 alone writes
    files and shows progress. A run resumes with any number of processes.
    """
    # the --out folder stays locked until train() returns; one process, or one of torchrun's (distributed.py)
    with OutDirLock() as lock, distributed_context(pick_device(device)) as world:
        run = _Run(config, Path(out_dir), data, model_config, diffusion, world=world, lock=lock, resume=resume,
                   device=device, progress=progress, command=command, init_from=init_from, overwrite=overwrite,
                   teacher=teacher)
        config, state = run.config, run.state  # state.step: the steps done (a resumed run starts where it stopped)
        with _StopFlag() as stop:
            while state.step < run.total_steps:
                idx = run.sprites.indices(state.step)  # this step's sprites: the epoch's shuffle, keyed by (seed, epoch)
                set_lr(run.opt, config.lr * (1 - state.step / run.total_steps))
                run.pending.append(run.gradient_step(idx))  # Algorithm 1: t, ε, one gradient step (train_step)
                run.ema.update(run.model, state.step)
                state.step += 1
                run.after_step(stop.signum)  # losses, checkpoints, snapshots; a signal (on any rank) stops here
        return run.finish()


class _Run:
    """One training run's state and bookkeeping: what ``train`` needs besides Algorithm 1 itself."""

    def __init__(self, config, out_dir, data, model_config, diffusion, *, world, lock, resume, device, progress, command,
                 init_from, overwrite, teacher):
        self.world, self.main = world, is_main(world)
        self.device = rank_device(pick_device(device), world)
        self.config = config = _run_config(config, self.device, world)
        self.schedule = make_schedule(diffusion)  # bad arguments fail here, before a folder or the sprites are made
        self.out_dir, device = out_dir, self.device
        # before the out folder is made and, for procedural sprites, minutes are spent making them; every
        # process on this machine holds its own copy
        _check_tensor_memory(*((config.n_sprites, SIZE) if data is None else (len(data), data.sprites.shape[1])),
                             copies=world.local_world_size)
        model_config = _model_config(model_config, data)
        torch.manual_seed(config.seed)  # initial weights, the same on every rank
        # channels_last: about 15% faster convolutions on CPU (measured: 153 vs 131 img/s on 2 cores)
        self.model = ContextUnet(**asdict(model_config)).to(device, memory_format=torch.channels_last)
        self.model = convert_sync_batchnorm(self.model, world)  # BatchNorm over the global batch on GPUs
        model_config = self.model.config  # plain ints, whatever numbers it was given: the card is JSON
        # the teacher and the weights to start from are checked before the out folder is made too
        self.objective, distilled = _objective(config, teacher, model_config, diffusion, device)
        init_from = teacher if init_from is None else init_from  # a student starts as its teacher
        start = load_start(Path(init_from), model_config) if init_from is not None else None
        with agreed_checks(world):  # rank 0 alone locks and inspects the folder; a refusal stops every rank
            if self.main:
                prepare_out_dir(out_dir, resume, overwrite, lock, bool(config.snapshot_epochs))
        data = procedural_dataset(config.n_sprites, config.data_seed) if data is None else data
        self.schedule = self.schedule.to(device)
        self.sprites = _Sprites(data, config, device)
        self.total_steps = config.epochs * self.sprites.steps_per_epoch
        self.opt = make_optimizer(self.model, config.lr, device, capturable=config.cuda_graph)
        self.ema = _EMA(self.model, config.ema_decay)
        self.card = _card(model_config, diffusion, config, data, self.sprites.n, command)
        self.card.update(distilled)
        if init_from is not None:
            self.card["init_from"] = _warm_start(Path(init_from), start, self.model, self.ema, self.card)
        self.card = json.loads(json.dumps(self.card))  # tuples become lists, as they will be when read back
        with agreed_checks(world):  # a checkpoint one rank cannot read stops every rank
            self.state = self._resume_or_start(resume)
        check_same_on_every_rank(self.state.step, world, "the step to resume from",
                                 "give every process the same --out folder (shared between machines)")
        self.net = data_parallel(self.model, world, device)  # the optimizer and EMA work on the model itself
        if overwrite and self.main:
            clear_earlier_run(out_dir)
        self._start_loop(progress and self.main)

    def _resume_or_start(self, resume: bool) -> RunState:
        """Where the run starts: the checkpoint's state (loaded into the model, EMA and Adam) or step 0."""
        ckpt = self.out_dir / CHECKPOINT
        if resume and ckpt.exists():
            defaults = {"training": asdict(TrainConfig()), "diffusion": asdict(DiffusionConfig())}
            state = resume_from(ckpt, self.model, self.ema, self.opt, self.card, self.sprites.steps_per_epoch,
                                self.total_steps, defaults)
            if self.main:
                print(f"resuming from step {state.step} ({ckpt})")
            return state
        if resume and self.main:
            print(f"no checkpoint in {self.out_dir}; starting from scratch")
        return RunState()

    def _start_loop(self, progress: bool) -> None:
        """The progress bar, the clock, and on a GPU the graphed step (its warm-up counts as training time)."""
        config = self.config
        self.bar = tqdm(total=self.total_steps, initial=self.state.step, disable=not progress, desc="train", unit="step")
        self.checkpoints = _Checkpoints(self.out_dir / CHECKPOINT, self.world)  # and the clock
        self.model.train()  # (captured in this mode)
        self.graphed, self.default_gen = None, None
        self.pending: list[torch.Tensor] = []  # losses not read back yet: on a GPU a read waits for all queued work
        if not config.cuda_graph:
            return
        # its noise comes from the GPU's default generator, set here and saved in checkpoints
        self.default_gen = _seeded_default_generator(self.device, config.seed, self.state)
        if self.sprites.n >= config.batch_size:  # the graph runs full batches; an epoch's short last batch runs eagerly
            self.graphed = GraphedTrainStep(self.model, self.opt, self._loss,
                                            config.batch_size, self.device)

    def _loss(self, idx):
        """The graphed step's loss: its randomness from the GPU's default generator."""
        return self.objective(self.model, self.schedule, *self.sprites.batch(idx, None), gen=None,
                              context_dropout=self.config.context_dropout, precision=self.config.precision)

    def gradient_step(self, idx) -> torch.Tensor:
        """``train_step`` on these sprites; its randomness keyed by (seed, step), or on a GPU the graph's generator,
        whose replay (``GraphedTrainStep``) takes the whole step at a full batch."""
        if self.graphed is not None and len(idx) == self.config.batch_size:
            return self.graphed(idx)
        part = shard(idx, self.world)  # this rank's sprites of the global batch (all of them in one process)
        where, w = noise_device(self.device), self.world
        key = self.state.step * w.world_size + w.rank  # each rank draws its own noise; one process: the step
        keyed = not self.config.cuda_graph  # else the default generator, as the graph draws
        gen = keyed_rng(self.config.seed, Stream.NOISE, key, device=where) if keyed else None
        augment_gen = keyed_rng(self.config.seed, Stream.AUGMENT, key, device=where) if keyed else None
        return train_step(self.net, self.opt, self.schedule, *self.sprites.batch(part.indices, augment_gen), gen=gen,
                          context_dropout=self.config.context_dropout, precision=self.config.precision,
                          weight=part.weight, objective=self.objective)

    def after_step(self, signum) -> None:
        """Read the losses back now and then, close epochs, write checkpoints and snapshots; stop on a signal
        that reached any rank (every rank at the same step)."""
        config, state, step = self.config, self.state, self.state.step
        end_of_epoch = step % self.sprites.steps_per_epoch == 0
        periodic = config.checkpoint_every and step % config.checkpoint_every == 0
        signum = agreed_signal(signum, self.world, now=end_of_epoch or periodic or step % LOSS_READ_EVERY == 0)
        checkpoint_due = (end_of_epoch or signum or periodic
                          or (config.checkpoint_minutes and step % LOSS_READ_EVERY == 0
                              and self.checkpoints.clock_due(config.checkpoint_minutes)))
        if checkpoint_due or step % LOSS_READ_EVERY == 0:
            self._read_losses()  # raises TrainingDiverged before a bad step can reach a checkpoint
            self.bar.set_postfix(loss=f"{np.mean(state.running[-100:]):.4f}" if state.running else "–")
        self.bar.update(1)
        if end_of_epoch:
            state.losses.append(float(np.mean(state.running)))
            state.running.clear()
        if checkpoint_due:
            self._save_checkpoint()
        epoch = step // self.sprites.steps_per_epoch
        if end_of_epoch and epoch in config.snapshot_epochs and self.main:
            save_model(self.ema.model, self.out_dir / "snapshots" / f"epoch_{epoch:02d}.safetensors",
                       {**self.card, "epoch": epoch, "step": step}, half=True)
        if signum:
            self.bar.close()
            wait_for_all(self.world)  # rank 0's checkpoint is on disk before any rank ends
            raise TrainingInterrupted(f"stopped by signal {signum} at step {step}; "
                                      f"checkpoint saved — continue with --resume", signum)

    def _read_losses(self) -> None:
        # every rank reads at the same steps; under torchrun the ranks' weighted losses average to the batch's
        values = average_over_ranks(torch.stack(self.pending), self.world).tolist() if self.pending else []
        self.pending.clear()
        for j, value in enumerate(values):
            if not math.isfinite(value):
                self.bar.close()
                raise TrainingDiverged(f"loss became {value} at step {self.state.step - len(values) + j}; "
                                       f"{self.checkpoints.kept()} — try a lower --lr")
        self.state.running.extend(values)

    def _save_checkpoint(self) -> None:
        self.checkpoints.save(self.state, self.model, self.ema.model, self.opt, self.card, self.default_gen)

    def finish(self) -> dict:
        """The last losses, a final checkpoint, and the EMA weights with their card."""
        self._read_losses()
        self.bar.close()
        self._save_checkpoint()
        final = _final_card(self.card, self.config, self.state, self.sprites.n, self.device, self.world)
        return save_model(self.ema.model, self.out_dir / MODEL, final) if self.main else final


class _Checkpoints:
    """The run's checkpoint file: written (by rank 0) once the weights are checked, with the training time so far;
    and the clock that ``checkpoint_minutes`` reads. Made as the loop starts: the clock starts with it."""

    def __init__(self, path: Path, world):
        self.path, self.world = path, world
        self.t_start = self.written_at = time.perf_counter()

    def kept(self) -> str:
        """What a diverged run leaves behind, for its message."""
        return f"kept the last good checkpoint {self.path}" if self.path.exists() else "no checkpoint had been written yet"

    def clock_due(self, minutes: float) -> bool:
        """Whether ``minutes`` have passed since the last checkpoint, on any rank (so on every rank alike)."""
        due = time.perf_counter() - self.written_at >= 60 * minutes
        return due if self.world.world_size == 1 else any_rank(due, self.world)

    def save(self, state: RunState, model, ema_model, opt, card: dict, gen: torch.Generator | None) -> None:
        """Write the checkpoint of ``state``, with the position of ``gen`` (a --cuda-graph run's generator)."""
        now = time.perf_counter()
        state.wall_time_s, self.t_start, self.written_at = state.wall_time_s + now - self.t_start, now, now
        if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():  # one read-back
            raise TrainingDiverged(f"weights became NaN or infinite by step {state.step}; {self.kept()} — try a lower --lr")
        # running (this epoch's losses so far) too, so that a resumed run's epoch loss averages the whole epoch
        state.cuda_rng = None if gen is None else {"seed": gen.initial_seed(), "offset": gen.get_offset()}
        if is_main(self.world):  # the ranks hold the same weights and Adam state: one copy is the run's
            save_checkpoint(self.path, model, ema_model, opt, card, state)


def _seeded_default_generator(device: torch.device, seed: int, state: RunState) -> torch.Generator:
    """The GPU's default generator, which a --cuda-graph run's noise comes from (the graph replays it), at the
    position ``state`` saved; with none saved (a fresh run, or one that ran without a graph until now), seeded
    for this step."""
    gen = cuda_generator(device)
    gen.manual_seed(state.cuda_rng["seed"] if state.cuda_rng else _seed_for(seed, Stream.NOISE, state.step))
    gen.set_offset(state.cuda_rng["offset"] if state.cuda_rng else 0)
    return gen


class _Sprites:
    """The training sprites, held on the device as one tensor, and each step's batch of them."""

    def __init__(self, data: SpriteData, config: TrainConfig, device: torch.device):
        self.x = sprites_to_tensor(data.sprites).to(device)  # (N, 3, H, W), the whole set stays in memory
        self.c = torch.from_numpy(data.labels).to(device) if data.labels.shape[1] else None  # (N, K) or None
        self.n = len(self.x)
        self.steps_per_epoch = math.ceil(self.n / config.batch_size)
        self.config, self.device, self.perm_epoch = config, device, -1

    def indices(self, step: int) -> torch.Tensor:
        """(B,) indices of ``step``'s sprites, from its epoch's shuffle, keyed by (seed, epoch); an epoch's last
        batch is short when the batch size does not divide N."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self.perm_epoch != epoch:
            self.perm = torch.randperm(self.n, generator=keyed_rng(self.config.seed, Stream.SHUFFLE, epoch)).to(self.device)
            self.perm_epoch = epoch
        return self.perm[k * self.config.batch_size:(k + 1) * self.config.batch_size]

    def batch(self, idx, augment_gen) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x0: (B, 3, H, W) in [-1, 1] (flipped and jittered with ``augment_gen`` under --augment); c: (B, K) or None."""
        x0 = self.x[idx]
        if self.config.augment:
            x0 = _augment(x0, augment_gen)
        return x0, None if self.c is None else self.c[idx]


def _run_config(config: TrainConfig, device: torch.device, world) -> TrainConfig:
    """The recipe checked, with cuda_graph decided (on for one process on CUDA) for this rank's device."""
    config = check_train_config(config)
    check_batch_size(config.batch_size, world)
    if config.cuda_graph and world.world_size > 1:
        raise BadInput("--cuda-graph replays one process's step; under torchrun drop it (DDP's steps run eagerly)")
    if config.cuda_graph is None:
        config = replace(config, cuda_graph=device.type == "cuda" and world.world_size == 1)
    if config.cuda_graph and device.type != "cuda":
        raise BadInput(f"--cuda-graph needs a CUDA GPU and this run is on {device.type}; drop --cuda-graph or use --device cuda")
    return config


def _final_card(card: dict, config: TrainConfig, state: RunState, n: int, device: torch.device, world) -> dict:
    """The card the model file carries: the run's card with what the run did."""
    earlier = card.get("init_from", {}).get("images_seen_total", 0)
    seen = config.epochs * n  # each epoch's last batch is short when the batch size does not divide n
    final = {**card, "epochs_done": config.epochs, "steps": state.step, "images_seen": seen,
             "images_seen_total": earlier + seen, "final_loss": state.losses[-1] if state.losses else None,
             "epoch_losses": [round(v, 5) for v in state.losses], "wall_time_s": round(state.wall_time_s, 1),
             "hardware": hardware_name(device), "torch": torch.__version__}
    if world.world_size > 1:
        final["hardware"] = f"{world.world_size} processes on {final['hardware']}"
    if "distillation" in card:  # this round's cost beside the earlier rounds' (the teacher's card had theirs)
        *earlier_rounds, this = card["distillation"]["rounds"]
        this = {**this, **{k: final[k] for k in ("steps", "images_seen", "wall_time_s", "hardware", "command")}}
        final["distillation"] = {**card["distillation"], "rounds": [*earlier_rounds, this]}
    return final


def _model_config(model_config: ModelConfig | None, data: SpriteData | None) -> ModelConfig:
    """The model for these sprites (procedural ones are 16×16 in 5 classes), checked against them."""
    height, n_classes = (SIZE, len(CLASS_NAMES)) if data is None else (data.sprites.shape[1], data.labels.shape[1])
    model_config = model_config or ModelConfig(height=height, n_cfeat=max(n_classes, 1))
    if model_config.height != height:
        raise BadInput(f"sprites are {height}×{height} but the model is built for height={model_config.height}")
    if n_classes and model_config.n_cfeat != n_classes:
        raise BadInput(f"the data has {n_classes} classes but the model has n_cfeat={model_config.n_cfeat}")
    return model_config


def _card(model_config, diffusion, config, data, n: int, command: str) -> dict:
    return {
        "format": "diffusion_utilities/1",
        "model": asdict(model_config),
        "diffusion": asdict(diffusion),
        "training": asdict(config),
        "data": {**{k: v for k, v in data.meta.items() if k != "files"}, "count": n},
        "class_names": data.class_names,
        "command": command,
    }


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


def diffusion_loss(model, schedule, x0, c=None, *, gen=None, context_dropout: float = 0.0,
                   precision: str = "fp32") -> torch.Tensor:
    """DDPM Algorithm 1's loss on one batch: ‖ε − ε_θ(√ᾱ_t·x0 + √(1−ᾱ_t)·ε, t/T, c)‖².

    The schedule says what differs for the other objectives, in the lines marked (*):
      v-prediction (Salimans & Ho 2022): the target is v = √ᾱ_t·ε − √(1−ᾱ_t)·x0;
      flow matching (Lipman et al. 2023): t ~ U[0, 1), x_t = (1 − t)·x0 + t·ε, target ε − x0.

    gen draws, in this order, the noise ε, the times t and the context dropout; None
    draws from x0's device's default generator (what a CUDA graph can replay).
    """
    b, device = x0.shape[0], x0.device
    where = gen.device if gen is not None else device  # draw on the generator's device, use on x0's
    noise = torch.randn(x0.shape, generator=gen, device=where).to(device)
    t = schedule.sample_t(b, gen, where).to(device)  # (*)
    c = _drop_context(c, context_dropout, gen, where)
    x_t = schedule.add_noise(x0, t, noise)  # (*)
    pred = training_forward(model, precision)(x_t, schedule.model_time(t), c)  # channels_last, bf16 autocast: engine.py
    return F.mse_loss(pred, schedule.target(x0, noise, t))  # (*)


def _drop_context(c, p: float, gen, where):
    """Zero each sprite's context with probability p: zeroed rows mean "no context" (classifier-free guidance)."""
    if c is None:
        return None
    keep = (torch.rand(c.shape[0], generator=gen, device=where) >= p).to(c.device)
    return c * keep[:, None]


def distillation_loss(model, schedule, x0, c=None, *, teacher, steps: int, substeps: int = 2, gen=None,
                      context_dropout: float = 0.0, precision: str = "fp32", inputs: str = "data") -> torch.Tensor:
    """Progressive distillation's loss on one batch (Salimans & Ho 2022, Algorithm 2; distillation.py):
    ‖ṽ − v_θ(x_t, t/T, c)‖² at a time t of the student's N-step grid, where ṽ is the output that takes
    x_t in one DDIM step to where the teacher's two (substeps) steps take it. gen draws ε, the step and the context
    dropout; the teacher sees the same (dropped) context, so guided sampling is distilled too. inputs "student":
    x_t is where the student's own steps from the noise take it (``own_steps``), not x0 noised."""
    b, device = x0.shape[0], x0.device
    where = gen.device if gen is not None else device
    noise = torch.randn(x0.shape, generator=gen, device=where).to(device)
    i = torch.randint(0, steps, (b,), generator=gen, device=where).to(device)
    c = _drop_context(c, context_dropout, gen, where)
    times = student_times(schedule, steps, i, substeps)
    x_t = own_steps(model, schedule, noise, i, steps, c) if inputs == "student" else schedule.add_noise(x0, times[0], noise)
    target = target_along(teacher, schedule, x_t, times, c)
    pred = training_forward(model, precision)(x_t, schedule.model_time(times[0]), c)
    return F.mse_loss(pred, target)


def train_step(model, opt, schedule, x0, c=None, *, gen=None, context_dropout: float = 0.0,
               precision: str = "fp32", weight: float = 1.0, objective=diffusion_loss) -> torch.Tensor:
    """One step of DDPM Algorithm 1; returns the loss (a 0-dim tensor, not read back: no host sync).

    x0: (B, C, H, W) clean sprites in [-1, 1]; c: (B, K) contexts or None; gen: a generator (on
    the CPU or on x0's GPU), or None for the device's default one: see ``diffusion_loss``.
    precision "bf16": the forward pass under bfloat16 autocast, the loss in fp32.
    """
    loss = objective(model, schedule, x0, c, gen=gen, context_dropout=context_dropout, precision=precision)
    if weight != 1.0:
        loss = loss * weight
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def _check_tensor_memory(n: int, height: int, copies: int = 1) -> None:
    """The float32 copies of the sprites (one per process on this machine) must fit in host memory
    (sprites_to_tensor converts in place)."""
    held = f"holding {n:,} sprites as float32 tensors" + (f" in each of {copies} processes" if copies > 1 else "")
    check_memory(copies * n * 3 * height * height * 4, held, "train on fewer sprites (--n-sprites, or a smaller --data set)")


def _objective(config: TrainConfig, teacher: Path | None, model_config: ModelConfig, diffusion, device):
    """The loss a step takes (``diffusion_loss``, or ``distillation_loss`` with its teacher, checked) and what the
    card says of a distillation: {} or {"distillation": ..., "sampler": ...}."""
    n = config.distill_steps
    if not n and teacher is None:
        for given, what in ((config.teacher_substeps != 2, "--teacher-substeps is distillation's (the teacher's steps "
                             "per student step)"), (config.distill_inputs != "data", "--distill-inputs is distillation's "
                                                   "(where a student's x_t comes from)")):
            if given:
                raise BadInput(f"{what}: add --teacher and --distill-steps, or drop it")
        return diffusion_loss, {}
    if teacher is None:
        raise BadInput(f"--distill-steps {n} distils a --teacher into a student; give the teacher's weights "
                       f"(e.g. --teacher weights/sprites_v.safetensors)")
    if not n:
        raise BadInput("--teacher is the model a student is distilled from: add --distill-steps N, the student's "
                       "DDIM steps (half the teacher's)")
    k = config.teacher_substeps
    net, card = _load_teacher(Path(teacher), n, k, model_config, diffusion)
    net = net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
    rounds = (card.get("distillation") or {}).get("rounds", [])
    section = {"method": "progressive distillation (Salimans & Ho 2022, Algorithm 2)",
               "teacher": {"file": Path(teacher).name, "sha256": sha256_file(teacher), "sampler": "ddim",
                           "steps": k * n},
               "rounds": [*rounds, {"teacher_steps": k * n, "student_steps": n, "inputs": config.distill_inputs}]}
    loss = functools.partial(distillation_loss, teacher=net, steps=n, substeps=k, inputs=config.distill_inputs)
    return loss, {"distillation": section, "sampler": {"sampler": "ddim", "steps": n}}


def _load_teacher(path: Path, n: int, k: int, model_config: ModelConfig, diffusion) -> tuple[ContextUnet, dict]:
    """The --teacher weights and card, checked: found, the student's model and schedule, k·n steps on its grid."""
    if not path.exists():
        raise BadInput(f"--teacher weights not found: {path}")
    net, card = load_model(path)
    if asdict(net.config) != asdict(model_config):
        raise BadInput(f"a student has its teacher's shape and here they differ ({_mismatch(asdict(net.config), asdict(model_config))}); "
                       f"drop the model options (--n-feat) or pick another teacher")
    theirs = {**asdict(DiffusionConfig()), **(card.get("diffusion") or {})}
    if theirs != asdict(diffusion):
        raise BadInput(f"a student samples on its teacher's schedule and here they differ "
                       f"({_mismatch(theirs, asdict(diffusion))}); give the teacher's schedule options")
    if diffusion.objective != "diffusion":
        raise BadInput("progressive distillation here distils a diffusion model's DDIM steps; the teacher is a flow "
                       "model: distil the v-model (weights/sprites_v.safetensors) instead")
    if k * n > diffusion.timesteps:
        raise BadInput(f"--distill-steps {n}: the teacher's {k}×{n} steps do not fit its T = {diffusion.timesteps}; "
                       f"take at most {diffusion.timesteps // k}")
    taught = (card.get("sampler") or {}).get("steps")
    if taught is not None and k != 2:
        raise BadInput(f"the teacher {path} is a student (it samples in {taught} steps): later rounds halve its steps; "
                       f"drop --teacher-substeps")
    if taught is not None and taught != 2 * n:
        raise BadInput(f"the teacher {path} samples in {taught} DDIM steps, so its student takes half as many: "
                       + (f"--distill-steps {taught // 2}" if taught % 2 == 0 else "it cannot be halved"))
    return net, card


def _mismatch(teacher: dict, student: dict) -> str:
    return ", ".join(f"{k}: teacher {teacher.get(k)}, student {student.get(k)}" for k in teacher
                     if teacher.get(k) != student.get(k))


def load_start(path: Path, model_config: ModelConfig) -> tuple[ContextUnet, dict]:
    """The --init-from weights and card, checked (found, finite, a matching model) before any work."""
    if not path.exists():
        raise BadInput(f"--init-from weights not found: {path}")
    start, start_card = load_model(path)
    # The number of classes may differ, and so may the diffusion config: a course model is a good start
    # for a v-model on a rescaled schedule (the card keeps the start's config under init_from).
    theirs, ours = start.config, model_config
    if theirs.height != ours.height:  # the sprites decide the height, not an option
        h, H = theirs.height, ours.height
        raise BadInput(f"{path} is a model of {h}×{h} sprites and this run trains on {H}×{H} ones; start from a "
                       f"{H}×{H} model, train on {h}×{h} sprites (--data), or drop --init-from")
    if theirs.n_feat != ours.n_feat:
        raise BadInput(f"{path} has n_feat={theirs.n_feat} and this run n_feat={ours.n_feat}; pass "
                       f"--n-feat {theirs.n_feat} or drop --init-from")
    if theirs.in_channels != ours.in_channels:
        raise BadInput(f"{path} takes {theirs.in_channels}-channel images and this run's model "
                       f"{ours.in_channels}; drop --init-from")
    seen = start_card.get("images_seen_total", start_card.get("images_seen", 0))  # added to this run's at the end
    whole_number(seen, f"images_seen_total in {path}'s card", 0)
    return start, start_card


def _warm_start(path: Path, loaded: tuple[ContextUnet, dict], model, ema, card: dict) -> dict:
    """Load the --init-from weights (from ``load_start``) into the model and its EMA; returns what the card
    records about them."""
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


def check_train_config(config: TrainConfig) -> TrainConfig:
    """The recipe as plain numbers, checked in one BadInput line: what train checks first, and the SageMaker
    launcher before it uploads anything."""
    config = _plain_numbers(config)
    _check_config(config)
    return config


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
        if "min" in f.metadata:
            whole_number(v, f.name, f.metadata["min"])
    if not 0 < config.lr < 1:  # Adam with a step of 1 or more diverges at once (and 1e300 overflows float32)
        raise BadInput(f"lr must be a number between 0 and 1 (the course's is 1e-3), got {config.lr}")
    whole_number(config.seed, "seed", 0, 2**63 - 1)
    outside = [e for e in config.snapshot_epochs if not 1 <= e <= config.epochs]
    if outside:
        raise BadInput(f"snapshot_epochs {outside} are outside this run's epochs 1..{config.epochs}")
    if not 0 <= config.context_dropout < 1:
        raise BadInput(f"context_dropout must be in [0, 1), got {config.context_dropout}")
    if config.distill_inputs not in DISTILL_INPUTS:
        raise BadInput(f"distill_inputs must be one of {', '.join(DISTILL_INPUTS)}, got {config.distill_inputs!r}")
    if config.precision not in PRECISIONS:
        raise BadInput(f"precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
    if config.checkpoint_minutes is not None:
        real_number(config.checkpoint_minutes, "checkpoint_minutes", 0, hint="(0: none on the clock)")
    if not 0 <= config.ema_decay < 1:
        raise BadInput(f"ema_decay must be in [0, 1), got {config.ema_decay}")
    if not (config.cuda_graph is None or isinstance(config.cuda_graph, bool)):
        raise BadInput(f"cuda_graph must be True, False or None (on for CUDA), got {config.cuda_graph!r}")
