"""Command line: ``python -m diffusion_utilities {dataset,train,sample,evaluate,bench,...} ...``.

Bad input prints one line to stderr and exits with code 2, checked before the work where it can
be (output folders first); running out of memory is one line and code 2 too; a file that cannot
be read or written later is one line and code 1; a diverged training run exits with 3, and an
interrupted one with 128 + the signal number after saving its checkpoint.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
from PIL import Image

from .bench import run_bench
from .data import check_dataset_out, load_dataset, procedural_dataset, save_dataset
from .checkpoints import CHECKPOINT, MODEL
from .devices import hardware_name, pick_device
from .distributed import SAGEMAKER_CHECKPOINT_MINUTES, is_main, sagemaker_env
from .engine import COMPILE_MODES
from .checks import real_number, whole_number
from .errors import BadInput
from .evaluation import (DEFAULT_ROWS, FLOW_DEFAULT_ROWS, ROWS, check_card_writable, default_rows, evaluate,
                         format_table, load_classifier, record_evaluation, row_spec, train_classifier)
from .files import out_folder, settle_out_folders
from .editing import REGIONS, inpaint, region_mask, sdedit, sdedit_grid
from .importing import check_options, from_images, from_sheet, parse_colour, parse_tile, read_mask, read_sprites
from .memory import check_sampling_memory
from .model import ModelConfig
from .plotting import animate, save_gif, save_grid
from .sampling import DEFAULT_STEPS, FLOW_SHIFT, default_steps, sample, sampling_policy
from .schedule import DiffusionConfig, FlowSchedule, make_schedule
from .sprites import check_room_for, sprite_sheet, sprites_to_tensor, tensor_to_sprites
from .training import TrainConfig, TrainingDiverged, TrainingInterrupted, check_train_config, scaled_lr, train
from .files import atomic_write
from .weights import card_path, export_course_weights, load_model, load_model_and_schedule, read_card, snapshot_of

__all__ = ["main"]

# The shipped files, relative to the working folder or else to this package's repository (weights_path)
REPOSITORY = Path(__file__).resolve().parents[1]
# the fixed schedule's v-model (lesson 8): DDPM's quality in 20 network calls, so sample and demo use it
SHIPPED = Path("weights/sprites_v.safetensors")
COURSE = Path("weights/sprites_ddpm.safetensors")  # the course's model: what the labs and the bench need
CLASSIFIER = Path("weights/sprite_classifier.safetensors")
GIF_SPRITES = 64  # sprites in sample's denoising GIF; the PNG grid has all of them
# what to make smaller, in each command's own options
OUT_OF_MEMORY = {
    "dataset": "ask for fewer sprites (--n) or a smaller --size",
    "train": "use a smaller --batch-size or --n-feat, or fewer sprites (--n-sprites, or a smaller --data set)",
    "sample": "ask for fewer sprites with --n",
    "evaluate": "ask for fewer sprites per row with --n",
    "train-classifier": "train on fewer sprites with --n",
    "bench": "use a smaller --large-batch, or leave the large rows out with --rows",
    "demo": "free some memory and run it again",
    "export-course-weights": "free some memory and run it again",
}


def weights_path(path: Path) -> Path:
    """``path`` itself, or for one of the shipped defaults that is not under the working folder, the one in this
    package's repository: README's commands then work from notebooks/, where a JupyterLab terminal opens."""
    if path in (SHIPPED, COURSE, CLASSIFIER) and not path.exists() and (REPOSITORY / path).exists():
        return REPOSITORY / path
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage dump is long; keep to one line like our other errors
        raise BadInput(f"{self.prog}: {message} (see --help)")


def _whole_number(text: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected a number ≥ {minimum}, got {v}")
    return v


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _seed(text: str) -> int:
    v = _non_negative_int(text)
    if v >= 2**63:
        raise argparse.ArgumentTypeError(f"expected a seed below 2**63, got {v}")
    return v


def _rows(text: str) -> tuple[str, ...]:
    """--rows for evaluate and bench: comma-separated names, none of them empty."""
    rows = tuple(r.strip() for r in text.split(","))
    if not all(rows):  # '--rows ""' or 'ddpm,,ddim' is a slip, not a request for the default rows
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name; give row names, comma-separated")
    return rows


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def _config_options(parser, config_cls, *, given_only: bool = False, **overrides) -> None:
    """One option per field of ``config_cls`` that has a "help" (--batch-size for batch_size), with the field's
    default and, for whole numbers, its "min": the dataclass is the one place for both. overrides: another
    default for the CLI (e.g. lr=None: the course's, scaled to the batch). given_only: an option left out
    parses as None (``_config_from`` then takes the dataclass's default), so a check can tell it was not given."""
    for f in fields(config_cls):
        if "help" not in f.metadata:
            continue
        flag, default = "--" + f.name.replace("_", "-"), overrides.get(f.name, f.default)
        shown = "" if default in (None, False, ()) else f" (default {default})"
        parsed = None if given_only else default
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", default=parsed, help=f.metadata["help"])
        elif f.type == "bool | None":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=parsed, help=f.metadata["help"])
        else:
            kind = {"int": lambda text, low=f.metadata.get("min", 0): _whole_number(text, low), "float": float,
                    "float | None": float, "str": str, "tuple[int, ...]": _int_list}[f.type]
            parser.add_argument(flag, type=kind, default=parsed, help=f.metadata["help"] + shown)


def _config_from(config_cls, a, **values):
    """``config_cls`` built from the parsed options of its fields (and ``values`` for the rest); an option
    that parsed as None takes the dataclass's default."""
    given = {f.name: getattr(a, f.name) for f in fields(config_cls) if "help" in f.metadata}
    return config_cls(**{**{k: v for k, v in given.items() if v is not None}, **values})


def _diffusion_given(a) -> list[str]:
    """The diffusion schedule's options given on the command line (train parses them with given_only)."""
    return [f"--{f.name.replace('_', '-')}" for f in fields(DiffusionConfig)
            if "help" in f.metadata and f.name != "objective" and getattr(a, f.name) is not None]


def check_sprite_source(data, n_sprites, given_by: str = "--data",
                        fix: str = "drop --n-sprites (train on fewer with a smaller dataset)") -> None:
    """--n-sprites makes procedural sprites; beside a data set it would be recorded and never used: refused."""
    if data is not None and n_sprites is not None:
        raise BadInput(f"--n-sprites is how many procedural sprites to make, and {given_by} gives the sprites "
                       f"({data}): {fix}")


def train_configs(a, data_given_by: str = "--data") -> tuple[TrainConfig, DiffusionConfig]:
    """train's recipe and schedule from its parsed options, checked before any work, in one BadInput line
    (the SageMaker launcher runs the same checks before it uploads anything). data_given_by: what set a.data."""
    if a.objective == "flow" and _diffusion_given(a):  # recorded in the card, and never used
        given = _diffusion_given(a)
        raise BadInput(f"flow matching predicts the velocity on its own path, with no noise schedule; drop "
                       f"{', '.join(given)}, which {'is' if len(given) == 1 else 'are'} the diffusion schedule's")
    check_sprite_source(getattr(a, "data", None), a.n_sprites, data_given_by)
    config = check_train_config(_config_from(TrainConfig, a, lr=a.lr if a.lr is not None else scaled_lr(a.batch_size)))
    diffusion = _config_from(DiffusionConfig, a)
    if getattr(a, "teacher", None) is not None and a.teacher.is_file():  # a student's schedule is its teacher's
        names = {f.name for f in fields(DiffusionConfig)}
        base = {k: v for k, v in (read_card(a.teacher).get("diffusion") or {}).items() if k in names}
        given = {k: getattr(a, k) for k in names if getattr(a, k, None) is not None}
        diffusion = DiffusionConfig(**{**base, **given})
    make_schedule(diffusion)  # a bad schedule is one line now, before a --data set is read
    return config, diffusion


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m diffusion_utilities", description="A DDPM that draws 16×16 sprites.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_dataset_options, _train_options, _sample_options, _edit_options, _evaluate_options, _other_options):
        add(sub)
    return p


