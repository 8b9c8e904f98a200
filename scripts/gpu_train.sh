#!/usr/bin/env bash
# First call of a one-H200 lease: install the carried wheels, measure the compiled step time on a
# short run (which also smoke-tests training and decoding), size the main run to BUDGET minutes of
# training, and start scripts/gpu_pipeline.sh under setsid (it survives between calls).
# Usage: bash scripts/gpu_train.sh BUDGET_MINUTES CONFIG
set -uo pipefail
BUDGET=${1:-13.5}
CONFIG=${2:-configs/arc-large.yaml}
W=/root/work  # outside the carried tree: a later call re-sends the tree and replaces it
mkdir -p $W
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
rm -rf $W/smoke
python3 -m sage_distill train --config $CONFIG --set out_dir=$W/smoke --set optim.steps=120 --set log_every=20 \
  --set checkpoint_every=1000 --set "snapshots=[]" 2>&1 | grep -v "it/s" | tail -4
tail -2 $W/smoke/metrics.jsonl
python3 -m sage_distill data export --dataset arc1 --split evaluation --out $W/arc1 > /dev/null
python3 -m sage_distill predict --model $W/smoke --challenges $W/arc1/challenges.json --out $W/smoke-pred/p.json \
  --views 16 --device cuda --limit 40 2>&1 | grep -v "task/s" | tail -2
STEPS=$(python3 -c "
import json; rows=[json.loads(l) for l in open('$W/smoke/metrics.jsonl')]
sps=sorted(r['steps_per_s'] for r in rows[2:])[len(rows[2:])//2]; print(int($BUDGET*60*sps))")
echo "main run: $STEPS steps for $BUDGET minutes"
setsid nohup bash scripts/gpu_pipeline.sh $STEPS $CONFIG > $W/pipeline.log 2>&1 < /dev/null &
sleep 5; tail -3 $W/pipeline.log
