import pytest
import torch

from diffusion_utilities import ContextUnet, NoiseSchedule


@pytest.fixture(scope="session")
def schedule():
    return NoiseSchedule.linear(500, 1e-4, 0.02)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return ContextUnet(in_channels=3, n_feat=16, n_cfeat=5, height=16).eval()


class OracleModel(torch.nn.Module):
    """Predicts the true noise of x_t = √ᾱ·x0 + √(1-ᾱ)·ε for a known x0: ε = (x_t − √ᾱ·x0) / √(1−ᾱ);
    with target="v", the true v = √ᾱ·ε − √(1−ᾱ)·x0 (in float64, so ᾱ near 1 loses nothing)."""

    def __init__(self, x0, schedule, target: str = "eps"):
        super().__init__()
        self.x0, self.schedule, self.target = x0, schedule, target
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.in_channels, self.h, self.n_cfeat = x0.shape[1], x0.shape[2], 5

    def forward(self, x, t, c=None):
        step = int(round(float(t.flatten()[0]) * self.schedule.T))
        ab = self.schedule.ab_t[step]
        if self.target == "v":
            ab, x, x0 = ab.double(), x.double(), self.x0.double()
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            return (ab.sqrt() * eps - (1 - ab).sqrt() * x0).float()
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001
    """Keep each test's call report on the item, so a fixture's teardown can tell it failed (browser screenshots)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
