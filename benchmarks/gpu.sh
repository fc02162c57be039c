#!/usr/bin/env bash
# The GPU checks in one go (about 10-13 minutes on one H200), most important first:
#   sync     the test that a steady-state training step never waits for the GPU (tests/test_full_speed.py)
#   speed    benchmarks/throughput.py at batch 256 with the defaults (cache=auto: the GPU cache) for ResNet34 at
#            64 px and SqueezeNet at 32 px, on the demo replicated 41x (50 061 images, ~195 steps an epoch) and
#            on the demo itself (1 221 images, with the naive baseline)
#   tta      time to 98 % validation on the demo: `python main.py train --use-gpu` and the naive baseline
#   profile  a torch.profiler trace of ResNet34 64 px epochs (steps and the epoch boundary)
#   compile  the replicated runs again with --compile: torch.compile's default mode and reduce-overhead (CUDA graphs)
#   check, tricks  the CUDA trick checks with the recipe and defaults trainings, and the tricks table (not in
#            the default)
# PHASES picks some (default: sync speed tta profile compile). Logs and JSON go to $OUT (default
# benchmarks/out/gpu). Packages missing on the machine may be given as wheels in .whl/.
# SMOKE=1 runs every phase tiny on the CPU, to check the script itself on a machine without a GPU.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}; mkdir -p "$OUT"
PHASES=${PHASES:-sync speed tta profile compile}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
SMALL="--model=SqueezeNet --image-size=32"
if [[ ${SMOKE:-0} == 1 ]]; then  # the small model everywhere, one epoch, the demo once
  DEV=cpu; BATCH=32; REP=1; BIG=$SMALL; TP="--epochs=1 --steps=3 --passes=0"; TTA_ARGS="--target=0 --max-epoch=1 --runs=defaults"
  PROFILE_ARGS="$SMALL --epochs=2"
else
  DEV=cuda; BATCH=256; REP=41; BIG="--model=ResNet34 --image-size=64"; TP="--epochs=3 --steps=20 --passes=0"
  TTA_ARGS=""; PROFILE_ARGS="$BIG --batch-size=256 --epochs=3"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
fi
python3 -c 'import torch, torchvision, timm; print(torch.__version__, torchvision.__version__, timm.__version__)' | tee -a "$OUT/env.txt"
python3 -c 'from data.demo import ensure_demo; ensure_demo("data/demo")'

throughput() {  # name, then throughput.py arguments
  local name=$1; shift
  timeout ${THROUGHPUT_TIMEOUT:-180} python3 benchmarks/throughput.py --device=$DEV --batch-size=$BATCH $TP \
    --json="$OUT/throughput_$name.json" "$@" > "$OUT/throughput_$name.log" 2>&1
  echo "throughput $name (exit $?): $(grep -h 'pipeline efficiency\|^(c)\|^naive' "$OUT/throughput_$name.log" | tr '\n' ' ')"
}

if [[ $PHASES == *sync* ]]; then
  python3 -c 'import pytest' 2>/dev/null || echo "sync: pytest is not installed; put its wheels in .whl/"
  timeout 180 python3 -m pytest -q -rs tests/test_full_speed.py -k "steady_state" 2>&1 | tail -5 | tee "$OUT/sync.log"
fi
if [[ $PHASES == *speed* ]]; then
  throughput ResNet34_replicated $BIG --replicate=$REP --naive-epochs=0
  throughput SqueezeNet_replicated $SMALL --replicate=$REP --naive-epochs=0
  throughput ResNet34 $BIG
  throughput SqueezeNet $SMALL
fi
if [[ $PHASES == *tta* ]]; then
  timeout ${TTA_TIMEOUT:-300} python3 benchmarks/time_to_accuracy.py --device=$DEV --logs="$OUT/tta" \
    --json="$OUT/time_to_accuracy.json" $TTA_ARGS 2>&1 | grep -v RESULT | tee "$OUT/time_to_accuracy.log"
fi
if [[ $PHASES == *profile* ]]; then
  timeout 180 python3 benchmarks/profile_epoch.py --device=$DEV $PROFILE_ARGS --out="$OUT/profile" \
    > "$OUT/profile.log" 2>&1
  echo "profile (exit $?):"; sed -n '/ s per epoch (profiled)/,/GPU busy/p' "$OUT/profile.log"
fi
if [[ $PHASES == *compile* ]]; then
  for mode in default reduce-overhead; do
    THROUGHPUT_TIMEOUT=${COMPILE_TIMEOUT:-200} throughput ResNet34_replicated_compile_$mode $BIG --replicate=$REP \
      --naive-epochs=0 --set compile=true compile_mode=$mode
  done
  THROUGHPUT_TIMEOUT=${COMPILE_TIMEOUT:-200} throughput SqueezeNet_replicated_compile_reduce-overhead $SMALL \
    --replicate=$REP --naive-epochs=0 --set compile=true compile_mode=reduce-overhead
fi

if [[ $PHASES == *check* ]]; then
  timeout 60 python3 -m benchmarks.tricks_cuda_check 2>&1 | tee "$OUT/cuda_check.log" | tail -12
  recipe="--model=ResNet34 --attention=cbam --loss=joint --optimizer=ranger --cutmix-prob=0.5 --sampler=imbalanced --scheduler=cosine"
  (OMP_NUM_THREADS=1 timeout 300 python3 main.py train --use-gpu --vis=false $recipe --run-name=gpu-recipe \
     > "$OUT/train_recipe.log" 2>&1;
   OMP_NUM_THREADS=1 timeout 200 python3 main.py train --use-gpu --vis=false --run-name=gpu-defaults \
     > "$OUT/train_defaults.log" 2>&1) &
fi
if [[ $PHASES == *tricks* ]]; then
  mkdir -p benchmarks/out/tricks
  timeout ${TRICKS_TIMEOUT:-330} python3 -m benchmarks.tricks --use-gpu --epochs=15 --seeds=0,1,2 --jobs=12 \
    --threads=1 --combine --resume --out=benchmarks/out/tricks > /tmp/tricks.log 2>&1
  echo "tricks exit $?"
  cp benchmarks/out/tricks/results.jsonl "$OUT/tricks_results.jsonl"
  grep -v "^  \|^config\|Warning" /tmp/tricks.log | tail -300 > "$OUT/tricks.log"
  sed -n '/^ResNet34, /,$p' /tmp/tricks.log
fi
wait
if [[ $PHASES == *check* ]]; then grep -h "best validation\|^epoch 15" "$OUT"/train_*.log; fi
