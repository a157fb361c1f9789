"""What bounds DDPM-500 on a CPU: measured rates of the network's convolutions, and what was tried.

    python tools/cpu_bound_study.py            # about 20 s on 2 cores

Prints, for the shipped model at batch 32:
1. where one forward pass spends its time (3×3 convs, GELU, transposed convs, the rest);
2. the rate of each 3×3 conv shape the network uses, in GFLOP/s (oneDNN, channels_last), next to
   MKL's matrix product, and the floor for DDPM-500 that the best of those rates implies. Each
   shape's row also times Winograd F(4×4, 3×3) (Lavin & Gray 2015, "Fast Algorithms for
   Convolutional Neural Networks": 4× fewer multiplications for 3×3 kernels) written with
   PyTorch ops, and PyTorch's NNPACK (Winograd in C, where the build has it), against oneDNN;
3. two small changes to the folded model that docs/benchmarks.md weighs (GELU on an NHWC view, the
   2×2 stride-2 transposed convs as one matrix product), timed against the folded model.
Numbers go to docs/benchmarks.md; nothing here is used by the library.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_utilities.bench import median_time  # noqa: E402
from diffusion_utilities.model import inference_copy  # noqa: E402
from diffusion_utilities.weights import load_model  # noqa: E402

B = 32

# Winograd F(4×4, 3×3) on the points 0, ±1, ±2, ∞ (Lavin & Gray 2015, Section 4.2): a 6×6 input
# tile d and a 3×3 kernel g give the 4×4 output tile Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A.
BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float32)
G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float32)
AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                  dtype=torch.float32)
M, A = 4, 6  # output and input tile sides


def winograd_weights(w: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) kernels -> (36, C, K): G g Gᵀ for each, laid out for one batched matmul."""
    u = G @ w @ G.T  # (K, C, 6, 6)
    return u.permute(2, 3, 1, 0).reshape(A * A, w.shape[1], w.shape[0]).contiguous()


