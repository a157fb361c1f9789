"""Entry point of a SageMaker training job: ``python -m diffusion_utilities train`` with the job's hyperparameters.

sagemaker/launch_training.py uploads this file with a copy of the package next to it. SageMaker
runs it in its PyTorch container; with ``distribution={"torch_distributed": {"enabled": True}}``
it runs it under torchrun itself, one process per GPU, so this file starts no processes of its own.

The hyperparameters arrive as SM_HPS, a JSON object ({"epochs": "32", "augment": true}); each
becomes ``--name value``, and ``true`` a bare ``--name`` flag. Which folders to read and write
(--data, --out, resuming) ``train`` takes from the container's SM_* variables itself.
"""

import json
import os
import sys

from diffusion_utilities.cli import main


def train_argv(hyperparameters: dict) -> list[str]:
    """The ``train`` command line for ``hyperparameters``: {"epochs": "2", "augment": True} -> [..., "--epochs", "2", "--augment"]."""
    argv = ["train"]
    for name, value in hyperparameters.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is not False and value is not None:
            argv += [f"--{name}", str(value)]
    return argv


if __name__ == "__main__":
    sys.exit(main(train_argv(json.loads(os.environ.get("SM_HPS") or "{}"))))
