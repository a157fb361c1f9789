"""Pictures of sprites: grids and denoising animations, always upscaled with nearest-neighbour.

Pixel art blurred by bilinear interpolation is not pixel art: every image here is enlarged by
repeating pixels (``upscale``) and shown with ``interpolation="nearest"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
import torch

from .checks import real_number, whole_number
from .files import atomic_write
from .sprites import tensor_to_sprites

__all__ = ["to_uint8", "upscale", "make_grid", "save_grid", "animate", "save_gif", "show_gif", "unet_diagram",
           "plot_fid_against_calls"]


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
    ncol = whole_number(nrow, "nrow", 1)
    imgs = upscale(to_uint8(images), whole_number(scale, "scale", 1))
    b, h, w, c = imgs.shape
    nrows = -(-b // ncol)
    grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.uint8)
    for i, im in enumerate(imgs):
        r, k = divmod(i, ncol)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = im
    return grid


def save_grid(images, path: Path, nrow: int = 8, scale: int = 4) -> Path:
    """Write ``make_grid(images)`` to ``path`` atomically (a PNG unless the suffix says otherwise)."""
    path = Path(path)
    picture = Image.fromarray(make_grid(images, nrow, scale))
    atomic_write(path, lambda tmp: picture.save(tmp))  # the temporary name keeps path's suffix
    return path


def animate(frames: torch.Tensor, frame_t: list | None = None, nrow: int = 8, scale: int = 3,
            interval: int = 80, hold: int = 8, titles=None, label: str = "t"):
    """A matplotlib FuncAnimation of a denoising run.

    frames: (F, B, 3, H, W) from ``Samples.frames``; the last frame is held for ``hold`` extra frames.
    Several runs side by side: pass a list of frame tensors (same F) and ``titles``.
    frame_t: a value per frame, shown under it as "t = 480" (``label`` names it; floats get 2 decimals).
    """
    import matplotlib.pyplot as plt  # here, not at the top: pyplot takes ~0.8 s to import, which the
    from matplotlib.animation import FuncAnimation  # commands that draw no animation should not pay

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
    caption = fig.text(0.5, 2 / fig_h, "", ha="center", va="bottom", fontsize=9)

    def draw(i):
        i = min(i, n_frames - 1)
        for a, g in zip(artists, grids):
            a.set_data(g[i])
        if frame_t is not None:
            value = frame_t[i]
            caption.set_text(f"{label} = {value:.2f}" if isinstance(value, float) else f"{label} = {value}")
        return artists

    anim = FuncAnimation(fig, draw, frames=n_frames + hold, interval=interval, blit=False)
    plt.close(fig)
    return anim


def save_gif(anim, path: Path, fps: int = 12) -> Path:
    """Save a FuncAnimation as a GIF with Pillow, atomically."""
    from matplotlib.animation import PillowWriter  # with pyplot, as in animate

    path, fps = Path(path), real_number(fps, "fps", 0, 100, above=True, hint="(frames a second)")
    atomic_write(path, lambda tmp: anim.save(tmp, writer=PillowWriter(fps=fps)))
    return path


def show_gif(anim, path: Path, fps: int = 12):
    """Save the animation as a GIF and return an IPython image that shows it inline (small, no JS)."""
    from IPython.display import Image as IPImage  # only in a notebook, where IPython is there

    save_gif(anim, path, fps)
    return IPImage(data=Path(path).read_bytes(), format="gif")


# Where each ContextUnet block sits in the diagram: (column, row), row 0 at the bottom of the U.
_UNET_LAYOUT = {"input x": (0, 3), "init_conv": (1, 3), "down1": (2, 2), "down2": (3, 1), "to_vec": (4, 0),
                "up0": (5, 1), "up1": (6, 2), "up2": (7, 3), "out": (8, 3)}


def unet_diagram(model, height: int | None = None):
    """A matplotlib figure of ``model``'s U: each block with the shape it outputs, measured by a
    forward hook on one batch of 1 (so the picture is the network's, not a drawing of it), the skip
    connections, and where the time and context embeddings enter.
    """
    import matplotlib.pyplot as plt  # as in animate

    h = height or model.h
    shapes = _block_shapes(model, h)
    fig, ax = plt.subplots(figsize=(10, 5))
    _draw_blocks(ax, shapes)
    _draw_connections(ax)
    ax.text(-0.5, 0.3, "green, dashed: skip connections\n(channels concatenated)", fontsize=9, color="tab:green")
    ax.text(-0.5, -0.2, "red: the context scales the\nfeatures, the time shifts them", fontsize=9, color="tab:red")
    ax.set_xlim(-0.6, 8.6); ax.set_ylim(-0.45, 4.25); ax.set_aspect("equal"); ax.axis("off")
    ax.set_title(f"ContextUnet for {h}×{h} sprites: each block's output shape, measured by a forward hook", fontsize=10)
    fig.tight_layout()
    return fig


_BOX_W, _BOX_H = 0.95, 0.5  # a block's box in the diagram


def _block_shapes(model, h: int) -> dict[str, tuple]:
    """Each diagram block's output shape on one (1, C, h, h) batch, read by forward hooks."""
    shapes = {"input x": (1, model.in_channels, h, h)}
    blocks = [b for b in _UNET_LAYOUT if b != "input x"]
    hooks = [getattr(model, b).register_forward_hook(lambda m, i, o, b=b: shapes.__setitem__(b, tuple(o.shape)))
             for b in blocks]
    try:
        with torch.no_grad():
            model(torch.zeros(shapes["input x"], device=next(model.parameters()).device), torch.tensor([0.5]))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _centre(b: str) -> tuple[float, float]:
    x, y = _UNET_LAYOUT[b]
    return x, y * 1.1


def _draw_blocks(ax, shapes: dict[str, tuple]) -> None:
    """A labelled box per block, with its output shape; down blocks blue, up blocks orange."""
    import matplotlib.pyplot as plt  # as in animate

    w, hh = _BOX_W, _BOX_H
    for b, (x, _) in _UNET_LAYOUT.items():
        _, y = _centre(b)
        c, size = shapes[b][1], shapes[b][2]
        colour = "#dde8f5" if x < 4 else "#f5e6d3" if x > 4 else "#e4e4e4"
        ax.add_patch(plt.Rectangle((x - w / 2, y - hh / 2), w, hh, fc=colour, ec="black", lw=0.8))
        ax.text(x, y + 0.08, b, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(x, y - 0.12, f"(B, {c}, {size}, {size})", ha="center", va="center", fontsize=8)


def _draw_connections(ax) -> None:
    """The path through the U, the skip connections, and where the embeddings act."""
    w, hh = _BOX_W, _BOX_H
    arrow = dict(arrowstyle="->", lw=1.1, color="black")
    path = list(_UNET_LAYOUT)
    for a, b in zip(path, path[1:]):
        (xa, ya), (xb, yb) = _centre(a), _centre(b)
        ax.annotate("", xy=(xb - w / 2, yb), xytext=(xa + w / 2, ya), arrowprops=arrow)
    skip = dict(arrowstyle="->", lw=1, color="tab:green", ls="--", connectionstyle="arc3,rad=-0.25")
    for a, b, rad in (("down2", "up1", -0.25), ("down1", "up2", -0.25), ("init_conv", "out", -0.12)):  # concatenated
        (xa, ya), (xb, yb) = _centre(a), _centre(b)
        ax.annotate("", xy=(xb - 0.1, yb + hh / 2), xytext=(xa + 0.1, ya + hh / 2),
                    arrowprops={**skip, "connectionstyle": f"arc3,rad={rad}"})
    for (a, b), k in ((("up0", "up1"), 1), (("up1", "up2"), 2)):  # the embeddings act between up blocks
        (xa, ya), (xb, yb) = _centre(a), _centre(b)
        ax.text((xa + xb) / 2 + 0.35, (ya + yb) / 2 - 0.05, f"× c_emb{k}\n+ t_emb{k}", fontsize=8, color="tab:red",
                va="center")


def plot_fid_against_calls(ax, curves: dict, band: tuple[float, float, float], n: int) -> None:
    """sprite-FID against network calls on ``ax``: one line per entry of ``curves``, {label: [(calls, fid,
    low, high), ...]} (low and high: the range over sampling seeds, drawn as error bars where there is one),
    and the real sprites' band (centre, low, high) at the same n, grey."""
    for label, points in curves.items():
        points = sorted(points)
        calls, fid = [p[0] for p in points], np.array([p[1] for p in points])
        err = np.array([[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]])
        ax.errorbar(calls, fid, yerr=err, fmt="o-" if len(points) > 1 else "*", ms=5 if len(points) > 1 else 12,
                    capsize=3, label=label)
    ax.axhspan(band[1], band[2], color="0.85", zorder=0, label=f"real sprites: separate draws of {n:,}")
    ax.axhline(band[0], color="0.5", lw=1, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("network calls")
    ax.set_ylabel(f"sprite-FID at n = {n:,} (lower is better)")
