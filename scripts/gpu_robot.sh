#!/usr/bin/env bash
# The robot side on a lent GPU machine, in one lease. Carry [".whl-robot", ".gl"], built by scripts/robot_carry.sh.
#   bash scripts/gpu_robot.sh start [MT10_STEPS] [MT50_STEPS]   set up, then run gpu_robot_pipeline.sh under setsid
#   bash scripts/gpu_robot.sh wait SECONDS [MARKER]            wait for MARKER, print progress, bring back results
# Everything is written under /root/work/robot, outside the carried tree (a later call replaces that tree).
set -uo pipefail
W=/root/work/robot
mkdir -p $W/res
case "${1:-}" in
  start)
    source scripts/gpu_lease.sh && robot_setup /root/work/site
    cp -r src scripts $W/  # the pipeline runs from its own copy: later calls replace the carried tree
    (cd $W && setsid nohup bash scripts/gpu_robot_pipeline.sh "${2:-15000}" "${3:-25000}" \
        >> $W/pipeline.log 2>&1 < /dev/null &)
    sleep 20; cat $W/pipeline.log; nvidia-smi --query-gpu=name,memory.used --format=csv ;;
  wait)
    end=$(( $(date +%s) + ${2:-540} ))
    while [ "$(date +%s)" -lt $end ] && [ ! -f "$W/res/${3:-DONE}" ]; do sleep 5; done
    grep -v "it/s\]\|ep/s\]\|step/s\]\|s/it\]\|s/ep\]\|s/step\]" $W/pipeline.log | tail -40
    for m in $W/pol-*/metrics.jsonl; do [ -f "$m" ] && echo "$m: $(tail -1 "$m")"; done
    ls $W/res
    (cd $W && tar czf $OUT/res.tgz --exclude='*.safetensors' --exclude='*/videos' res)
    # bf16 copies (policy folders: model.safetensors + config.json): fp32 weights (~23 MB) are over what one
    # returned file may be
    for p in $W/res/pol-*; do [ -f "$p/model.safetensors" ] && PYTHONPATH=/root/work/site:$W/src python3 -m sage_distill \
      robot quantize --policy "$p" --out "$OUT/$(basename "$p")-bf16" --precision bf16; done
    (cd $W/res && ls -d eval-*/videos 2>/dev/null | head -3 | while read -r v; do ls "$v" | head -2 | sed "s#^#$v/#"; done \
       | tar czf $OUT/gifs.tgz -T - 2>/dev/null)
    ls -la $OUT ;;
  *) echo "usage: $0 start|wait ..."; exit 2 ;;
esac
