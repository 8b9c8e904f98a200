#!/usr/bin/env bash
# One H200 lease for the two ARC protocols that have no model yet (issue 16): the ARC-AGI-2 model
# (configs/arc2-large.yaml) and the unseen protocol (configs/arc-unseen.yaml, then test-time training on
# ARC-AGI-1 evaluation with the two adaptation arms). Both pretrain at once under CUDA MPS for MINUTES on the
# wall clock (compile included); then, again side by side:
#   - the ARC-AGI-2 model on ARC-AGI-2 evaluation: VIEWS views re-scored (curve 8,32), and its int4 copy at 8;
#   - the unseen model on all 400 ARC-AGI-1 evaluation tasks: `--adapt-mode rows` against `--adapt-mode all`,
#     ADAPT minutes each (equal minutes on the shared GPU), then ADAPT_VIEWS views.
#   first call:  bash scripts/gpu_arc_protocols.sh start MINUTES [VIEWS] [ADAPT] [ADAPT_VIEWS]
#   later calls: bash scripts/gpu_arc_protocols.sh wait SECONDS      (progress; the results into $OUT)
# Everything lives under /root/work, outside the carried tree (a later call replaces the tree). A dry run on a
# CPU (tiny settings): GPU_WORK=/tmp/w DEVICE=cpu CONFIG_SET="preset=tiny" EVAL_LIMIT=2 \
#   bash scripts/gpu_arc_protocols.sh pipeline 0.3 2 0.2 1
set -uo pipefail
W=${GPU_WORK:-/root/work}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$W/code/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
LIMIT=${EVAL_LIMIT:-400}
SETS=()
for s in ${CONFIG_SET:-}; do SETS+=(--set "$s"); done
case "$1" in
start)
  source scripts/gpu_lease.sh && lease_setup $W mps  # the two processes side by side
  (cd $W/code && setsid nohup bash scripts/gpu_arc_protocols.sh pipeline "$2" "${3:-80}" "${4:-10}" "${5:-8}" \
     > $W/res/pipeline.log 2>&1 < /dev/null &)
  sleep 90; cat $W/res/pipeline.log; for r in arc2 unseen; do tail -n 1 $W/runs/$r/metrics.jsonl 2>/dev/null | cut -c1-300; done ;;
pipeline)  # MINUTES VIEWS ADAPT ADAPT_VIEWS, run from $W/code under setsid
  mkdir -p $W/res
  echo "start $(date -u +%FT%TZ) minutes=$2 views=$3 adapt=$4 adapt_views=$5 commit=$(cat .commit 2>/dev/null)"
  train() {  # name config
    local t=$(date +%s)
    python3 -m sage_distill train --config $2 --set out_dir=$W/runs/$1 --set optim.minutes=$MIN \
      --set optim.steps=1000000 "${SETS[@]}" > $W/res/train-$1.log 2>&1 \
      && echo "train $1: $(( $(date +%s) - t )) s $(tail -n 1 $W/runs/$1/metrics.jsonl | cut -c1-400)" \
      || { echo "train $1 failed"; tail -n 20 $W/res/train-$1.log; return 1; }
  }
  ev() {  # name model dataset views rescore curve [extra eval options]
    local t=$(date +%s) name=$1 model=$2 dataset=$3 views=$4 rescore=$5 curve=$6
    shift 6
    python3 -m sage_distill eval --model $model --dataset $dataset --out $W/res/$name --views $views \
      --rescore $rescore --curve "$curve" --device $DEVICE --batch 512 --limit $LIMIT "$@" > $W/res/$name.log 2>&1
    echo "eval $name ($dataset, $views views, rescore $rescore $*): rc $? $(( $(date +%s) - t )) s" \
      "$(grep -i 'pass@2\|adapted' $W/res/$name.log | head -3 | tr -s ' ' | tr '\n' ' ')"
  }
  MIN=$2
  train arc2 configs/arc2-large.yaml &
  train unseen configs/arc-unseen.yaml &
  wait
  if [ -f $W/runs/arc2/config.json ]; then
    python3 -c "
from sage_distill.student.checkpoint import load_model, save_model
m, fps = load_model('$W/runs/arc2'); save_model('$W/release-arc2-int4', m, fps, precision='int4')"
    (ev arc2 $W/runs/arc2 arc2 $3 8 8,32; ev arc2-v8 $W/runs/arc2 arc2 8 0 ""
     ev arc2-int4-v8 $W/release-arc2-int4 arc2 8 0 "") &
  fi
  if [ -f $W/runs/unseen/config.json ]; then
    ev unseen-rows $W/runs/unseen arc1 $5 0 "" --adapt-minutes $4 --adapt-mode rows &
    ev unseen-all $W/runs/unseen arc1 $5 0 "" --adapt-minutes $4 --adapt-mode all &
  fi
  wait
  echo "done $(date -u +%FT%TZ)"; touch $W/res/DONE ;;
wait)
  end=$(( $(date +%s) + $2 ))
  while [ $(date +%s) -lt $end ] && [ ! -f $W/res/DONE ]; do sleep 5; done
  date -u +%FT%TZ; cat $W/res/pipeline.log
  for r in arc2 unseen; do tail -n 1 $W/runs/$r/metrics.jsonl 2>/dev/null | cut -c1-400
    cp $W/runs/$r/metrics.jsonl $W/res/$r.metrics.jsonl 2>/dev/null; cp $W/runs/$r/run.json $W/res/$r.run.json 2>/dev/null
  done
  for f in $W/res/*/predictions.json.partial.jsonl; do [ -f "$f" ] && echo "$f: $(wc -l < $f) tasks"; done
  mkdir -p $OUT && (cd $W && tar czf $OUT/results.tgz --exclude='*/data' --exclude='*/renders' res)
  ls -la $OUT ;;
esac
