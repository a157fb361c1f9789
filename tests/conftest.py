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
    """Predicts the true noise of x_t = √ᾱ·x0 + √(1-ᾱ)·ε for a known x0: ε = (x_t − √ᾱ·x0) / √(1−ᾱ)."""

    def __init__(self, x0, schedule):
        super().__init__()
        self.x0, self.schedule = x0, schedule
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.in_channels, self.h, self.n_cfeat = x0.shape[1], x0.shape[2], 5

    def forward(self, x, t, c=None):
        step = int(round(float(t.flatten()[0]) * self.schedule.T))
        ab = self.schedule.ab_t[step]
        return (x - ab.sqrt() * self.x0) / (1 - ab).sqrt()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # noqa: ARG001
    """Keep each test's call report on the item, so a fixture's teardown can tell it failed (browser screenshots)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
