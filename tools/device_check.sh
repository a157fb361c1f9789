#!/usr/bin/env bash
# Everything the GPU parts of the course need measured, in one call to a GPU machine (~6 min on an H100).
#
#   here, once:   bash tools/device_wheels.sh          (the Jupyter stack, for the notebook timings)
#   then:         the device tool's run with command "bash tools/device_check.sh", carry [".whl"], timeout_s 590
#
# In order of importance, each step bounded by `timeout` and writing to $OUT as it goes, so a
# step that fails or runs long still leaves the earlier results:
#   tests      tests/test_cuda.py: fast path and CUDA graphs give the plain results; no per-step syncs
#   bench      bench --device cuda --json: the four rows and the +bf16 / +graph variants
#   compile    bench rows through torch.compile (large-batch sampling, graphed training), not yet measured on a GPU
#   train      the course recipe as the course runs it (90,000 sprites × 32 epochs, batch 100, fp32),
#              each step replayed from a CUDA graph, timed; its weights come back
#   evaluate   FID and class accuracy of those weights for real, ddpm, ddim-eta1 at n = 200
#   notebooks  each notebook's wall time, executed from a clean kernel as a learner would
# STEPS="tests bench" (say) runs only those; BENCH_ROWS=a,b picks bench rows; RECIPE adds train arguments;
# BUDGET_S caps the whole script (default 570 s).
#
# A dry run here, on the CPU and on tiny sizes, checks the script itself: QUICK=1 DEVICE=cpu bash tools/device_check.sh
set -u -o pipefail
OUT=${OUT:-/tmp/device_out}
WORK=${WORK:-/tmp}  # scratch: the recipe's run folder and the notebooks' copies
FAILED=""
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}  # the GPU image's python3 holds PyTorch
STEPS=" ${STEPS:-tests bench compile train evaluate notebooks} "
COMPILE_ROWS=sample-ddpm500-large+compile+bf16,sample-ddpm500-large+compile,train+compile+graph,train-large+compile+graph+bf16
has() { [[ $STEPS == *" $1 "* ]]; }
RECIPE=${RECIPE:-}
[ "$DEVICE" = cuda ] && RECIPE="--cuda-graph $RECIPE"  # (a dry run on the CPU trains without one)
if [ -n "${QUICK:-}" ]; then  # sizes for a dry run of the script, not for measuring
  BENCH="--repeats 1 --rows ${BENCH_ROWS:-sample-ddim25-b32,train} --train-steps 2"
  RECIPE="$RECIPE --n-sprites 1000 --epochs 1 --n-feat 16"
  EVAL_N=20; NOTEBOOKS=notebooks/01_noise_schedule.ipynb
  COMPILE="--repeats 1 --large-batch 2 --rows sample-ddpm500-large+compile"
  SLOW=4  # time limits ×4: a busy 2-core CPU must not turn the dry run's every-step check into a timing test
else
  BENCH="--repeats 3 --train-steps 50 ${BENCH_ROWS:+--rows $BENCH_ROWS}"; EVAL_N=200; NOTEBOOKS="notebooks/0*.ipynb"; SLOW=1
  COMPILE="--repeats 3 --train-steps 50 --rows $COMPILE_ROWS"
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

if has tests; then
  step tests
  timeout $(cap 90) "$PY" -m pytest -q -s -p no:cacheprovider -rs tests/test_cuda.py || FAILED+=" tests"
fi
if has bench; then
  step bench
  timeout $(cap 150) "$PY" -m diffusion_utilities bench --device "$DEVICE" $BENCH --json > "$OUT/bench_cuda.json" || FAILED+=" bench"
  cat "$OUT/bench_cuda.json"
fi

if has compile; then
  step "bench: torch.compile"
  # its own file: a compile failure must not lose the bench's other rows
  timeout $(cap 180) "$PY" -m diffusion_utilities bench --device "$DEVICE" $COMPILE > "$OUT/bench_compile.txt" \
    || FAILED+=" compile"
  cat "$OUT/bench_compile.txt"
fi
if has train; then
  step "train: the course recipe, batch 100, fp32 (args: $RECIPE)"
  rm -rf "$WORK/recipe"
  timeout $(cap 180) "$PY" -m diffusion_utilities train --out "$WORK/recipe" --device "$DEVICE" --no-progress $RECIPE \
    || FAILED+=" train"
  cp "$WORK/recipe/model.safetensors" "$OUT/recipe_model.safetensors" && cp "$WORK/recipe/model.json" "$OUT/recipe_model.json"
fi
if has evaluate; then
  step evaluate
  timeout $(cap 60) "$PY" -m diffusion_utilities evaluate --weights "$WORK/recipe/model.safetensors" --n $EVAL_N \
    --rows real,ddpm,ddim-eta1 --device "$DEVICE" --json > "$OUT/recipe_eval.json" || FAILED+=" evaluate"
  cat "$OUT/recipe_eval.json"
fi
if has notebooks; then
  step notebooks
  # on copies (run_notebooks.py saves what it executes); the notebooks read only ../weights
  rm -rf "$WORK/nbrun" && mkdir -p "$WORK/nbrun/notebooks" && cp $NOTEBOOKS "$WORK/nbrun/notebooks/" \
    && ln -s "$PWD/weights" "$WORK/nbrun/weights"
  timeout $(cap 300) "$PY" tools/run_notebooks.py "$WORK"/nbrun/notebooks/*.ipynb | tee "$OUT/notebooks_gpu.txt" || FAILED+=" notebooks"
fi
step "done; failed:${FAILED:- nothing}"
[ -z "$FAILED" ]
