"""The original labs' code shape, run against our module: `from diffusion_utilities import *`, a
ContextUnet defined in the notebook from our blocks, module-level b_t/a_t/ab_t, the labs'
denoise_add_noise / sample_ddpm / sample_ddim, and weights loaded by the labs' file names."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "sprites_ddpm.safetensors"

LAB_CODE = r'''
from diffusion_utilities import *
import torch
import torch.nn as nn
import numpy as np

class ContextUnet(nn.Module):
    def __init__(self, in_channels, n_feat=256, n_cfeat=10, height=28):  # cfeat - context features
        super(ContextUnet, self).__init__()
        self.in_channels = in_channels
        self.n_feat = n_feat
        self.n_cfeat = n_cfeat
        self.h = height  # assume h == w. must be divisible by 4, so 28,24,20,16...
        self.init_conv = ResidualConvBlock(in_channels, n_feat, is_res=True)
        self.down1 = UnetDown(n_feat, n_feat)
        self.down2 = UnetDown(n_feat, 2 * n_feat)
        self.to_vec = nn.Sequential(nn.AvgPool2d((4)), nn.GELU())
        self.timeembed1 = EmbedFC(1, 2 * n_feat)
        self.timeembed2 = EmbedFC(1, 1 * n_feat)
        self.contextembed1 = EmbedFC(n_cfeat, 2 * n_feat)
        self.contextembed2 = EmbedFC(n_cfeat, 1 * n_feat)
        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, self.h // 4, self.h // 4),
            nn.GroupNorm(8, 2 * n_feat),
            nn.ReLU(),
        )
        self.up1 = UnetUp(4 * n_feat, n_feat)
        self.up2 = UnetUp(2 * n_feat, n_feat)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1),
            nn.GroupNorm(8, n_feat),
            nn.ReLU(),
            nn.Conv2d(n_feat, self.in_channels, 3, 1, 1),
        )

    def forward(self, x, t, c=None):
        x = self.init_conv(x)
        down1 = self.down1(x)
        down2 = self.down2(down1)
        hiddenvec = self.to_vec(down2)
        if c is None:
            c = torch.zeros(x.shape[0], self.n_cfeat).to(x)
        cemb1 = self.contextembed1(c).view(-1, self.n_feat * 2, 1, 1)
        temb1 = self.timeembed1(t).view(-1, self.n_feat * 2, 1, 1)
        cemb2 = self.contextembed2(c).view(-1, self.n_feat, 1, 1)
        temb2 = self.timeembed2(t).view(-1, self.n_feat, 1, 1)
        up1 = self.up0(hiddenvec)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        out = self.out(torch.cat((up3, x), 1))
        return out

# hyperparameters
timesteps = 500
beta1 = 1e-4
beta2 = 0.02
device = torch.device("cpu")
n_feat = 64
n_cfeat = 5
height = 16

b_t = (beta2 - beta1) * torch.linspace(0, 1, timesteps + 1, device=device) + beta1
a_t = 1 - b_t
ab_t = torch.cumsum(a_t.log(), dim=0).exp()
ab_t[0] = 1

nn_model = ContextUnet(in_channels=3, n_feat=n_feat, n_cfeat=n_cfeat, height=height).to(device)

def denoise_add_noise(x, t, pred_noise, z=None):
    if z is None:
        z = torch.randn_like(x)
    noise = b_t.sqrt()[t] * z
    mean = (x - pred_noise * ((1 - a_t[t]) / (1 - ab_t[t]).sqrt())) / a_t[t].sqrt()
    return mean + noise

@torch.no_grad()
def sample_ddpm(n_sample, save_rate=20):
    samples = torch.randn(n_sample, 3, height, height).to(device)
    intermediate = []
    for i in range(timesteps, 0, -1):
        t = torch.tensor([i / timesteps])[:, None, None, None].to(device)
        z = torch.randn_like(samples) if i > 1 else 0
        eps = nn_model(samples, t)
        samples = denoise_add_noise(samples, i, eps, z)
        if i % save_rate == 0 or i == timesteps or i < 8:
            intermediate.append(samples.detach().cpu().numpy())
    return samples, np.stack(intermediate)

def denoise_ddim(x, t, t_prev, pred_noise):
    ab = ab_t[t]
    ab_prev = ab_t[t_prev]
    x0_pred = ab_prev.sqrt() / ab.sqrt() * (x - (1 - ab).sqrt() * pred_noise)
    dir_xt = (1 - ab_prev).sqrt() * pred_noise
    return x0_pred + dir_xt

@torch.no_grad()
def sample_ddim_context(n_sample, context, n=20):
    samples = torch.randn(n_sample, 3, height, height).to(device)
    intermediate = []
    step_size = timesteps // n
    for i in range(timesteps, 0, -step_size):
        t = torch.tensor([i / timesteps])[:, None, None, None].to(device)
        eps = nn_model(samples, t, c=context)
        samples = denoise_ddim(samples, i, i - step_size, eps)
        intermediate.append(samples.detach().cpu().numpy())
    return samples, np.stack(intermediate)
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not WEIGHTS.exists():
        pytest.skip("no shipped weights in weights/ yet")
    out = tmp_path_factory.mktemp("labweights")
    r = subprocess.run([sys.executable, "-m", "diffusion_utilities", "export-course-weights", "--weights", WEIGHTS,
                        "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ns: dict = {}
    exec(LAB_CODE, ns)  # the lab notebook's cells, in order
    ns["save_dir"] = str(out) + "/"
    return ns


def test_lab_model_loads_our_weights_by_the_labs_file_name(lab):
    nn_model = lab["nn_model"]
    state = torch.load(f"{lab['save_dir']}context_model_trained.pth", map_location="cpu", weights_only=True)
    assert set(state) == set(nn_model.state_dict())
    nn_model.load_state_dict(state)
    nn_model.eval()


@pytest.mark.slow
def test_lab_ddpm_loop_runs_with_broadcast_time(lab):
    torch.manual_seed(0)
    samples, intermediate = lab["sample_ddpm"](4)
    assert samples.shape == (4, 3, 16, 16) and intermediate.shape[1:] == (4, 3, 16, 16)
    assert torch.isfinite(samples).all()
    lab["plot_sample"](intermediate, 4, 2, lab["save_dir"], "ani_run", None, save=True)
    assert (Path(lab["save_dir"]) / "ani_run_wNone.gif").stat().st_size > 1000


def test_lab_context_sampling_draws_the_requested_classes(lab):
    from diffusion_utilities.evaluation import class_accuracy, load_classifier

    torch.manual_seed(0)
    labels = torch.arange(40) % 5
    ctx = torch.nn.functional.one_hot(labels, 5).float()
    samples, _ = lab["sample_ddim_context"](40, ctx, n=25)
    classifier = load_classifier(ROOT / "weights" / "sprite_classifier.safetensors")
    acc = class_accuracy(classifier, samples.clamp(-1, 1), labels)
    assert acc >= 0.8, f"only {acc:.2f} of the lab's context samples were of the requested class"


def test_lab_dataset_reads_the_courses_file_names(tmp_path):
    from diffusion_utilities import CustomDataset, procedural_dataset, save_dataset, transform

    save_dataset(tmp_path, procedural_dataset(10, 0), course_names=True)
    ds = CustomDataset(tmp_path / "sprites_1788_16x16.npy", tmp_path / "sprite_labels_nc_1788_16x16.npy", transform,
                       null_context=False)
    image, label = ds[0]
    assert image.shape == (3, 16, 16) and -1 <= image.min() and image.max() <= 1 and label.shape == (5,)
    assert len(ds) == 10 and ds.getshapes() == ((10, 16, 16, 3), (10, 5))