def _dataset_options(sub) -> None:
    d = sub.add_parser("dataset", help="write a dataset in the course's .npy layout: procedural, or from your images")
    d.add_argument("--n", type=_positive_int, default=90_000, help="number of sprites (default 90000)")
    d.add_argument("--seed", type=_seed, default=0)
    d.add_argument("--out", type=Path, required=True, help="folder for sprites.npy, labels.npy, dataset.json")
    d.add_argument("--course-names", action="store_true",
                   help="name the files sprites_1788_16x16.npy / sprite_labels_nc_1788_16x16.npy as the labs do")
    d.add_argument("--sheet", action="store_true", help="also write sheet.png, 10 sprites per class")
    d.add_argument("--from-images", type=Path, metavar="DIR", help="import PNG/JPEG/GIF files; subfolders are classes")
    d.add_argument("--from-sheet", type=Path, metavar="FILE", help="cut a sprite sheet into tiles")
    d.add_argument("--tile", default="16", help="tile size for --from-sheet: N or WxH (default 16)")
    d.add_argument("--margin", type=int, default=0, help="pixels around the sheet's edge")
    d.add_argument("--spacing", type=int, default=0, help="pixels between tiles")
    d.add_argument("--size", type=int, default=16, help="sprite side after resizing (default 16)")
    d.add_argument("--resize", default="nearest", help="nearest (pixel art) or area (averaging)")
    d.add_argument("--background", default="#ffffff", help="colour under transparent pixels")
    d.add_argument("--overwrite", action="store_true", help="replace a dataset (or the course's .npy files) in --out")


