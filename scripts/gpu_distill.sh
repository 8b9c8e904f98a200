#!/usr/bin/env bash
# The distillation experiment on one GPU lease (issue 15). First call:
#   bash scripts/gpu_distill.sh start ARM [ARM ...]   (ARM = a config name under configs/distill/, or "teacher")
# copies the tree to /root/work/code (a later call replaces the carried tree), installs the carried wheels and
# starts every arm at once under setsid (NAME-sK: that arm with seed K): each trains for its config's
# optim.minutes on the shared GPU, then evaluates itself on ARC-AGI-1 evaluation at 8 views. "teacher" evaluates models/sage-arc the same way.
# Later calls: bash scripts/gpu_distill.sh wait SECONDS  (progress, and results into $OUT when all are done);
#   bash scripts/gpu_distill.sh fetch ARM  (that arm's int8 model folder into $OUT, for a release).
set -uo pipefail
W=/root/work
if [ "$1" = start ]; then
  shift
  source scripts/gpu_lease.sh && lease_setup $W mps
  for arm in "$@"; do
    (cd $W/code && setsid nohup bash scripts/gpu_distill_arm.sh "$arm" > $W/res/$arm.log 2>&1 < /dev/null &)
  done
  sleep 60; tail -n 3 $W/res/*.log
  exit 0
fi
if [ "$1" = fetch ]; then
  cp $W/rel/$2/* $OUT/ && ls -la $OUT
  exit 0
fi
end=$(( $(date +%s) + ${2:-300} ))
while [ $(date +%s) -lt $end ] && [ -n "$(ls $W/res/*.log 2>/dev/null)" ]; do
  pending=0
  for log in $W/res/*.log; do arm=$(basename $log .log); [ -f $W/res/$arm.DONE ] || pending=1; done
  [ $pending = 0 ] && break
  sleep 10
done
date -u +%FT%TZ
for log in $W/res/*.log; do
  arm=$(basename $log .log); echo "== $arm: $(grep -c . $log) lines"; grep -v "it/s\|task/s" $log | tail -n 4
  [ -f $W/runs/$arm/metrics.jsonl ] && tail -n 1 $W/runs/$arm/metrics.jsonl | cut -c1-600
done
(cd $W && tar czf $OUT/results.tgz --exclude='*/data' --exclude='*/renders' res \
  $(ls -d runs/*/metrics.jsonl runs/*/run.json 2>/dev/null))
