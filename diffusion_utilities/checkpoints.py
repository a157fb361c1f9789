"""Training runs on disk: the locked --out folder, atomic checkpoints, and resuming from them.

A checkpoint (``checkpoint.safetensors``) holds the live weights, the EMA weights, Adam's state and
the run's position and losses, with the run's card; ``resume_from`` refuses one made with other
settings or damaged, before any work. None of it is the algorithm: ``training.train`` is.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .distributed import sagemaker_env
from .errors import BadInput
from .files import out_folder
from .files import remove_keeping_mode, remove_stale_temps
from .weights import card_path, read_tensors, save_tensors
from .checks import is_real, is_whole

__all__ = ["CHECKPOINT", "MODEL", "RunState", "OutDirLock", "prepare_out_dir", "clear_earlier_run", "save_checkpoint",
           "resume_from", "checkpoint_problem"]

CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"


@dataclass
class RunState:
    """Where a training run stands: what a checkpoint keeps besides the tensors, and what ``resume_from`` returns."""

    step: int = 0  # steps done
    wall_time_s: float = 0.0  # training time so far, over every start of the run
    losses: list[float] = field(default_factory=list)  # the mean loss of each epoch done
    running: list[float] = field(default_factory=list)  # this epoch's losses so far
    cuda_rng: dict | None = None  # a --cuda-graph run's generator position: {"seed": ..., "offset": ...}


def save_checkpoint(path: Path, model, ema_model, opt, card: dict, state: RunState) -> None:
    """Write weights, EMA weights, Adam's state and ``state`` (the run's position) atomically to ``path``."""
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()},
               **{f"ema.{k}": v for k, v in ema_model.state_dict().items()}}
    opt_tensors, groups = optimizer_tensors(opt)
    saved = {k: v for k, v in asdict(state).items() if not (k == "cuda_rng" and v is None)}
    save_tensors(path, {**tensors, **opt_tensors}, {**card, "state": {**saved, "param_groups": groups}})


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



class OutDirLock:
    """``with OutDirLock() as lock:`` the --out folders that ``lock.take`` locks stay locked until the block
    ends, however it ends: a second run into one, in any process, is refused meanwhile.

    flock on the folder itself: no lock file is left behind, and the kernel drops the lock when the
    process ends, so a killed run never leaves the folder locked. (No fcntl, on Windows: no lock.)
    """

    def __init__(self):
        self.fds: list[int] = []  # the locked folders, as open file descriptors

    def take(self, out_dir: Path) -> None:
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
        self.fds.append(fd)

    def __enter__(self) -> "OutDirLock":
        return self

    def __exit__(self, *exc) -> None:
        while self.fds:
            os.close(self.fds.pop())


def prepare_out_dir(out_dir: Path, resume: bool, overwrite: bool, lock: OutDirLock, snapshots_wanted: bool = False) -> None:
    """Create out_dir before any work, lock it with ``lock``, and refuse to start a new run over an earlier one.

    snapshots_wanted: the run writes --snapshot-epochs into out_dir/snapshots, checked writable now too."""
    if resume and overwrite:
        raise BadInput("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    if _in_a_job():  # its --out is the job's checkpoint folder, which a job cannot choose by --out
        out_folder(out_dir, CHECKPOINT, MODEL, name="checkpoint", fix="set DIFFUSION_CHECKPOINT_DIR to a folder the job can write")
    else:
        out_folder(out_dir, CHECKPOINT, MODEL)
    snapshots = out_dir / "snapshots"
    if snapshots.is_symlink() or (snapshots.exists() and not snapshots.is_dir()):  # never delete or write through it
        raise BadInput(f"{snapshots} is a {'link' if snapshots.is_symlink() else 'file'}, where training keeps its "
                       f"snapshots; move it away, or choose another --out")
    if snapshots_wanted and snapshots.is_dir() and not os.access(snapshots, os.W_OK | os.X_OK):  # not after epoch 1
        raise BadInput(f"cannot write in {snapshots}, where this run keeps its --snapshot-epochs (read-only or not "
                       "yours); make it writable, or choose another --out")
    lock.take(out_dir)
    # only now, with the lock held, can no other run be writing them
    remove_stale_temps(out_dir, CHECKPOINT, MODEL, card_path(MODEL).name)
    remove_stale_temps(snapshots, "epoch_*")
    has_checkpoint, has_model = (out_dir / CHECKPOINT).exists(), (out_dir / MODEL).exists()
    if not (has_checkpoint or has_model or resume or overwrite) and any(snapshots.glob("epoch_*")):
        raise BadInput(f"{snapshots} holds another run's snapshots, which this run's would mix with; "
                       + (NEW_JOB if _in_a_job() else "replace them with --overwrite, or choose another --out"))
    if resume and has_model and not has_checkpoint:
        raise BadInput(f"{out_dir} holds a finished model but no {CHECKPOINT} to resume from; "
                       + (NEW_JOB if _in_a_job() else "start a new run there with --overwrite, or choose another --out"))
    if (has_checkpoint or has_model) and not resume and not overwrite:
        hint = "continue it with --resume, replace it" if has_checkpoint else "replace it"
        raise BadInput(f"{out_dir} already holds a training run ({CHECKPOINT if has_checkpoint else MODEL}); "
                       + (NEW_JOB if _in_a_job() else f"{hint} with --overwrite, or choose another --out"))


# A job's --out is its checkpoint folder, which --checkpoint-s3-uri fills: it takes neither --out nor --overwrite
NEW_JOB = "for a new run, launch the job with a new --checkpoint-s3-uri"


def _in_a_job() -> bool:
    return sagemaker_env() is not None


def clear_earlier_run(out_dir: Path) -> None:
    """For --overwrite, once every input has been checked: the old checkpoint and snapshots go.

    model.safetensors stays until the new run replaces it at the end.
    """
    snapshots = out_dir / "snapshots"
    for old in [out_dir / CHECKPOINT, *snapshots.glob("epoch_*.safetensors"), *snapshots.glob("epoch_*.json")]:
        remove_keeping_mode(old)  # the new run's file there gets the old one's mode (a chmod 600 stays private)



def resume_from(ckpt: Path, model, ema, opt, card, steps_per_epoch: int, total_steps: int, defaults: dict) -> RunState:
    """Load a checkpoint into model, ema and opt after checking it fits this run; returns where the run stands.

    defaults: {"training": ..., "diffusion": ...} as dicts, for fields added since the checkpoint was written.
    """
    tensors, saved = read_tensors(ckpt)
    for key, config in defaults.items():
        if isinstance(saved.get(key), dict):  # fields added since the checkpoint was written take their defaults
            config = json.loads(json.dumps(config))
            saved[key] = {**{k: v for k, v in config.items() if k not in saved[key]}, **saved[key]}
    if not isinstance(saved.get("state"), dict) or not any(k.startswith("ema.") for k in tensors):
        raise BadInput(f"{ckpt} is not a training checkpoint (model weights?); move it away, or train into another --out")
    for key in ("model", "diffusion", "training", "data", "init_from", "distillation"):
        theirs, ours = saved.get(key), card.get(key)
        if key == "training" and isinstance(theirs, dict) and isinstance(ours, dict):  # how the steps run, not
            # what they compute: a GPU run may go on without a graph
            theirs, ours = ({k: v for k, v in d.items() if k not in ("cuda_graph", "checkpoint_minutes")}
                            for d in (theirs, ours))
        if theirs != ours:
            raise BadInput(f"{ckpt} was made with a different {key} config ({differences(theirs, ours)}); "
                           + ("launch the job with the same train options to resume it, or with a new "
                              "--checkpoint-s3-uri for a new run" if _in_a_job() else
                              "use the same arguments or another --out folder"))
    problem = checkpoint_problem(tensors, saved["state"], model, opt, steps_per_epoch, total_steps)
    if problem:  # now, not minutes into the run (or never: a fresh Adam would pass for a resumed one)
        raise BadInput(f"{ckpt} is damaged: {problem}; restore it, or start the run again with --overwrite")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state = saved["state"]
    load_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")}, state["param_groups"])
    # "running" is missing from checkpoints written before it was saved: their epoch loss after a
    # mid-epoch resume averages only the steps after it, as it always did
    return RunState(state["step"], state["wall_time_s"], state["losses"], list(state.get("running", [])),
                    state.get("cuda_rng"))


def checkpoint_problem(tensors: dict, state: dict, model, opt, steps_per_epoch: int, total_steps: int) -> str | None:
    """What is wrong with a checkpoint's tensors and state, in a few words; None if it can be resumed."""
    problem = _position_problem(state, steps_per_epoch, total_steps)
    if problem:
        return problem
    step = state["step"]
    if step and not any(k.startswith("optim.") for k in tensors):
        return "it has no optimizer state (Adam's moments), so a resumed run would not continue this one"
    return (_param_groups_problem(state, opt) or _tensors_problem(tensors, _expected_tensors(model, opt, step))
            or _adam_state_problem(tensors, step))