def _train_options(sub) -> None:
    t = sub.add_parser("train", help="train a ContextUnet (procedural sprites unless --data)")
    t.add_argument("--data", type=Path, help="dataset folder (ours or the course's .npy files)")
    t.add_argument("--out", type=Path, help="folder for checkpoint and model.safetensors (required, but in a "
                   "SageMaker training job, where it is the job's checkpoint folder)")
    # lr: the course's 1e-3, scaled to the batch (scaled_lr); n_sprites: None when not given, which --data needs
    _config_options(t, TrainConfig, lr=None, n_sprites=None)
    _config_options(t, ModelConfig)
    _config_options(t, DiffusionConfig, given_only=True)  # a flow run refuses the ones given (train_configs)
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    t.add_argument("--overwrite", action="store_true", help="start a new run in an OUT that holds one, replacing it")
    t.add_argument("--init-from", type=Path, help="start from these weights (fine-tune or train on), not random ones")
    t.add_argument("--teacher", type=Path, help="distil these weights into a student that samples in --distill-steps "
                   "DDIM steps (the student starts from them; its schedule is theirs)")
    t.add_argument("--no-progress", action="store_true")


def _sample_options(sub) -> None:
    s = sub.add_parser("sample", help="sample sprites to a PNG grid and a denoising GIF")
    s.add_argument("--weights", type=Path, default=SHIPPED)
    s.add_argument("--sampler", help="ddpm, ddpm-no-noise, ddim or dpm-solver++; euler or heun for a flow model "
                   "(default: the fastest one measured to match DDPM for these weights: ddpm-500 for the course's, "
                   "dpm-solver++ in 10 steps for the zero-terminal-SNR v-model, heun in 9 for the flow model)")
    s.add_argument("--steps", type=int, help="time steps (default: T for ddpm, "
                   + ", ".join(f"{v} for {k}" for k, v in DEFAULT_STEPS.items()) + ", at most T)")
    s.add_argument("--shift", type=float, help="a flow model's time grid: s > 1 puts more steps at high noise (Esser "
                   f"et al. 2024); 1 is uniform (default {FLOW_SHIFT:g}, measured best for the shipped flow model)")
    s.add_argument("--n", type=_positive_int, default=32)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--context", help="a class name or index, or 'mixed' for all classes in turn")
    s.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w")
    s.add_argument("--guidance-rescale", type=float, default=0.0,
                   help="φ from 0 to 1: rescale guided predictions to the conditional one's spread (Lin et al. 2024 use 0.7)")
    s.add_argument("--eta", type=float, default=0.0, help="DDIM η")
    s.add_argument("--out", type=Path, default=Path("outputs"))
    s.add_argument("--device", default="auto")
    s.add_argument("--no-gif", action="store_true")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier samples.png / samples.gif in --out")
    s.add_argument("--precision", default="fp32",
                   help="fp32, or bf16 (a bfloat16 copy of the network, for GPUs; moves samples beyond float rounding)")
    s.add_argument("--compile", choices=tuple(COMPILE_MODES),
                   help="run the network through torch.compile in this mode (off by default: its compile pays back only "
                        "over long runs; docs/benchmarks.md has the timings)")
    s.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="replay the network from a CUDA graph (default: on for CUDA)")


def _evaluate_options(sub) -> None:
    e = sub.add_parser("evaluate", help="sprite-FID, class accuracy and novelty for several samplers")
    e.add_argument("--weights", type=Path, default=SHIPPED)
    e.add_argument("--classifier", type=Path, default=CLASSIFIER)
    e.add_argument("--n", type=_positive_int, default=200,
                   help="sprites per row (FID at 200 varies by tens of points from draw to draw; more cuts that)")
    e.add_argument("--rows", type=_rows, help=f"comma-separated rows (default: {','.join(DEFAULT_ROWS)}; for a flow "
                   f"model {','.join(FLOW_DEFAULT_ROWS)}); named ones: {', '.join(ROWS)}; or SAMPLER-STEPS")
    e.add_argument("--seed", type=_seed, default=0)
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.add_argument("--update-card", action="store_true", help="record the table in the weights' JSON card")


