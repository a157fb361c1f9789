#!/usr/bin/env bash
# Everything the GPU parts of the course need measured, in one call to a GPU machine (~9 min on an H100).
#
#   here, once:   bash tools/device_wheels.sh          (the Jupyter stack, for the notebook timings)
#   then:         the device tool's run with command "bash tools/device_check.sh", carry [".whl"], timeout_s 590
#
# In order of importance, each step bounded by `timeout` and writing to $OUT as it goes, so a
# step that fails or runs long still leaves the earlier results:
#   tests      tests/test_cuda.py: fast path and CUDA graphs give the plain results; no per-step syncs;
#              tests/test_distributed.py: its GPU test (SyncBatchNorm on CUDA)
#   models     each shipped model (course, v, flow) sampled with its default sampler, timed by `sample`
#   study      tools/gpu_throughput_study.py: DDPM-500 img/s at batch 1024 for fp32, bf16 and autocast,
#              at 4× the batch, and a profile of one forward
#   bench      bench --device cuda --json: the four rows and the +bf16 / +graph variants
#   compile    bench rows through torch.compile (large-batch sampling, graphed training)
#   train      each recipe of RECIPES, timed (process and card), its weights and card coming back;
#              the default is the course's (90,000 sprites × 32 epochs, batch 100, fp32), graphed
#   evaluate   FID and class accuracy of each recipe's weights for real, ddpm, ddim-eta1 at n = 200
#   notebooks  each notebook's wall time, executed from a clean kernel as a learner would
#   autotune   (only when named) the study's torch.compile variants (max-autotune compiles for ~90 s), with
#              the sampler's CUDA graph, in whatever time is left; AUTOTUNE_VARIANTS picks them
# STEPS="tests bench" (say) runs only those; BENCH_ROWS=a,b picks bench rows; RECIPES="name:train args;..."
# names the recipes (e.g. RECIPES="b256:--batch-size 256 --precision bf16;course:"); BUDGET_S caps the
# whole script (default 570 s), and a recipe's own limit is TRAIN_S seconds (default 180) or what is left.
#
# A dry run here, on the CPU and on tiny sizes, checks the script itself: QUICK=1 DEVICE=cpu bash tools/device_check.sh
set -u -o pipefail
OUT=${OUT:-/tmp/device_out}
WORK=${WORK:-/tmp}  # scratch: the recipe's run folder and the notebooks' copies
FAILED=""
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}  # the GPU image's python3 holds PyTorch
STEPS=" ${STEPS:-tests models study bench compile train evaluate notebooks} "
COMPILE_ROWS=${COMPILE_ROWS:-sample-ddpm500-large+compile+bf16,sample-ddpm500-large+compile,train+compile+graph,train-large+compile+graph+bf16}
has() { [[ $STEPS == *" $1 "* ]]; }
RECIPES=${RECIPES:-course:}
COMMON=""
[ "$DEVICE" = cuda ] && COMMON="--cuda-graph"  # (a dry run on the CPU trains without one)
if [ -n "${QUICK:-}" ]; then  # sizes for a dry run of the script, not for measuring
  BENCH="--repeats 1 --rows ${BENCH_ROWS:-sample-ddim25-b32,train} --train-steps 2"
  COMMON="$COMMON --n-sprites 1000 --epochs 1 --n-feat 16"
  STUDY="--batch 2 --repeats 1 --steps 4 --deadline-s 200 --variants fp32,bf16,autocast+profile@2x"
  EVAL_N=20; MODEL_N=4; NOTEBOOKS=notebooks/01_noise_schedule.ipynb
  COMPILE="--repeats 1 --large-batch 2 --rows sample-ddpm500-large+compile"
  SLOW=4  # time limits ×4: a busy 2-core CPU must not turn the dry run's every-step check into a timing test
