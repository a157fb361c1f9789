"""The sprite-FID protocol of docs/evaluation.md, run to completion: samples, both judges, the spreads.

    python tools/protocol.py sample [MODEL | MODEL:ROW ...]   # draw the rows' sprites (resumable: a finished
                                      # row is kept); all rows, or only those named
    python tools/protocol.py score    # score them with both judges; writes docs/measurements/protocol.json
                                      # (rows whose samples are not here, from an earlier run, are kept)
    python tools/protocol.py damage   # the metric's response to known damage of real sprites
    python tools/protocol.py cards    # copy each model's rows into its weights card ("protocol")
    python tools/protocol.py report   # docs/evaluation.md's tables, as Markdown

Sampling is the slow part (the DDPM-500 rows: ~10 minutes each for 1,000 sprites on 2 CPU cores).
Each row's sprites are saved to runs/protocol/samples/ as soon as they are drawn (float16), so a
killed run loses at most the row in progress, and the two judges score the very same sprites.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_utilities import load_model  # noqa: E402
from diffusion_utilities.data import procedural_dataset, sprites_to_tensor  # noqa: E402
from diffusion_utilities.evaluation import (HELD_OUT_SEED, PROTOCOL, REFERENCE_SEED, class_accuracy,  # noqa: E402
                                            classifier_features, frechet_distance, load_classifier, row_spec)
from diffusion_utilities.sampling import sample  # noqa: E402
from diffusion_utilities.schedule import schedule_from_card  # noqa: E402
from diffusion_utilities.devices import hardware_name  # noqa: E402
from diffusion_utilities.files import atomic_write  # noqa: E402
from diffusion_utilities.weights import card_path, read_card_file  # noqa: E402

OUT = ROOT / "runs" / "protocol"
RESULT = ROOT / "docs" / "measurements" / "protocol.json"
DAMAGE = ROOT / "docs" / "measurements" / "protocol_damage.json"
N = PROTOCOL["n"]

# model -> weights, and the rows in the order they are drawn (the essential ones first). Rows in SEEDED are drawn
# at every protocol seed (the seed spread is measured on them); the others at the first seed only.
WEIGHTS = {"course": "weights/sprites_ddpm.safetensors", "v": "weights/sprites_v.safetensors",
           "control": "runs/control_eps/model.safetensors", "flow": "weights/sprites_flow.safetensors",
           # lesson 10: the shipped students (the 2-step one of round 3, the 1-step one of round 4) and rounds 1-2's
           "student": "weights/sprites_distilled.safetensors", "student1": "weights/sprites_distilled_1step.safetensors",
           **{f"round{k}": f"runs/distill/steps_{k}/model.safetensors" for k in (8, 4)}}
ORDER = [("course", "ddim-eta1-25"), ("course", "ddim-25"), ("v", "dpm-solver++-10"), ("flow", "heun-9"),
         ("control", "ddim-eta1-25"), ("control", "ddim-25"), ("course", "ddpm"), ("control", "ddpm"),
         ("v", "ddpm"), ("course", "ddim-eta1-500"), ("course", "ddim-eta1-50"), ("course", "ddim-eta1-100"),
         ("v", "ddim-eta1-25"), ("v", "ddim-25"), ("flow", "euler-16"), ("course", "ddim-eta1-250")]
# Lesson 10's rows: the teacher's own DDIM at few steps, each round's student at the steps it was trained for, and
# the shipped student at 1 to 8 calls. A handful of calls each: every one at all three seeds.
FEW_STEPS = [("v", f"ddim-{k}") for k in (1, 2, 4, 8, 16)] + [(f"round{k}", f"ddim-{k}") for k in (8, 4)] + [
    ("student", f"ddim-{k}") for k in (1, 2, 4, 8)] + [("student1", f"ddim-{k}") for k in (1, 2)]
ORDER += FEW_STEPS
SEEDED = {("course", "ddim-eta1-25"), ("course", "ddim-25"), ("v", "dpm-solver++-10"), ("flow", "heun-9"), *FEW_STEPS}
REAL_SEEDS = [HELD_OUT_SEED + 1_000 * (k + 1) for k in range(PROTOCOL["real_blocks"])]  # the floor's draws
JUDGE_B_SEED = 3_000_001  # its training sprites: a seed no other part of the project uses


class JudgeB(torch.nn.Module):
    """The second judge: another architecture than SpriteClassifier (strided convolutions, GroupNorm,
    global average pooling, 96-d features, no max-pooling), trained on other sprites with another seed."""

    def __init__(self, n_classes: int = 5):
        super().__init__()
        def block(c_in, c_out, stride):
            return [torch.nn.Conv2d(c_in, c_out, 3, stride, 1), torch.nn.GroupNorm(8, c_out), torch.nn.SiLU()]
        self.body = torch.nn.Sequential(*block(3, 48, 1), *block(48, 48, 2), *block(48, 96, 1), *block(96, 96, 2),
                                        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.head = torch.nn.Linear(96, n_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def load_or_train_judge(path: Path) -> JudgeB:
    """JudgeB from ``path``, or trained (about a minute on 2 cores) and saved there; its held-out accuracy printed."""
    from safetensors.torch import load_file, save_file  # only this tool reads or writes the second judge
    torch.manual_seed(1)
    judge = JudgeB()
    if path.exists():
        judge.load_state_dict(load_file(path))
        return judge.eval()
    data = procedural_dataset(20_000, JUDGE_B_SEED)
    x, y = sprites_to_tensor(data.sprites), torch.from_numpy(data.labels).argmax(1)
    opt = torch.optim.Adam(judge.parameters(), 2e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            idx = perm[i:i + 128]
            xb = x[idx] + torch.rand(len(idx), 1, 1, 1, generator=gen) * 0.1 * torch.randn(x[idx].shape, generator=gen)
            loss = F.cross_entropy(judge(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    judge.eval()
    test = procedural_dataset(5_000, JUDGE_B_SEED + 1)
    acc = class_accuracy(judge, sprites_to_tensor(test.sprites), torch.from_numpy(test.labels).argmax(1))
    print(f"judge B: held-out accuracy {acc:.4f}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(judge.state_dict(), str(path))
    return judge


def seeds_for(model: str, row: str) -> tuple[int, ...]:
    return PROTOCOL["seeds"] if (model, row) in SEEDED else PROTOCOL["seeds"][:1]


def sample_file(model: str, row: str, seed: int) -> Path:
    return OUT / "samples" / f"{model}_{row}_s{seed}.npy"


def draw(only: set[str] | None = None) -> None:
    loaded_name, model, schedule = None, None, None
    for model_name, row in ORDER:
        path = ROOT / WEIGHTS[model_name]
        if (only and model_name not in only and f"{model_name}:{row}" not in only) or not path.exists():
            continue
        if model_name != loaded_name:  # ORDER interleaves models: one in memory at a time
            (model, card), loaded_name = load_model(path), model_name
            schedule = schedule_from_card(card)
        context = F.one_hot(torch.arange(N) % model.n_cfeat, model.n_cfeat).float()
        sampler, steps, w, eta, phi = row_spec(row)
        for seed in seeds_for(model_name, row):
            out = sample_file(model_name, row, seed)
            if out.exists():
                continue
            start = time.perf_counter()
            x = sample(model, schedule, N, sampler=sampler, steps=steps, context=context, guidance=w, eta=eta,
                       guidance_rescale=phi, generator=torch.Generator().manual_seed(seed)).x
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out, lambda tmp: _save_npy(tmp, x.numpy().astype(np.float16)))
            print(f"{model_name} {row} seed {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:  # a file object: np.save given a path would add ".npy" to the temporary name
        np.save(f, array)


class Judges:
    """Both feature extractors and their reference features (2,000 held-out sprites)."""

    def __init__(self):
        self.nets = {"A": load_classifier(ROOT / "weights" / "sprite_classifier.safetensors"),
                     "B": load_or_train_judge(OUT / "judge_b.safetensors")}
        ref = sprites_to_tensor(procedural_dataset(PROTOCOL["reference"], REFERENCE_SEED).sprites)
        self.ref = {k: classifier_features(net, ref) for k, net in self.nets.items()}
        # B's pooled features vary little in absolute terms: standardised by the reference set's per-feature
        # mean and spread (one fixed affine map), so its distances read on a scale like A's
        self.scale = {"A": (0.0, 1.0), "B": (self.ref["B"].mean(0), self.ref["B"].std(0) + 1e-6)}
        self.ref["B"] = self._features("B", ref)

    def _features(self, k: str, x: torch.Tensor) -> np.ndarray:
        mu, sd = self.scale[k]
        return (classifier_features(self.nets[k], x) - mu) / sd

    def fid(self, x: torch.Tensor) -> dict:
        return {k: round(frechet_distance(self._features(k, x), self.ref[k]), 2) for k in self.nets}


def real_blocks(judges: Judges) -> dict:
    """N held-out real sprites from each of PROTOCOL["real_blocks"] generator seeds: the floor's centre and width at N.

    Each draw is its own generator call, as a model's rows are their own sampling runs. (Five slices of one
    5,000-sprite draw spread less, 10.3 to 12.9, than twelve separate draws, 6.0 to 16.1: a handful of
    draws understates the tails.)"""
    fids = [judges.fid(sprites_to_tensor(procedural_dataset(N, seed).sprites)) for seed in REAL_SEEDS]
    return {k: [f[k] for f in fids] for k in judges.nets}


def score() -> dict:
    judges = Judges()
    result = {"protocol": PROTOCOL, "real": real_blocks(judges), "rows": [], "hardware": hardware_name(torch.device("cpu"))}
    if RESULT.exists():  # rows scored before whose sprites are not on this machine (runs/ is not kept) stay
        earlier = json.loads(RESULT.read_text())
        result["rows"] = [r for r in earlier["rows"] if not sample_file(r["model"], r["row"], r["seed"]).exists()]
        if earlier["real"] != result["real"]:  # the judges are seeded: a rescore must land on the same floor
            print(f"warning: the real draws now score {result['real']}, before {earlier['real']}", file=sys.stderr)
    labels = torch.arange(N) % 5
    for model_name, row in ORDER:
        for seed in seeds_for(model_name, row):
            f = sample_file(model_name, row, seed)
            if not f.exists():
                continue
            x = torch.from_numpy(np.load(f).astype(np.float32)).clamp(-1, 1)
            acc = class_accuracy(judges.nets["A"], x, labels)
            result["rows"].append({"model": model_name, "weights": WEIGHTS[model_name], "row": row, "seed": seed,
                                   "fid": judges.fid(x), "class_accuracy": round(acc, 4), "calls": _calls(row)})
            print(result["rows"][-1], file=sys.stderr, flush=True)
    atomic_write(RESULT, lambda tmp: tmp.write_text(json.dumps(result, indent=1) + "\n"))
    return result


def _calls(row: str) -> int:
    sampler, steps, *_ = row_spec(row)
    return 2 * steps - 1 if sampler == "heun" else steps


def damage() -> dict:
    """sprite-FID of held-out real sprites after known damage, at N, for both judges."""
    judges = Judges()
    real = sprites_to_tensor(procedural_dataset(N, HELD_OUT_SEED).sprites)
    gen = torch.Generator().manual_seed(0)
    cases = {"none": real}
    for s in (0.02, 0.05, 0.1, 0.2):
        cases[f"noise σ={s}"] = real + s * torch.randn(real.shape, generator=gen)
    for k in (1, 2, 3):  # a (2k+1)² box blur's weight mixed in at 1/2
        blur = F.avg_pool2d(F.pad(real, (k, k, k, k), mode="replicate"), 2 * k + 1, stride=1)
        cases[f"blur {2 * k + 1}×{2 * k + 1}"] = (real + blur) / 2
    for d in (0.05, 0.1, 0.2):
        cases[f"darker by {d}"] = real - d
    for a in (0.1, 0.2, 0.4):  # smooth, sprite-sized colour blotches, as lesson 7's DDIM shows
        blot = F.interpolate(torch.randn(N, 3, 4, 4, generator=gen), size=real.shape[-1], mode="bilinear")
        cases[f"blotches {a}"] = real + a * blot
    for unique in (500, 100, 20):  # lost diversity: N sprites that are copies of only `unique` ones
        cases[f"{unique} distinct"] = real[torch.arange(N) % unique]
    result = {name: judges.fid(x.clamp(-1, 1)) for name, x in cases.items()}
    for name, f in result.items():
        print(f"{name:18s} A {f['A']:8.2f}  B {f['B']:8.2f}", file=sys.stderr)
    atomic_write(DAMAGE, lambda tmp: tmp.write_text(json.dumps({"n": N, "damage": result}, indent=1) + "\n"))
    return result


def _grouped(result: dict) -> dict[tuple[str, str], dict]:
    """The scored rows grouped by (model, row), each with its seeds' values in lists: a card's "protocol" rows."""
    out = {}
    for r in result["rows"]:
        sampler, steps, w, eta, _ = row_spec(r["row"])
        row = out.setdefault((r["model"], r["row"]), {"row": r["row"], "sampler": sampler, "steps": steps,
                                                      "calls": r["calls"], "guidance": w, "eta": eta, "seeds": [],
                                                      "fid": [], "fid_judge_b": [], "class_accuracy": []})
        row["seeds"].append(r["seed"])
        row["fid"].append(r["fid"]["A"])
        row["fid_judge_b"].append(r["fid"]["B"])
        row["class_accuracy"].append(r["class_accuracy"])
    return out


def _ranks(values: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def report() -> None:
    """docs/evaluation.md's tables, as Markdown, from protocol.json and protocol_damage.json."""
    result = json.loads(RESULT.read_text())
    real = {k: np.array(v) for k, v in result["real"].items()}
    print(f"real sprites, {len(real['A'])} disjoint draws of {N}: judge A {real['A'].min():.1f} to {real['A'].max():.1f} "
          f"(centre {real['A'].mean():.1f}); judge B {real['B'].min():.2f} to {real['B'].max():.2f} "
          f"(centre {real['B'].mean():.2f})\n")
    rows = [{"model": model, **row} for (model, _), row in _grouped(result).items()]
    spreads = [max(r["fid"]) - min(r["fid"]) for r in rows if len(r["fid"]) > 1]
    print(f"seed spread (max − min over {len(PROTOCOL['seeds'])} seeds), judge A: median {np.median(spreads):.1f}, "
          f"largest {max(spreads):.1f} over {len(spreads)} rows\n")
    print("| model | row | calls | seeds | sprite-FID (judge A) | judge B | class acc. |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a, b = np.array(r["fid"]), np.array(r["fid_judge_b"])
        fa = f"{a.mean():.1f}" + (f" ({a.min():.1f}–{a.max():.1f})" if len(a) > 1 else "")
        fb = f"{b.mean():.2f}" + (f" ({b.min():.2f}–{b.max():.2f})" if len(b) > 1 else "")
        print(f"| {r['model']} | {r['row']} | {r['calls']} | {len(a)} | {fa} | {fb} | {np.mean(r['class_accuracy']):.3f} |")
    a = [np.mean(r["fid"]) for r in rows]
    b = [np.mean(r["fid_judge_b"]) for r in rows]
    rho = np.corrcoef(_ranks(a), _ranks(b))[0, 1]
    print(f"\nSpearman rank correlation of the two judges over the {len(rows)} rows: {rho:.3f}")
    if DAMAGE.exists():
        print("\n| damage to held-out real sprites | judge A | judge B |\n|---|---|---|")
        for name, f in json.loads(DAMAGE.read_text())["damage"].items():
            print(f"| {name} | {f['A']:.1f} | {f['B']:.2f} |")


def cards() -> None:
    """Each model's rows, with the real band, into its card under "protocol" (the weights are unchanged); the
    control, which is not shipped, gets a copy of its card in docs/measurements/control_card.json."""
    result = json.loads(RESULT.read_text())
    grouped = _grouped(result)
    for model_name, path in WEIGHTS.items():
        weights = ROOT / path
        # a model not shipped (the control): its card, with the rows, goes to docs/measurements/ for the lessons
        target = card_path(weights) if path.startswith("weights/") else RESULT.parent / f"{model_name}_card.json"
        rows = {row: r for (model, row), r in grouped.items() if model == model_name}
        source = card_path(weights) if card_path(weights).exists() else target  # runs/ is not kept: the copy
        if not source.exists():
            continue
        card = read_card_file(source)
        card["protocol"] = {**result["protocol"], "doc": "docs/evaluation.md", "real_fid": result["real"]["A"],
                            "real_fid_judge_b": result["real"]["B"], "rows": list(rows.values()),
                            "command": "python tools/protocol.py sample && python tools/protocol.py score && "
                                       "python tools/protocol.py cards", "hardware": result.get("hardware", "")}
        atomic_write(target, lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
        print(f"{target}: {len(rows)} rows", file=sys.stderr)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "sample":
        draw(set(sys.argv[2:]) or None)
    elif cmd == "score":
        score()
    elif cmd == "damage":
        damage()
    elif cmd == "cards":
        cards()
    elif cmd == "report":
        report()
    else:
        sys.exit(__doc__)
