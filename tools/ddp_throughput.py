"""Training throughput of the course recipe in 1 and N processes (DistributedDataParallel), and what
per-rank BatchNorm does to the loss and gradient.

    python tools/ddp_throughput.py --steps 30                      # CPU: 1 process, then torchrun 2 (gloo)
    python tools/ddp_throughput.py --device cuda --procs 1,2,4     # GPUs: NCCL, one process per GPU
    python tools/ddp_throughput.py --bn                            # BatchNorm over 100 sprites vs over 2 × 50

The recipe: ContextUnet(n_feat=64) on 16×16 sprites, global batch 100, Adam, the training loss
``diffusion_loss`` with context dropout 0.1. Each N runs in fresh processes (torchrun --standalone
for N > 1) with DDP around the network, each rank on its ``shard`` of every global batch, as
``train`` does under torchrun. Images per second count the global batch: 100 × steps / the slowest
rank's time, after ``--warmup`` untimed steps. The sprites are random tensors: the speed of a step
does not depend on what the sprites show. OMP_NUM_THREADS is ``--threads`` in every process
(default 1), so N processes use N cores. Prints the load average before and after: on a shared
machine the numbers mean little without it.

--bn answers "does per-rank BatchNorm matter" on the CPU, where SyncBatchNorm does not run (see
distributed.convert_sync_batchnorm): with the course's trained weights in training mode it compares
the loss and gradient of a batch of 100 normalised as one (one process, or SyncBatchNorm) with those
of its two halves normalised apart (2 ranks, as DDP averages them), on the same sprites, noise and
times; and, for scale, the gradient of a different batch of 100.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from diffusion_utilities.data import procedural_dataset, sprites_to_tensor
from diffusion_utilities.distributed import (check_batch_size, convert_sync_batchnorm, distributed_context, is_main,
                                             rank_device, shard)
from diffusion_utilities.model import ContextUnet
from diffusion_utilities.schedule import DiffusionConfig, make_schedule
from diffusion_utilities.engine import make_optimizer
from diffusion_utilities.training import train_step
from diffusion_utilities.weights import load_model_and_schedule

ROOT = Path(__file__).resolve().parents[1]
BATCH, N_FEAT, HEIGHT, CLASSES = 100, 64, 16, 5


def worker(steps: int, warmup: int, device_name: str) -> None:
    """One rank's timed steps; rank 0 prints one JSON line."""
    with distributed_context(torch.device(device_name)) as world:
        device = rank_device(torch.device(device_name), world)
        check_batch_size(BATCH, world)
        # the model, SyncBatchNorm and DDP as training._Run builds them, without its data and bookkeeping
        torch.manual_seed(0)  # every rank builds the same network (DDP also copies rank 0's at the start)
        model = ContextUnet(n_feat=N_FEAT, n_cfeat=CLASSES, height=HEIGHT).to(device, memory_format=torch.channels_last)
        model = convert_sync_batchnorm(model, world)
        net = model if world.world_size == 1 else DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = make_optimizer(model, 1e-3, device)
        schedule = make_schedule(DiffusionConfig()).to(device)
        n = BATCH * (warmup + steps)
        data = torch.Generator().manual_seed(0)
        x_all = (torch.rand(n, 3, HEIGHT, HEIGHT, generator=data) * 2 - 1).to(device)
        c_all = F.one_hot(torch.randint(0, CLASSES, (n,), generator=data), CLASSES).float().to(device)
        perm = torch.randperm(n, generator=data).to(device)
        for step in range(warmup + steps):
            if step == warmup:
                _synchronise(device, world.world_size)
                start = time.perf_counter()
            part = shard(perm[step * BATCH:(step + 1) * BATCH], world)
            gen = torch.Generator(device=device).manual_seed(1000 * step + world.rank)
            train_step(net, opt, schedule, x_all[part.indices], c_all[part.indices], gen=gen, context_dropout=0.1,
                       weight=part.weight)
        _synchronise(device, world.world_size)
        seconds = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
        if world.world_size > 1:
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the run is as fast as its slowest rank
        if is_main(world):
            print(json.dumps({"processes": world.world_size, "steps": steps, "seconds": round(float(seconds), 3),
                              "img_per_s": round(BATCH * steps / float(seconds), 1), "device": str(device),
                              "threads": torch.get_num_threads(), "torch": torch.__version__}))


