#!/usr/bin/env bash
# Everything the GPU parts of the course need measured, in one call to a GPU machine (~8 min on an H100).
#
#   here, once:   bash tools/device_wheels.sh          (the Jupyter stack, for the notebook timings)
#   then:         the device tool's run with command "bash tools/device_check.sh", carry [".whl"], timeout_s 590
#
# In order of importance, each step bounded by `timeout` and writing to $OUT as it goes, so a
# step that fails or runs long still leaves the earlier results:
#   1. tests/test_cuda.py: fast path and CUDA graph give the plain samples; no per-step syncs
#   2. bench --device cuda --json: the four rows and every +graph / +bf16 variant
#   3. the full course recipe (90,000 sprites × 32 epochs) at batch 1024 in bf16, timed, then
#      evaluated (FID and class accuracy for real, ddpm, ddim-eta1 at n = 200); its weights come back
#   4. each notebook's wall time, executed from a clean kernel as a learner would
#   5. if time is left: the recipe again at batch 256, evaluated (a fallback if batch 1024 loses quality)
#
# A dry run here, on the CPU and on tiny sizes, checks the script itself: QUICK=1 DEVICE=cpu bash tools/device_check.sh
set -u -o pipefail
OUT=${OUT:-/tmp/device_out}
WORK=${WORK:-/tmp}  # scratch: the recipe's run folder and the notebooks' copies
FAILED=""
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}  # the GPU image's python3 holds PyTorch
if [ -n "${QUICK:-}" ]; then  # sizes for a dry run of the script, not for measuring
  BENCH="--repeats 1 --rows sample-ddim25-b32,train --train-steps 2"; RECIPE="--n-sprites 1000 --epochs 1 --n-feat 16"
  EVAL_N=20; NOTEBOOKS=notebooks/01_noise_schedule.ipynb
  SLOW=4  # time limits ×4: a busy 2-core CPU must not turn the dry run's every-step check into a timing test
else
  BENCH="--repeats 3"; RECIPE=""; EVAL_N=200; NOTEBOOKS="notebooks/0*.ipynb"; SLOW=1
fi
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
exec > >(tee "$OUT/log.txt") 2>&1
step() { echo; echo "== $(date +%T) $*"; }
DEADLINE=$((SECONDS + ${BUDGET_S:-$((570 * SLOW))}))  # the whole script ends inside the call's limit
cap() { local want=$(($1 * SLOW)) left=$((DEADLINE - SECONDS)); if ((left < want)); then echo $((left > 5 ? left : 5)); else echo "$want"; fi; }

step setup
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
fi
nvidia-smi -L
"$PY" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name())"
nproc

step tests
timeout $(cap 150) "$PY" -m pytest -q -s -p no:cacheprovider -rs tests/test_cuda.py || FAILED+=" tests"

step bench
timeout $(cap 240) "$PY" -m diffusion_utilities bench --device "$DEVICE" $BENCH --json > "$OUT/bench_cuda.json" || FAILED+=" bench"
cat "$OUT/bench_cuda.json"

step "train: the course recipe at batch 1024, bf16"
rm -rf "$WORK/recipe"
timeout $(cap 150) "$PY" -m diffusion_utilities train --out "$WORK/recipe" --device "$DEVICE" --batch-size 1024 \
  --precision bf16 --no-progress $RECIPE || FAILED+=" train"
cp "$WORK/recipe/model.safetensors" "$OUT/recipe_model.safetensors" && cp "$WORK/recipe/model.json" "$OUT/recipe_model.json"

step evaluate
timeout $(cap 120) "$PY" -m diffusion_utilities evaluate --weights "$WORK/recipe/model.safetensors" --n $EVAL_N \
  --rows real,ddpm,ddim-eta1 --device "$DEVICE" --json > "$OUT/recipe_eval.json" || FAILED+=" evaluate"
cat "$OUT/recipe_eval.json"

step notebooks
# on copies (run_notebooks.py saves what it executes); the notebooks read only ../weights
rm -rf "$WORK/nbrun" && mkdir -p "$WORK/nbrun/notebooks" && cp $NOTEBOOKS "$WORK/nbrun/notebooks/" \
  && ln -s "$PWD/weights" "$WORK/nbrun/weights"
timeout $(cap 300) "$PY" tools/run_notebooks.py "$WORK"/nbrun/notebooks/*.ipynb | tee "$OUT/notebooks_gpu.txt" || FAILED+=" notebooks"
if ((DEADLINE - SECONDS > 150)); then  # time left: the recipe at batch 256, a fallback if 1024 loses quality
  step "train and evaluate: the course recipe at batch 256, bf16"
  rm -rf "$WORK/recipe256"
  timeout $(cap 120) "$PY" -m diffusion_utilities train --out "$WORK/recipe256" --device "$DEVICE" --batch-size 256 \
    --precision bf16 --no-progress $RECIPE \
  && timeout $(cap 60) "$PY" -m diffusion_utilities evaluate --weights "$WORK/recipe256/model.safetensors" --n $EVAL_N \
    --rows real,ddpm,ddim-eta1 --device "$DEVICE" --json > "$OUT/recipe256_eval.json" || FAILED+=" recipe256"
  grep -h '"wall_time_s"' "$WORK/recipe256/model.json"
  cat "$OUT/recipe256_eval.json"
fi
step "done; failed:${FAILED:- nothing}"
[ -z "$FAILED" ]
