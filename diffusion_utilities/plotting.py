"""Pictures of sprites: grids and denoising animations, always upscaled with nearest-neighbour.

Pixel art blurred by bilinear interpolation is not pixel art: every image here is enlarged by
repeating pixels (``upscale``) and shown with ``interpolation="nearest"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .data import tensor_to_sprites

__all__ = ["to_uint8", "upscale", "make_grid", "save_grid", "animate", "save_gif", "show_gif"]


def to_uint8(x) -> np.ndarray:
    """(B, 3, H, W) tensor in [-1, 1] or (B, H, W, 3) uint8 array -> (B, H, W, 3) uint8."""
    if torch.is_tensor(x):
        return tensor_to_sprites(x)
    return np.asarray(x, dtype=np.uint8)


def upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (..., H, W, C) by an integer factor."""
    return img.repeat(scale, axis=-3).repeat(scale, axis=-2)


def make_grid(images, nrow: int = 8, scale: int = 4, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile (B, ...) images into one (H', W', 3) uint8 picture, ``nrow`` per row, ``pad`` pixels apart."""
    imgs = upscale(to_uint8(images), scale)
    b, h, w, c = imgs.shape
    ncol = nrow
    nrows = -(-b // ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i, im in enumerate(imgs):
        r, k = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = im
    return grid


def save_grid(images, path: Path, nrow: int = 8, scale: int = 4) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, nrow, scale)).save(path)
    return path


def animate(frames: torch.Tensor, frame_t: list[int] | None = None, nrow: int = 8, scale: int = 3,
            interval: int = 80, hold: int = 8, titles=None):
    """A matplotlib FuncAnimation of a denoising run.

    frames: (F, B, 3, H, W) from ``Samples.frames``; the last frame is held for ``hold`` extra frames.
    Several runs side by side: pass a list of frame tensors (same F) and ``titles``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    runs = frames if isinstance(frames, (list, tuple)) else [frames]
    grids = [np.stack([make_grid(f, nrow, scale) for f in run]) for run in runs]  # each (F, H', W', 3)
    n_frames = grids[0].shape[0]
    h, w = grids[0].shape[1:3]
    # Each grid is drawn with figimage: its pixels copied to whole-pixel offsets in the figure, one
    # grid pixel per GIF pixel, never resampled. (An axes stretched the grid by a non-integer factor,
    # which made some 2-pixel sprite columns 3 wide, and matplotlib before 3.11 rounds axes edges
    # differently from one version to the next.)
    dpi, pad, gap, top, bottom = 100, 2, 8, 18 if titles else 2, 16
    fig_w, fig_h = 2 * pad + len(grids) * w + (len(grids) - 1) * gap, top + h + bottom
    fig = plt.figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    artists = []
    for k, g in enumerate(grids):
        left = pad + k * (w + gap)
        artists.append(fig.figimage(g[0], xo=left, yo=bottom, origin="upper"))
        if titles:
            fig.text((left + w / 2) / fig_w, (bottom + h + 3) / fig_h, titles[k], ha="center", va="bottom", fontsize=9)
    label = fig.text(0.5, 2 / fig_h, "", ha="center", va="bottom", fontsize=9)

    def draw(i):
        i = min(i, n_frames - 1)
        for a, g in zip(artists, grids):
            a.set_data(g[i])
        if frame_t is not None:
            label.set_text(f"t = {frame_t[i]}")
        return artists

    anim = FuncAnimation(fig, draw, frames=n_frames + hold, interval=interval, blit=False)
    plt.close(fig)
    return anim


def save_gif(anim, path: Path, fps: int = 12) -> Path:
    """Save a FuncAnimation as a GIF with Pillow."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(path, writer=PillowWriter(fps=fps))
    return path


def show_gif(anim, path: Path, fps: int = 12):
    """Save the animation as a GIF and return an IPython image that shows it inline (small, no JS)."""
    from IPython.display import Image as IPImage

    save_gif(anim, path, fps)
    return IPImage(data=Path(path).read_bytes(), format="gif")
