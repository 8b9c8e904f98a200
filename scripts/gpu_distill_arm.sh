#!/usr/bin/env bash
# One arm of scripts/gpu_distill.sh: train configs/distill/ARM.yaml under /root/work/runs/ARM, then evaluate
# it (ARC-AGI-1 evaluation, 8 views, official pass@2) into /root/work/res/ARM. ARM=teacher: evaluate only.
# ARM=NAME-sK trains configs/distill/NAME.yaml with seed K (a second seed of an arm).
# Usage: bash scripts/gpu_distill_arm.sh ARM [--set key=value ...]
set -uo pipefail
ARM=$1
shift  # the rest: extra `--set key=value` options for train
CONFIG=$ARM
if [[ $ARM =~ ^(.+)-s([0-9]+)$ ]]; then CONFIG=${BASH_REMATCH[1]}; set -- "$@" --set seed=${BASH_REMATCH[2]}; fi
W=/root/work
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
echo "start $(date -u +%FT%TZ) $ARM commit $(git rev-parse --short HEAD 2>/dev/null)"
MODEL=models/sage-arc
if [ "$ARM" != teacher ]; then
  T0=$(date +%s)
  python3 -m sage_distill train --config configs/distill/$CONFIG.yaml --set out_dir=$W/runs/$ARM "$@" 2>&1 \
    | grep -v "it/s\]"
  echo "trained $ARM in $(( $(date +%s) - T0 )) s"
  MODEL=$W/runs/$ARM
  python3 -c "from sage_distill.student.checkpoint import load_model, save_model
m, f = load_model('$MODEL'); save_model('$W/rel/$ARM', m, f, precision='int8')"  # a release candidate (int4 cost the student 2.25 points in run 2)
fi
T0=$(date +%s)
python3 -m sage_distill eval --model $MODEL --dataset arc1 --out $W/res/$ARM --views 8 --device cuda --batch 512 \
  2>&1 | grep -v "task/s"
echo "evaluated $ARM in $(( $(date +%s) - T0 )) s"
touch $W/res/$ARM.DONE
