#!/usr/bin/env bash
# Runs on the lent GPU machine (see docs/BENCHMARKS.md): installs the carried wheels, measures
# 1-GPU vs K-GPU training throughput, then trains (or resumes) the small student for MINUTES.
# Usage: bash scripts/gpu_train.sh MINUTES fresh|resume [TOTAL_MINUTES]
set -euo pipefail
MIN=${1:-7}; MODE=${2:-fresh}; TOTAL=${3:-$MIN}
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
K=$(python3 -c 'import torch; print(torch.cuda.device_count())')
nvidia-smi --query-gpu=name,memory.total --format=csv
RUN=runs/sage-small
if [ "$MODE" = fresh ]; then
  rm -rf runs/bench1 runs/benchK "$RUN"
  # Throughput: same per-GPU batch (128), 60 steps, 1 GPU then K GPUs.
  torchrun --nproc_per_node=1 -m sage_distill train --config configs/sage-small.yaml \
    --set out_dir=runs/bench1 --set optim.steps=60 --set optim.batch_size=128 --set log_every=20 2>&1 | grep -v 'it/s' | tail -2
  torchrun --nproc_per_node=$K -m sage_distill train --config configs/sage-small.yaml \
    --set out_dir=runs/benchK --set optim.steps=60 --set optim.batch_size=$((128*K)) --set log_every=20 2>&1 | grep -v 'it/s' | tail -2
  python3 - "$K" "$TOTAL" <<'PY' > /tmp/steps
import json, sys
k = int(sys.argv[1])
one = json.loads(open("runs/bench1/metrics.jsonl").read().splitlines()[-1])
many = json.loads(open("runs/benchK/metrics.jsonl").read().splitlines()[-1])
print(json.dumps({"gpus": k, "one_gpu_ex_s": one["examples_per_s"], "k_gpu_ex_s": many["examples_per_s"],
                  "speedup": many["examples_per_s"] / one["examples_per_s"], "mfu_1": one["mfu"], "mfu_k": many["mfu"]}),
      file=sys.stderr)
# Steps for the whole schedule: measured K-GPU rate over TOTAL minutes of training at batch 512.
print(int(many["examples_per_s"] * 60 * float(sys.argv[2]) / 512))
PY
  STEPS=$(cat /tmp/steps)
  cp runs/bench1/metrics.jsonl $OUT/bench1.jsonl; cp runs/benchK/metrics.jsonl $OUT/benchK.jsonl
  echo "schedule steps: $STEPS"
  torchrun --nproc_per_node=$K -m sage_distill train --config configs/sage-small.yaml \
    --set optim.steps=$STEPS --set max_minutes=$MIN 2>&1 | grep -v 'it/s' | tail -4
else
  torchrun --nproc_per_node=$K -m sage_distill train --config configs/sage-small.yaml --resume $RUN \
    --set optim.steps=$(python3 -c "import json;print(json.load(open('$RUN/run.json'))['config']['optim']['steps'])") \
    --set max_minutes=$MIN 2>&1 | grep -v 'it/s' | tail -4
fi
cp $RUN/model.safetensors $RUN/config.json $RUN/task_codes.safetensors $RUN/task_codes.json $RUN/metrics.jsonl $RUN/run.json $OUT/
tail -2 $RUN/metrics.jsonl
