#!/usr/bin/env bash
# Collect -> train -> evaluate, MT10 then MT50, on one GPU machine (started by gpu_robot.sh).
# Results are copied to res/ as they land, so whatever finished can be brought back.
set -uo pipefail
MT10_STEPS=$1; MT50_STEPS=$2
W=/root/work/robot; cd $W
export PYTHONPATH=/root/work/site:$W/src MUJOCO_GL=egl HF_HUB_OFFLINE=1 SAGE_VIDEO_BACKEND=opencv
S="python3 -m sage_distill robot"
stamp() { echo "== $(date +%T) $*"; }
trained() { mkdir -p res/$1; cp $W/$1/{config.json,metrics.jsonl,model.safetensors} res/$1/; stamp trained $1; }
stamp collect mt10
$S collect --tasks mt10 --episodes 50 --image-size 128 --workers 16 --out $W/mt10 && cp $W/mt10/collect_summary.json res/collect-mt10.json
stamp train mt10 "(background)"
($S train --data $W/mt10 --out $W/pol-mt10 --config configs/robot-pixels.yaml --steps "$MT10_STEPS" --device cuda \
   > $W/train-mt10.log 2>&1; trained pol-mt10) &
stamp collect mt50
$S collect --tasks mt50 --episodes 50 --image-size 128 --workers 14 --out $W/mt50 && cp $W/mt50/collect_summary.json res/collect-mt50.json
wait
stamp train mt50 "(background)"
($S train --data $W/mt50 --out $W/pol-mt50 --config configs/robot-pixels.yaml --steps "$MT50_STEPS" --device cuda \
   > $W/train-mt50.log 2>&1; trained pol-mt50; touch res/TRAINED50) &
stamp eval mt10
E="$S eval --policy $W/pol-mt10 --tasks mt10 --device cuda --workers 16"
$E --protocol heldout --episodes 20 --out res/eval-mt10-heldout
$E --protocol fixed --episodes 10 --out res/eval-mt10-fixed
touch res/MT10
for k in 1 2 4; do $E --protocol heldout --episodes 20 --flow-steps $k --videos 0 --out res/eval-mt10-heldout-k$k; done
$S latency --policy $W/pol-mt10 --device cuda > res/latency-mt10-cuda.json
touch res/ABLATION
wait
stamp eval mt50
E="$S eval --policy $W/pol-mt50 --tasks mt50 --device cuda --workers 16"
$E --protocol fixed --episodes 10 --out res/eval-mt50-fixed
touch res/MT50
$E --protocol heldout --episodes 10 --out res/eval-mt50-heldout
stamp done
touch res/DONE
