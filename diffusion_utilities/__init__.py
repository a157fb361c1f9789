"""diffusion_utilities: a DDPM that learns to draw 16×16 sprites, built from scratch.

One module per step of the pipeline:
    schedule   β, α, ᾱ and the forward process q(x_t | x_0)
    model      ContextUnet, the noise-prediction network
    sampling   one sampling loop with DDPM, DDIM and DPM-Solver++ step rules
    sprites    the procedural sprite generator (our training data)
    data       datasets on disk in the course's .npy layout
    training   the training loop, EMA, checkpoints and resume
    weights    safetensors weights with a JSON card
    plotting   grids and denoising animations
    course     the course helper module's remaining names (unorm, plot_sample, CustomDataset, ...)
    exercises  the notebooks' exercise checks
    cli        python -m diffusion_utilities ...
"""

import os as _os
import signal as _signal
import sys as _sys

_CLI_STARTING = _sys.argv[:1] == ["-m"] and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler
if _CLI_STARTING:  # `python -m diffusion_utilities`, still importing (torch takes seconds): Ctrl-C now is
    def _interrupted(*_):  # the same one line as during a command (cli.main), not a traceback from inside torch
        _sys.stderr.write("interrupted (Ctrl-C)\n")
        _sys.stderr.flush()
        _os._exit(130)
    _before = _signal.signal(_signal.SIGINT, _interrupted)

from .course import CustomDataset, gen_tst_context, norm_all, norm_torch, plot_grid, plot_sample, transform, unorm
from .data import SpriteData, load_dataset, procedural_dataset, save_dataset, sprites_to_tensor, tensor_to_sprites
from .errors import BadInput
from .model import ContextUnet, EmbedFC, ModelConfig, ResidualConvBlock, UnetDown, UnetUp
from .plotting import animate, make_grid, save_gif, save_grid, show_gif, upscale
from .sampling import (
    SAMPLERS,
    DPMSolverPP2M,
    Samples,
    ddim_step,
    ddpm_step,
    denoise_add_noise,
    guided_output,
    predict_noise,
    sample,
    sample_ddim,
    sample_ddpm,
    timesteps_for,
)
from .schedule import DiffusionConfig, NoiseSchedule, make_schedule, perturb_input
from .sprites import CLASS_NAMES, make_sprites
from .training import TrainConfig, train
from .weights import load_legacy_pth, load_model, load_model_and_schedule, save_model

__version__ = "0.1.0"

if _CLI_STARTING:
    _signal.signal(_signal.SIGINT, _before)  # imported: cli.main takes Ctrl-C from here on

__all__ = [
    "BadInput", "CLASS_NAMES", "ContextUnet", "DPMSolverPP2M", "DiffusionConfig", "EmbedFC", "ModelConfig",
    "NoiseSchedule", "ResidualConvBlock", "SAMPLERS", "Samples", "SpriteData", "TrainConfig", "UnetDown",
    "UnetUp", "animate", "ddim_step", "ddpm_step", "denoise_add_noise", "load_dataset", "load_legacy_pth",
    "load_model", "load_model_and_schedule", "make_grid", "make_schedule", "make_sprites", "perturb_input", "guided_output", "predict_noise",
    "procedural_dataset", "sample", "sample_ddim", "sample_ddpm", "save_dataset", "save_gif", "save_grid",
    "save_model", "show_gif", "sprites_to_tensor", "tensor_to_sprites", "timesteps_for", "train", "upscale",
    # the course helper module's names (see course.py), so the original labs run unchanged
    "CustomDataset", "gen_tst_context", "norm_all", "norm_torch", "plot_grid", "plot_sample", "transform", "unorm",
]
