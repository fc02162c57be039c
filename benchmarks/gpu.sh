#!/usr/bin/env bash
# The GPU checks in one go (about 8 minutes on one H200): the CUDA trick checks, the tricks table (3 seeds,
# 15 epochs, 12 runs at a time) while the write-up's recipe and the defaults train on the demo through main.py,
# then the throughput benchmark for ResNet34 at 64 px and SqueezeNet at 32 px on the quiet machine.
# PHASES picks some of: check tricks throughput (default all). The tricks table resumes from
# benchmarks/out/tricks/results.jsonl. Logs go to $OUT (default benchmarks/out/gpu). Packages missing on the
# machine may be given as wheels in .whl/.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out/gpu}; mkdir -p "$OUT"
PHASES=${PHASES:-check tricks throughput}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/env.txt"
python3 -c 'import torch, torchvision, timm; print(torch.__version__, torchvision.__version__, timm.__version__)' | tee -a "$OUT/env.txt"
python3 -c 'from data.demo import ensure_demo; ensure_demo("data/demo")'

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
[[ $PHASES == *check* ]] && grep -h "best validation\|^epoch 15" "$OUT"/train_*.log
if [[ $PHASES == *throughput* ]]; then
  for spec in "ResNet34 64" "SqueezeNet 32"; do
    set -- $spec
    timeout ${THROUGHPUT_TIMEOUT:-150} python3 benchmarks/throughput.py --model=$1 --image-size=$2 --device=cuda \
      --batch-size=256 --cache=ram --epochs=5 --steps=20 > "$OUT/throughput_$1.log" 2>&1
    grep -v "RESULT\|Warn\|warn" "$OUT/throughput_$1.log" | tail -14
  done
fi
