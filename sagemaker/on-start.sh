#!/bin/bash
# SageMaker notebook instance lifecycle configuration, "Start notebook" script.
#
# Installs this course's requirements into the conda environment behind the kernel
# conda_pytorch_p310 and the widget front end into Jupyter's own environment. It runs as root at
# every start; SageMaker stops any such script after 5 minutes, so the installs run in the
# background and log to /home/ec2-user/SageMaker/course-setup.log.
#
# Nothing here is needed at run time: after this script the notebooks read only files in the
# repository (procedural sprites, weights/) and need no internet. The installs themselves do
# need PyPI, or a wheelhouse you copy to the instance (set WHEELS below).
#
# Set REPO to where you cloned the repository (under /home/ec2-user/SageMaker, which survives
# restarts) and KERNEL_ENV to the conda environment of the kernel you use.
set -euo pipefail

REPO=${REPO:-/home/ec2-user/SageMaker/diffusion-sprites}
KERNEL_ENV=${KERNEL_ENV:-pytorch_p310}
WHEELS=${WHEELS:-}   # e.g. /home/ec2-user/SageMaker/wheels for an instance without internet
LOG=/home/ec2-user/SageMaker/course-setup.log

sudo -u ec2-user -H env REPO="$REPO" KERNEL_ENV="$KERNEL_ENV" WHEELS="$WHEELS" nohup bash -s >"$LOG" 2>&1 <<'SETUP' &
set -euo pipefail
echo "course setup started $(date -u)"
PIP_ARGS=(--quiet)
if [ -n "$WHEELS" ]; then PIP_ARGS+=(--no-index --find-links "$WHEELS"); fi

(
source /home/ec2-user/anaconda3/bin/activate "$KERNEL_ENV"
# Keep the kernel's own CUDA build of PyTorch (installing torch from PyPI here would replace it);
# JupyterLab itself runs from JupyterSystemEnv, not from the kernel's environment.
grep -vE '^(torch|torchvision|jupyterlab)([<>=! ]|$)' "$REPO/requirements.txt" | grep -vE '^\s*(#|$)' > /tmp/course-requirements.txt
pip install "${PIP_ARGS[@]}" -r /tmp/course-requirements.txt
pip install "${PIP_ARGS[@]}" --no-deps -e "$REPO"
python - <<'CHECK'
import torch, diffusion_utilities
major, minor = (int(v) for v in torch.__version__.split(".")[:2])
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"kernel env: torch {torch.__version__}, {cuda}, diffusion_utilities from {diffusion_utilities.__file__}")
if (major, minor) < (2, 6):
    print("warning: this kernel's torch is older than 2.6, the oldest release the course is tested with")
CHECK
)

# ipywidgets 8 needs its front end in the environment that runs the Jupyter server itself.
(
source /home/ec2-user/anaconda3/bin/activate JupyterSystemEnv
pip install "${PIP_ARGS[@]}" "jupyterlab_widgets>=3,<4"
)
echo "course setup finished $(date -u); restart the Jupyter server (or the instance) if the sliders do not show"
SETUP
