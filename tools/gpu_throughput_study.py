"""Where DDPM-500's large-batch time goes on a GPU, and which changes buy throughput (issue 8).

Run on a CUDA machine (tools/device_check.sh's ``study`` step):

    python tools/gpu_throughput_study.py --batch 1024 --deadline-s 200

1. The top kernels of one bfloat16 forward at that batch (torch.profiler), so a reader sees
   whether convolutions, element-wise passes or copies dominate.
2. DDPM-500 through ``sample()`` at that batch, img/s (median of ``--repeats`` after a warm run),
   one row per variant:
     fp32                the library's default (cuDNN rounds fp32 convolutions to TF32)
     bf16                ``precision="bf16"``: autocast, as the library runs it
     bf16+bench          the same with cuDNN's autotuner (``cudnn.benchmark``) choosing each kernel
     bf16w+bench         the folded network's weights cast to bfloat16 once (no autocast casts per call)
     bf16+compile        the folded network through torch.compile (default mode), bf16 autocast
     bf16+bench@4x       bf16+bench at four times the batch
     bf16+max-autotune   torch.compile(mode="max-autotune-no-cudagraphs"), if time is left
   ``--variants`` picks others from the same parts: fp32 | bf16 | bf16w, then +bench, +compile or
   +max-autotune (compiled variants run without the sampler's CUDA graph), +profile (the kernels
   of one compiled forward), and @Nx for N times the batch; e.g. bf16w+compile+profile@4x.
   and for each, the largest and the mean |x - x_fp32| over the final samples drawn from the same noise.
Every variant is bounded by the deadline; one that fails prints its error and the rest go on.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_utilities import sampling  # noqa: E402
from diffusion_utilities.model import inference_copy  # noqa: E402
from diffusion_utilities.schedule import DiffusionConfig, make_schedule  # noqa: E402
from diffusion_utilities.weights import load_model  # noqa: E402

VARIANTS = "fp32,bf16,bf16+bench,bf16w+bench,bf16+compile,bf16+bench@4x,bf16w+bench@4x,bf16+max-autotune"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "sprites_ddpm.safetensors"


def _bf16_weights(net, device):
    """The network held in bfloat16 (GroupNorm too); float32 in and out, as _autocast_bf16."""
    net16 = copy.deepcopy(net).to(torch.bfloat16)

    def run(x, t_norm, c=None):
        return net16(x.to(torch.bfloat16), t_norm, None if c is None else c.to(torch.bfloat16)).float()

    return run


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_forward(net, batch: int, device, rows: int = 18) -> None:
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU

    x = torch.randn(batch, 3, 16, 16, device=device)
    t = torch.full((1,), 0.5, device=device)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
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
    print(f"one bf16 forward at B={batch}: {total / 1000:.3f} ms of kernels, {len(averages)} kernel kinds")
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
    model, card = load_model(WEIGHTS, device)
    schedule = make_schedule(DiffusionConfig(**card["diffusion"]))
    folded = inference_copy(model.eval())
    name_ = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name_}, torch {torch.__version__}, batch {a.batch}")
    try:
        profile_forward(folded, a.batch, device)
    except Exception as e:  # a study: report and go on
        print(f"profile failed: {type(e).__name__}: {e}")

    def run(net, batch, precision, steps=None):
        g = torch.Generator(device=device).manual_seed(0)
        return sampling.sample(net, schedule, batch, sampler="ddpm", steps=steps, generator=g,
                               precision=precision, cuda_graph=False if "compile" in name else None).x

    default_cast = sampling._autocast_bf16
    reference, results = None, []
    for name in a.variants.split(","):
        mods = name.split("+")
        mult = int(mods[-1].split("@")[1].rstrip("x")) if "@" in mods[-1] else 1
        mods[-1] = mods[-1].split("@")[0]
        compiled = next((m for m in mods if m in ("compile", "max-autotune")), None)
        left = end - time.monotonic()
        if left < (90 if compiled else 20):  # compiling takes a minute or more
            print(f"{name}: skipped, {left:.0f} s left")
            continue
        batch = a.batch * mult
        try:
            torch.backends.cudnn.benchmark = "bench" in mods
            cast = _bf16_weights if mods[0] == "bf16w" else default_cast
            if compiled:  # compiled once for the variant (a new module each call would compile again)
                mode = "max-autotune-no-cudagraphs" if compiled == "max-autotune" else None
                fn = cast(torch.compile(copy.deepcopy(folded), mode=mode), device)
                cast = lambda _net, _device: fn  # noqa: E731
            sampling._autocast_bf16 = cast
            precision = "fp32" if mods[0] == "fp32" else "bf16"
            start = time.perf_counter()
            run(model, batch, precision, steps=2)  # warm: kernels chosen, graph captured, compiled
            sync(device)
            warm = time.perf_counter() - start
            if compiled and "profile" in mods:
                profile_forward(lambda x, t: fn(x, t), a.batch, device)
            times, x = [], None
            for _ in range(a.repeats):
                sync(device)
                start = time.perf_counter()
                x = run(model, batch, precision, a.steps)
                sync(device)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
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
            print(f"{name:18s} B={batch:5d}  {seconds:7.3f} s  {batch / seconds:8.1f} img/s  "
                  f"(first call {warm:5.1f} s)  |x - x_fp32| max {diff.max():.3f} mean {diff.mean():.4f}", flush=True)
        except Exception as e:  # a study: report and go on
            print(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}", flush=True)
        finally:
            torch.backends.cudnn.benchmark = False
            sampling._autocast_bf16 = default_cast

if __name__ == "__main__":
    main()