def _other_options(sub) -> None:
    c = sub.add_parser("train-classifier", help="train the evaluation classifier on procedural sprites")
    c.add_argument("--out", type=Path, default=CLASSIFIER)
    c.add_argument("--n", type=_positive_int, default=20_000)
    c.add_argument("--epochs", type=_positive_int, default=4)
    c.add_argument("--seed", type=_seed, default=0)
    c.add_argument("--overwrite", action="store_true", help="replace the classifier at --out (the default: the shipped one)")

    x = sub.add_parser("export-course-weights", help="write our weights under the labs' .pth names (git-ignored)")
    x.add_argument("--weights", type=Path, default=COURSE)
    x.add_argument("--out", type=Path, default=Path("weights"))
    x.add_argument("--overwrite", action="store_true", help="replace .pth files there that hold other weights")

    m = sub.add_parser("demo", help="sample from the shipped weights: a sprite sheet PNG and a denoising GIF")
    m.add_argument("--weights", type=Path, help=f"default {SHIPPED}; if that is missing, a quick model is trained")
    m.add_argument("--out", type=Path, default=Path("outputs/demo"))
    m.add_argument("--seed", type=_seed, default=0)
    m.add_argument("--overwrite", action="store_true", help="replace an earlier demo's pictures in --out")

    b = sub.add_parser("bench", help="time the course's sampling and training loops against ours, same weights")
    b.add_argument("--weights", type=Path, default=COURSE)
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.add_argument("--repeats", type=_positive_int, default=3, help="runs per row; the median is reported")
    b.add_argument("--large-batch", type=_positive_int, help="batch of the throughput row (default 1024 on CUDA, 128 on CPU)")
    b.add_argument("--train-steps", type=_positive_int, default=20, help="training steps of batch 100 per run")
    b.add_argument("--rows", type=_rows, help="comma-separated (default: sample-ddpm500-b32,sample-ddim25-b32,"
                   "sample-ddpm500-large,train, for a flow model sample-heun9-b32,sample-euler25-b32,"
                   "sample-heun9-large,train, and on CUDA also their +bf16 variants and the train+graph rows); "
                   "variants such as sample-ddim25-b32+eager or train+compile+graph time one fast path each; an "
                   "unknown name lists them all")
    b.add_argument("--json", action="store_true")


def _cmd_dataset(a) -> None:
    start = time.perf_counter()
    if a.from_images and a.from_sheet:
        raise BadInput("give --from-images or --from-sheet, not both")
    # realpath, not resolve: a symbolic link that loops is a missing folder (from_images says so), not a traceback
    if a.from_images and os.path.realpath(a.out) == os.path.realpath(a.from_images):
        raise BadInput(f"--out is the image folder itself; write the dataset beside or inside it, e.g. --out {a.out / 'dataset'}")
    if a.from_images or a.from_sheet:
        check_options(a.size, a.resize)
    else:
        check_room_for(a.n)  # before the --out folder is made
    check_dataset_out(a.out, a.course_names, a.sheet, a.overwrite)
    out_folder(a.out, "dataset.json", *(["sheet.png"] if a.sheet else []))
    if a.from_images or a.from_sheet:
        background = parse_colour(a.background)
        if a.from_images:
            data, report = from_images(a.from_images, a.size, a.resize, background, exclude=a.out)
        else:
            data, report = from_sheet(a.from_sheet, parse_tile(a.tile), a.margin, a.spacing, a.size, a.resize,
                                      background)
        print(report.summary(), file=sys.stderr if report.skipped else sys.stdout)
    else:
        data = procedural_dataset(a.n, a.seed)
    seconds = time.perf_counter() - start
    save_dataset(a.out, data, course_names=a.course_names, sheet=a.sheet, overwrite=a.overwrite)
    classes = ", ".join(data.class_names) or "none (unconditional)"
    print(f"wrote {len(data)} sprites to {a.out} in {seconds:.1f} s; classes: {classes}")


def _cmd_train(a, argv) -> None:
    sm = sagemaker_env()  # a SageMaker training job: its channel, checkpoint and model folders (distributed.py)
    data_given_by = "--data" if a.data is not None or sm is None else "the job's data channel"
    if sm is not None:
        a.data = a.data or sm.channel
        a.out = a.out or sm.checkpoint_dir
        a.resume = a.resume or (not a.overwrite and (a.out / CHECKPOINT).exists())  # a spot restart goes on
        if a.checkpoint_minutes is None:  # a spot interruption may come with no SIGTERM: a clock bounds the loss
            a.checkpoint_minutes = SAGEMAKER_CHECKPOINT_MINUTES
        if is_main():  # the model is copied there at the end: a folder that cannot take it fails now
            out_folder(sm.model_dir, MODEL, card_path(MODEL).name, name="SM_MODEL_DIR")
    if a.out is None:
        raise BadInput("train needs --out, the folder for its checkpoint and model.safetensors")
    config, diffusion = train_configs(a, data_given_by)
    data = load_dataset(a.data) if a.data else None
    height = data.sprites.shape[1] if data else 16
    n_classes = data.labels.shape[1] if data else 5  # 0 classes: an unconditional model (n_cfeat=1, never used)
    model_config = _config_from(ModelConfig, a, n_cfeat=max(n_classes, 1), height=height)
    command = "python -m diffusion_utilities " + shlex.join(argv)
    card = train(config, a.out, data, model_config, diffusion,
                 resume=a.resume, device=a.device, progress=not a.no_progress, command=command,
                 init_from=a.init_from, overwrite=a.overwrite, teacher=a.teacher)
    if sm is not None and is_main():
        _copy_model(a.out, sm.model_dir)
    if is_main():
        print(f"trained {card['steps']} steps in {card['wall_time_s']} s, final loss {card['final_loss']:.4f}; "
              f"weights: {a.out / 'model.safetensors'}")


