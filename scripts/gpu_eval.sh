#!/usr/bin/env bash
# Evaluations in order of importance, started under setsid after training; each writes under
# /root/work/res/<name> and appends its timing to /root/work/pipeline.log.
set -uo pipefail
W=/root/work
RUN=$W/run
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
ev() {  # name model dataset views
  local t=$(date +%s)
  python3 -m sage_distill eval --model $2 --dataset $3 --out $W/res/$1 --views $4 --device cuda --batch 512 \
    2>&1 | grep -v "task/s" > $W/res/$1.log
  echo "eval $1: $(( $(date +%s) - t )) s"; grep -i "pass@2" $W/res/$1.log | head -1
}
ev arc1 $RUN arc1 80
ev arc2 $RUN arc2 80
ev arc1-int8 $W/release arc1 80
ev arc1-v8 $RUN arc1 8
for s in $RUN/snapshots/step-*; do ev arc1-$(basename $s) $s arc1 80; done
echo "evals done $(date -u +%FT%TZ)"; touch $W/res/DONE
