"""Entry point of a SageMaker training job: ``python -m diffusion_utilities train`` with the job's hyperparameters.

sagemaker/launch_training.py uploads this file with a copy of the package next to it. SageMaker
runs it in its PyTorch container; with ``distribution={"torch_distributed": {"enabled": True}}``
it runs it under torchrun itself, one process per GPU, so this file starts no processes of its own.

The hyperparameters arrive as SM_HPS, a JSON object ({"epochs": "32", "augment": true}); each
becomes ``--name value``, and ``true`` a bare ``--name`` flag. Which folders to read and write
(--data, --out, resuming) ``train`` takes from the container's SM_* variables itself. An
``init-from`` the launcher shipped (init/NAME, a relative path) is read from beside this file,
where SageMaker unpacked the uploaded source folder.
"""

import json
import os
import sys
from pathlib import Path

from diffusion_utilities.cli import main
from diffusion_utilities.distributed import is_main
from diffusion_utilities.errors import BadInput

HERE = Path(__file__).resolve().parent


def train_argv(hyperparameters: dict) -> list[str]:
    """The ``train`` command line for ``hyperparameters``: {"epochs": "2", "augment": True} -> [..., "--epochs", "2", "--augment"]."""
    argv = ["train"]
    for name, value in hyperparameters.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is not False and value is not None:
            argv += [f"--{name}", str(value)]
    return argv


def job_argv(environ) -> list[str]:
    """The job's ``train`` command line, from SM_HPS, or one BadInput line."""
    try:
        hyperparameters = json.loads(environ.get("SM_HPS") or "{}")
    except ValueError as e:
        raise BadInput(f"SM_HPS is not valid JSON ({e}); the job's hyperparameters come from "
                       f"sagemaker/launch_training.py: launch the job with it") from None
    if not isinstance(hyperparameters, dict):
        raise BadInput(f"SM_HPS holds {type(hyperparameters).__name__}, not a JSON object of hyperparameters; "
                       f"launch the job with sagemaker/launch_training.py")
    empty = [name for name, value in hyperparameters.items() if value is None]
    if empty:  # train_argv would drop it, and the job would run on train's default without a word
        raise BadInput(f"SM_HPS gives {empty[0]} no value (null); give it one, or leave it out for train's default")
    start = hyperparameters.get("init-from")
    if isinstance(start, str) and not Path(start).is_absolute():  # shipped by the launcher
        hyperparameters["init-from"] = str(HERE / start)
    return train_argv(hyperparameters)


def run(environ) -> int:
    try:
        argv = job_argv(environ)
    except BadInput as e:
        if is_main():  # under torchrun, as train's own messages: rank 0 alone says it
            print(f"error: {e}", file=sys.stderr)
        return 2
    return main(argv)


if __name__ == "__main__":
    sys.exit(run(os.environ))