_number = is_real


def _position_problem(state: dict, steps_per_epoch: int, total_steps: int) -> str | None:
    """What is wrong with a checkpoint's step, losses, wall time and generator position, or None."""
    step = state.get("step")
    if "step" not in state:
        return "it has no step"
    if not is_whole(step) or not 0 <= step <= total_steps:
        return f"step {step!r} is outside this run's steps 0..{total_steps}"
    losses, running = state.get("losses"), state.get("running", [])
    if not (isinstance(losses, list) and all(map(_number, losses)) and len(losses) == step // steps_per_epoch):
        return f"its losses {json.dumps(losses)[:40]} are not {step // steps_per_epoch} numbers, one per epoch done"
    if not (isinstance(running, list) and all(map(_number, running))):
        return f"its running losses {json.dumps(running)[:40]} are not a list of numbers"
    if not (_number(state.get("wall_time_s")) and state["wall_time_s"] >= 0):
        return f"its wall_time_s {state.get('wall_time_s')!r} is not a number of seconds"
    rng = state.get("cuda_rng")
    if rng is not None and not (isinstance(rng, dict) and all(isinstance(rng.get(k), int) and rng[k] >= 0
                                                              for k in ("seed", "offset"))):
        return f"its cuda_rng {json.dumps(rng)[:40]} is not a generator's seed and offset"
    return None


def _param_groups_problem(state: dict, opt) -> str | None:
    """What is wrong with a checkpoint's Adam settings (one group per group of ``opt``), or None."""
    groups, mine = state.get("param_groups"), opt.param_groups
    if not (isinstance(groups, list) and len(groups) == len(mine) and all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and len(g["params"]) == len(m["params"])
            and all(_number(g.get(k)) for k in ("lr", "eps", "weight_decay"))
            and isinstance(g.get("betas"), list) and len(g["betas"]) == 2 and all(map(_number, g["betas"]))
            for g, m in zip(groups, mine))):
        return f"its param_groups {json.dumps(groups)[:60]} are not Adam's settings for this model"
    return None


