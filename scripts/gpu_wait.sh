#!/usr/bin/env bash
# Later calls of the lease: wait up to SECONDS for the pipeline, print its progress, and bring back
# the results (and, with "release", the int8 model shards).
set -uo pipefail
WAIT=${1:-540}
W=/root/work
end=$(( $(date +%s) + WAIT ))
while [ $(date +%s) -lt $end ] && [ ! -f $W/res/DONE ]; do sleep 10; done
cat $W/pipeline.log; tail -c 400 $W/res/train.log; tail -1 $W/run/metrics.jsonl 2>/dev/null
cp $W/run/metrics.jsonl $W/res/ 2>/dev/null
(cd $W && tar czf $OUT/res.tgz --exclude='*/data' --exclude='*/renders' res)
if [ "${2:-}" = release ] && [ -d $W/release ]; then cp $W/release/* $OUT/; fi
ls -la $OUT
