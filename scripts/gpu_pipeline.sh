#!/usr/bin/env bash
# Train, then every evaluation in order of importance, each writing under /root/work/res.
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
ev() {  # name model dataset views [extra]
  local t=$(date +%s)
  python3 -m sage_distill eval --model $2 --dataset $3 --out $W/res/$1 --views $4 --device cuda "${@:5}" \
    2>&1 | grep -v "task/s" > $W/res/$1.log
  echo "eval $1: $(( $(date +%s) - t )) s"; grep -i "pass@2" $W/res/$1.log | head -3
}
ev arc1 $RUN arc1 80
python3 -c "
from sage_distill.student.checkpoint import load_model, save_model
m, fps = load_model('$RUN'); save_model('$W/release', m, fps, precision='int8')"
cp $RUN/metrics.jsonl $RUN/run.json $W/release/
ev arc2 $RUN arc2 80
ev arc1-int8 $W/release arc1 80
ev arc1-v8 $RUN arc1 8
for s in $RUN/snapshots/step-*; do ev arc1-$(basename $s) $s arc1 80; done
echo "done $(date -u +%FT%TZ)"; touch $W/res/DONE
