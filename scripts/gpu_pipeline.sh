#!/usr/bin/env bash
# Train, then write the release folders (bf16 and int8) under /root/work; evaluations are started
# by scripts/gpu_eval.sh so that they run the newest code of the carried tree.
set -uo pipefail
STEPS=$1
CONFIG=${2:-configs/arc-large.yaml}
W=/root/work
RUN=$W/run
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
mkdir -p $W/res
echo "start $(date -u +%FT%TZ) steps=$STEPS config=$CONFIG"
T0=$(date +%s)
python3 -m sage_distill train --config $CONFIG --set out_dir=$RUN --set optim.steps=$STEPS 2>&1 \
  | grep -v "it/s" > $W/res/train.log
echo "trained in $(( $(date +%s) - T0 )) s"; tail -1 $RUN/metrics.jsonl
cp $RUN/metrics.jsonl $RUN/run.json $W/res/
python3 -c "
from sage_distill.student.checkpoint import load_model, save_model
m, fps = load_model('$RUN'); save_model('$W/release', m, fps, precision='int8')"
cp $RUN/metrics.jsonl $RUN/run.json $W/release/
echo "released $(date -u +%FT%TZ)"; touch $W/res/TRAINED
