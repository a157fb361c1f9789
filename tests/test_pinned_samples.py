"""Short seeded sampling runs of every sampler, pinned to the values they gave when written.

The other sampling tests check properties (an oracle model recovers x₀, DDIM with η = 1 is the DDPM
posterior, ...); these catch any change at all in a whole run's arithmetic, step rule, time grid,
guidance or noise order, as diffusers' scheduler tests do. They run the shipped weights (real
models, where the context and guidance matter) on 2 sprites, on the CPU in float32. A change that is
meant to alter samples must re-pin them here and say why in its commit.

Values: (mean, standard deviation, x[0, 0, 0, 0], x[1, 2, 7, 9]) of the final (2, 3, 16, 16) images.
"""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from diffusion_utilities import load_model_and_schedule, sample
from diffusion_utilities.files import sha256_file

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHA256 = {"sprites_ddpm": "c162dc5e4b6135d4", "sprites_v": "a589738e423d2a34", "sprites_flow": "23556a1584158f5f"}  # the weights the values came from

PINNED = [
    ("sprites_ddpm", "ddpm", 500, {}, (0.4305, 0.6256, 0.8729, 0.5521)),
    ("sprites_ddpm", "ddpm-no-noise", 500, {}, (0.3025, 0.6933, 0.9063, 0.2300)),
    ("sprites_ddpm", "ddim", 10, {}, (0.4160, 0.6127, 0.8969, 0.2254)),
    ("sprites_ddpm", "ddim", 10, {"eta": 1.0}, (0.2573, 0.7336, 0.9734, 0.4371)),
    ("sprites_ddpm", "dpm-solver++", 10, {}, (0.4143, 0.6229, 0.8986, 0.0502)),
    ("sprites_ddpm", "ddim", 10, {"guidance": 2.0}, (0.3288, 0.7037, 0.9140, -0.3390)),
    ("sprites_v", "ddpm", 500, {}, (0.4464, 0.6292, 0.8805, 0.0190)),
    ("sprites_v", "ddim", 10, {}, (0.4236, 0.6183, 0.9012, 0.0323)),
    ("sprites_v", "dpm-solver++", 10, {}, (0.4188, 0.6352, 0.9029, -0.1806)),
    ("sprites_v", "dpm-solver++", 10, {"guidance": 2.0, "guidance_rescale": 0.7}, (0.3115, 0.7241, 0.8833, -0.0211)),
    ("sprites_flow", "euler", 8, {}, (0.4448, 0.6028, 0.9183, 0.6460)),
    ("sprites_flow", "heun", 5, {"shift": 2.0}, (0.4364, 0.6174, 0.9294, 0.4609)),
    ("sprites_flow", "heun", 5, {"guidance": 2.0}, (0.3534, 0.7281, 0.9157, 0.9173)),
]


@pytest.fixture(scope="module")
def models():
    loaded = {}
    for name, prefix in SHA256.items():
        path = WEIGHTS / f"{name}.safetensors"
        assert sha256_file(path).startswith(prefix), f"{path} changed: re-pin the values below from the new weights"
        loaded[name] = load_model_and_schedule(path)[:2]
    return loaded


@pytest.mark.parametrize("weights, sampler, steps, kwargs, values", PINNED,
                         ids=[f"{w}-{s}-{n}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for w, s, n, kw, _ in PINNED])
def test_a_seeded_run_gives_its_pinned_values(models, weights, sampler, steps, kwargs, values):
    model, schedule = models[weights]
    if "shift" in kwargs:  # a flow model's time grid (Esser et al. 2024), a property of its schedule
        kwargs = dict(kwargs)
        schedule = replace(schedule, shift=kwargs.pop("shift"))
    context = torch.eye(5)[[0, 3]]  # a hero and a spell
    x = sample(model, schedule, 2, sampler=sampler, steps=steps, context=context,
               generator=torch.Generator().manual_seed(1), **kwargs).x
    got = (x.mean().item(), x.std().item(), x[0, 0, 0, 0].item(), x[1, 2, 7, 9].item())
    # 4 decimals were pinned; float32 convolutions differ in the last bits between CPUs, which 500 steps
    # can carry to the 4th decimal
    assert got == pytest.approx(values, abs=1.5e-3), got