def _synchronise(device: torch.device, world_size: int) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if world_size > 1:
        dist.barrier()


def measure(procs: list[int], steps: int, warmup: int, device: str, threads: int) -> list[dict]:
    """Run the worker in 1 and N processes, each in fresh processes; their JSON lines."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = str(threads)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    results = []
    for p in procs:
        work = [__file__, "--worker", "--steps", str(steps), "--warmup", str(warmup), "--device", device]
        cmd = [sys.executable, *work] if p == 1 else [torchrun, "--standalone", "--nproc_per_node", str(p), *work]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return results


def batchnorm_study(repeats: int, weights: Path) -> dict:
    """Loss and gradient of 100 sprites normalised together vs as two halves, with trained weights."""
    model, schedule, _ = load_model_and_schedule(weights)
    model.train()  # BatchNorm normalises with the batch's own statistics, as in training
    data = procedural_dataset(BATCH * (repeats + 1), seed=0)
    x_all, c_all = sprites_to_tensor(data.sprites), torch.from_numpy(data.labels).float()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for r in range(repeats):
        batch = [_draw(schedule, x_all, c_all, range(BATCH * k, BATCH * (k + 1)), gen) for k in (r, r + 1)]
        full_loss, full_grad = _loss_and_grad(model, schedule, [batch[0]])
        halves = [tuple(v[:BATCH // 2] for v in batch[0]), tuple(v[BATCH // 2:] for v in batch[0])]
        halves_loss, halves_grad = _loss_and_grad(model, schedule, halves)
        _, other_grad = _loss_and_grad(model, schedule, [batch[1]])
        rows.append({"loss_whole": full_loss, "loss_halves": halves_loss,
                     "loss_change": abs(halves_loss - full_loss) / full_loss,
                     "cos_halves": F.cosine_similarity(full_grad, halves_grad, dim=0).item(),
                     "norm_ratio_halves": (halves_grad.norm() / full_grad.norm()).item(),
                     "cos_other_batch": F.cosine_similarity(full_grad, other_grad, dim=0).item()})
    return {"weights": str(weights), "repeats": rows}


def _draw(schedule, x_all, c_all, rows, gen):
    """x0, c, noise and t for the sprites ``rows``: fixed, so both ways of normalising see the same."""
    x0, c = x_all[list(rows)], c_all[list(rows)]
    return x0, c, torch.randn(x0.shape, generator=gen), schedule.sample_t(len(x0), gen, "cpu")


def _loss_and_grad(model, schedule, parts) -> tuple[float, torch.Tensor]:
    """The mean over ``parts`` of each part's loss, each part through BatchNorm on its own, as DDP
    averages equal ranks; returns (loss, flattened gradient). Not diffusion_loss: both ways of normalising
    must see the same t and noise, drawn once by _draw."""
    model.zero_grad(set_to_none=True)
    total = 0.0
    for x0, c, noise, t in parts:
        x_t = schedule.add_noise(x0, t, noise)
        loss = F.mse_loss(model(x_t, schedule.model_time(t), c), schedule.target(x0, noise, t)) / len(parts)
        loss.backward()
        total += loss.item()
    return total, torch.cat([p.grad.flatten() for p in model.parameters()])


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", default="1,2", help="comma-separated process counts (default 1,2)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU a process)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS in every process")
    p.add_argument("--bn", action="store_true", help="the BatchNorm study instead of the timing")
    p.add_argument("--repeats", type=int, default=5, help="--bn: batches compared")
    p.add_argument("--weights", type=Path, default=ROOT / "weights" / "sprites_ddpm.safetensors")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.steps, a.warmup, a.device)
    before = _loadavg()
    if a.bn:
        print(json.dumps({"loadavg_before": before, **batchnorm_study(a.repeats, a.weights)}, indent=1))
        return
    results = measure([int(s) for s in a.procs.split(",")], a.steps, a.warmup, a.device, a.threads)
    print(f"load average before: {before}; after: {_loadavg()}; {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(f"{'processes':>9} {'img/s':>8} {'per process':>11} {'vs 1':>6}")
    for r in results:
        print(f"{r['processes']:>9} {r['img_per_s']:>8.1f} {r['img_per_s'] / r['processes']:>11.1f} "
              f"{r['img_per_s'] / results[0]['img_per_s']:>5.2f}×")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
