"""Where DDPM-500's large-batch time goes on a GPU, and which paths buy throughput (issue 8).

Run on a CUDA machine (tools/device_check.sh's ``study`` step):

    python tools/gpu_throughput_study.py --batch 1024 --deadline-s 200

1. The top kernels of one bfloat16 forward at that batch (torch.profiler), so a reader sees
   whether convolutions, element-wise passes or copies dominate.
2. DDPM-500 through ``sample()`` at that batch, img/s (median of ``--repeats`` after a warm call,
   which also compiles), one row per variant, named by parts joined with "+":
     fp32 | bf16 | autocast   the network's precision: the default; ``precision="bf16"`` (a bfloat16
                              copy of the network); bf16 autocast around the fp32 network (the
                              library's bf16 path until this study measured it slower)
     compile | max-autotune   ``sample(compile=...)``
     eager                    without the sampler's CUDA graph (on by default on CUDA)
     bench                    cuDNN's autotuner (``cudnn.benchmark``) choosing each kernel
     profile                  also print the kernels of one forward of this variant's network
     @Nx                      N times the batch, e.g. bf16+max-autotune@4x
   and for each, the largest and the mean |x - x_fp32| over the final samples drawn from the same
   noise (at the base batch).
Every variant is bounded by the deadline; one that fails prints its error and the rest go on.
Measured on an H100 on 2026-11-26: docs/measurements/h100_2026-11-26b_*, docs/benchmarks.md#gpu.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_utilities import engine, sampling  # noqa: E402
from diffusion_utilities.bench import median_time, sync  # noqa: E402
from diffusion_utilities.engine import inference_copy  # noqa: E402
from diffusion_utilities.weights import load_model_and_schedule  # noqa: E402

VARIANTS = "fp32,bf16,autocast,bf16@4x"  # device_check.sh's "autotune" step runs the compiled ones, last
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "sprites_ddpm.safetensors"


class _Autocast(torch.nn.Module):
    """The fp32 network run under bfloat16 autocast, float32 out: the library's bf16 path before 2026-11-26."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.in_channels, self.h, self.n_cfeat = net.in_channels, net.h, net.n_cfeat

    def forward(self, x, t, c=None):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, cache_enabled=False):
            return self.net(x, t, c).float()


def profile_forward(net, batch: int, device, rows: int = 18) -> None:
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU

    x = torch.randn(batch, 3, 16, 16, device=device)
    t = torch.full((1,), 0.5, device=device)
    with torch.inference_mode():
        for _ in range(3):
            net(x, t)
        sync(device)
        with profile(activities=[activity]) as prof:
            for _ in range(5):
                net(x, t)
            sync(device)
    averages = prof.key_averages()
    key = "device_time_total" if hasattr(averages[0], "device_time_total") else "cuda_time_total"
    key = key if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in averages) / 5
    print(f"one forward at B={batch}: {total / 1000:.3f} ms of kernels, {len(averages)} kernel kinds")
    print(averages.table(sort_by=key, row_limit=rows, max_name_column_width=110))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, help="DDPM steps (default: T, 500); fewer for a dry run")
    p.add_argument("--deadline-s", type=float, default=200)
    p.add_argument("--json", type=Path)
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script at a tiny batch")
    p.add_argument("--variants", default=VARIANTS, help="comma-separated, as named in this file's docstring")
    a = p.parse_args()
    end = time.monotonic() + a.deadline_s
    device = torch.device(a.device)
    model, schedule, card = load_model_and_schedule(WEIGHTS, device)
    folded = inference_copy(model.eval())
    name_ = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name_}, torch {torch.__version__}, batch {a.batch}")
    try:
        profile_forward(_Autocast(folded), a.batch, device)  # the eager network, as first profiled
    except Exception as e:  # a study: report and go on
        print(f"profile failed: {type(e).__name__}: {e}")

    reference, results = None, []
    for name in a.variants.split(","):
        base, _, times_ = name.partition("@")
        mods = base.split("+")
        mult = int(times_.rstrip("x")) if times_ else 1
        compile_mode = next((m for m in mods if m in engine.COMPILE_MODES or m == "compile"), None)
        compile_mode = "default" if compile_mode == "compile" else compile_mode
        left = end - time.monotonic()
        if left < (90 if compile_mode else 20):  # compiling takes a minute or more
            print(f"{name}: skipped, {left:.0f} s left")
            continue
        batch = a.batch * mult
        autocast = mods[0] == "autocast"
        kwargs = {"precision": "bf16" if mods[0] == "bf16" else "fp32", "compile": compile_mode,
                  "fast": not autocast, "cuda_graph": False if "eager" in mods else (True if autocast else None)}
        net = _Autocast(folded) if autocast else model
        if device.type != "cuda":
            kwargs["cuda_graph"] = False

        def run(steps):
            g = torch.Generator(device=device).manual_seed(0)
            return sampling.sample(net, schedule, batch, sampler="ddpm", steps=steps, generator=g, **kwargs).x

        try:
            torch.backends.cudnn.benchmark = "bench" in mods
            warm = median_time(lambda: run(2), device, 1)  # warm: kernels chosen, graph captured, compiled
            if "profile" in mods:
                derived, _ = engine.derived_network(engine.cached_inference_copy(model), kwargs["precision"], compile_mode,
                                            reuse=True)
                profile_forward(derived, a.batch, device)
            last = []  # the final samples of the timed runs (all alike: same seed)
            seconds = median_time(lambda: last.append(run(a.steps)), device, a.repeats)
            x = last[-1]
            if name == "fp32":
                reference = x
            same = reference is not None and mult == 1  # the same noise as the fp32 row's
            diff = (x - reference).abs() if same else torch.full((1,), float("nan"))
            row = {"name": name, "batch": batch, "s": round(seconds, 3), "img_per_s": round(batch / seconds, 1),
                   "warm_s": round(warm, 1), "max_abs_diff_vs_fp32": round(diff.max().item(), 4),
                   "mean_abs_diff_vs_fp32": round(diff.mean().item(), 4)}
            results.append(row)
            if a.json:  # after each row: a study stopped by its time limit keeps what it measured
                a.json.write_text(json.dumps({"device": name_, "torch": torch.__version__, "rows": results}, indent=1))
            print(f"{name:24s} B={batch:5d}  {seconds:7.3f} s  {batch / seconds:8.1f} img/s  "
                  f"(first call {warm:5.1f} s)  |x - x_fp32| max {diff.max():.3f} mean {diff.mean():.4f}", flush=True)
        except Exception as e:  # a study: report and go on
            print(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
        finally:
            torch.backends.cudnn.benchmark = False

if __name__ == "__main__":
    main()
