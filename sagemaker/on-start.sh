#!/bin/bash
# SageMaker notebook instance lifecycle configuration, "Start notebook" script.
#
# Installs this course's requirements into the conda environment of the PyTorch kernel
# (conda_pytorch on the notebook-al2023-v1 platform; conda_pytorch_p310 on the retired AL2 ones)
# and the widget front end into Jupyter's own environment. It runs as root at every start, and
# must: SageMaker resets its preinstalled environments when an instance stops.
#
# SageMaker fails the start of an instance whose script runs longer than 5 minutes, so only the
# small widget install runs in the foreground (as AWS's install-lab-extension sample installs its
# extension, without a server restart); the course's requirements install in the background and log to
# /home/ec2-user/SageMaker/course-setup.log. What this script prints reaches CloudWatch (log group
# /aws/sagemaker/NotebookInstances); what the background install prints is in the log.
#
# Nothing here is needed at run time: after this script the notebooks read only files in the
# repository (procedural sprites, weights/) and need no internet. The installs themselves do
# need PyPI at every start, or a folder of wheels on the instance's volume (set WHEELS).
#
# REPO: where you cloned the repository (under /home/ec2-user/SageMaker, which survives restarts).
# KERNEL_ENV: the conda environment to install into; empty picks the first of pytorch,
# pytorch_p310 that exists.
set -eo pipefail  # not -u: conda's activation scripts read variables that may be unset

REPO=${REPO:-/home/ec2-user/SageMaker/diffusion-sprites}
KERNEL_ENV=${KERNEL_ENV:-}
WHEELS=${WHEELS:-}   # e.g. /home/ec2-user/SageMaker/wheels for an instance without internet
LOG=${LOG:-/home/ec2-user/SageMaker/course-setup.log}
CONDA=${CONDA:-/home/ec2-user/anaconda3}
RUN_AS=${RUN_AS:-ec2-user}  # SageMaker's notebook user (tests/test_sagemaker.py sets these three)

say() { echo "course setup: $*" | tee -a "$LOG"; }  # to CloudWatch and to the log
: >"$LOG" && chown "$RUN_AS" "$LOG"

if [ -z "$KERNEL_ENV" ]; then
    for env in pytorch pytorch_p310; do
        if [ -d "$CONDA/envs/$env" ]; then KERNEL_ENV=$env; break; fi
    done
fi
# A problem is reported and the script exits 0: a failed script would stop the instance from
# starting, and then nobody could open a terminal to read why.
if [ -z "$KERNEL_ENV" ] || [ ! -d "$CONDA/envs/$KERNEL_ENV" ]; then
    say "error: no conda environment '${KERNEL_ENV:-pytorch or pytorch_p310}' in $CONDA/envs" \
        "(it has: $(ls "$CONDA/envs" 2>/dev/null | tr '\n' ' ')); set KERNEL_ENV in this script to the PyTorch one"
    exit 0
fi
if [ ! -f "$REPO/pyproject.toml" ]; then
    say "error: no clone of the course at $REPO; clone it there, or set REPO in this script, then restart the instance"
    exit 0
fi

PIP_ARGS=(--quiet)
if [ -n "$WHEELS" ]; then PIP_ARGS+=(--no-index --find-links "$WHEELS"); fi

# ipywidgets 8 needs its front end in the environment that runs the Jupyter server itself.
# Installed in the foreground, so it is in place by the time the script ends; bounded so a slow
# network cannot push the script past SageMaker's 5 minutes.
# (paths go in as arguments, never into the command string, so spaces or quotes in them are safe)
if timeout 150 sudo -u "$RUN_AS" -H bash -c 'source "$1/bin/activate" JupyterSystemEnv && shift &&
        pip install "$@" "jupyterlab_widgets>=3,<4"' _ "$CONDA" "${PIP_ARGS[@]}" >>"$LOG" 2>&1; then
    say "widget front end installed in JupyterSystemEnv"
else
    say "warning: installing jupyterlab_widgets failed or timed out (see $LOG); sliders may show as text"
fi

say "installing the course into conda env $KERNEL_ENV in the background; progress in $LOG"
sudo -u "$RUN_AS" -H env REPO="$REPO" KERNEL_ENV="$KERNEL_ENV" WHEELS="$WHEELS" CONDA="$CONDA" \
    nohup bash -s >>"$LOG" 2>&1 <<'SETUP' &
set -eo pipefail
PIP_ARGS=(--quiet)
if [ -n "$WHEELS" ]; then PIP_ARGS+=(--no-index --find-links "$WHEELS"); fi
trap 'echo "course setup FAILED $(date -u) at line $LINENO; the lines above say why"' ERR
echo "course setup started $(date -u) in $KERNEL_ENV"
source "$CONDA/bin/activate" "$KERNEL_ENV"
# Keep the kernel's own CUDA build of PyTorch (installing torch from PyPI here would replace it);
# JupyterLab itself runs from JupyterSystemEnv, not from the kernel's environment.
REQS=$(mktemp)
grep -vE '^(torch|torchvision|jupyterlab)([<>=! ]|$)' "$REPO/requirements.txt" | grep -vE '^\s*(#|$)' >"$REQS"
pip install "${PIP_ARGS[@]}" -r "$REQS"
pip install "${PIP_ARGS[@]}" --no-deps -e "$REPO"
rm -f "$REQS"
python - <<'CHECK'
import torch, diffusion_utilities
major, minor = (int(v) for v in torch.__version__.split(".")[:2])
cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"kernel env: torch {torch.__version__}, {cuda}, diffusion_utilities from {diffusion_utilities.__file__}")
if (major, minor) < (2, 6):
    print("warning: this kernel's torch is older than 2.6, the oldest release the course is tested with")
CHECK
echo "course setup finished $(date -u)"
SETUP
