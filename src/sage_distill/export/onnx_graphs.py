"""The SAGE ARC model as two ONNX graphs, in the layout ONNX Runtime and TensorRT users expect:

- `prefill.onnx`: the left-padded prompt -> last-position logits and `present.{i}.key/value` (the
  prompt's keys and values);
- `decode_step.onnx`: N tokens per sequence (the chosen token and N - 1 drafted ones, causal among
  themselves; `student/drafts.py`), the prompt's keys and values as `prompt_key_values.{i}.key/value` and
  the answer's as `past_key_values.{i}.key/value`, both read in place, never copied -> the logits after each
  of the N tokens and their keys and values only (`present.{i}.key/value`, length N).

The caller keeps the answer's keys in a buffer that grows a block at a time and writes each step's present
into it (`student/onnx_runtime.py`); the buffer's unwritten slots, and those of drafted tokens a row did not
keep, are masked out (attention_mask 0), so a step neither concatenates nor copies a cache. A step's
attention runs one query at a time (`attention(per_query=True)`): ONNX Runtime's matrix product then takes
its one-row path, which reads the keys in place, where several query rows would copy (pack) all the keys
first (a 2-token step took 2.2x a 1-token one, and 1.4x one query at a time: docs/BENCHMARKS.md, "Drafted
tokens"). Concatenating past and present in the graph cost a third of a step's node time at long answers
(docs/BENCHMARKS.md, "ONNX Runtime on the CPU"); before that, one past that held the prompt too copied every
layer's whole cache each step.

Inputs (int64): `input_ids` [B, L], `position_ids` [B, L, 3] (row, column, part), `task_ids`,
`view_ids`, `role_ids` [B, L], `attention_mask` [B, prompt + past + L] (1 = a real key, 0 = left padding or
an answer slot not written yet).
A query attends to real keys at or before it and always to itself (a padding query sees only
itself, as in the torch path). Keys and values: [B, heads, length, head_dim], float32; `i` counts
(loop, layer) slots. Logits: [B, VOCAB] for the last position (prefill), [B, N, VOCAB] (decode_step).

The task tables are the model's plus one row at the end, the mean row `SageModel.extend_tasks` gives a task
the model has no embedding for, so a graph answers unknown tasks as the torch path does without
adaptation. `SageModel.forward` is not used here: the wrapper reads the same submodules and takes its caches
as inputs instead of writing a preallocated cache of its own.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..student.modeling_sage import SageModel, apply_rope
from ..utils import onnx_export as ox

INPUTS = ["input_ids", "position_ids", "task_ids", "view_ids", "role_ids", "attention_mask"]


def slots(model: SageModel) -> int:
    return model.config.loops * model.config.layers


def past_names(n: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]


def prompt_names(n: int) -> list[str]:
    return [f"prompt_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]


def present_names(n: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]


def rms(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """nn.RMSNorm spelled out (aten::rms_norm has no ONNX form below opset 23)."""
    eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * norm.weight


def attention(q: torch.Tensor, bias: torch.Tensor, *blocks: tuple[torch.Tensor, torch.Tensor],
              per_query: bool = False) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v over the keys of `blocks` ((keys, values) pairs, in key order),
    spelled so that ONNX Runtime fuses the transpose into its MatMul: the TorchScript exporter's SDPA
    transposes and scales every key (two more passes over the whole past each step). Several blocks share
    one softmax over their score blocks, each block's keys read in place rather than concatenated."""
    if per_query:
        q, bias = q.unsqueeze(-2), bias.unsqueeze(-2)
        blocks = tuple((k.unsqueeze(2), v.unsqueeze(2)) for k, v in blocks)
        return attention(q, bias, *blocks).squeeze(-2)
    q = q * q.shape[-1] ** -0.5
    if len(blocks) == 1:
        k, v = blocks[0]
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-2, -1)) + bias, dim=-1), v)
    probs = torch.softmax(torch.cat([torch.matmul(q, k.transpose(-2, -1)) for k, _ in blocks], -1) + bias, dim=-1)
    out, at = None, 0
    for k, v in blocks:
        part = torch.matmul(probs[..., at: at + k.shape[-2]], v)
        out, at = part if out is None else out + part, at + k.shape[-2]
    return out


