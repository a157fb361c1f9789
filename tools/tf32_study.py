"""How far PyTorch's TF32 default moves the samples on a GPU (a measurement, not a test).

cuDNN may round fp32 convolutions to TF32 (10-bit mantissa) unless torch.backends.cudnn.allow_tf32 is
False. This samples DDIM-25 from the course model with the same noise both ways and prints the largest
difference, in [-1, 1] pixel units. (It was a test that could not fail, in tests/test_cuda.py.)

    python tools/tf32_study.py [--weights weights/sprites_ddpm.safetensors]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from diffusion_utilities import load_model_and_schedule, sample  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=Path("weights/sprites_ddpm.safetensors"))
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here; TF32 is a GPU setting")
    model, schedule, _ = load_model_and_schedule(a.weights, "cuda")
    context = torch.eye(5)[torch.arange(32) % 5]
    runs = {}
    for tf32 in (False, True):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        runs[tf32] = sample(model, schedule, 32, sampler="ddim", steps=25, context=context,
                            generator=torch.Generator().manual_seed(0)).x.float().cpu()
    print(f"{torch.cuda.get_device_name()}: DDIM-25, 32 sprites: max |TF32 - fp32| "
          f"{(runs[True] - runs[False]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
