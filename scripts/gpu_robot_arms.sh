#!/usr/bin/env bash
# One H200 lease for issue 17: three MT10 pixel students side by side under CUDA MPS, at equal wall-clock
# minutes on the shared GPU, each then evaluated on held-out (20 episodes a task) and fixed positions (10):
#   bc128     behaviour cloning, 128 px (configs/robot-pixels.yaml, `--minutes MIN`);
#   dagger128 on-policy distillation from the scripted experts, 128 px (configs/robot-dagger.yaml: round 0
#             is behaviour cloning, then rounds of student rollouts labelled by the teacher);
#   bc224     behaviour cloning on 224 px frames (does a bigger goal marker fix reach / push / pick-place?);
#   photo128  behaviour cloning, 128 px, with photometric augmentation (configs/robot-pixels-photometric.yaml:
#             blur, brightness/contrast, noise; does it close the GPU/CPU renderer gap?).
# ARMS picks which run (default: bc128 dagger128 bc224).
# Beside them, when the carried tree has it, the ARC student re-stored in int4 (lease/sage-arc-small-int4, made
# on the CPU with save_model(load_model(...), precision="int4")) is scored on ARC-AGI-1 evaluation at 8 views:
# what int4 costs decides whether a control policy fits the repository's 30 MB beside the ARC models.
# Carry [".whl", ".whl-robot", ".gl"] (scripts/robot_carry.sh builds the last two).
#   first call:  bash scripts/gpu_robot_arms.sh start MIN
#   later calls: bash scripts/gpu_robot_arms.sh wait SECONDS    (progress; results and bf16 policy folders into $OUT)
# Everything lives under /root/work, outside the carried tree (a later call replaces the tree). A dry run on a
# CPU (tiny settings; the DAgger config must have 3 rounds):
#   GPU_WORK=/tmp/w DEVICE=cpu WORKERS=2 EPISODES=1 HELDOUT_EPISODES=1 FIXED_EPISODES=1 BC_CONFIG=tiny.yaml \
#   DAGGER_CONFIG=tiny-dagger.yaml bash scripts/gpu_robot_arms.sh pipeline 0.2
set -uo pipefail
W=${GPU_WORK:-/root/work}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-16}
BC_CONFIG=${BC_CONFIG:-configs/robot-pixels.yaml} DAGGER_CONFIG=${DAGGER_CONFIG:-configs/robot-dagger.yaml}
PHOTO_CONFIG=${PHOTO_CONFIG:-configs/robot-pixels-photometric.yaml} ARMS=${ARMS:-bc128 dagger128 bc224}
export PYTHONPATH=$W/code/src:/tmp/site:$W/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MUJOCO_GL=egl \
  SAGE_VIDEO_BACKEND=opencv
S="python3 -m sage_distill robot"
case "$1" in
start)
  source scripts/gpu_lease.sh && lease_setup $W mps && robot_setup $W/site
  cp .commit $W/res/commit 2>/dev/null  # written before the call: the carried tree has no .git
  (cd $W/code && ARMS="$ARMS" setsid nohup bash scripts/gpu_robot_arms.sh pipeline "$2" > $W/res/pipeline.log 2>&1 \
     < /dev/null &)
  sleep 45; cat $W/res/pipeline.log ;;