else
  BENCH="--repeats 3 --train-steps 50 ${BENCH_ROWS:+--rows $BENCH_ROWS}"; EVAL_N=200; MODEL_N=1024
  STUDY="--batch 1024 --repeats 2 --deadline-s ${STUDY_S:-150} ${STUDY_VARIANTS:+--variants $STUDY_VARIANTS}"; NOTEBOOKS="notebooks/0*.ipynb"; SLOW=1
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
  timeout $(cap 90) "$PY" -m pytest -q -s -p no:cacheprovider -rs tests/test_cuda.py tests/test_distributed.py \
    || FAILED+=" tests"
fi
if has models; then
  step "models: the shipped ones with their default samplers, $MODEL_N sprites each"
  for w in sprites_ddpm sprites_v sprites_flow; do
    timeout $(cap 60) "$PY" -m diffusion_utilities sample --weights "weights/$w.safetensors" --n $MODEL_N --no-gif \
      --device "$DEVICE" --out "$WORK/models_$w" | grep sampled || FAILED+=" models-$w"
  done
fi
if has study; then
  step "study: large-batch sampling"
  timeout $(cap 200) "$PY" tools/gpu_throughput_study.py --device "$DEVICE" $STUDY --json "$OUT/study.json" \
    || FAILED+=" study"
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
if has train || has evaluate; then
  IFS=';' read -ra recipe_list <<< "$RECIPES"
  for recipe in "${recipe_list[@]}"; do
    name=${recipe%%:*}; name=${name// /}; args=""; [[ $recipe == *:* ]] && args=${recipe#*:}
    [ -n "$name" ] || continue
    run="$WORK/recipe_$name"
    if has train; then
      step "train $name: $COMMON $args"
      rm -rf "$run"; started=$SECONDS
      # shellcheck disable=SC2086  # the arguments split on purpose
      timeout $(cap ${TRAIN_S:-180}) "$PY" -m diffusion_utilities train --out "$run" --device "$DEVICE" --no-progress \
        $COMMON $args || FAILED+=" train-$name"
      echo "train $name: process $((SECONDS - started)) s (data, start-up and training)"
      cp "$run/model.safetensors" "$OUT/recipe_${name}_model.safetensors" && cp "$run/model.json" "$OUT/recipe_${name}_card.json"
    fi
    if has evaluate && [ -f "$run/model.safetensors" ]; then
      step "evaluate $name"
      timeout $(cap 60) "$PY" -m diffusion_utilities evaluate --weights "$run/model.safetensors" --n $EVAL_N \
        --rows real,ddpm,ddim-eta1 --device "$DEVICE" --json > "$OUT/recipe_${name}_eval.json" || FAILED+=" evaluate-$name"
      cat "$OUT/recipe_${name}_eval.json"
    fi
  done
fi
if has notebooks; then
  step notebooks
  # on copies (run_notebooks.py saves what it executes); the notebooks read only ../weights
  rm -rf "$WORK/nbrun" && mkdir -p "$WORK/nbrun/notebooks" && cp $NOTEBOOKS "$WORK/nbrun/notebooks/" \
    && ln -s "$PWD/weights" "$WORK/nbrun/weights"
  timeout $(cap 300) "$PY" tools/run_notebooks.py "$WORK"/nbrun/notebooks/*.ipynb | tee "$OUT/notebooks_gpu.txt" || FAILED+=" notebooks"
fi
if has autotune; then  # last: torch.compile's max-autotune takes minutes to compile, with whatever time is left
  step "study: max-autotune"
  timeout $(cap 400) "$PY" tools/gpu_throughput_study.py --device "$DEVICE" ${STUDY%%--deadline-s*} \
    --deadline-s $(( $(cap 400) > 20 ? $(cap 400) - 10 : 10 )) --variants "${AUTOTUNE_VARIANTS:-fp32,bf16+max-autotune+profile,bf16+max-autotune@4x,bf16+compile}" \
    --json "$OUT/study_autotune.json" || FAILED+=" autotune"
fi
step "done; failed:${FAILED:- nothing}"
[ -z "$FAILED" ]
