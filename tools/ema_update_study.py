"""What the EMA update's private ``torch._foreach_*`` calls buy over a loop of public ``lerp_`` and ``copy_``.

    python tools/ema_update_study.py [--device cpu|cuda]      # a few seconds

``training._EMA.update`` moves every EMA weight towards the live one (θ_ema.lerp_(θ, 1 − d)) and copies
the BatchNorm buffers, after every training step. Times, per update, for the course's model
(n_feat = 64: 104 weights and 54 buffers), median of 5 rounds of 50 updates each:
1. ``torch._foreach_lerp_`` and ``torch._foreach_copy_``, as training runs it (a few fused launches on a GPU);
2. the same with a Python loop of ``Tensor.lerp_`` and ``Tensor.copy_`` (one launch per tensor);
3. both on 4-element tensors: what each costs beyond the arithmetic, in dispatch and launches.
Also checks that the two give the same bits. Numbers go to docs/benchmarks.md; nothing here is used by the
library.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_utilities import ContextUnet  # noqa: E402


def fused(ema, live, ema_buffers, buffers, w):
    torch._foreach_lerp_(ema, live, w)
    torch._foreach_copy_(ema_buffers, buffers)  # the buffers of one dtype per call, as training groups them


def loop(ema, live, ema_buffers, buffers, w):
    for e, p in zip(ema, live):
        e.lerp_(p, w)
    for e, b in zip(ema_buffers, buffers):
        e.copy_(b)


def per_update_ms(update, tensors, device, rounds=5, n=50) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(rounds):
        for _ in range(5):
            update(*tensors, 1e-3)
        sync()
        t = time.perf_counter()
        for _ in range(n):
            update(*tensors, 1e-3)
        sync()
        times.append((time.perf_counter() - t) / n * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(parser.parse_args().device)
    live_model = ContextUnet(3, 64, 5, 16).to(device, memory_format=torch.channels_last)
    ema_model = ContextUnet(3, 64, 5, 16).to(device, memory_format=torch.channels_last)
    floats = [(e, b) for e, b in zip(ema_model.buffers(), live_model.buffers()) if e.is_floating_point()]
    full = (list(ema_model.parameters()), list(live_model.parameters()), [e for e, _ in floats], [b for _, b in floats])
    print(f"{device}: {len(full[0])} weights ({sum(p.numel() for p in full[1]):,} numbers), "
          f"{len(list(live_model.buffers()))} buffers ({len(floats)} floating point, timed here)")
    tiny = tuple([torch.zeros(4, device=device) for _ in group] for group in full)
    with torch.no_grad():
        for name, tensors in (("course model", full), ("4-element tensors", tiny)):
            for update in (fused, loop):
                print(f"  {name:18} {update.__name__:6} {per_update_ms(update, tensors, device):7.3f} ms per update")
        a, b = ([e.clone() for e in full[0]] for _ in range(2))
        torch._foreach_lerp_(a, full[1], 0.37)
        for e, p in zip(b, full[1]):
            e.lerp_(p, 0.37)
        print("  same bits:", all(torch.equal(x, y) for x, y in zip(a, b)))


if __name__ == "__main__":
    main()
