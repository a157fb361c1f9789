"""Training on several processes: torchrun's ranks, each rank's part of a batch, and SageMaker's container.

``torchrun --nproc_per_node N -m diffusion_utilities train ...`` starts N copies of the command;
torchrun tells each one who it is through WORLD_SIZE, RANK and LOCAL_RANK. The copies train one
model with DistributedDataParallel: every rank holds the same weights, runs its part of each
global batch, and DDP averages the gradients, so the step is the single-process step on the whole
batch. What each piece here is for:

- ``distributed_context(device)``: a ``World(rank, world_size, local_rank)`` for the run, with the
  process group set up (NCCL on GPUs, gloo on CPUs) and torn down. One process: ``World(0, 1, 0)``
  and nothing is set up, so a single process runs exactly as before.
- ``rank_device(device, world)``: GPU LOCAL_RANK for each rank on a machine.
- ``shard(batch, world)``: this rank's part of one global batch. The batch size and learning rate
  keep their single-process meaning: ``--batch-size 100`` on 4 ranks is 25 sprites a rank.
- ``any_rank(flag, world)``: True on every rank if it is True on one; ``agreed_signal`` uses it so
  that a SIGTERM sent to one rank makes all of them checkpoint once and stop at the same step.
- ``agreed_checks(world)`` and ``is_main()``: a bad input is refused on every rank and reported
  once, by rank 0 (see ``agreed_checks``).
- ``convert_sync_batchnorm(model, world)``: BatchNorm over the global batch where PyTorch can
  (CUDA), and the reason it stays per rank on CPUs.
- ``data_parallel(model, world, device)``: the model under DistributedDataParallel (itself in one process).
- ``sagemaker_env()``: the folders of a SageMaker training container (data channel, model folder,
  checkpoint folder), or None outside one.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .errors import BadInput

__all__ = ["World", "SINGLE", "torchrun_world", "distributed_context", "rank_device", "is_main", "shard", "Shard",
           "check_batch_size", "check_same_on_every_rank", "any_rank", "agreed_signal", "average_over_ranks", "wait_for_all", "agreed_checks",
           "convert_sync_batchnorm", "data_parallel", "SageMakerEnv", "sagemaker_env", "SAGEMAKER_CHECKPOINTS",
           "SAGEMAKER_CHECKPOINT_MINUTES"]


@dataclass(frozen=True)
class World:
    """Who this process is in a run: rank in 0..world_size-1, and local_rank among the ranks on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # ranks on this machine (torchrun's LOCAL_WORLD_SIZE)


SINGLE = World()  # a plain `python -m diffusion_utilities train`