def _copy_model(out: Path, model_dir: Path) -> None:
    """The finished model and its card into a SageMaker job's model folder (uploaded as model.tar.gz)."""
    for name in (MODEL, card_path(MODEL).name):
        atomic_write(model_dir / name, lambda tmp, name=name: shutil.copyfile(out / name, tmp))
    print(f"copied the model and its card to {model_dir}")


def parse_context(spec: str | None, n: int, class_names: list[str]):
    """'hero' / '2' -> that class for all n sprites; 'mixed' -> equal blocks of each class; None -> no context."""
    if spec is None:
        return None
    k = len(class_names)
    if k == 0:
        raise BadInput("these weights were trained without classes; drop --context")
    if spec == "mixed":
        idx = torch.arange(n) * k // n  # equal blocks, one class after another
    elif spec in class_names:
        idx = torch.full((n,), class_names.index(spec))
    elif spec.isascii() and spec.isdigit() and int(spec) < k:  # isdigit alone takes '²', which int() refuses
        idx = torch.full((n,), int(spec))
    else:
        raise BadInput(f"unknown context {spec!r}; choose one of {', '.join(class_names)}, 0..{k - 1} or mixed")
    return torch.nn.functional.one_hot(idx, k).float()


def _cmd_sample(a) -> None:
    if a.guidance_rescale and not a.guidance:  # the library allows it (a sweep over w may start at 0), a command does nothing
        raise BadInput("--guidance-rescale only rescales guided predictions, and guidance is 0: drop it "
                       "or give a guidance weight (--guidance)")
    model, schedule, card = load_model_and_schedule(a.weights, pick_device(a.device))
    if a.shift is not None and not isinstance(schedule, FlowSchedule):
        raise BadInput("--shift sets a flow model's time grid; these weights are a diffusion model's, so drop it")
    recommended, steps, schedule = sampling_policy(schedule, card, a.shift)
    if a.sampler is None:
        a.sampler = recommended
        steps = a.steps if a.steps is not None else steps
    else:
        steps = a.steps if a.steps is not None else default_steps(a.sampler, schedule)
    check_sampling_memory(model, a.n, a.guidance, f"sampling {a.n:,} sprites at once",
                          "ask for fewer with --n, and run again with other --seed values for more")
    context = parse_context(a.context, a.n, card.get("class_names") or [])
    written = ["samples.png", *([] if a.no_gif else ["samples.gif"])]
    out_folder(a.out, *written)  # after the checks: none is left empty
    _keep_earlier(a.out, written, a.overwrite, "samples")
    gen = torch.Generator().manual_seed(a.seed)
    start = time.perf_counter()
    out = sample(model, schedule, a.n, sampler=a.sampler, steps=steps, context=context, guidance=a.guidance,
                 guidance_rescale=a.guidance_rescale, eta=a.eta, generator=gen, save_every=None if a.no_gif else max(1, steps // 25), progress=True,
                 precision=a.precision, cuda_graph=a.cuda_graph, compile=a.compile)
    seconds = time.perf_counter() - start
    if not torch.isfinite(out.x).all():  # black sprites and exit 0 would pass for a result
        raise BadInput(f"the sampled sprites hold NaN or infinite values: {a.weights} overflows with these settings; "
                       f"nothing was written (check the weights, or try without --guidance or --precision bf16)")
    png = save_grid(out.x, a.out / "samples.png", nrow=8)
    grid = f" on the time grid shifted by {schedule.shift:g}" if getattr(schedule, "shift", 1) != 1 else ""
    print(f"sampled {a.n} sprites with {a.sampler} in {steps} steps{grid}: {seconds:.1f} s")
    print(f"grid: {png}")
    if not a.no_gif:  # the first 64: a GIF of thousands of sprites is too tall to watch, and its frames fill memory
        shown = "" if a.n <= GIF_SPRITES else f" (the first {GIF_SPRITES} sprites)"
        print(f"animation{shown}: {save_gif(animate(out.frames[:, :GIF_SPRITES], out.frame_t), a.out / 'samples.gif')}")


def _keep_earlier(out: Path, names: list[str], overwrite: bool, what: str) -> None:
    """Refuse, before the work, to replace files in ``out`` that the user did not ask to replace."""
    existing = [n for n in names if os.path.lexists(out / n)]
    if existing and not overwrite:
        raise BadInput(f"{out / existing[0]} exists; add --overwrite to replace earlier {what}, or choose another --out")


def _cmd_export(a) -> None:
    out_folder(a.out)
    snapshot_dir = a.weights.parent / "snapshots"
    numbered = ((re.fullmatch(r"epoch_(\d+)", p.stem), p) for p in sorted(snapshot_dir.glob("epoch_*.safetensors")))
    snapshots = {int(m.group(1)): p for m, p in numbered if m}  # training names them epoch_NN; skip any other
    card = read_card(a.weights)
    other = {e: p for e, p in snapshots.items() if not snapshot_of(card, read_card(p))}
    if other:  # weights/snapshots/ beside a model of another run (the flow model, a student): not its epochs
        print(f"left out {', '.join(p.name for p in other.values())}: snapshots of another run than {a.weights}'s")
        snapshots = {e: p for e, p in snapshots.items() if e not in other}
    for path in export_course_weights(a.weights, a.out, snapshots, a.overwrite):
        print(f"wrote {path}")


def _cmd_demo(a) -> None:
    """Sample 40 sprites (8 per class, if the model has classes) from the shipped weights with their fastest
    sampler, or from a quick model."""
    weights = a.weights or weights_path(SHIPPED)
    if a.weights is not None and not a.weights.exists():
        raise BadInput(f"weights file not found: {a.weights}; check the path, or leave out --weights for the shipped ones")
    classes = True  # the quick model has them
    if weights.exists():
        classes = bool(load_model(weights)[1].get("class_names"))  # a bad weights file fails here, before --out is made
    out_folder(a.out, "training_sprites.png", "samples.png", "samples.gif")
    _keep_earlier(a.out, ["training_sprites.png", "samples.png", "samples.gif"], a.overwrite, "demo pictures")
    if not weights.exists():
        weights = a.out / "quick-model" / "model.safetensors"
        if weights.exists():
            print(f"no shipped weights at {SHIPPED}: using the quick model trained earlier, {weights}")
        else:
            print(f"no shipped weights at {SHIPPED}: training a quick 2-epoch model on 6,000 sprites first "
                  f"(a few minutes on a laptop CPU; its sprites will be rough)")
            train(TrainConfig(epochs=2, n_sprites=6000, ema_decay=0.99), weights.parent, command="demo",
                  resume=True)  # an interrupted quick run continues
    real = procedural_dataset(50, 0)
    picture = Image.fromarray(sprite_sheet(real.sprites, real.labels))
    atomic_write(a.out / "training_sprites.png", lambda tmp: picture.save(tmp))
    args = ["sample", "--weights", str(weights), "--n", "40", *(["--context", "mixed"] if classes else []),
            "--seed", str(a.seed), "--out", str(a.out), *(["--overwrite"] if a.overwrite else [])]
    _cmd_sample(build_parser().parse_args(args))
    print(f"real training sprites for comparison: {a.out / 'training_sprites.png'}")


def _cmd_evaluate(a, argv) -> None:
    model, schedule, card = load_model_and_schedule(a.weights, pick_device(a.device))
    if a.update_card:  # checked now, not after the evaluation has run
        check_card_writable(a.weights)
    rows = a.rows or default_rows(card, None if isinstance(schedule, FlowSchedule) else schedule.T)  # a flow model has no T bound
    sampled = [spec for spec in map(row_spec, rows) if spec[0] != "real"]  # the real row samples nothing
    if sampled:
        check_sampling_memory(model, a.n, any(spec[2] for spec in sampled),
                              f"sampling {a.n:,} sprites at once for each row", "ask for fewer with --n")
    classifier = load_classifier(a.classifier)
    _check_classifier_fits(classifier, a.classifier, model)
    log = (lambda *_: None) if a.json else print
    start = time.perf_counter()
    result = evaluate(model, card, classifier, a.n, rows, a.seed, progress=not a.json, log=log)
    if a.update_card:
        record_evaluation(a.weights, result, n=a.n, seed=a.seed, command="python -m diffusion_utilities " + shlex.join(argv),
                          hardware=hardware_name(pick_device(a.device)), seconds=time.perf_counter() - start)
    if a.json:
        print(json.dumps({"weights": str(a.weights), "n": a.n, "rows": [asdict(r) for r in result]}, indent=1))
    else:
        print(format_table(result))


def _check_classifier_fits(classifier, path: Path, model) -> None:
    """evaluate asks the classifier for the model's classes, one per output, on sprites of the model's size."""
    if classifier.n_classes != model.n_cfeat:
        raise BadInput(f"the classifier {path} tells {classifier.n_classes} classes apart and these weights draw "
                       f"{model.n_cfeat}; pass a --classifier trained on the same {model.n_cfeat} classes")
    if classifier.height != model.h:
        raise BadInput(f"the classifier {path} reads {classifier.height}×{classifier.height} sprites and these "
                       f"weights draw {model.h}×{model.h} ones; pass a --classifier trained on sprites of their size")


def _cmd_bench(a) -> None:
    device = pick_device(a.device)
    model, schedule, _ = load_model_and_schedule(a.weights, device)
    hardware = hardware_name(device)
    log = (lambda *_: None) if a.json else print
    log(f"bench on {hardware}, torch {torch.__version__}, {a.repeats} repeats (median)")
    result = run_bench(model, schedule, device, a.repeats, a.large_batch, a.train_steps, a.rows, log)
    if a.json:
        print(json.dumps({"device": hardware, "torch": torch.__version__,
                          "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(r).items()}
                                   for r in result]}, indent=1))


