"""Extraction throughput of the GR00T N1.5 backbone (random weights, full-size architecture).

    python scripts/bench_groot.py --batch-sizes 1 32 256 --out bench.json
    python scripts/bench_groot.py --tiny --batch-sizes 1 4 --out /tmp/b.json   # CPU smoke

Needs only torch and transformers: no checkpoint, no tokenizer (prompt ids are built from the known
special-token ids, with stand-in ids for the instruction's words, which changes no shape). Times the
whole extraction call: rendering, SigLIP, projector, 12 Qwen3 layers, the gather of the query
image's tokens. SigLIP's pooling head and the LM head are never built or run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import transformers

from sage_distill.teachers.groot import GrootArch, GrootBackbone, GrootTeacher, placeholder_text_ids, prompt_ids
from sage_distill.utils.io import atomic_write_json


def matmul_flops_per_image(arch: GrootArch, seq_len: int) -> float:
    """Multiply-adds x 2 of the linear layers and attention, for one single-image prompt."""
    v, n = arch.vision_hidden, arch.tokens_per_image
    vision = arch.vision_layers * (2 * n * (4 * v * v + 2 * v * arch.vision_mlp) + 4 * n * n * v)
    h, q, kv = arch.text_hidden, arch.text_heads * arch.head_dim, arch.text_kv_heads * arch.head_dim
    layer = 2 * seq_len * (2 * h * q + 2 * h * kv + 3 * h * arch.text_mlp) + 4 * seq_len * seq_len * q / 2
    return vision + 2 * n * v * h + arch.text_layers * layer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_batch(teacher: GrootTeacher, batch: int, warmup: int, iters: int) -> dict[str, float]:
    device = teacher.device
    queries = torch.randint(0, 11, (batch, 30, 30), generator=torch.Generator().manual_seed(batch))
    for _ in range(warmup):
        teacher.encode(queries)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(iters):
        out = teacher.encode(queries)["features"]
    _sync(device)
    seconds = (time.perf_counter() - start) / iters
    assert torch.isfinite(out.float()).all(), "non-finite features"
    seq = len(prompt_ids(1, teacher.arch.tokens_per_image, placeholder_text_ids))
    flops = matmul_flops_per_image(teacher.arch, seq) * batch
    result = {"batch": batch, "ms_per_batch": seconds * 1e3, "images_per_s": batch / seconds,
              "seq_len": seq, "tflops_per_s": flops / seconds / 1e12, "feature_shape": list(out.shape)}
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default=None, help="default: bf16 on GPU")
    p.add_argument("--tiny", action="store_true", help="tiny random architecture (CPU smoke test)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    arch = GrootArch.tiny() if args.tiny else GrootArch.full()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model = GrootBackbone(arch)
    teacher = GrootTeacher(model, placeholder_text_ids, device=device, dtype=dtype)
    build_s = time.perf_counter() - t0
    report = {"arch": "tiny" if args.tiny else "GR00T N1.5 backbone (SigLIP so400m + 12 Qwen3-1.7B layers)",
              "params": sum(p.numel() for p in model.parameters()), "dtype": str(dtype).removeprefix("torch."),
              "attention": model.language_model.config._attn_implementation, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "transformers": transformers.__version__, "build_s": build_s,
              "results": []}
    for b in args.batch_sizes:
        r = bench_batch(teacher, b, args.warmup, args.iters)
        print(json.dumps(r), flush=True)
        report["results"].append(r)
    atomic_write_json(args.out, report, indent=2)
    return report


if __name__ == "__main__":
    main()
