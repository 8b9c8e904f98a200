#!/usr/bin/env bash
# One H200 lease for the ARC model (issue 16): train a config for MINUTES on the wall clock (compile
# included: the schedule runs on the clock), keep int8 and int4 copies (a release is one of them: the repository's
# 30 MB holds an int8 teacher or an int4 teacher beside the int8 student), then evaluate on ARC-AGI-1 evaluation:
# 80 views with the leading candidates re-scored (the vote alone is scored from the same decodings), and
# the 25% / 50% snapshots and the final model at 8 views (the time-to-score curve).
#   first call:  bash scripts/gpu_arc.sh start CONFIG MINUTES [VIEWS] [RESCORE] [CURVE]
#                (CURVE: view counts answered from the same decoding, e.g. 8,32,80; PROFILE=1 first runs
#                scripts/profile_train.py on the config, ~2 minutes)
#   later calls: bash scripts/gpu_arc.sh wait SECONDS      (progress; the results into $OUT)
# Everything lives under /root/work, outside the carried tree (a later call replaces the tree). A dry run
# on a CPU: GPU_WORK=/tmp/w DEVICE=cpu bash scripts/gpu_arc.sh pipeline TINY.yaml 0.2 2 1 1
set -uo pipefail
W=${GPU_WORK:-/root/work}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$W/code/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
case "$1" in
start)
  source scripts/gpu_lease.sh && lease_setup $W
  (cd $W/code && PROFILE=${PROFILE:-0} setsid nohup bash scripts/gpu_arc.sh pipeline "$2" "$3" "${4:-80}" "${5:-8}" \
     "${6:-}" > $W/res/pipeline.log 2>&1 < /dev/null &)
  sleep 100; cat $W/res/pipeline.log; tail -n 2 $W/run/metrics.jsonl 2>/dev/null | cut -c1-400 ;;
pipeline)  # CONFIG MINUTES VIEWS RESCORE CURVE, run from $W/code under setsid
  ev() {  # name model views rescore [curve]
    local t=$(date +%s)
    python3 -m sage_distill eval --model $2 --dataset arc1 --out $W/res/$1 --views $3 --rescore $4 --curve "${5:-}" \
      --device $DEVICE --batch 512 --limit ${EVAL_LIMIT:-400} > $W/res/$1.log 2>&1
    echo "eval $1 ($3 views, rescore $4): $(( $(date +%s) - t )) s $(grep -i 'pass@2' $W/res/$1.log | head -2 | tr -s ' ')"
  }
  echo "start $(date -u +%FT%TZ) config=$2 minutes=$3 commit=$(cat .commit 2>/dev/null)"
  if [ "${PROFILE:-0}" = 1 ]; then
    t=$(date +%s)
    python3 scripts/profile_train.py --config $2 --out $W/res/profile --steps 40 > $W/res/profile.log 2>&1
    echo "profile: $(( $(date +%s) - t )) s $(tail -n 5 $W/res/profile.log | tr -d '\n')"
  fi
  t=$(date +%s)
  python3 -m sage_distill train --config $2 --set out_dir=$W/run --set optim.minutes=$3 --set optim.steps=1000000 \
    > $W/res/train.log 2>&1 || { echo "train failed"; tail -n 30 $W/res/train.log; touch $W/res/DONE; exit 1; }
  echo "train command: $(( $(date +%s) - t )) s"; tail -n 1 $W/run/metrics.jsonl | cut -c1-600
  python3 -c "
from sage_distill.student.checkpoint import load_model, save_model
m, fps = load_model('$W/run')
for p in ('int8', 'int4'): save_model(f'$W/release-{p}', m, fps, precision=p)"
  ev final $W/run $4 $5 "$6"
  ev final-v8 $W/run 8 0
  ev release-int8-v8 $W/release-int8 8 0  # the stored precisions' scores beside bf16
  ev release-int4-v8 $W/release-int4 8 0
  for s in $W/run/snapshots/step-*; do ev $(basename $s)-v8 $s 8 0; done
  echo "done $(date -u +%FT%TZ)"; touch $W/res/DONE ;;
wait)
  end=$(( $(date +%s) + $2 ))
  while [ $(date +%s) -lt $end ] && [ ! -f $W/res/DONE ]; do sleep 5; done
  date -u +%FT%TZ; cat $W/res/pipeline.log; tail -n 1 $W/run/metrics.jsonl 2>/dev/null | cut -c1-600
  for f in $W/res/*/predictions.json.partial.jsonl; do [ -f "$f" ] && echo "$f: $(wc -l < $f) tasks"; done
  cp $W/run/metrics.jsonl $W/run/run.json $W/res/ 2>/dev/null
  (cd $W && tar czf $OUT/results.tgz --exclude='*/data' --exclude='*/renders' res)
  if [ -f $W/res/DONE ] && [ -d $W/release-int4 ]; then  # shards: 2 (int8) + 1 (int4), each < 16 MB
    for p in int8 int4; do mkdir -p $OUT/$p && cp $W/release-$p/*.safetensors $OUT/$p/; done
    (cd $W && tar czf $OUT/release-meta.tgz --exclude='*.safetensors' release-int8 release-int4)
  fi
  ls -la $OUT ;;
esac
