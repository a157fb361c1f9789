"""How many sprites does fine-tuning need? A measurement for README's "Bring your own sprites".

For N in (16, 64, 256, 1024) food sprites: fine-tune the shipped model on them, unconditionally,
for a fixed 200 steps of batch 32 (lesson 5 fine-tunes on 64 for 100), then draw 64 samples (DDIM,
25 steps, η = 1) and measure
  - food: the fraction the classifier calls food (the shipped model without a context: 41% of 32
    samples in lesson 5);
  - copies: the fraction within RMS 0.05 of one of the N training sprites (memorisation).
A from-scratch model trained the same way on 1,024 sprites is the control.

    python tools/own_sprites_study.py [OUT_DIR]  # about 5 minutes on 2 CPU cores; OUT_DIR gets a PNG per row
    python tools/own_sprites_study.py OUT_DIR --figure docs/images/own_sprites_study.png
                                                 # README's figure: the first 16 samples of each row
Caveat: the food sprites come from the same generator as the shipped model's data.
"""

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
ROWS = [("fine-tune", 16), ("fine-tune", 64), ("fine-tune", 256), ("fine-tune", 1024), ("from-scratch", 1024)]


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
        for init_from, sizes in ((SHIPPED, (16, 64, 256, 1024)), (None, (1024,))):  # ROWS, in order
            for n in sizes:
                food, copies, seconds, x = run(n, init_from, Path(tmp) / f"{n}-{init_from is None}", classifier, schedule)
                name = "fine-tune" if init_from else "from scratch"
                if pictures:
                    save_grid(x, pictures / f"{name.replace(' ', '-')}-{n}.png", nrow=16, scale=3)
                print(f"{name:12s} {n:5d} {food:6.0%} {copies:7.0%} {seconds:8.0f}", flush=True)


def figure(pictures: Path, out: Path) -> None:
    """One labelled strip per row of the study: the first line (16 samples) of each row's PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    strips = []
    for name, n in ROWS:
        grid = np.asarray(Image.open(pictures / f"{name}-{n}.png").convert("RGB"))
        strips.append(grid[:16 * 3 + 2])  # save_grid's first line: 1 px border, 16 px × scale 3, 1 px border
    label_w, gap = 130, 6  # in pixels: each strip is drawn at its own size, one image pixel per figure pixel
    h, w = strips[0].shape[:2]
    fig_w, fig_h = label_w + w + 2, len(ROWS) * (h + gap)
    fig = plt.figure(figsize=(fig_w / 100, fig_h / 100), dpi=100)
    for k, ((name, n), strip) in enumerate(zip(ROWS, strips)):
        ax = fig.add_axes((label_w / fig_w, 1 - (k + 1) * (h + gap) / fig_h, w / fig_w, h / fig_h))
        ax.imshow(strip, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        fig.text((label_w - 10) / fig_w, 1 - (k * (h + gap) + h / 2) / fig_h,
                 f"{'fine-tuned' if name == 'fine-tune' else 'from scratch'}\non {n:,} sprites",
                 ha="right", va="center", fontsize=10)
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, help="write a PNG per row of the study here")
    parser.add_argument("--figure", type=Path, metavar="PNG",
                        help="only compose README's figure from the PNGs already in OUT_DIR")
    args = parser.parse_args()
    if args.figure and not args.out_dir:
        parser.error("--figure needs OUT_DIR, the folder with the study's per-row PNGs")
    figure(args.out_dir, args.figure) if args.figure else main(args.out_dir)
