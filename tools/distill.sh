#!/bin/sh
# The shipped student (weights/sprites_distilled.safetensors): four rounds of progressive distillation
# (Salimans & Ho 2022) from the v-model's 16-step DDIM, each halving the steps: 16 -> 8 -> 4 -> 2 -> 1.
# Each round is one `train` run, resumable: run this again after an interruption and it goes on.
# On our 2-core CPU a round of 1,200 steps took the times recorded in the card's "distillation" rounds.
set -e
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/distill}
teacher=weights/sprites_v.safetensors
for steps in 8 4 2 1; do
  "$PY" -m diffusion_utilities train --teacher "$teacher" --distill-steps "$steps" --epochs 2 --n-sprites 60000 \
    --lr 1e-4 --seed "$steps" --out "$OUT/steps_$steps" --resume --no-progress
  teacher="$OUT/steps_$steps/model.safetensors"
done
