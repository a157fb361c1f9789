"""The course helper module's other public names, so the original lab notebooks run against ours.

The labs do ``from diffusion_utilities import *`` and then use these helpers by name. Each keeps
the lab's signature and behaviour, with its bugs fixed:
- ``unorm``/``norm_torch`` no longer divide by zero on a flat image;
- ``plot_grid``/``plot_sample`` accept ``str`` or ``Path`` folders and draw pixels with
  nearest-neighbour, not blurred;
- ``CustomDataset`` loads ``.npy`` files without pickles and works without a transform.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import transforms
from torchvision.utils import make_grid, save_image

from .data import check_sprite_arrays, load_npy
from .files import atomic_write

__all__ = ["unorm", "norm_all", "norm_torch", "gen_tst_context", "plot_grid", "plot_sample", "CustomDataset",
           "transform"]


def unorm(x: np.ndarray) -> np.ndarray:
    """Stretch one (H, W, 3) image to [0, 1] per channel (a flat channel becomes 0)."""
    xmax, xmin = x.max((0, 1)), x.min((0, 1))
    return (x - xmin) / np.where(xmax > xmin, xmax - xmin, 1)


def norm_all(store: np.ndarray, n_t: int, n_s: int) -> np.ndarray:
    """``unorm`` every sample of every frame: store (n_t, n_s, H, W, 3) -> same shape in [0, 1]."""
    out = np.zeros_like(store)
    for t in range(n_t):
        for s in range(n_s):
            out[t, s] = unorm(store[t, s])
    return out


def norm_torch(x_all: torch.Tensor) -> torch.Tensor:
    """Stretch each (3, H, W) image of a (B, 3, H, W) batch to [0, 1] per channel."""
    x = x_all.detach().float().cpu()
    xmax, xmin = x.amax((2, 3), keepdim=True), x.amin((2, 3), keepdim=True)
    return (x - xmin) / torch.where(xmax > xmin, xmax - xmin, torch.ones_like(xmax))


def gen_tst_context(n_cfeat: int):
    """(count, contexts): each one-hot class then an all-zero row (no context), repeated 6 times."""
    rows = torch.cat([torch.eye(n_cfeat), torch.zeros(1, n_cfeat)])
    vec = rows.repeat(6, 1)
    return len(vec), vec


def plot_grid(x: torch.Tensor, n_sample: int, n_rows: int, save_dir, w):
    """Save a grid of (n_sample, 3, H, W) images as ``save_dir/run_image_w{w}.png``; returns the grid."""
    ncols = n_sample // n_rows
    grid = make_grid(norm_torch(x), nrow=ncols)  # torchvision's nrow is images per row
    path = Path(save_dir) / f"run_image_w{w}.png"
    atomic_write(path, lambda tmp: save_image(grid, tmp))  # never half a file, nor through a link
    print(f"saved image at {path}")
    return grid


def plot_sample(x_gen_store: np.ndarray, n_sample: int, nrows: int, save_dir, fn, w, save: bool = False):
    """Animate stored frames (n_frames, n_sample, 3, H, W) as a grid; returns the FuncAnimation."""
    import matplotlib.pyplot as plt  # here: pyplot takes ~0.8 s to import (see plotting.animate)
    from matplotlib.animation import FuncAnimation, PillowWriter

    ncols = n_sample // nrows
    store = np.moveaxis(np.asarray(x_gen_store), 2, 4)  # (n_frames, n_sample, H, W, 3)
    store = norm_all(store, store.shape[0], n_sample)
    fig, axs = plt.subplots(nrows=nrows, ncols=ncols, sharex=True, sharey=True, figsize=(ncols, nrows), squeeze=False)
    images = []
    for row in range(nrows):
        for col in range(ncols):
            ax = axs[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            images.append(ax.imshow(store[0, row * ncols + col], interpolation="nearest"))

    def draw(i):
        for k, im in enumerate(images):
            im.set_data(store[i, k])
        return images

    anim = FuncAnimation(fig, draw, interval=200, blit=False, repeat=True, frames=store.shape[0])
    plt.close(fig)
    if save:
        path = Path(save_dir) / f"{fn}_w{w}.gif"
        atomic_write(path, lambda tmp: anim.save(tmp, dpi=100, writer=PillowWriter(fps=5)))
        print(f"saved gif at {path}")
    return anim


def _course_transform():
    # ToTensor maps uint8 [0, 255] to [0, 1]; Normalize(0.5, 0.5) then maps it to [-1, 1].
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


transform = _course_transform()


class CustomDataset(torch.utils.data.Dataset):
    """The labs' dataset: sprites (N, H, W, 3) uint8 and labels (N, K) from two ``.npy`` files.

    Items are (image, label): image through ``transform`` (a (3, H, W) tensor in [-1, 1] with the
    module's ``transform``), label an int64 tensor (all zeros when ``null_context``).
    """

    def __init__(self, sfilename, lfilename, transform, null_context: bool = False):
        self.sprites, self.slabels = check_sprite_arrays(load_npy(Path(sfilename)), load_npy(Path(lfilename)))
        print(f"sprite shape: {self.sprites.shape}")
        print(f"labels shape: {self.slabels.shape}")
        self.transform = transform
        self.null_context = null_context
        self.sprites_shape = self.sprites.shape
        self.slabel_shape = self.slabels.shape

    def __len__(self) -> int:
        return len(self.sprites)

    def __getitem__(self, idx):
        image = self.sprites[idx]
        if self.transform:
            image = self.transform(image)
        if self.null_context:
            label = torch.tensor(0).to(torch.int64)
        else:
            label = torch.tensor(self.slabels[idx]).to(torch.int64)
        return image, label

    def getshapes(self):
        return self.sprites_shape, self.slabel_shape
