"""Measuring sprite quality without downloaded networks.

Inception-based FID needs weights from the internet and means little at 16×16, so we train our
own small sprite classifier on procedural sprites and use it three ways:

- sprite-FID: the Fréchet distance (Heusel et al. 2017, Eq. 6) between Gaussians fitted to the
  classifier's penultimate features (width ``FEATURES`` = 128) of generated and of real sprites;
- class accuracy: how often the classifier's top class is the context the sampler was asked for;
- novelty: each sample's RMS pixel distance (in [0, 1] units) to its nearest training sprite,
  and the fraction closer than ``NEAR_COPY`` (a near-copy of the training data).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import procedural_dataset, sprites_to_tensor
from .checks import is_whole, whole_number
from .errors import BadInput
from .sampling import sample
from .schedule import schedule_from_card
from .sprites import GENERATOR_VERSION
from .files import atomic_write, sha256_file
from .weights import card_path, check_card_sections, check_state_dict, read_card_file, read_tensors, save_tensors

__all__ = [
    "FEATURES",
    "NEAR_COPY",
    "SpriteClassifier",
    "train_classifier",
    "load_classifier",
    "frechet_distance",
    "classifier_features",
    "sprite_fid",
    "novelty",
    "EvalRow",
    "evaluate",
    "ROWS",
    "PROTOCOL",
    "row_spec",
    "real_fid_blocks",
    "ProtocolRow",
    "protocol_rows",
    "real_band",
]

FEATURES = 128
NEAR_COPY = 0.05  # RMS distance in [0, 1] pixel units: about 13 grey levels in every channel of every pixel
REFERENCE_SEED, HELD_OUT_SEED = 1_000_001, 1_000_002  # real sprites never used for training (seed 0)
# docs/evaluation.md's protocol: n sprites per row (classes balanced), scored against `reference` held-out sprites;
# the fast rows at every one of `seeds` (the sampling spread), and real_blocks separate draws of n real sprites
# (the floor's band; tools/protocol.py)
PROTOCOL = {"name": "sprite-fid/1", "n": 1000, "reference": 2000, "seeds": (0, 1, 2), "real_blocks": 10}


class SpriteClassifier(nn.Module):
    """A small CNN: (B, 3, 16, 16) in [-1, 1] -> class logits (B, n_classes); ``features`` gives (B, 128)."""

    def __init__(self, n_classes: int = 5, height: int = 16):
        super().__init__()
        self.n_classes, self.height = n_classes, height
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (height // 4) ** 2, FEATURES), nn.GELU(),
        )
        self.head = nn.Linear(FEATURES, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(out: Path, n_train: int = 20_000, n_test: int = 5_000, epochs: int = 4, seed: int = 0,
                     progress: bool = True, overwrite: bool = False) -> dict:
    """Train the evaluation classifier on procedural sprites; save it with its card; return the card.

    An earlier classifier at ``out`` (the shipped one, at the CLI's default) is replaced only if
    ``overwrite``; anything else there, never.

    Training sprites get a little Gaussian pixel noise (σ up to 0.1) so that the slightly
    imperfect pixels of generated sprites do not throw the classifier off.
    """
    out = Path(out)
    _check_out(out, overwrite)
    start = time.perf_counter()
    train_set = procedural_dataset(n_train, seed=seed + 7)
    if not train_set.labels.sum(0).all():  # a class never seen would leave the classifier short of outputs
        raise BadInput(f"{n_train} training sprites do not cover all {train_set.labels.shape[1]} classes; "
                       f"use --n 100 or more")
    test_set = procedural_dataset(n_test, seed=HELD_OUT_SEED + 1)
    x, y = sprites_to_tensor(train_set.sprites), torch.from_numpy(train_set.labels).argmax(1)
    torch.manual_seed(seed)
    model = SpriteClassifier(train_set.labels.shape[1])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), disable=not progress, desc="classifier"):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            sigma = torch.rand(len(idx), 1, 1, 1, generator=gen) * 0.1
            xb = x[idx] + sigma * torch.randn(x[idx].shape, generator=gen)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    acc = class_accuracy(model, sprites_to_tensor(test_set.sprites), torch.from_numpy(test_set.labels).argmax(1))
    card = {"kind": "sprite-classifier", "n_classes": model.n_classes, "height": model.height,
            "features": FEATURES, "class_names": train_set.class_names,
            "data": {**train_set.meta, "count": n_train}, "epochs": epochs, "seed": seed,
            "held_out": {"seed": HELD_OUT_SEED + 1, "count": n_test, "accuracy": round(acc, 5)},
            "wall_time_s": round(time.perf_counter() - start, 1)}
    save_tensors(out, model.state_dict(), card)
    card = {**card, "file": out.name, "sha256": sha256_file(out)}
    atomic_write(card_path(out), lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
    return card


def _check_out(out: Path, overwrite: bool = False) -> None:
    """One BadInput line, before any training, unless ``out`` and the ``.json`` card beside it can be written."""
    if out.suffix != ".safetensors":
        raise BadInput(f"--out {out} must name a .safetensors file (its card goes beside it as .json)")
    for path in (out, card_path(out)):
        if path.is_dir():
            raise BadInput(f"{path} is a folder; pass --out a file name such as weights/sprite_classifier.safetensors")
    if out.is_file():  # replacing an earlier classifier is fine; replacing anything else (a trained model) is not
        try:
            kind = read_tensors(out)[1].get("kind")
        except BadInput:
            kind = None
        if kind != "sprite-classifier":
            raise BadInput(f"{out} exists and is not a sprite classifier; choose another --out")
        if not overwrite:  # every evaluate reads it: a quick, poor classifier would skew them all
            raise BadInput(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    if out.parent.exists() and not out.parent.is_dir():
        raise BadInput(f"{out.parent} is a file; pass --out a path in a folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInput(f"cannot create the folder {out.parent} for --out ({e.strerror}); pass another --out") from None
    if not os.access(out.parent, os.W_OK):
        raise BadInput(f"cannot write to {out.parent}; pass another --out")


def load_classifier(path: Path) -> SpriteClassifier:
    path = Path(path)
    if not path.exists():
        raise BadInput(f"classifier weights not found: {path}; pass --classifier FILE, or create them with "
                       f"`python -m diffusion_utilities train-classifier --out {path}`")
    tensors, card = read_tensors(path)
    if card.get("kind") != "sprite-classifier":
        raise BadInput(f"{path} is not a sprite classifier (train one with `train-classifier`)")
    sizes = [card.get("n_classes"), card.get("height")]
    if not all(is_whole(v) and v >= 1 for v in sizes) or sizes[1] % 4:
        raise BadInput(f"{path}'s card gives n_classes and height {sizes}; train the classifier again")
    with torch.device("meta"):  # shapes only, no memory: a card promising a huge classifier is refused, not built
        check_state_dict(tensors, SpriteClassifier(*sizes), str(path))  # names, shapes, no NaN, inf or integers
    model = SpriteClassifier(*sizes)
    model.load_state_dict(tensors)
    return model.eval()


@torch.inference_mode()
def _batched(fn, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def classifier_features(classifier, x: torch.Tensor) -> np.ndarray:
    """The classifier's feature vectors of images x (N, 3, H, W) in [-1, 1], as an (N, D) array:
    what sprite-FID compares (pass a reference set's features to ``sprite_fid``)."""
    return _batched(classifier.features, x.float().clamp(-1, 1)).numpy()


def class_accuracy(classifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images x (B, 3, H, W) whose top class is ``labels`` (B,)."""
    return (_batched(classifier, x).argmax(1) == labels).float().mean().item()


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^{1/2}) for features (N, D), in float64.

    Tr((Σ₁Σ₂)^{1/2}) is the sum of square roots of the eigenvalues of Σ₁^{1/2} Σ₂ Σ₁^{1/2},
    a symmetric matrix, so numpy's eigh suffices (no scipy).
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2:
        raise BadInput(f"features must be (N, D) arrays, one row per image; got shapes {f1.shape} and {f2.shape}")
    if f1.shape[1] != f2.shape[1]:
        raise BadInput(f"the two sets of features have {f1.shape[1]} and {f2.shape[1]} dimensions; "
                       "compute both with the same classifier")
    if min(len(f1), len(f2)) < 2:  # a covariance needs two rows (np.cov divides by N - 1)
        raise BadInput(f"a Fréchet distance needs at least 2 images in each set (a covariance), got {len(f1)} and "
                       f"{len(f2)}; FID is only comparable at the protocol's n (docs/evaluation.md)")
    if not (np.isfinite(f1).all() and np.isfinite(f2).all()):  # eigh would fail with a LinAlgError
        raise BadInput("features hold NaN or infinite values: the images they come from do; check the sampler's output")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(sqrt_s1 @ s2 @ sqrt_s1)
    tr_covmean = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def sprite_fid(classifier, x: torch.Tensor, reference_features: np.ndarray) -> float:
    """sprite-FID of images x (B, 3, H, W) in [-1, 1] against precomputed reference features."""
    return frechet_distance(classifier_features(classifier, x), reference_features)


def real_fid_blocks(classifier, reference_features: np.ndarray, n: int, blocks: int = 5,
                    seed: int = HELD_OUT_SEED) -> np.ndarray:
    """sprite-FID of ``blocks`` disjoint sets of ``n`` held-out real sprites, shape (blocks,).

    Their mean is the floor a perfect model would score at this n (FID is biased upwards at small
    n), and their range is how far FID moves from draw to draw at this n: a gap between two models
    smaller than that range is noise.
    """
    real = sprites_to_tensor(procedural_dataset(n * blocks, seed).sprites)
    return np.array([sprite_fid(classifier, real[i * n:(i + 1) * n], reference_features) for i in range(blocks)])


def novelty(x: torch.Tensor, train_x: torch.Tensor) -> tuple[np.ndarray, float]:
    """RMS distance in [0, 1] pixel units from each image to its nearest training image, and the
    fraction closer than NEAR_COPY. x: (B, 3, H, W), train_x: (N, 3, H, W), both in [-1, 1]."""
    a = ((x.float().clamp(-1, 1) + 1) / 2).flatten(1)
    d_min = torch.full((len(a),), float("inf"))
    for i in range(0, len(train_x), 10_000):
        b = ((train_x[i:i + 10_000].float() + 1) / 2).flatten(1)
        d_min = torch.minimum(d_min, torch.cdist(a, b).min(1).values)
    rms = (d_min / a.shape[1] ** 0.5).numpy()
    return rms, float((rms < NEAR_COPY).mean())


@dataclass
class EvalRow:
    name: str
    sampler: str
    steps: int
    guidance: float
    fid: float
    class_accuracy: float | None
    seconds_per_sample: float
    novelty_rms: float
    near_copies: float
    n: int
    eta: float = 0.0
    guidance_rescale: float = 0.0


# name: (sampler, steps, guidance w, DDIM η). "real" is held-out real sprites: the floor.
ROWS = {
    "real": ("real", 0, 0.0, 0.0),
    "ddpm": ("ddpm", 500, 0.0, 0.0),
    "ddpm-no-noise": ("ddpm-no-noise", 500, 0.0, 0.0),
    "ddim": ("ddim", 25, 0.0, 0.0),
    "ddim-10": ("ddim", 10, 0.0, 0.0),
    "ddim-50": ("ddim", 50, 0.0, 0.0),
    "ddim-eta1": ("ddim", 25, 0.0, 1.0),  # stochastic DDIM: fresh noise, as DDPM, but 25 steps
    "dpm-solver++-10": ("dpm-solver++", 10, 0.0, 0.0),
    "dpm-solver++-20": ("dpm-solver++", 20, 0.0, 0.0),
    "cfg-w2": ("ddim", 25, 2.0, 0.0),
    "cfg-w2-rescaled": ("ddim", 25, 2.0, 0.0, 0.7),  # guidance rescale φ = 0.7 (Lin et al. 2024, §3.4)
    "cfg-w2-heun": ("heun", 10, 2.0, 0.0),  # the flow model's guided row
}
DEFAULT_ROWS = ("real", "ddpm", "ddpm-no-noise", "ddim")
FLOW_DEFAULT_ROWS = ("real", "euler-10", "heun-5", "heun-10")
# Beyond the named rows, any SAMPLER-STEPS: ddpm-100, ddim-5, dpm-solver++-15, euler-8, heun-4, ...,
# and stochastic DDIM as ddim-etaE-STEPS: ddim-eta1-500 is DDPM with the posterior's variance β̃ (DDIM §4.3)
_ROW_PATTERN = re.compile(r"(ddpm|ddim|dpm-solver\+\+|euler|heun)-([0-9]+)")
_ETA_PATTERN = re.compile(r"ddim-eta((?:0|[1-9][0-9]*)(?:\.[0-9]+)?)-([0-9]+)")


def row_spec(name: str) -> tuple[str, int, float, float, float]:
    """(sampler, steps, guidance w, DDIM η, guidance rescale φ) for a row name: one of ROWS, or SAMPLER-STEPS."""
    if name in ROWS:
        return (*ROWS[name], 0.0)[:5]
    m = _ETA_PATTERN.fullmatch(name)
    if m is not None and int(m.group(2)) >= 1:
        return "ddim", int(m.group(2)), 0.0, float(m.group(1)), 0.0
    m = _ROW_PATTERN.fullmatch(name)
    if m is None or int(m.group(2)) < 1:
        raise BadInput(f"unknown evaluation row {name!r}; choose from {', '.join(ROWS)}, or SAMPLER-STEPS "
                       f"such as ddim-10, heun-5 or ddim-eta1-50")
    return m.group(1), int(m.group(2)), 0.0, 0.0, 0.0


class Evaluator:
    """Holds the classifier, reference features and training set, so rows share them."""

    def __init__(self, classifier: SpriteClassifier, train_card: dict, n_reference: int = 2000):
        self.classifier = classifier
        data = train_card.get("data") if isinstance(train_card.get("data"), dict) else {}
        if data.get("source") != "procedural":
            raise BadInput("evaluate needs weights trained on procedural sprites (its reference set is procedural)")
        if str(data.get("generator_version")) != str(GENERATOR_VERSION):
            raise BadInput(f"weights were trained on sprite generator v{data.get('generator_version')}, "
                           f"this is v{GENERATOR_VERSION}; retrain or check out the matching version")
        count = whole_number(data.get("count"), "the card's data.count", 1)
        seed = whole_number(data.get("seed"), "the card's data.seed", 0)
        self.train_x = sprites_to_tensor(procedural_dataset(count, seed).sprites)
        ref = procedural_dataset(n_reference, REFERENCE_SEED)
        self.ref_features = classifier_features(classifier, sprites_to_tensor(ref.sprites))
        self.n_reference = n_reference

    def row(self, name: str, x: torch.Tensor, labels: torch.Tensor | None, seconds: float, spec) -> EvalRow:
        rms, near = novelty(x, self.train_x)
        acc = None if labels is None else class_accuracy(self.classifier, x.float().clamp(-1, 1), labels)
        return EvalRow(name, spec[0], spec[1], spec[2], round(sprite_fid(self.classifier, x, self.ref_features), 3),
                       None if acc is None else round(acc, 4), round(seconds / len(x), 5), round(float(rms.mean()), 4),
                       round(near, 4), len(x), spec[3], spec[4])


def _rows_that_fit(schedule) -> str:
    """What to choose instead of a row that does not fit: the named rows this model takes, and SAMPLER-STEPS
    for each of its samplers that row_spec reads that way (ddpm-no-noise is a named row only)."""
    fit = [r for r in ROWS if r == "real" or (ROWS[r][0] in schedule.samplers and ROWS[r][1] <= schedule.T)]
    steps = min(schedule.T, 10)
    forms = [f"{s}-{steps}" for s in schedule.samplers if _ROW_PATTERN.fullmatch(f"{s}-{steps}")]
    return (f"choose --rows from {', '.join(fit)}, or SAMPLER-STEPS with at most {schedule.T} steps, "
            f"such as {', '.join(forms)}")


def evaluate(model, card: dict, classifier: SpriteClassifier, n: int = 200, rows=DEFAULT_ROWS, seed: int = 0,
             progress: bool = False, log=print) -> list[EvalRow]:
    """Sample ``n`` sprites per row (contexts balanced over the classes) and score them."""
    specs = {r: row_spec(r) for r in rows}
    n = whole_number(n, "n", 2, hint="(FID needs a covariance)")
    seed = whole_number(seed, "seed", 0, 2**63 - 1)  # torch's generators take a Python int below 2**63
    schedule = schedule_from_card(card)
    # before any row is measured, not after minutes of them
    for r, (sampler, steps, *_) in specs.items():
        if r != "real" and sampler not in schedule.samplers:
            raise BadInput(f"row {r!r} samples with {sampler}, which does not fit this {schedule.name} model; "
                           f"{_rows_that_fit(schedule)}")
        if steps > schedule.T:
            raise BadInput(f"row {r!r} takes {steps} sampler steps but the model has T={schedule.T}; "
                           f"{_rows_that_fit(schedule)}")
    ev = Evaluator(classifier, card)
    k = classifier.n_classes
    labels = torch.arange(n) % k
    context = F.one_hot(labels, k).float()
    out = []
    for name in rows:
        spec = specs[name]
        start = time.perf_counter()
        if spec[0] == "real":
            real = procedural_dataset(n, HELD_OUT_SEED)
            # real sprites carry the generator's labels: this row's accuracy is the classifier's own
            x, real_labels = sprites_to_tensor(real.sprites), torch.from_numpy(real.labels).argmax(1)
            out.append(ev.row(name, x, real_labels, time.perf_counter() - start, spec))
        else:
            x = sample(model, schedule, n, sampler=spec[0], steps=spec[1], context=context, guidance=spec[2], eta=spec[3],
                       guidance_rescale=spec[4],
                       generator=torch.Generator().manual_seed(seed), progress=progress).x.cpu()
            if not torch.isfinite(x).all():
                raise BadInput(f"row {name!r}: the sampled sprites hold NaN or infinite values, so they cannot be "
                               f"scored; these weights overflow (check them, or re-train)")
            out.append(ev.row(name, x, labels, time.perf_counter() - start, spec))
        r = out[-1]
        log(f"  {r.name:16s} fid {r.fid:9.3f}  acc {r.class_accuracy}  {r.seconds_per_sample * 1000:.1f} ms/sample")
    return out


def format_table(rows: list[EvalRow], n_reference: int = 2000) -> str:
    head = f"{'row':16s} {'sampler':14s} {'steps':>5s} {'w':>4s} {'η':>4s} {'sprite-FID':>10s} {'class acc':>9s} " \
           f"{'s/sample':>9s} {'NN dist':>8s} {'near-copy':>9s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = "-" if r.class_accuracy is None else f"{r.class_accuracy:.3f}"
        lines.append(f"{r.name:16s} {r.sampler:14s} {r.steps:5d} {r.guidance:4.1f} {r.eta:4.1f} {r.fid:10.3f} {acc:>9s} "
                     f"{r.seconds_per_sample:9.4f} {r.novelty_rms:8.4f} {r.near_copies:9.3f}")
    lines.append(f"sprite-FID: {FEATURES}-d classifier features, {rows[0].n if rows else 0} sprites per row vs "
                 f"{n_reference} held-out reference sprites; NN dist: RMS pixel distance to the nearest training "
                 f"sprite; near-copy: NN dist < {NEAR_COPY}")
    return "\n".join(lines)


def check_card_writable(weights: Path) -> Path:
    """The weights' JSON card, checked before an evaluation whose table will be recorded in it; returns its path."""
    path = card_path(weights)
    if not path.is_file():
        raise BadInput(f"--update-card needs the card {path} beside the weights; restore it or drop --update-card")
    check_card_sections(read_card_file(path), path)  # its evaluation entry is merged with this run's
    if not os.access(path.parent, os.W_OK | os.X_OK):  # the card is replaced through a file beside it
        raise BadInput(f"cannot write to {path.parent}, where --update-card records the table; "
                       f"make it writable or drop --update-card")
    return path


def record_evaluation(weights: Path, rows: list[EvalRow], *, n: int, seed: int, command: str, hardware: str,
                      seconds: float) -> None:
    """Add the table to the weights' JSON card under "n{n}_seed{seed}" (the safetensors file is unchanged).

    Rows measured before under the same n and seed stay, unless this run measured them again.
    """
    path = card_path(weights)
    card = read_card_file(path)
    key = f"n{n}_seed{seed}"
    earlier = card.setdefault("evaluation", {}).get(key, {})
    merged = {r["name"]: r for r in earlier.get("rows", [])} | {r.name: asdict(r) for r in rows}
    commands = earlier.get("commands") or ([earlier["command"]] if earlier else [])
    card["evaluation"][key] = {
        "command": command, "commands": [*commands, command],
        "n": n, "seed": seed, "reference_sprites": 2000, "feature_width": FEATURES, "near_copy_rms": NEAR_COPY,
        "hardware": hardware, "wall_time_s": round(seconds + earlier.get("wall_time_s", 0), 1),
        "rows": sorted(merged.values(), key=_row_order),
    }
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))


def _row_order(row: dict):
    """Named rows in ROWS' order, then SAMPLER-STEPS rows by sampler and steps."""
    name = row["name"]
    return (0, list(ROWS).index(name), 0) if name in ROWS else (1, row["sampler"], row["steps"])


def default_rows(card: dict, T: int | None = None) -> tuple[str, ...]:
    """The rows evaluate measures when none are named: a flow model's samplers differ from a diffusion model's,
    and a distilled student's few DDIM steps from both. T: a diffusion model's steps; a row that would take more
    (the course's ddpm takes 500) takes T instead, or is left out where it has no SAMPLER-STEPS form."""
    if "distillation" in card:
        rows = ("real", "ddim-1", "ddim-2", "ddim-4", "ddim-8")
    else:
        rows = FLOW_DEFAULT_ROWS if (card.get("diffusion") or {}).get("objective") == "flow" else DEFAULT_ROWS
    fitted = []
    for name in rows:
        sampler, steps = row_spec(name)[:2]
        if T is not None and steps > T:
            name = f"{sampler}-{T}" if _ROW_PATTERN.fullmatch(f"{sampler}-{T}") else None
        if name is not None and name not in fitted:
            fitted.append(name)
    return tuple(fitted)


@dataclass
class ProtocolRow:
    """One row of a card's "protocol" section (docs/evaluation.md), summarised over its sampling seeds."""
    name: str
    sampler: str
    steps: int
    calls: int
    eta: float
    fid: float  # the mean over seeds
    fid_low: float
    fid_high: float
    class_accuracy: float
    seeds: int


def protocol_rows(card: dict) -> dict[str, ProtocolRow]:
    """The protocol's rows recorded in a weights card, by row name; {} for a card without them."""
    rows = {}
    for r in (card.get("protocol") or {}).get("rows", []):
        fid = np.asarray(r["fid"], dtype=float)
        rows[r["row"]] = ProtocolRow(r["row"], r["sampler"], r["steps"], r["calls"], r["eta"], float(fid.mean()),
                                     float(fid.min()), float(fid.max()), float(np.mean(r["class_accuracy"])), len(fid))
    return rows


def real_band(card: dict) -> tuple[float, float, float]:
    """(centre, low, high) of the real sprites' FID at the protocol's n: the floor and its width."""
    real = np.asarray(card["protocol"]["real_fid"], dtype=float)
    return float(real.mean()), float(real.min()), float(real.max())
