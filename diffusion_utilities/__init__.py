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