def torchrun_world(environ: Mapping[str, str] = os.environ) -> World:
    """The World that torchrun's variables describe; SINGLE when they are not set."""
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
    given = [n for n in names if n in environ]
    if not given:
        return SINGLE
    if len(given) < len(names):
        missing = ", ".join(n for n in names if n not in environ)
        raise BadInput(f"{', '.join(given)} set but not {missing}; start several processes with torchrun, "
                       f"or unset {', '.join(given)} for one")
    try:
        world_size, rank, local_rank = (int(environ[n]) for n in names)
        local_world_size = int(environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    except ValueError:
        shown = " ".join(f"{n}={environ[n]!r}" for n in (*names, "LOCAL_WORLD_SIZE") if n in environ)
        raise BadInput(f"torchrun's variables must be whole numbers, got {shown}; start with torchrun") from None
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank < local_world_size <= world_size):
        raise BadInput(f"RANK={rank} LOCAL_RANK={local_rank} do not fit WORLD_SIZE={world_size}, "
                       f"LOCAL_WORLD_SIZE={local_world_size}; start with torchrun")
    return World(rank, world_size, local_rank, local_world_size)


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device this rank trains on: ``device`` itself in one process; under torchrun, CUDA GPU
    LOCAL_RANK (one GPU a rank) or the CPU. Every rank checks the same things, so a refusal is the
    same on all of them (and printed once, by rank 0)."""
    device = torch.device(device)
    if world.world_size == 1:
        return device
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise BadInput(f"several processes train on CUDA GPUs or on the CPU, not on {device.type}; "
                       f"use --device cuda or --device cpu, or run one process")
    if device.index is not None:
        raise BadInput(f"--device {device} names one GPU, but torchrun's {world.local_world_size} processes on this "
                       f"machine each need their own; give --device cuda (rank i takes GPU i)")
    if torch.cuda.device_count() == 0:
        raise BadInput("--device cuda, but this machine has no CUDA GPU; use --device cpu")
    if world.local_world_size > torch.cuda.device_count():
        raise BadInput(f"torchrun started {world.local_world_size} processes on this machine, which has "
                       f"{torch.cuda.device_count()} GPUs; use --nproc_per_node {torch.cuda.device_count()}")
    return torch.device("cuda", world.local_rank)


@contextmanager
def distributed_context(device: torch.device, environ: Mapping[str, str] = os.environ):
    """``with distributed_context(device) as world:`` the run's World, its process group set up.

    NCCL for CUDA devices (each rank on GPU LOCAL_RANK, made its current device), gloo for the CPU.
    One process yields SINGLE and sets nothing up. On a normal exit every rank waits for the others
    (so rank 0's last writes are done before any rank ends), then the group is torn down; after an
    exception it is torn down without waiting, since another rank may never arrive.
    """
    world = torchrun_world(environ)
    if world.world_size == 1:
        yield world
        return
    device = rank_device(device, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield world
        dist.barrier()
    finally:
        dist.destroy_process_group()


def is_main(world: World | None = None) -> bool:
    """Whether this process is rank 0: the one that writes files, shows progress and reports errors.

    world None: the world torchrun's variables describe, for the command line's error handler. Variables
    that describe no torchrun world (a stray RANK=1, RANK=abc) make every process the main one: a
    message about them, or any other, must not be swallowed because of them.
    """
    if world is None:
        try:
            world = torchrun_world()
        except BadInput:
            return True
    return world.rank == 0


def check_batch_size(batch_size: int, world: World) -> None:
    """Refuse a global batch that does not split evenly over the ranks, before any work.

    Unequal parts would work (see ``shard``), but every full step would then weight some ranks'
    sprites more than others' in its gradient, and take as long as the largest part.
    """
    if batch_size % world.world_size:
        lower = batch_size - batch_size % world.world_size
        hint = f"e.g. {lower} or {lower + world.world_size}" if lower else f"e.g. {world.world_size}"
        raise BadInput(f"--batch-size {batch_size} does not split evenly over {world.world_size} processes; "
                       f"give a multiple of {world.world_size} ({hint})")


class Shard(NamedTuple):
    """This rank's part of a global batch; ``weight`` scales its mean loss (see ``shard``)."""

    indices: torch.Tensor
    weight: float


def shard(batch: torch.Tensor, world: World) -> Shard:
    """This rank's part of one global batch of indices, ``batch``: (B,) -> (about B / world_size,).

    Step k of an epoch trains on ``perm[k*B:(k+1)*B]`` in one process; under torchrun every rank
    computes the same permutation and takes its own contiguous part of that slice, so the ranks
    together see each sprite of the epoch exactly once, as one process does, and the global batch
    B keeps its meaning.

    A full batch splits evenly (``check_batch_size``) and the weight is 1. An epoch's last batch
    may be short: its parts then differ by at most one sprite, and DDP's average of the ranks'
    gradients is the single-process gradient of the whole batch only if rank r's mean loss is
    scaled by ``weight = world_size * n_r / B``. A rank left with no sprite (a last batch shorter
    than the world) runs the first one with weight 0: DDP needs every rank in every backward pass.
    """
    if world.world_size == 1:
        return Shard(batch, 1.0)
    b, r, w = len(batch), world.rank, world.world_size
    start, stop = r * b // w, (r + 1) * b // w  # part sizes differ by at most one
    if stop > start:
        return Shard(batch[start:stop], w * (stop - start) / b)
    return Shard(batch[:1], 0.0)


def _collective_device() -> torch.device:
    """NCCL reduces tensors on the rank's GPU, gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank if ``flag`` is True on any of them (an all-reduce with MAX).

    Every rank must call it at the same step. One process: ``flag`` itself, with no collective, so a
    single process is unchanged. Each call waits for the slowest rank; on a GPU it also waits for the
    queued work, so call it where the loop reads back anyway if a profile shows it.
    """
    if world.world_size == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def agreed_signal(signum: int | None, world: World, now: bool) -> int | None:
    """A SIGINT/SIGTERM that reached any rank, on every rank at the same step (one process: as it is).

    The ranks compare notes only when ``now``: at the steps where they read their losses back anyway,
    since on a GPU each comparison waits for the queued work. Every rank must pass the same ``now``.
    """
    if world.world_size == 1:
        return signum
    if not now:
        return None
    return (signum or signal.SIGTERM) if any_rank(signum is not None, world) else None


def average_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``values`` over the ranks (each rank gets it); ``values`` itself in one process.

    For the losses the card records: each rank's weighted shard loss (``shard``) averages to the
    loss of the whole global batch, the number one process records.
    """
    if world.world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / world.world_size


def wait_for_all(world: World) -> None:
    """A barrier: no rank goes on until every rank has arrived (nothing in one process).

    After rank 0 saves the checkpoint of an interrupted run and before every rank raises: otherwise a
    rank that exits first makes torchrun stop the others, rank 0 in the middle of its write.
    """
    if world.world_size > 1:
        dist.barrier()


@contextmanager
def agreed_checks(world: World):
    """A block whose BadInput, raised on any rank, is raised on every rank, so that all of them stop.

    For checks that only some ranks make (rank 0 locks and inspects --out) or whose answer can
    differ between ranks: without this, the ranks that passed would wait in the next collective
    until torchrun kills them. The ranks swap one message each (None: passed) and all raise the
    lowest rank's message. The command line prints a BadInput only on rank 0 (``is_main()``), so
    the message appears once. One process: the block's own exception, unchanged.

    Checks every rank makes alike (arguments, the data folder, ``rank_device``) need no block: they
    fail the same way on every rank, before any collective. Other exceptions pass straight through:
    torchrun stops the other ranks when this one exits.
    """
    error = None
    try:
        yield
    except BadInput as e:
        error = e
    if world.world_size > 1:
        messages = [None] * world.world_size
        dist.all_gather_object(messages, None if error is None else str(error))
        first = next((m for m in messages if m is not None), None)
        if first is not None and (error is None or str(error) != first):
            raise BadInput(first) from None
    if error is not None:
        raise error


def check_same_on_every_rank(value, world: World, what: str, fix: str) -> None:
    """One BadInput line on every rank unless ``value`` is the same on all of them (nothing to check in one process).

    For what each rank works out alone but all must share, such as the step a run resumes from: ranks
    that read different checkpoints would otherwise train out of step, or wait for each other forever.
    """
    if world.world_size == 1:
        return
    values = [None] * world.world_size
    dist.all_gather_object(values, value)
    if len(set(map(repr, values))) > 1:
        seen = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
        raise BadInput(f"the processes disagree on {what} ({seen}); {fix}")


def data_parallel(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """``model`` under DistributedDataParallel, which averages the ranks' gradients in backward (and starts
    every rank from rank 0's weights); ``model`` itself in one process."""
    if world.world_size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def convert_sync_batchnorm(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """BatchNorm statistics over the global batch on GPUs; per rank on CPUs, where PyTorch has none.

    On CUDA with several ranks the BatchNorm2d layers become SyncBatchNorm (same parameters and
    buffers, so checkpoints and the EMA copy are unchanged): each training step normalises with
    the mean and variance of the whole global batch, as one process does. Call it before wrapping
    the model in DDP.

    On CPUs it returns ``model`` unchanged. SyncBatchNorm refuses CPU tensors: measured with torch
    2.14.1, 2 gloo processes on this CPU, its forward raises "ValueError: SyncBatchNorm expected
    input tensor to be on GPU or XPU or privateuseone". Each rank then normalises with its own
    part's statistics (B / world_size sprites, times every pixel of each feature map); DDP copies
    rank 0's running statistics to every rank at each forward, so all ranks (and the EMA) keep
    rank 0's. How much that matters, measured with tools/ddp_throughput.py --bn (the course's trained
    weights in training mode, 5 batches, docs/measurements/cpu_2026-12-02_ddp_batchnorm.json): the
    gradient of 2 × 50 sprites normalised apart is within cosine 0.92-0.98 of the gradient of the
    100 normalised together, while two different batches of 100 give near-orthogonal gradients
    (cosine -0.11 to 0.27), and the loss is 1-6 % higher. A change far inside a step's own noise;
    with more ranks each part is smaller, which was not measured.
    """
    on_cuda = next(model.parameters()).device.type == "cuda"
    if world.world_size > 1 and on_cuda:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


# SageMaker's default local checkpoint folder: "The local directory where checkpoints are written.
# The default directory is /opt/ml/checkpoints/" (CheckpointConfig.LocalPath,
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CheckpointConfig.html). SageMaker
# sets no variable for it (the training toolkit's list, ENVIRONMENT_VARIABLES.md in
# https://github.com/aws/sagemaker-training-toolkit, has none), so sagemaker/launch_training.py
# passes this path as checkpoint_local_path, and DIFFUSION_CHECKPOINT_DIR (ours) overrides it.
# SageMaker copies it to checkpoint_s3_uri while the job runs and back into a restarted job
# (https://docs.aws.amazon.com/sagemaker/latest/dg/model-checkpoints-resume.html).
SAGEMAKER_CHECKPOINTS = Path("/opt/ml/checkpoints")
# In a job, train also checkpoints every this many minutes (TrainConfig.checkpoint_minutes): nothing in the
# training toolkit forwards SIGTERM to torchrun's workers, so a spot interruption may come unannounced and
# lose what the last checkpoint does not hold. A checkpoint of the course's model takes well under a second.
SAGEMAKER_CHECKPOINT_MINUTES = 2.0


@dataclass(frozen=True)
class SageMakerEnv:
    """The folders and machines of a SageMaker training job, as its container's SM_* variables give them."""

    model_dir: Path  # SM_MODEL_DIR (/opt/ml/model): the final weights and card; uploaded as model.tar.gz
    checkpoint_dir: Path  # the run's --out: checkpoints (synced to S3 on spot jobs), snapshots, and resume
    channel: Path | None  # the training data channel's folder, train's --data; None: procedural sprites
    output_data_dir: Path | None  # SM_OUTPUT_DATA_DIR: other outputs, uploaded as output.tar.gz
    num_gpus: int  # SM_NUM_GPUS: GPUs on this instance (torchrun starts one process per GPU)
    hosts: tuple[str, ...]  # SM_HOSTS: the job's instances, ("algo-1", "algo-2", ...)
    current_host: str  # SM_CURRENT_HOST: this instance; hosts[0] runs rank 0


def sagemaker_env(environ: Mapping[str, str] = os.environ) -> SageMakerEnv | None:
    """The training job's folders when this runs in a SageMaker training container, else None.

    The marker is SM_MODEL_DIR, which SageMaker's training toolkit sets for every job (and
    notebook instances do not). The data channel is SM_CHANNEL_TRAINING, else SM_CHANNEL_TRAIN,
    else the first channel SM_CHANNELS lists; a job without channels trains on procedural sprites.
    """
    if not environ.get("SM_MODEL_DIR"):
        return None
    channels = _json_list(environ, "SM_CHANNELS")
    names = ["TRAINING", "TRAIN", *(c.upper() for c in channels)]
    channel = next((environ[f"SM_CHANNEL_{n}"] for n in names if environ.get(f"SM_CHANNEL_{n}")), None)
    try:
        num_gpus = int(environ.get("SM_NUM_GPUS", "0"))
    except ValueError:
        raise BadInput(f"SM_NUM_GPUS={environ['SM_NUM_GPUS']!r} is not a whole number; "
                       f"unset it or give the GPU count") from None
    current = environ.get("SM_CURRENT_HOST", "")
    hosts = tuple(_json_list(environ, "SM_HOSTS")) or ((current,) if current else ())
    return SageMakerEnv(
        model_dir=Path(environ["SM_MODEL_DIR"]),
        checkpoint_dir=Path(environ.get("DIFFUSION_CHECKPOINT_DIR") or SAGEMAKER_CHECKPOINTS),
        channel=Path(channel) if channel else None,
        output_data_dir=Path(environ["SM_OUTPUT_DATA_DIR"]) if environ.get("SM_OUTPUT_DATA_DIR") else None,
        num_gpus=num_gpus, hosts=hosts, current_host=current)


def _json_list(environ: Mapping[str, str], name: str) -> list[str]:
    """A variable holding a JSON list of strings, e.g. SM_CHANNELS='["training"]'; [] when unset."""
    text = environ.get(name)
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise BadInput(f"{name}={text[:80]!r} is not a JSON list of names; unset it or give e.g. '[\"training\"]'")
    return value
