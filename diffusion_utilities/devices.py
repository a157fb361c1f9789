"""Which device to run on, and its name for the cards and benchmarks."""

import os
import platform
from pathlib import Path

import torch

from .errors import BadInput

__all__ = ["pick_device", "hardware_name"]


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" is CUDA when present, else the CPU; "cpu", "cuda", "cuda:N" and (on Apple silicon) "mps" as asked."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise BadInput(f"unknown device {str(device)!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BadInput(f"there is no {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use cuda:0")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise BadInput("device mps (Apple silicon) is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise BadInput(f"device {device.type} is not supported; use auto, cpu or cuda")
    return device


def hardware_name(device: torch.device) -> str:
    """e.g. "NVIDIA A10G" or "AMD EPYC, 2 cores, 2 torch threads"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