def _expected_tensors(model, opt, step: int) -> dict:
    """name -> (shape, floating point) of every tensor a checkpoint of this run at ``step`` holds."""
    expected = {}
    for prefix in ("model.", "ema."):  # the EMA copy has the model's tensors
        expected.update({prefix + k: (v.shape, v.is_floating_point()) for k, v in model.state_dict().items()})
    if step:  # Adam's state for every weight: its step count and two moments
        for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
            expected.update({f"optim.{i}.step": (torch.Size([]), True), f"optim.{i}.exp_avg": (p.shape, True),
                             f"optim.{i}.exp_avg_sq": (p.shape, True)})
    return expected


def _tensors_problem(tensors: dict, expected: dict) -> str | None:
    """What is wrong with a checkpoint's tensors against ``expected`` (``_expected_tensors``), or None."""
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


def _adam_state_problem(tensors: dict, step: int) -> str | None:
    """What is wrong with Adam's state tensors (shapes and finiteness already checked), or None."""
    for key, v in tensors.items():
        if key.startswith("optim.") and key.endswith(".step") and not (0 <= float(v) <= step and float(v).is_integer()):
            return f"{key} is {float(v):g}, where Adam's step count is a whole number from 0 to the run's {step}"
        if key.startswith("optim.") and key.endswith(".exp_avg_sq") and bool((v < 0).any()):
            return f"{key} has negative values, where Adam's second moment is a mean of squares"
    return None


def differences(saved, now) -> str:
    """e.g. "epochs: checkpoint 2, now 1; lr: checkpoint 0.001, now 0.002" (whole values if not both dicts)."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return f"checkpoint {json.dumps(saved)[:80]}, now {json.dumps(now)[:80]}"
    keys = [k for k in {**saved, **now} if saved.get(k) != now.get(k)]
    return "; ".join(f"{k}: checkpoint {json.dumps(saved.get(k))[:60]}, now {json.dumps(now.get(k))[:60]}" for k in keys)