def _os_error_line(e: OSError) -> str:
    """One line for a failed read or write: a full disk in words and with its fix, whichever library saw it
    (numpy's tofile says only "153600 requested and 10112 written", with no error number)."""
    short = re.fullmatch(r"(\d+) requested and (\d+) written", str(e.strerror or e))
    if e.errno == errno.ENOSPC or short:
        detail = f" ({int(short[2]):,} of {int(short[1]):,} bytes written)" if short else ""
        where = f" writing {e.filename}" if e.filename else ""
        return f"error: the disk is full{where}{detail}; free some space there, or write to another disk"
    return f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": ")


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file or class name that is not UTF-8 prints escaped, not as a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    settle_out_folders(failed=False)  # forget folders made before this command (by library calls in this process)
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
    except BaseException:
        settle_out_folders(failed=True)
        raise
    settle_out_folders(failed=code != 0)  # a refused or failed command leaves no empty --out behind
    return code


def _oom(command: str | None) -> str:
    return f"error: out of memory; {OUT_OF_MEMORY.get(command, 'free some memory and run it again')}"


def _edit_options(sub) -> None:
    e = sub.add_parser("edit", help="edit sprites: fill a region (inpainting) or redraw at a strength (SDEdit)")
    e.add_argument("--weights", type=Path, default=SHIPPED)
    e.add_argument("--input", type=Path, required=True, help="a sprite image (PNG) at the model's size, or a folder of them")
    what = e.add_mutually_exclusive_group()
    what.add_argument("--mask", type=Path, help="inpaint: a black-and-white image, white where pixels are redrawn")
    what.add_argument("--region", choices=REGIONS, help="inpaint this half (or the centre square) of every sprite")
    e.add_argument("--strength", type=float, help="SDEdit: how far to noise the input before redrawing it, from 0 "
                   "(keep it) to 1 (ignore it)")
    e.add_argument("--context", help="a class name or index, or 'mixed', to draw towards (default: none)")
    e.add_argument("--guidance", type=float, default=0.0, help="classifier-free guidance weight w")
    e.add_argument("--steps", type=int, help="sampling steps (default: 25 DDIM steps, η = 1 when inpainting; a "
                   "flow model 20 Euler steps; a distilled student its own)")
    e.add_argument("--resamplings", type=int, default=1, help="inpaint: RePaint's resampling, each stretch of "
                   "--jump-length steps run this many times (default 1: none; costs as many times the calls; no GIF)")
    e.add_argument("--jump-length", type=int, help="with --resamplings: the steps a resampling goes back (default 5, "
                   "at most --steps)")
    e.add_argument("--seed", type=_seed, default=0)
    e.add_argument("--resize", choices=("nearest", "area"), help="fit images of another size (default: refuse them)")
    e.add_argument("--out", type=Path, required=True, help="folder for the edited sprites, edit.png and edit.gif")
    e.add_argument("--overwrite", action="store_true", help="replace earlier edits in --out")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-gif", action="store_true")


