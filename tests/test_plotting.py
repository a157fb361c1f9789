import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_utilities.plotting import animate, make_grid, save_gif


@pytest.mark.parametrize("scale, panels, n, nrow", [(2, 1, 8, 4), (3, 1, 8, 4), (4, 2, 8, 4), (3, 1, 64, 8), (3, 2, 64, 8)])
def test_gif_frames_hold_each_grid_pixel_for_pixel(tmp_path, scale, panels, n, nrow):
    # Eight colours only (each channel -1 or 1), so the GIF's palette holds them exactly.
    # (64 sprites at nrow 8, scale 3 is the size that matplotlib 3.10 stretched through an axes.)
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(3, n, 3, 16, 16, generator=g) > 0.5).float() * 2 - 1  # (F, B, 3, H, W)
    runs = [frames[:, :n // 2], frames[:, n // 2:]] if panels == 2 else frames
    titles = ["a", "b"] if panels == 2 else None
    gif = Image.open(save_gif(animate(runs, [500, 250, 0], nrow=nrow, scale=scale, titles=titles), tmp_path / "a.gif"))
    first = runs[0] if panels == 2 else runs
    grid = make_grid(first[-1], nrow, scale)  # the last frame of the first panel
    gif.seek(2)
    shown = np.asarray(gif.convert("RGB"))
    top = 18 if titles else 2
    region = shown[top:top + grid.shape[0], 2:2 + grid.shape[1]]
    # exactly the grid: no row or column of sprite pixels stretched to a different width
    assert np.array_equal(region, grid), f"{(region != grid).any(-1).sum()} pixels differ"
