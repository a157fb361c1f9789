"""The noise-prediction network: the course's ContextUnet, with its defects fixed.

Shapes for the course's defaults (in_channels=3, n_feat=64, n_cfeat=5, height=16), batch B:

    x        (B, 3, 16, 16)
    init_conv  -> (B, 64, 16, 16)
    down1      -> (B, 64, 8, 8)
    down2      -> (B, 128, 4, 4)
    to_vec     -> (B, 128, 1, 1)
    up0        -> (B, 128, 4, 4)     then  × context embedding + time embedding
    up1        -> (B, 64, 8, 8)      then  × context embedding + time embedding
    up2        -> (B, 64, 16, 16)
    out        -> (B, 3, 16, 16)     the predicted noise ε

What differs from the course's helper module, and why:
- ResidualConvBlock's 1×1 shortcut (used when in and out channels differ) is created once in
  ``__init__``, so it is trained and saved; the course built a fresh random one inside every
  ``forward``, so that path was untrained noise and the output changed from call to call.
- ``to_vec`` pools by ``height // 4`` (the course hard-coded 4, right only for 16×16).
- Shapes of x, t and c are checked, with one-line errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .errors import BadInput
from .checks import whole_number

__all__ = ["ModelConfig", "ResidualConvBlock", "UnetDown", "UnetUp", "EmbedFC", "ContextUnet"]


@dataclass(frozen=True)
class ModelConfig:
    """ContextUnet's constructor arguments; saved with the weights so they rebuild their model."""

    in_channels: int = 3  # RGB
    n_feat: int = field(default=64, metadata={"min": 1, "help": "feature maps at full resolution; 2·n_feat at the bottom of the U"})
    n_cfeat: int = 5  # context width: the 5 sprite classes
    height: int = 16  # image side in pixels; must be a multiple of 4 (two 2× poolings)


class ResidualConvBlock(nn.Module):
    """Two 3×3 conv → BatchNorm → GELU layers, optionally with a residual connection.

    x: (B, in_channels, H, W) -> (B, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, is_res: bool = False):
        super().__init__()
        self.is_res = is_res
        self.same_channels = in_channels == out_channels
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.GELU())
        # A trained 1×1 projection so the skip path can be added when the channel count changes.
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if is_res and not self.same_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        if not self.is_res:
            return h
        skip = x if self.shortcut is None else self.shortcut(x)
        return (skip + h) / math.sqrt(2)  # /√2 keeps the variance of a sum of two unit-variance paths at 1


class UnetDown(nn.Module):
    """Two conv blocks, then a 2× max-pool.  x: (B, in, H, W) -> (B, out, H/2, W/2)"""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.model = nn.Sequential(
            ResidualConvBlock(in_channels, out_channels), ResidualConvBlock(out_channels, out_channels), nn.MaxPool2d(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class UnetUp(nn.Module):
    """Concatenate the skip connection, 2× transposed conv, two conv blocks.

    x, skip: (B, in/2, H, W) each -> (B, out, 2H, 2W)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
            ResidualConvBlock(out_channels, out_channels),
            ResidualConvBlock(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat((x, skip), 1))  # (B, in, H, W)