def winograd_conv(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 3×3, padding-1 convolution.  x: (B, H, W, C) NHWC -> (B, H, W, K)."""
    b, h, w, c = x.shape
    k = u.shape[2]
    nh, nw = -(-h // M), -(-w // M)
    xp = F.pad(x, (0, 0, 1, 1 + nw * M - w, 1, 1 + nh * M - h))
    d = xp.unfold(1, A, M).unfold(2, A, M)  # (B, nh, nw, C, 6, 6) overlapping tiles
    d = d.permute(4, 5, 0, 1, 2, 3).reshape(A, -1)  # (6, 6·B·nh·nw·C)
    v = torch.matmul(BT, (BT @ d).view(A, A, -1)).view(A * A, b * nh * nw, c)  # Bᵀ d B
    m = torch.bmm(v, u).view(A, -1)  # (36, tiles, K): the 36 products, each one matmul
    y = torch.matmul(AT, (AT @ m).view(M, A, -1)).view(M, M, b, nh, nw, k)  # Aᵀ m A
    return y.permute(2, 3, 0, 4, 1, 5).reshape(b, nh * M, nw * M, k)[:, :h, :w] + bias


class NHWCGELU(nn.Module):
    """GELU computed on the NHWC view of a channels_last tensor (same values to float rounding)."""

    def forward(self, x):
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            return F.gelu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.gelu(x)


class UpAsMatmul(nn.Module):
    """A kernel-s stride-s transposed conv (no overlap) as one matmul and a pixel rearrangement."""

    def __init__(self, ct: nn.ConvTranspose2d):
        super().__init__()
        c_in, self.c_out, s, _ = ct.weight.shape
        self.s, self.w, self.b = s, ct.weight.reshape(c_in, -1), ct.bias  # w: (C, K·s·s)

    def forward(self, x):
        b, c, h, w = x.shape
        y = x.permute(0, 2, 3, 1).reshape(b * h * w, c) @ self.w  # (B·H·W, K·s·s)
        y = y.view(b, h, w, self.c_out, self.s, self.s).permute(0, 1, 4, 2, 5, 3)  # (B, H, s, W, s, K)
        return (y.reshape(b, h * self.s, w * self.s, self.c_out) + self.b).permute(0, 3, 1, 2)


def timed_ms(fn, repeats: int = 30) -> float:
    """Median of ``repeats`` runs of ``fn`` in ms, after two warm-ups (the bench's own timer)."""
    fn(), fn()
    return median_time(fn, torch.device("cpu"), repeats) * 1e3


def conv_shapes(model) -> list[tuple[int, int, int]]:
    """(C_in, C_out, side) of every 3×3 conv in a forward at the model's height."""
    shapes, hooks = [], []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3):
            hooks.append(mod.register_forward_hook(lambda m, i, o: shapes.append((m.in_channels, m.out_channels, o.shape[-1]))))
    with torch.inference_mode():
        model(torch.randn(1, 3, model.h, model.h), torch.zeros(1))
    for h in hooks:
        h.remove()
    return shapes


def breakdown(model, x, t, c) -> dict[str, float]:
    """ms per forward spent in each kind of layer, from hooks around every leaf module."""
    spent, hooks = {}, []
    kinds = (nn.Conv2d, nn.GELU, nn.ConvTranspose2d)

    def before(mod, inp):
        mod._start = time.perf_counter()

    def after(mod, inp, out):
        kind = type(mod).__name__ if not isinstance(mod, nn.Conv2d) or mod.kernel_size == (3, 3) else "Conv2d 1×1"
        spent[kind] = spent.get(kind, 0.0) + time.perf_counter() - mod._start

    for mod in model.modules():
        if isinstance(mod, kinds):
            hooks += [mod.register_forward_pre_hook(before), mod.register_forward_hook(after)]
    runs = 20
    with torch.inference_mode():
        model(x, t, c)
        spent.clear()
        start = time.perf_counter()
        for _ in range(runs):
            model(x, t, c)
        total = time.perf_counter() - start
    for h in hooks:
        h.remove()
    out = {k: v / runs * 1e3 for k, v in spent.items()}
    out["everything else"] = total / runs * 1e3 - sum(out.values())
    return out


def with_changes(model, gelu: bool, up: bool):
    """The folded model with GELUs and/or transposed convs replaced (see the classes above)."""
    fast = inference_copy(model)
    for mod in list(fast.modules()):
        for name, child in list(mod.named_children()):
            if gelu and isinstance(child, nn.GELU):
                setattr(mod, name, NHWCGELU())
            if up and isinstance(child, nn.ConvTranspose2d) and child.kernel_size == child.stride:
                setattr(mod, name, UpAsMatmul(child))
    return fast


def main() -> None:
    torch.manual_seed(0)
    model, _ = load_model(ROOT / "weights" / "sprites_ddpm.safetensors")
    folded = inference_copy(model)
    x = torch.randn(B, 3, model.h, model.h).contiguous(memory_format=torch.channels_last)
    t, c = torch.rand(B), F.one_hot(torch.arange(B) % model.n_cfeat, model.n_cfeat).float()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {B}\n")

    with torch.inference_mode():
        forward = timed_ms(lambda: folded(x, t, c))
    print(f"1. one forward of the folded model: {forward:.1f} ms; by layer kind (hooks add a little):")
    for kind, ms in sorted(breakdown(folded, x, t, c).items(), key=lambda kv: -kv[1]):
        print(f"   {kind:18s} {ms:6.1f} ms")

    shapes = conv_shapes(model)
    print(f"\n2. the {len(shapes)} 3×3 convs, batch {B}:")
    with torch.inference_mode():
        for n in (1024, 2048):
            a, b = torch.randn(n, n), torch.randn(n, n)
            print(f"   MKL sgemm {n}²: {2 * n ** 3 / timed_ms(lambda: a @ b, 10) / 1e6:.0f} GFLOP/s")
        nnpack = torch._nnpack_available()  # also initialises NNPACK: its convolution fails before this call
        print(f"   NNPACK in this build: {'yes' if nnpack else 'no'}")
        total_flop, best, rows = 0.0, 0.0, []
        for cin, cout, side in sorted(set(shapes), reverse=True):
            xs = torch.randn(B, cin, side, side).contiguous(memory_format=torch.channels_last)
            w = (torch.randn(cout, cin, 3, 3) * 0.05).contiguous(memory_format=torch.channels_last)
            bias = torch.randn(cout)
            flop = 2 * B * side * side * cin * cout * 9
            direct = timed_ms(lambda: F.conv2d(xs, w, bias, padding=1))
            nhwc, u = xs.permute(0, 2, 3, 1), winograd_weights(w.contiguous())
            wino = timed_ms(lambda: winograd_conv(nhwc, u, bias))
            err = (winograd_conv(nhwc, u, bias).permute(0, 3, 1, 2) - F.conv2d(xs, w, bias, padding=1)).abs().max()
            count = shapes.count((cin, cout, side))
            total_flop += count * flop
            best = max(best, flop / direct / 1e6)
            row = (f"   {cin:3d}→{cout:3d} at {side:2d}×{side:<2d} ×{count}: oneDNN {direct:5.2f} ms "
                   f"({flop / direct / 1e6:3.0f} GFLOP/s); Winograd F(4,3) {direct / wino:.2f}× its speed "
                   f"(max error {err:.0e})")
            if nnpack:  # NNPACK takes NCHW
                xn, wn = xs.contiguous(), w.contiguous()
                row += f"; NNPACK {direct / timed_ms(lambda: torch._nnpack_spatial_convolution(xn, wn, bias, [1, 1])):.2f}×"
            rows.append(row)
        print("\n".join(rows))
        floor = 500 * total_flop / (best * 1e9)
        print(f"   3×3 convs: {total_flop / B / 1e6:.0f} MFLOP per sprite; at the best rate above, DDPM-500 "
              f"for {B} sprites cannot take less than {floor:.1f} s")
        print(f"\n3. changes to the folded model, ms per forward (median of 30, {B} sprites):")
        variants = {"folded": folded, "+ GELU on the NHWC view": with_changes(model, True, False),
                    "+ transposed convs as matmuls": with_changes(model, False, True),
                    "+ both": with_changes(model, True, True)}
        for name, net in variants.items():
            diff = (net(x, t, c) - folded(x, t, c)).abs().max()
            print(f"   {name:30s} {timed_ms(lambda: net(x, t, c)):6.1f} ms (max difference {diff:.1e})")


if __name__ == "__main__":
    main()
