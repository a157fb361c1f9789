#!/usr/bin/env bash
# Download, on this machine, the Jupyter stack that the GPU machine lacks (Python 3.12 wheels,
# about 19 MB) into .whl/, ignored by git, so tools/device_check.sh can time the notebooks there.
# The GPU image already has torch, numpy, matplotlib, safetensors, tqdm, pillow and pytest;
# the wheels it has are left out, so each package is installed there once.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl nbclient nbformat ipykernel ipywidgets
# already on the GPU image (see .library/device/KINDS.md): two versions of one package break the install
rm -f .whl/{attrs,packaging,psutil,pygments,python_dateutil,typing_extensions,tzdata,six}-*.whl
ls .whl | wc -l && du -sh .whl