class EmbedFC(nn.Module):
    """Linear → GELU → Linear, embedding a time step or a context vector.

    x: anything with input_dim values per row, flattened to (N, input_dim) -> (N, emb_dim)
    """

    def __init__(self, input_dim: int, emb_dim: int):
        super().__init__()
        self.input_dim = input_dim
        self.model = nn.Sequential(nn.Linear(input_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.reshape(-1, self.input_dim))


class ContextUnet(nn.Module):
    """U-Net that predicts the noise ε in x_t, given the time and an optional context.

    Call as ``model(x, t, c=None)``:
      x: (B, in_channels, height, height), the noisy images x_t
      t: normalised time t/T in [0, 1]; shape (B,), (B, 1, 1, 1), or (1, 1, 1, 1) for the whole batch
      c: (B, n_cfeat) context weights (one-hot or a mix), or None for "no context" (all zeros)
    Returns (B, in_channels, height, height), the predicted noise.
    """

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 5, height: int = 16):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("n_feat", n_feat), ("n_cfeat", n_cfeat), ("height", height)):
            whole_number(value, name, 1)
        # plain ints (a numpy integer is fine too): the config is saved as JSON in the weights' card
        in_channels, n_feat, n_cfeat, height = int(in_channels), int(n_feat), int(n_cfeat), int(height)
        if height % 4:
            raise BadInput(f"height must be a multiple of 4 (the U-Net halves it twice), got {height}")
        if n_feat % 8:
            raise BadInput(f"n_feat must be a multiple of 8 (GroupNorm uses 8 groups), got {n_feat}")
        # h: the course's name for the image side (ModelConfig's height). sample() reads in_channels, h and
        # n_cfeat, so it also runs the labs' own ContextUnet, which has these three and no config
        self.in_channels, self.n_feat, self.n_cfeat, self.h = in_channels, n_feat, n_cfeat, height

        self.init_conv = ResidualConvBlock(in_channels, n_feat, is_res=True)
        self.down1 = UnetDown(n_feat, n_feat)
        self.down2 = UnetDown(n_feat, 2 * n_feat)
        self.to_vec = nn.Sequential(nn.AvgPool2d(height // 4), nn.GELU())

        self.timeembed1 = EmbedFC(1, 2 * n_feat)
        self.timeembed2 = EmbedFC(1, 1 * n_feat)
        self.contextembed1 = EmbedFC(n_cfeat, 2 * n_feat)
        self.contextembed2 = EmbedFC(n_cfeat, 1 * n_feat)

        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, height // 4, height // 4),
            nn.GroupNorm(8, 2 * n_feat),
            nn.ReLU(),
        )
        self.up1 = UnetUp(4 * n_feat, n_feat)
        self.up2 = UnetUp(2 * n_feat, n_feat)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1),
            nn.GroupNorm(8, n_feat),
            nn.ReLU(),
            nn.Conv2d(n_feat, in_channels, 3, 1, 1),
        )

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(self.in_channels, self.n_feat, self.n_cfeat, self.h)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, t, c)
        x = self.init_conv(x)
        down1 = self.down1(x)  # (B, n_feat, H/2, W/2)
        down2 = self.down2(down1)  # (B, 2·n_feat, H/4, W/4)
        hiddenvec = self.to_vec(down2)  # (B, 2·n_feat, 1, 1)
        if c is None:
            c = torch.zeros(x.shape[0], self.n_cfeat, dtype=x.dtype, device=x.device)
        t = t.to(x.dtype)
        cemb1 = self.contextembed1(c).view(-1, self.n_feat * 2, 1, 1)
        temb1 = self.timeembed1(t).view(-1, self.n_feat * 2, 1, 1)
        cemb2 = self.contextembed2(c).view(-1, self.n_feat, 1, 1)
        temb2 = self.timeembed2(t).view(-1, self.n_feat, 1, 1)

        up1 = self.up0(hiddenvec)  # (B, 2·n_feat, H/4, W/4)
        up2 = self.up1(cemb1 * up1 + temb1, down2)  # context scales the features, time shifts them
        up3 = self.up2(cemb2 * up2 + temb2, down1)  # (B, n_feat, H, W)
        return self.out(torch.cat((up3, x), 1))  # (B, 2·n_feat, H, W) -> (B, C, H, W)

    def _check_inputs(self, x, t, c) -> None:
        # Type and shape checks only: they cost no device sync, so they stay on in the sampling loop.
        for name, value in (("x", x), ("t", t), ("context", c)):
            if value is not None and not torch.is_tensor(value):  # e.g. a numpy array: an AttributeError deep inside
                raise BadInput(f"{name} must be a torch tensor, got {type(value).__name__}; convert it with torch.as_tensor")
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.h or x.shape[3] != self.h:
            raise BadInput(
                f"x has shape {tuple(x.shape)}; this model takes (B, {self.in_channels}, {self.h}, {self.h}) images"
            )
        if not torch.is_tensor(t) or t.numel() not in (1, x.shape[0]):
            shape = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise BadInput(f"t has shape {shape}; pass a tensor of t/T with 1 or B={x.shape[0]} values")
        if c is not None and (c.dim() != 2 or c.shape != (x.shape[0], self.n_cfeat)):
            raise BadInput(f"context has shape {tuple(c.shape)}; this model takes (B={x.shape[0]}, n_cfeat={self.n_cfeat})")
