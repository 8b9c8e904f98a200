#!/usr/bin/env bash
# Later calls of the lease: wait up to SECONDS for MARKER (TRAINED or DONE) under /root/work/res,
# print progress and bring back the results. Options after those two: "eval" starts
# scripts/gpu_eval.sh under setsid once training is done (once); "release" brings back the int8
# model folder (shards one by one, the small files in a tar).
set -uo pipefail
WAIT=${1:-540}
MARKER=${2:-DONE}
W=/root/work
end=$(( $(date +%s) + WAIT ))
while [ $(date +%s) -lt $end ] && [ ! -f $W/res/$MARKER ]; do
  if [[ " $* " == *" eval "* ]] && [ -f $W/res/TRAINED ] && [ ! -f $W/res/EVAL_STARTED ]; then
    touch $W/res/EVAL_STARTED
    setsid nohup bash scripts/gpu_eval.sh >> $W/pipeline.log 2>&1 < /dev/null &
  fi
  sleep 5
done
cat $W/pipeline.log; tail -1 $W/run/metrics.jsonl 2>/dev/null
for f in $W/res/*/predictions.json.partial.jsonl; do [ -f "$f" ] && echo "$f: $(wc -l < $f) tasks"; done
(cd $W && tar czf $OUT/res.tgz --exclude='*/data' --exclude='*/renders' res)
if [[ " $* " == *" release "* ]] && [ -d $W/release ]; then
  cp $W/release/*.safetensors $OUT/
  (cd $W && tar czf $OUT/release-meta.tgz --exclude='*.safetensors' release)
fi
ls -la $OUT
