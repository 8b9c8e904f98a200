#!/usr/bin/env bash
# Finish the schedule, then on 4 GPUs at once: eval ARC-AGI-1 (adaptive and fixed halting),
# eval ARC-AGI-2, the GR00T backbone throughput benchmark, and the IRP benchmark.
set -uo pipefail
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
RUN=runs/sage-small
timeout 250 bash scripts/gpu_train.sh 3.0 resume 2>&1 | grep -v "it/s\]" | grep -v "^\[rank" | tail -3
mkdir -p res
(CUDA_VISIBLE_DEVICES=0 timeout 170 python3 -m sage_distill eval --model $RUN --dataset arc1 --out res/arc1 --device cuda > res/arc1.log 2>&1) &
(CUDA_VISIBLE_DEVICES=1 timeout 170 python3 -m sage_distill eval --model $RUN --dataset arc1 --out res/arc1-fixed --device cuda --halting fixed > res/arc1-fixed.log 2>&1) &
(CUDA_VISIBLE_DEVICES=2 timeout 80 python3 -m sage_distill eval --model $RUN --dataset arc2 --out res/arc2 --device cuda > res/arc2.log 2>&1;
 CUDA_VISIBLE_DEVICES=2 timeout 90 python3 -m sage_distill.teachers.bench_groot --batch-sizes 1 32 256 --out res/groot.json > res/groot.log 2>&1) &
(CUDA_VISIBLE_DEVICES=3 timeout 170 python3 -m sage_distill.irp.bench --model $RUN --dataset arc1 --split evaluation --limit 100 --variants 4 --fit-steps 30 --dream-steps 60 --dream-ms 30000 --device cuda --out res/irp_arc1.json > res/irp.log 2>&1) &
wait
for d in arc1 arc1-fixed arc2; do grep -v "it/s\]\|task/s\]" res/$d.log | tail -12; done
tail -5 res/groot.log res/irp.log
rm -rf res/*/data
tar czf $OUT/results.tgz res
cp $RUN/model.safetensors $RUN/config.json $RUN/task_codes.safetensors $RUN/task_codes.json $RUN/metrics.jsonl $RUN/run.json $OUT/
chmod -R a+rX $OUT; ls -la $OUT