class DecoderGraph(nn.Module):
    """The model's forward with an explicit past (none for prefill); see the module docstring."""

    def __init__(self, model: SageModel, with_past: bool) -> None:
        super().__init__()
        self.model, self.with_past = model, with_past

    def forward(self, input_ids, position_ids, task_ids, view_ids, role_ids, attention_mask, *caches):
        m, cfg = self.model, self.model.config
        half = len(caches) // 2  # decode_step: the prompt's keys and values, then the answer's so far
        prompt, past = caches[:half], caches[half:]
        b, n = input_ids.shape
        x = m.tok(input_ids) + m.view(view_ids) + m.tasks(task_ids, role_ids)
        cos, sin = m.rope(position_ids)
        total = attention_mask.shape[1]
        q_at = torch.arange(n, device=input_ids.device) + (total - n)
        k_at = torch.arange(total, device=input_ids.device)
        earlier = k_at[None, :] <= q_at[:, None]
        mask = (attention_mask.bool()[:, None, None, :] & earlier) | (k_at[None, :] == q_at[:, None])
        bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))  # one mask for all layers
        presents, slot = [], 0
        for _ in range(cfg.loops):
            for block in m.blocks:
                attn = block.attn
                q, k, v = attn.qkv(rms(block.norm1, x)).view(b, n, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
                q, k = apply_rope(rms(attn.q_norm, q), cos, sin), apply_rope(rms(attn.k_norm, k), cos, sin)
                presents += [k, v]  # prefill: the prompt's; a step: its tokens'
                blocks = [(k, v)]
                if self.with_past:
                    blocks = [(prompt[2 * slot], prompt[2 * slot + 1]), (past[2 * slot], past[2 * slot + 1]), (k, v)]
                out = attention(q, bias, *blocks, per_query=self.with_past)
                x = x + attn.proj(out.transpose(1, 2).reshape(b, n, -1))
                gate, value = block.fc(rms(block.norm2, x)).chunk(2, dim=-1)
                x = x + block.out(F.silu(gate) * value)
                slot += 1
        return (m.head(rms(m.norm, x if self.with_past else x[:, -1])).float(), *presents)


def with_unknown_row(model: SageModel) -> SageModel:
    """A float32 copy of the model with one more task row: the mean row unknown tasks get."""

    model = copy.deepcopy(model).float().cpu().eval()
    if model.config.num_tasks:
        model.extend_tasks(1)
    return model


def example_inputs(model: SageModel, batch: int = 2, prompt: int = 5, past: int = 0) -> tuple:
    """Prefill inputs (`past` = 0), or a decoding step's after a `prompt` and `past` answer tokens."""
    n = 1 if past else prompt
    cfg = model.config
    ids = torch.full((batch, n), 3, dtype=torch.long)
    pos = torch.ones(batch, n, 3, dtype=torch.long)
    zeros = torch.zeros(batch, n, dtype=torch.long)
    if not past:
        return (ids, pos, zeros, zeros, zeros, torch.ones(batch, n, dtype=torch.long))
    mask = torch.ones(batch, prompt + past + n, dtype=torch.long)
    kv = [torch.zeros(batch, cfg.heads, length, cfg.head_dim) for length in (prompt, past)
          for _ in range(2 * slots(model))]
    return (ids, pos, zeros, zeros, zeros, mask, *kv)


def export_graph(model: SageModel, path, with_past: bool, opset: int) -> None:
    """Trace `DecoderGraph` to `path` (TorchScript exporter: dynamic batch and lengths)."""
    n = slots(model)
    names_in = INPUTS + (prompt_names(n) + past_names(n) if with_past else [])
    names_out = ["logits", *present_names(n)]
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "position_ids": {0: "batch", 1: "sequence"},
           "task_ids": {0: "batch", 1: "sequence"}, "view_ids": {0: "batch", 1: "sequence"},
           "role_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
           "logits": {0: "batch"}}
    for name in prompt_names(n):
        dyn[name] = {0: "batch", 2: "prompt_sequence"}
    for name in past_names(n):
        dyn[name] = {0: "batch", 2: "past_sequence"}
    for name in present_names(n):
        dyn[name] = {0: "batch", 2: "sequence"}
    args = example_inputs(model, past=3 if with_past else 0)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(DecoderGraph(model, with_past), args, str(path), input_names=names_in,
                          output_names=names_out, dynamic_axes=dyn, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def source_digest(model_dir: str | Path) -> str:
    """sha256 over a model folder's config, index, task table and weight shards: an export made from
    other weights is stale."""
    import hashlib

    folder = Path(model_dir)
    h = hashlib.sha256()
    names = ["config.json", "model.safetensors.index.json", "tasks.json"]
    names += sorted(p.name for p in folder.glob("model*.safetensors"))
    for name in names:
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def cached_export(model_dir: str | Path, out: str | Path, precision: str = "fp32") -> tuple[Path, bool]:
    """`out` holding an export of `model_dir` at `precision`: reused when its manifest names the same
    weights, else (re)made. Returns (folder, whether it was exported now)."""
    import json
    import shutil

    out = Path(out)
    manifest = out / "sage-onnx.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            if meta.get("source_digest") == source_digest(model_dir) and meta.get("precision") == precision:
                from ..student.onnx_runtime import read_manifest

                read_manifest(out)
                return out, False
        except Exception:  # unreadable or incomplete: export again
            pass
    if out.is_dir():
        shutil.rmtree(out)
    export_model(model_dir, out, precision)
    return out, True


def export_model(model_dir: str | Path, out: str | Path, precision: str = "fp32") -> dict:
    """Write `out/` with prefill.onnx, decode_step.onnx and sage-onnx.json, atomically: the graphs
    are built in a temporary folder beside `out`, checked by loading them in ONNX Runtime, then the
    folder is renamed into place. int8: ONNX Runtime's dynamic quantisation of the MatMul weights."""
    import time

    from ..student.checkpoint import load_model
    from ..student.onnx_runtime import FORMAT, MANIFEST
    from ..utils.io import atomic_write_json

    out = ox.check_export_args(model_dir, out, precision)
    ox.import_onnxruntime()
    ox.check_exporter()
    model, fingerprints = load_model(model_dir)  # a SageError when it is not a model folder
    start = time.perf_counter()
    graph_model = with_unknown_row(model)
    with ox.staged_folder(out) as tmp:
        graphs = {}
        for name, with_past in (("prefill", False), ("decode_step", True)):
            path = tmp / f"{name}.onnx"
            export_graph(graph_model, path, with_past, ox.OPSET)
            if precision == "int8":
                ox.quantize_int8(path)
            graphs[name] = ox.graph_spec(path.name, ox.cpu_session(path, 1))  # loads: a graph ONNX Runtime reads
        cfg = model.config
        manifest = {
            "format": FORMAT, "precision": precision, "opset": ox.OPSET, "source": str(model_dir),
            "source_digest": source_digest(model_dir),
            "config": cfg.model_dump(), "slots": slots(model), "heads": cfg.heads, "head_dim": cfg.head_dim,
            "vocab": {"colours": "0-9", "newline": 10, "start": 11, "io_sep": 12, "end": 13},
            "graphs": graphs,
            "inputs": {"input_ids": "token ids [batch, sequence]",
                       "position_ids": "(row, column, part) per token [batch, sequence, 3]",
                       "task_ids": "task-table row per token (tasks.fingerprints index, or unknown_row)",
                       "view_ids": "dihedral view 0-7 per token",
                       "role_ids": "colour before the view's colour permutation, -1 for special tokens",
                       "attention_mask": "[batch, prompt + past + sequence]: 1 a real key, 0 left padding or "
                                         "an answer slot not written yet",
                       "prompt_key_values.{i}.key/value": "[batch, heads, prompt, head_dim] float32 (decode_step): "
                                                          "prefill's presents, passed unchanged to every step",
                       "past_key_values.{i}.key/value": "[batch, heads, past, head_dim] float32 (decode_step): the "
                                                        "answer's buffer, read in place; slots not written yet are "
                                                        "masked"},
            "outputs": {"logits": "float32 [batch, vocab] (prefill: the last position) or [batch, sequence, vocab] "
                                  "(decode_step: after each token)",
                        "present.{i}.key/value": "[batch, heads, sequence, head_dim] float32 (prefill: the "
                                                 "prompt's; decode_step: these tokens', for the caller to write "
                                                 "into its answer buffer)"},
            "tasks": {"fingerprints": fingerprints, "unknown_row": len(fingerprints) if cfg.num_tasks else 0,
                      "unknown_row_is": "the mean of the trained rows, as a new task starts"},
        }
        atomic_write_json(tmp / MANIFEST, manifest, indent=1)
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"out": str(out), "precision": precision, "seconds": round(time.perf_counter() - start, 1),
            "megabytes": round(size / 2**20, 1)}
