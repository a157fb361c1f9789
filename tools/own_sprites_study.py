"""How many sprites does fine-tuning need? A measurement for README's "Bring your own sprites".

For N in (16, 64, 256, 1024) food sprites: fine-tune the shipped model on them, unconditionally,
for a fixed 200 steps of batch 32 (as lesson 5 does for 64), then draw 64 samples (DDIM, 25 steps,
η = 1) and measure
  - food: the fraction the lesson-4 classifier calls food (the shipped model without a context: ~20%);
  - copies: the fraction within RMS 0.05 of one of the N training sprites (memorisation).
A from-scratch model trained the same way on 1,024 sprites is the control.

    python tools/own_sprites_study.py [OUT_DIR]  # about 5 minutes on 2 CPU cores; OUT_DIR gets a PNG per row
Caveat: the food sprites come from the same generator as the shipped model's data.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffusion_utilities import (DiffusionConfig, ModelConfig, TrainConfig, load_model, make_schedule,
                                 procedural_dataset, sample, sprites_to_tensor, train)
from diffusion_utilities.data import SpriteData
from diffusion_utilities.evaluation import load_classifier, novelty

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "sprites_ddpm.safetensors"


def food_set(n: int) -> SpriteData:
    pool = procedural_dataset(5 * n, seed=4242)  # class = index % 5, so exactly n foods
    food = pool.sprites[pool.labels[:, 2] == 1][:n]
    return SpriteData(food, np.zeros((n, 0), np.float32), [], {"source": "study"})  # no classes: unconditional


def run(n: int, init_from, out: Path, classifier, schedule) -> tuple[float, float, float, torch.Tensor]:
    data = food_set(n)
    steps_per_epoch = -(-n // 32)
    start = time.perf_counter()
    train(TrainConfig(epochs=max(1, round(200 / steps_per_epoch)), batch_size=32, lr=2e-4 if init_from else 1e-3,
                      ema_decay=0.99, augment=True, checkpoint_every=0), out, data, ModelConfig(n_cfeat=1),
          init_from=init_from, progress=False, overwrite=True)
    seconds = time.perf_counter() - start
    model, _ = load_model(out / "model.safetensors")
    x = sample(model, schedule, 64, sampler="ddim", steps=25, eta=1.0, generator=torch.Generator().manual_seed(0)).x
    food = (classifier(x.clamp(-1, 1)).argmax(1) == 2).float().mean().item()
    _, copies = novelty(x, sprites_to_tensor(data.sprites))
    return food, copies, seconds, x


def main(pictures: Path | None) -> None:
    from diffusion_utilities.plotting import save_grid

    classifier = load_classifier(ROOT / "weights" / "sprite_classifier.safetensors")
    schedule = make_schedule(DiffusionConfig())
    print(f"{'start':12s} {'N':>5s} {'food':>6s} {'copies':>7s} {'train s':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for init_from, sizes in ((SHIPPED, (16, 64, 256, 1024)), (None, (1024,))):
            for n in sizes:
                food, copies, seconds, x = run(n, init_from, Path(tmp) / f"{n}-{init_from is None}", classifier, schedule)
                name = "fine-tune" if init_from else "from scratch"
                if pictures:
                    save_grid(x, pictures / f"{name.replace(' ', '-')}-{n}.png", nrow=16, scale=3)
                print(f"{name:12s} {n:5d} {food:6.0%} {copies:7.0%} {seconds:8.0f}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