def _check_edit_options(a) -> None:
    """What edit's options say, checked before the weights are read: one edit, and only its own options."""
    if a.mask is None and a.region is None and a.strength is None:
        raise BadInput("edit needs --mask or --region (inpainting) or --strength (SDEdit); see edit --help")
    if a.strength is not None and (a.mask is not None or a.region is not None):
        raise BadInput("--strength is SDEdit's and --mask/--region inpainting's: inpainting always starts from "
                       "pure noise; give one of the two")
    if a.strength is not None:
        real_number(a.strength, "--strength", 0, 1, hint="(0 keeps the input, 1 ignores it)")
        if a.resamplings != 1:
            raise BadInput("--resamplings is inpainting's (RePaint); SDEdit runs its steps once: drop it")
    whole_number(a.resamplings, "--resamplings", 1, 100, hint="(1: no resampling)")
    if a.jump_length is not None and a.resamplings == 1:
        raise BadInput("--jump-length is how far RePaint's resampling goes back, and there is none: add --resamplings R "
                       "(e.g. 3), or drop --jump-length")


def _edit_names(files: list[Path], no_gif: bool) -> list[str]:
    """The file each input's edit is written to (its stem, .png), refused where two would share one."""
    names, taken = [f"{f.stem}.png" for f in files], {"edit.png": "the grid of all edits", "edit.gif": "the animation"}
    if no_gif:
        del taken["edit.gif"]
    for f, name in zip(files, names):
        if name in taken:
            raise BadInput(f"{f}'s edit would be written to {name}, as {taken[name]} is; rename one of them")
        taken[name] = str(f) + "'s"
    return names


