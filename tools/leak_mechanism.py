"""What the course schedule's leak breaks for deterministic DDIM: an experiment, not a guess.

The course's x_T = √ᾱ_T·x₀ + √(1 − ᾱ_T)·ε keeps √ᾱ_T ≈ 8% of the sprite; sampling starts from pure
noise. Which part of the missing 8% matters? Split every start into coarse and fine spatial
frequencies (a radial cut in the 2-D Fourier transform of each channel) and swap the bands between
pure noise and q(x_T) built from real held-out sprites, with the same ε:

    python tools/leak_mechanism.py > docs/measurements/leak_mechanism.json   # progress on stderr

(1) sprite-FID (docs/evaluation.md's protocol: n = 1,000 against the 2,000 reference sprites, judge A)
    of DDIM-25 (η = 0) from each start; (2) where in t DDIM's trajectories from the two starts part,
    with η = 0 and with η = 1 (the same fresh noise z for both starts), as the RMS distance between
    their predictions x̂₀ at each step; (3) the same distance split into the two frequency bands.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffusion_utilities import load_model_and_schedule  # noqa: E402
from diffusion_utilities.data import procedural_dataset, sprites_to_tensor  # noqa: E402
from diffusion_utilities.evaluation import (PROTOCOL, REFERENCE_SEED, classifier_features,  # noqa: E402
                                            load_classifier, sprite_fid)
from diffusion_utilities.sampling import ddim_step, predict_noise  # noqa: E402

N = PROTOCOL["n"]
CUT = 2.0  # cycles per sprite: the coarse band holds shapes 8 pixels and larger (layout, colour areas)


def coarse(x: torch.Tensor, cut: float = CUT) -> torch.Tensor:
    """The part of x (B, C, H, W) at spatial frequencies of radius ≤ cut cycles per sprite (the mean included)."""
    h = x.shape[-1]
    f = torch.fft.fftfreq(h) * h  # cycles per sprite
    radius = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    return torch.fft.ifft2(torch.fft.fft2(x) * (radius <= cut)).real


def band_rms(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = a - b
    rms = lambda v: round(v.pow(2).mean().sqrt().item() / 2, 4)  # noqa: E731  ([0, 1] pixel units)
    return {"all": rms(d), "coarse": rms(coarse(d)), "fine": rms(d - coarse(d))}


@torch.inference_mode()
def ddim_paths(model, schedule, starts: dict, context, steps: int, eta: float, seed: int) -> dict:
    """Final sprites and every step's x̂₀ of DDIM from each start, the same fresh noise z for all (η > 0)."""
    ts = schedule.grid(steps)
    out = {}
    for name, x in starts.items():
        gen = torch.Generator().manual_seed(seed)
        x0s = []
        for t, t_prev in zip(ts[:-1], ts[1:]):
            eps = predict_noise(model, x, torch.tensor([t / schedule.T]), context)
            x0 = (x - (1 - schedule.ab_t[t]).sqrt() * eps) / schedule.ab_t[t].sqrt()
            x0s.append(x0)
            mean, sigma = ddim_step(schedule, x, eps, t, t_prev, eta)
            z = torch.randn(x.shape, generator=gen)
            x = mean + sigma * z if t_prev > 0 else mean
        out[name] = (x, x0s)
    return out


def main() -> dict:
    model, schedule, card = load_model_and_schedule(ROOT / "weights" / "sprites_ddpm.safetensors")
    classifier = load_classifier(ROOT / "weights" / "sprite_classifier.safetensors")
    ref = classifier_features(classifier, sprites_to_tensor(procedural_dataset(PROTOCOL["reference"], REFERENCE_SEED).sprites))
    held_out = procedural_dataset(N, REFERENCE_SEED + 7)
    x0 = sprites_to_tensor(held_out.sprites)
    context = torch.from_numpy(held_out.labels).float()
    ab_T = schedule.ab_t[schedule.T]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    real_start = ab_T.sqrt() * x0 + (1 - ab_T).sqrt() * eps
    starts = {
        "pure noise": eps,
        "q(x_T)": real_start,
        "q(x_T) coarse + noise fine": coarse(real_start) + eps - coarse(eps),
        "noise coarse + q(x_T) fine": coarse(eps) + real_start - coarse(real_start),
    }
    result = {"n": N, "cut_cycles_per_sprite": CUT, "alpha_bar_T": round(ab_T.item(), 5),
              "start_difference": {k: band_rms(v, eps) for k, v in starts.items()}, "fid": {}, "paths": {}}
    result["fid"]["real sprites (held-out draw)"] = round(sprite_fid(classifier, x0, ref), 2)
    for eta in (0.0, 1.0):
        start = time.perf_counter()
        runs = ddim_paths(model, schedule, starts, context, 25, eta, seed=6)
        for name, (x, _) in runs.items():
            result["fid"][f"DDIM-25 η={eta:g} from {name}"] = round(sprite_fid(classifier, x, ref), 2)
        a, b = runs["pure noise"], runs["q(x_T)"]
        result["paths"][f"η={eta:g}"] = {
            "t": schedule.grid(25)[:-1],
            "x0_hat": [band_rms(p, q) for p, q in zip(a[1], b[1])],
            "final": band_rms(a[0], b[0]),
        }
        print(f"η={eta:g}: {time.perf_counter() - start:.0f} s", json.dumps(result["fid"]), file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
