"""Training runs on disk: the locked --out folder, atomic checkpoints, and resuming from them.

A checkpoint (``checkpoint.safetensors``) holds the live weights, the EMA weights, Adam's state and
the run's position and losses, with the run's card; ``resume_from`` refuses one made with other
settings or damaged, before any work. None of it is the algorithm: ``training.train`` is.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import torch

from .errors import BadInput
from .files import out_folder
from .files import remove_stale_temps
from .weights import card_path, read_tensors, save_tensors

__all__ = ["CHECKPOINT", "MODEL", "releases_out_dir_lock", "prepare_out_dir", "clear_earlier_run", "save_checkpoint",
           "resume_from", "checkpoint_problem"]

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"


def save_checkpoint(path: Path, model, ema_model, opt, card: dict, state: dict) -> None:
    """Write weights, EMA weights, Adam's state and ``state`` (the run's position) atomically to ``path``."""
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()},
               **{f"ema.{k}": v for k, v in ema_model.state_dict().items()}}
    opt_tensors, groups = optimizer_tensors(opt)
    save_tensors(path, {**tensors, **opt_tensors}, {**card, "state": {**state, "param_groups": groups}})


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"optim.{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    groups = [{**g, "lr": float(g["lr"])} for g in sd["param_groups"]]  # a capturable Adam's lr is a tensor
    return tensors, groups


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    """Load saved Adam state (its step counts and moments) into ``opt``; every setting stays ``opt``'s own.

    The settings (betas, eps, weight decay, amsgrad, maximize, and the implementation flags) are the
    run's, made from its checked config; a checkpoint's, read back, could turn the run (maximize: true
    trains up the loss) or break it. The lr is the saved one: the run sets it each step from its schedule.
    And safetensors stores every tensor contiguous, while the moments of a channels_last weight must be
    channels_last too: the fused kernel refuses mixed layouts on a GPU and misreads them on a CPU.
    """
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    own = opt.state_dict()["param_groups"]  # the params as indices, which the saved state is keyed by
    tensor_lrs = [g["lr"] if torch.is_tensor(g["lr"]) else None for g in opt.param_groups]
    opt.load_state_dict({"state": state, "param_groups": [{**g, "lr": float(saved["lr"])}
                                                          for g, saved in zip(own, groups)]})
    for g, lr in zip(opt.param_groups, tensor_lrs):  # a capturable Adam keeps its lr tensor (a graph reads it)
        if lr is not None:
            g["lr"] = lr.fill_(float(g["lr"]))
    for p, st in opt.state.items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[name] = torch.empty_like(p).copy_(v)



_HELD: list[int] = []  # the --out folders train() holds locked, as open file descriptors


def lock_out_dir(out_dir: Path) -> None:
    """Lock the --out folder for this train() call: a second run into it, in any process, is refused.

    flock on the folder itself: no lock file is left behind, and the kernel drops the lock when the
    process ends, so a killed run never leaves the folder locked. (No fcntl, on Windows: no lock.)
    """
    try:
        import fcntl  # here: Windows has no fcntl (and no lock)
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


def releases_out_dir_lock(fn):
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



def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create out_dir before any work, and refuse to start a new run over an earlier one."""
    if resume and overwrite:
        raise BadInput("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    out_folder(out_dir, CHECKPOINT, MODEL)
    snapshots = out_dir / "snapshots"
    if snapshots.is_symlink() or (snapshots.exists() and not snapshots.is_dir()):  # never delete or write through it
        raise BadInput(f"{snapshots} is a {'link' if snapshots.is_symlink() else 'file'}, where training keeps its "
                       f"snapshots; move it away, or choose another --out")
    lock_out_dir(out_dir)
    # only now, with the lock held, can no other run be writing them
    remove_stale_temps(out_dir, CHECKPOINT, MODEL, card_path(MODEL).name)
    remove_stale_temps(snapshots, "epoch_*")
    has_checkpoint, has_model = (out_dir / CHECKPOINT).exists(), (out_dir / MODEL).exists()
    if not (has_checkpoint or has_model or resume or overwrite) and any(snapshots.glob("epoch_*")):
        raise BadInput(f"{snapshots} holds another run's snapshots, which this run's would mix with; replace them "
                       f"with --overwrite, or choose another --out")
    if resume and has_model and not has_checkpoint:
        raise BadInput(f"{out_dir} holds a finished model but no {CHECKPOINT} to resume from; start a new run "
                       f"there with --overwrite, or choose another --out")
    if (has_checkpoint or has_model) and not resume and not overwrite:
        hint = "continue it with --resume, replace it" if has_checkpoint else "replace it"
        raise BadInput(f"{out_dir} already holds a training run ({CHECKPOINT if has_checkpoint else MODEL}); "
                       f"{hint} with --overwrite, or choose another --out")


def clear_earlier_run(out_dir: Path) -> None:
    """For --overwrite, once every input has been checked: the old checkpoint and snapshots go.

    model.safetensors stays until the new run replaces it at the end.
    """
    snapshots = out_dir / "snapshots"
    for old in [out_dir / CHECKPOINT, *snapshots.glob("epoch_*.safetensors"), *snapshots.glob("epoch_*.json")]:
        old.unlink(missing_ok=True)



def resume_from(ckpt: Path, model, ema, opt, card, steps_per_epoch: int, total_steps: int, defaults: dict
                ) -> tuple[int, float, list, list, dict | None]:
    """Load a checkpoint into model, ema and opt after checking it fits this run; returns
    (step, wall time, epoch losses, this epoch's losses so far, a --cuda-graph run's generator position).

    defaults: {"training": ..., "diffusion": ...} as dicts, for fields added since the checkpoint was written.
    """
    tensors, saved = read_tensors(ckpt)
    for key, config in defaults.items():
        if isinstance(saved.get(key), dict):  # fields added since the checkpoint was written take their defaults
            config = json.loads(json.dumps(config))
            saved[key] = {**{k: v for k, v in config.items() if k not in saved[key]}, **saved[key]}
    if not isinstance(saved.get("state"), dict) or not any(k.startswith("ema.") for k in tensors):
        raise BadInput(f"{ckpt} is not a training checkpoint (model weights?); move it away, or train into another --out")
    for key in ("model", "diffusion", "training", "data", "init_from"):
        theirs, ours = saved.get(key), card.get(key)
        if key == "training" and isinstance(theirs, dict) and isinstance(ours, dict):  # how the steps run, not
            # what they compute: a GPU run may go on without a graph
            theirs, ours = ({k: v for k, v in d.items() if k != "cuda_graph"} for d in (theirs, ours))
        if theirs != ours:
            raise BadInput(f"{ckpt} was made with a different {key} config ({differences(theirs, ours)}); "
                           f"use the same arguments or another --out folder")
    problem = checkpoint_problem(tensors, saved["state"], model, opt, steps_per_epoch, total_steps)
    if problem:  # now, not minutes into the run (or never: a fresh Adam would pass for a resumed one)
        raise BadInput(f"{ckpt} is damaged: {problem}; restore it, or start the run again with --overwrite")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state = saved["state"]
    load_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")}, state["param_groups"])
    # "running" is missing from checkpoints written before it was saved: their epoch loss after a
    # mid-epoch resume averages only the steps after it, as it always did
    return state["step"], state["wall_time_s"], state["losses"], list(state.get("running", [])), state.get("cuda_rng")


def checkpoint_problem(tensors: dict, state: dict, model, opt, steps_per_epoch: int, total_steps: int) -> str | None:
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
    return _adam_state_problem(tensors, step)


def _adam_state_problem(tensors: dict, step: int) -> str | None:
    """What is wrong with Adam's state tensors (shapes and finiteness already checked), or None."""
    for key, v in tensors.items():
        if key.startswith("optim.") and key.endswith(".step") and not 0 <= float(v) <= step:
            return f"{key} is {float(v):g}, where Adam's step count is from 0 to the run's {step}"
        if key.startswith("optim.") and key.endswith(".exp_avg_sq") and bool((v < 0).any()):
            return f"{key} has negative values, where Adam's second moment is a mean of squares"
    return None


def differences(saved, now) -> str:
    """e.g. "epochs: checkpoint 2, now 1; lr: checkpoint 0.001, now 0.002" (whole values if not both dicts)."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return f"checkpoint {json.dumps(saved)[:80]}, now {json.dumps(now)[:80]}"
    keys = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: checkpoint {json.dumps(saved.get(k))[:60]}, now {json.dumps(now.get(k))[:60]}" for k in keys)