pipeline)  # MIN, run from $W/code under setsid
  MIN=$2 EP=${EPISODES:-50} HELD=${HELDOUT_EPISODES:-20} FIXED=${FIXED_EPISODES:-10}
  stamp() { echo "== $(date -u +%T) $*"; }
  evaluate() {  # name policy
    $S eval --policy $2 --tasks mt10 --device $DEVICE --workers $WORKERS --protocol heldout --episodes $HELD \
      --videos 1 --out $W/res/eval-$1-heldout > $W/res/eval-$1.log 2>&1
    stamp "eval $1 heldout: $(tail -n 1 $W/res/eval-$1.log)"
    $S eval --policy $2 --tasks mt10 --device $DEVICE --workers $WORKERS --protocol fixed --episodes $FIXED \
      --videos 0 --out $W/res/eval-$1-fixed >> $W/res/eval-$1.log 2>&1
    stamp "eval $1 fixed: $(tail -n 1 $W/res/eval-$1.log)"
  }
  arm() {  # name policy-folder command...: train, note the wall time, evaluate
    local name=$1 policy=$2 t=$(date +%s)
    shift 2
    "$@" > $W/res/train-$name.log 2>&1 || { stamp "$name failed"; tail -n 20 $W/res/train-$name.log; return 1; }
    stamp "$name trained in $(( $(date +%s) - t )) s: $(tail -n 1 $W/res/train-$name.log)"
    evaluate $name $policy
    touch $W/res/DONE-$name
  }
  stamp "start minutes=$MIN episodes=$EP commit=$(cat $W/res/commit 2>/dev/null)"
  if [ -d lease/sage-arc-small-int4 ]; then
    (python3 -m sage_distill eval --model lease/sage-arc-small-int4 --dataset arc1 --out $W/res/arc-small-int4 \
       --views 8 --device $DEVICE --batch 512 ${ARC_LIMIT:+--limit $ARC_LIMIT} 2>&1 | grep -v "task/s" \
       > $W/res/eval-arc-small-int4.log; stamp "arc small int4: $(tail -n 2 $W/res/eval-arc-small-int4.log)") &
  fi
  $S collect --tasks mt10 --episodes $EP --image-size 128 --workers $WORKERS --out $W/mt10-128 > $W/res/collect-128.log 2>&1
  stamp "collect 128: $(tail -n 1 $W/res/collect-128.log)"
  on() { [[ " $ARMS " == *" $1 "* ]]; }
  on bc128 && arm bc128 $W/bc128 $S train --data $W/mt10-128 --out $W/bc128 --config $BC_CONFIG \
    --minutes $MIN --steps 10000000 --device $DEVICE &
  on photo128 && arm photo128 $W/photo128 $S train --data $W/mt10-128 --out $W/photo128 --config $PHOTO_CONFIG \
    --minutes $MIN --steps 10000000 --device $DEVICE &
  on dagger128 && arm dagger128 $W/dagger128/round-003 $S dagger --data $W/mt10-128 --out $W/dagger128 \
    --config $DAGGER_CONFIG --device $DEVICE &
  if on bc224; then
    $S collect --tasks mt10 --episodes $EP --image-size 224 --workers $WORKERS --out $W/mt10-224 > $W/res/collect-224.log 2>&1
    stamp "collect 224: $(tail -n 1 $W/res/collect-224.log)"
    arm bc224 $W/bc224 $S train --data $W/mt10-224 --out $W/bc224 --config $BC_CONFIG \
      --minutes $MIN --steps 10000000 --device $DEVICE &
  fi
  wait
  for a in bc224 bc128; do on $a && $S latency --policy $W/$a --device $DEVICE > $W/res/latency-$a-cuda.json 2>&1; done
  stamp done; touch $W/res/DONE ;;
wait)
  end=$(( $(date +%s) + ${2:-540} ))
  while [ "$(date +%s)" -lt $end ] && [ ! -f $W/res/DONE ]; do sleep 5; done
  cat $W/res/pipeline.log
  for f in $W/bc128 $W/photo128 $W/bc224 $W/dagger128/round-00?; do [ -f $f/metrics.jsonl ] && echo "$f: $(tail -n 1 $f/metrics.jsonl | cut -c1-300)"; done
  cat $W/dagger128/rounds.jsonl 2>/dev/null
  mkdir -p $W/back/dagger128
  for f in $W/bc128 $W/photo128 $W/bc224 $W/dagger128/round-00?; do
    [ -f $f/config.json ] || continue
    d=$W/back/${f#$W/}; mkdir -p $d; cp $f/config.json $f/metrics.jsonl $d/
  done
  cp $W/dagger128/rounds.jsonl $W/dagger128/dagger_state.json $W/back/dagger128/ 2>/dev/null
  (cd $W && tar czf $OUT/res.tgz --exclude='*.safetensors' --exclude='*.mp4' res back)
  # bf16 copies of the final policies (folders: model.safetensors + config.json): fp32 is over what one returned
  # file may be
  for f in $W/bc128 $W/photo128 $W/bc224 $W/dagger128/round-003; do [ -f $f/model.safetensors ] && \
    $S quantize --policy $f --out $OUT/$(basename ${f%/round-003})-bf16 --precision bf16; done
  ls -la $OUT ;;
*) echo "usage: $0 start MIN | wait SECONDS"; exit 2 ;;
esac
