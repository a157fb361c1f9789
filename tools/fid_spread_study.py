"""How much does sprite-FID at evaluate's default n = 200 vary? Blocks of 200 against the whole 1,000.

For the real held-out sprites and for each model given, draw 1,000 sprites on the CPU (DDIM-25 with
η = 1, the five classes in turn, seed 0, as `evaluate --rows ddim-eta1` draws them on a CPU), then score the whole set
and five disjoint blocks of 200 (each block keeps the classes balanced) against the same 2,000
reference sprites.

    python tools/fid_spread_study.py [NAME=WEIGHTS ...] > spread.json   # progress on stderr
        # default: shipped=weights/sprites_ddpm.safetensors; about 1 minute per model on 2 CPU cores

docs/measurements/cpu_2026-11-26c_fid_spread_n200.json came from
    python tools/fid_spread_study.py shipped=weights/sprites_ddpm.safetensors \
        course=/work/gpu_weights/recipe_course_model.safetensors b256=/work/gpu_weights/recipe_b256_model.safetensors
(the two H100 recipe weights of docs/benchmarks.md, not shipped). The real sprites' blocks scored
25.0 to 65.1 while the whole 1,000 scored 15.0, so two models whose FIDs at n = 200 differ by less
than about 40 may be in either order.
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion_utilities import load_model, sample
from diffusion_utilities.schedule import schedule_from_card
from diffusion_utilities.data import procedural_dataset, sprites_to_tensor
from diffusion_utilities.evaluation import HELD_OUT_SEED, Evaluator, load_classifier, sprite_fid

ROOT = Path(__file__).resolve().parents[1]
N, BLOCK = 1000, 200


def scores(classifier, x: torch.Tensor, reference: torch.Tensor) -> dict:
    return {"fid_1000": round(sprite_fid(classifier, x, reference), 2),
            "fid_200": [round(sprite_fid(classifier, x[i:i + BLOCK], reference), 2) for i in range(0, N, BLOCK)]}


def main(models: dict[str, Path]) -> dict:
    classifier = load_classifier(ROOT / "weights" / "sprite_classifier.safetensors")
    context = F.one_hot(torch.arange(N) % classifier.n_classes, classifier.n_classes).float()
    out = {}
    for name, path in models.items():
        model, card = load_model(path)
        reference = Evaluator(classifier, card).ref_features
        if "real" not in out:  # labels cycle through the classes with the index, as the contexts do
            out["real"] = scores(classifier, sprites_to_tensor(procedural_dataset(N, HELD_OUT_SEED).sprites), reference)
            print("real", out["real"], file=sys.stderr, flush=True)
        start = time.perf_counter()
        x = sample(model, schedule_from_card(card), N, sampler="ddim", steps=25, eta=1.0,
                   context=context, generator=torch.Generator().manual_seed(0)).x
        out[name] = {"row": "ddim-eta1", **scores(classifier, x, reference),
                     "seconds": round(time.perf_counter() - start, 1)}
        print(name, out[name], file=sys.stderr, flush=True)
    return out


if __name__ == "__main__":
    pairs = [a.rpartition("=")[::2] for a in sys.argv[1:]] or [("shipped", str(ROOT / "weights" / "sprites_ddpm.safetensors"))]
    print(json.dumps(main({name or Path(path).stem: Path(path) for name, path in pairs}), indent=1))
