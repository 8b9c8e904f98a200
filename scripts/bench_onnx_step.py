"""One decoding step, torch vs ONNX Runtime, on the CPU: milliseconds (wall and process CPU time)
per step of a batch of sequences at a few cache lengths, with the real weights (the cost does not
depend on the tokens).

    python scripts/bench_onnx_step.py --model models/sage-arc --graphs out/sage-onnx --batch 16 [--tokens 4]

`--tokens N`: a step that checks N tokens per sequence (the chosen one and N - 1 drafted ones). The step graph
is loaded without the manifest's format check, so an export of an earlier format can be timed beside today's.
`--profile` then runs ONNX Runtime's profiler over the last shape's steps and prints the step graph's node
count after optimisation and each operator type's share of the node time (where a step's time goes).

The torch path preallocates its cache for the prompt plus the longest output (931 tokens) and
attends over the keys written so far; the ONNX graph reads the prompt's and the answer's keys in place.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from sage_distill.student.checkpoint import load_model
from sage_distill.student.modeling_sage import KVCache
from sage_distill.student.sequences import MAX_OUTPUT_TOKENS
from sage_distill.utils.onnx_export import cpu_session


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return 1e3 * (time.perf_counter() - wall) / repeat, 1e3 * (time.process_time() - cpu) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/sage-arc")
    ap.add_argument("--graphs", required=True, help="folder from `sage-distill export`")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompts", default="13,933", help="prompt lengths (13: a 2x2 input; 933: 30x30)")
    ap.add_argument("--written", default="10,467", help="tokens generated so far, per prompt length")
    ap.add_argument("--tokens", type=int, default=1, help="tokens per sequence a step checks (1 + drafted ones)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="ONNX Runtime's per-operator profile of the last shape")
    a = ap.parse_args()
    model, _ = load_model(a.model)
    meta = json.loads((Path(a.graphs) / "sage-onnx.json").read_text())
    graph = Path(a.graphs) / meta["graphs"]["decode_step"]["file"]
    step = cpu_session(graph)
    inputs = [i.name for i in step.get_inputs()]
    cfg, b, n = model.config, a.batch, a.tokens
    ids, pos = torch.full((b, n), 3), torch.ones(b, n, 3, dtype=torch.long)
    zeros = torch.zeros(b, n, dtype=torch.long)
    for p, done in zip((int(x) for x in a.prompts.split(",")), (int(x) for x in a.written.split(",")), strict=True):
        length = p + done
        cache = KVCache.empty(cfg, b, p + MAX_OUTPUT_TOKENS, torch.device("cpu"), torch.float32)
        cache.length = length
        mask = torch.ones(b, 1, n, length + n, dtype=torch.bool).tril(length)  # causal among the step's tokens

        def torch_step(cache=cache, length=length, mask=mask):
            with torch.no_grad():
                model(ids, pos, zeros, zeros, zeros, mask, cache)
            cache.length = length

        feeds = {"input_ids": ids.numpy(), "position_ids": pos.numpy(), "task_ids": zeros.numpy(),
                 "view_ids": zeros.numpy(), "role_ids": zeros.numpy(),
                 "attention_mask": np.ones((b, length + n), dtype=np.int64)}
        rng = np.random.default_rng(0)
        for prefix, count in (("prompt_key_values.", p), ("past_key_values.", done)):  # prompt, then the answer
            for name in (i for i in inputs if i.startswith(prefix)):
                feeds[name] = rng.standard_normal((b, cfg.heads, count, cfg.head_dim), dtype=np.float32)
        t_wall, t_cpu = _time(torch_step, a.repeat)
        o_wall, o_cpu = _time(lambda feeds=feeds: step.run(None, feeds), a.repeat)
        print(json.dumps({"batch": b, "tokens": n, "prompt": p, "keys": length + n, "torch_ms": round(t_wall, 1),
                          "torch_cpu_ms": round(t_cpu, 1), "onnx_ms": round(o_wall, 1), "onnx_cpu_ms": round(o_cpu, 1),
                          "onnx_precision": meta["precision"], "threads": torch.get_num_threads()}), flush=True)
    if a.profile:
        profile(graph, feeds, a.repeat)


def profile(graph: Path, feeds: dict[str, np.ndarray], repeat: int) -> None:
    """Node count after ONNX Runtime's optimisations, and each operator type's share of the node time."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        for _ in range(repeat):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
        nodes = len(onnx.load(opts.optimized_model_filepath, load_external_data=False).graph.node)
    by_op = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values())
    print(json.dumps({"nodes_after_optimisation": nodes,
                      "share_of_node_time": {k: round(v / total, 3) for k, v in by_op.most_common(10)}}))


if __name__ == "__main__":
    main()