def _cmd_edit(a) -> None:
    _check_edit_options(a)
    model, schedule, card = load_model_and_schedule(a.weights, pick_device(a.device))
    sprites, files = read_sprites(a.input, model.h, a.resize)
    mask = None
    if a.mask is not None or a.region is not None:
        mask = (torch.from_numpy(read_mask(a.mask, model.h))[None, None] if a.mask is not None
                else region_mask(a.region, model.h))
    names = _edit_names(files, a.no_gif)
    written = [*names, "edit.png", *([] if a.no_gif else ["edit.gif"])]
    out_folder(a.out, *written)
    _keep_earlier(a.out, written, a.overwrite, "edits")
    x = sprites_to_tensor(sprites).to(next(model.parameters()).device)
    context = parse_context(a.context, len(x), card.get("class_names") or [])
    # an edit's own steps: DDIM-25 (η = 1 when inpainting) or a student's, and Euler-20 for a flow model, whose time
    # grid is the commands' (sampling_policy)
    policy, taught, schedule = sampling_policy(schedule, card)
    sampler, steps = ("euler", 20) if isinstance(schedule, FlowSchedule) else (policy, taught) if "sampler" in card \
        else ("ddim", 25)
    steps = a.steps if a.steps is not None else steps
    taken = steps if mask is not None else len(sdedit_grid(schedule, a.strength, whole_number(
        steps, "--steps", 1, schedule.T))) - 1  # SDEdit runs the part of the grid below t₀
    if not taken:
        raise BadInput(f"--strength {a.strength:g} noises the sprites by less than one time step: nothing would "
                       f"change; give a larger --strength")
    options = dict(sampler=sampler, steps=steps, context=context, guidance=a.guidance,
                   generator=torch.Generator().manual_seed(a.seed), save_every=None if a.no_gif else 1)
    start = time.perf_counter()
    jump = min(5, steps) if a.jump_length is None else whole_number(
        a.jump_length, "--jump-length", 1, steps, hint=f"(at most the {steps} sampling steps, --steps)")
    repaint = dict(resamplings=a.resamplings, jump_length=jump)
    out = (inpaint(model, schedule, x, mask.to(x.device), **options, **repaint) if mask is not None
           else sdedit(model, schedule, x, a.strength, **options))
    seconds = time.perf_counter() - start
    for name, picture in zip(names, tensor_to_sprites(out.x)):  # atomically: a link there is replaced, not written through
        atomic_write(a.out / name, lambda tmp, p=Image.fromarray(picture): p.save(tmp))
    shown = [x, x * mask + (1 - mask) if mask is not None else x, out.x]
    save_grid(torch.cat([s[:GIF_SPRITES // 4].cpu() for s in shown]), a.out / "edit.png", nrow=min(len(x), GIF_SPRITES // 4))
    if not a.no_gif and len(out.frames):
        save_gif(animate(out.frames[:, :GIF_SPRITES], out.frame_t, nrow=8, scale=4), a.out / "edit.gif", fps=8)
    kind = (f"inpainted {'the ' + a.region if a.region else 'the mask'}" if mask is not None
            else f"SDEdit at strength {a.strength:g}")
    print(f"{kind} of {len(x)} sprite{'s' * (len(x) > 1)} with {sampler} in {taken} step{'s' * (taken != 1)}: {seconds:.1f} s; "
          f"{a.out / 'edit.png'} (rows: input{', kept pixels' if mask is not None else ''}, edit)")


def _run_command(a: argparse.Namespace, argv: list[str]) -> None:
    if a.command == "dataset":
        _cmd_dataset(a)
    elif a.command == "train":
        _cmd_train(a, argv)
    elif a.command == "sample":
        _cmd_sample(a)
    elif a.command == "evaluate":
        _cmd_evaluate(a, argv)
    elif a.command == "train-classifier":
        card = train_classifier(a.out, a.n, epochs=a.epochs, seed=a.seed, overwrite=a.overwrite)
        print(f"held-out accuracy {card['held_out']['accuracy']:.4f}; classifier: {a.out}")
    elif a.command == "export-course-weights":
        _cmd_export(a)
    elif a.command == "demo":
        _cmd_demo(a)
    elif a.command == "bench":
        _cmd_bench(a)
    elif a.command == "edit":
        _cmd_edit(a)


def _main(argv: list[str]) -> int:
    command = None
    try:
        a = build_parser().parse_args(argv)
        command = a.command
        for name in ("weights", "classifier"):  # inputs only: train-classifier's --out stays where it is
            if getattr(a, name, None) is not None:
                setattr(a, name, weights_path(getattr(a, name)))
        _run_command(a, argv)
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves its checkpoint first: TrainingInterrupted)
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except BadInput as e:  # under torchrun every rank stops; rank 0 alone says why
        if is_main():
            print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print(_oom(command), file=sys.stderr)
        return 2
    except OSError as e:  # a file that could not be read or written, after the up-front checks passed
        print(_os_error_line(e), file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 — turn the training stops into exit codes, re-raise the rest
        if isinstance(e, TrainingInterrupted):
            if is_main():
                print(str(e), file=sys.stderr)
            return 128 + e.signum
        if isinstance(e, TrainingDiverged):
            if is_main():
                print(f"error: {e}", file=sys.stderr)
            return 3
        if isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e)):
            print(_oom(command), file=sys.stderr)  # torch's CPU allocator and CUDA say it this way
            return 2
        raise
    return 0
