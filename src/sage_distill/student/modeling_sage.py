"""The SAGE ARC model, read top to bottom.

- Embedding (vision IRP): token + dihedral-view embedding + the task's embedding, and for colour
  tokens a per-task *colour-role* embedding indexed by the colour before the view's colour
  permutation. The task's knowledge about "its red" therefore follows red through every
  permutation, and the shared weights stay colour-equivariant.
- Core: pre-norm blocks (RMSNorm, attention with QK-norm and 3-D rotary positions over
  (row, column, part of the pair), SwiGLU). With `loops` > 1 the same blocks run again, weights
  shared across refinement steps.
- Head (control IRP): next-token logits; rows end in a newline token and the grid in an end
  token, so the output's size is generated, not classified.

Training feeds packed rows of many sequences, separated by a document mask (flex attention on
GPU, an explicit mask elsewhere). Inference decodes many augmented views at once with a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..arc.task import NUM_COLORS
from .configuration_sage import VOCAB, SageConfig


def rope_frequencies(cfg: SageConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse frequencies per rotary pair, and which axis (row, column, part) each pair reads."""
    pairs = cfg.head_dim // 2
    total = sum(cfg.rope_split)
    counts = [pairs * s // total for s in cfg.rope_split[:2]]
    counts.append(pairs - sum(counts))
    freqs, axes = [], []
    for axis, n in enumerate(counts):
        freqs.append(cfg.rope_theta ** (-torch.arange(n, dtype=torch.float32) / max(n, 1)))
        axes.append(torch.full((n,), axis, dtype=torch.long))
    return torch.cat(freqs), torch.cat(axes)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, L, Dh]; cos, sin: [B, 1, L, Dh/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


@dataclass
class KVCache:
    """Keys and values of every (loop, layer) for a batch of sequences decoded in lockstep, preallocated
    for the longest answer. Each step attends over the positions written so far (`key_valid` masks left
    padding): no copies of the cache, and no attention over the unwritten tail."""

    k: torch.Tensor  # [loops * layers, B, H, Lmax, Dh]
    v: torch.Tensor
    key_valid: torch.Tensor  # [B, Lmax]: written and not left padding
    length: int = 0

    @staticmethod
    def empty(cfg: SageConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        shape = (cfg.loops * cfg.layers, batch, cfg.heads, max_len, cfg.head_dim)
        return KVCache(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                       torch.zeros(batch, max_len, dtype=torch.bool, device=device))

    def grow(self, extra: int) -> None:
        """Room for `extra` more positions (a copy)."""
        pad = (0, 0, 0, extra)
        self.k, self.v = F.pad(self.k, pad), F.pad(self.v, pad)
        self.key_valid = F.pad(self.key_valid, (0, extra))

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished sequences: keep only `rows` of the batch."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.key_valid = self.key_valid[rows]


class Attention(nn.Module):
    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.heads * cfg.head_dim, bias=False)
        self.proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.hidden, bias=False)
        self.q_norm, self.k_norm = nn.RMSNorm(cfg.head_dim), nn.RMSNorm(cfg.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask, cache: KVCache | None = None,
                slot: int = 0) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin)
        if cache is not None:  # store this chunk; a step attends to the keys written so far (a view, no copy)
            start = cache.length
            cache.k[slot, :, :, start:start + n] = k
            cache.v[slot, :, :, start:start + n] = v
            if start > 0:
                k, v = cache.k[slot, :, :, :start + n], cache.v[slot, :, :, :start + n]
                mask = mask[..., :start + n]
        if mask is None:  # plain causal (right-padded sequences: padding comes after what is read)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif isinstance(mask, torch.Tensor):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:  # a flex-attention BlockMask (packed training on GPU)
            from torch.nn.attention.flex_attention import flex_attention

            out = flex_attention(q, k, v, block_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(cfg.hidden), nn.RMSNorm(cfg.hidden)
        self.attn = Attention(cfg)
        self.fc = nn.Linear(cfg.hidden, 2 * cfg.mlp_hidden, bias=False)  # SwiGLU gate and value in one matmul
        self.out = nn.Linear(cfg.mlp_hidden, cfg.hidden, bias=False)

    def forward(self, x, cos, sin, mask, cache=None, slot=0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, mask, cache, slot)
        gate, value = self.fc(self.norm2(x)).chunk(2, dim=-1)
        return x + self.out(F.silu(gate) * value)


class TaskEmbeddings(nn.Module):
    """Per-task rows: one vector per task and one per (task, colour role). Dense gradients: the fused
    AdamW updates the whole table in one kernel, where sparse gradients (65k looked-up rows a step)
    cost a coalescing sort and a host sync every step. Rows no batch touches keep zero moments and
    never move (no weight decay on this table)."""

    def __init__(self, num_tasks: int, hidden: int) -> None:
        super().__init__()
        self.task = nn.Embedding(max(num_tasks, 1), hidden)
        self.colour = nn.Embedding(max(num_tasks, 1) * NUM_COLORS, hidden)
        nn.init.normal_(self.task.weight, std=0.02)
        nn.init.normal_(self.colour.weight, std=0.02)

    @property
    def num_tasks(self) -> int:
        return self.task.num_embeddings

    def rows_from(self, first: int) -> dict[str, torch.Tensor]:
        """Views of the rows of tasks first.. (their task vectors and colour roles), e.g. an adaptation's."""
        return {"task": self.task.weight[first:], "colour": self.colour.weight[first * NUM_COLORS:]}

    def forward(self, task: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
        coloured = role >= 0
        colour = self.colour(task * NUM_COLORS + role.clamp(min=0)) * coloured.unsqueeze(-1)
        return self.task(task) + colour


class SageModel(nn.Module):
    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok = nn.Embedding(VOCAB, cfg.hidden)
        self.view = nn.Embedding(8, cfg.hidden)  # which dihedral transform the sequence is seen under
        self.tasks = TaskEmbeddings(cfg.num_tasks, cfg.hidden)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.RMSNorm(cfg.hidden)
        self.head = nn.Linear(cfg.hidden, VOCAB, bias=False)
        freqs, axes = rope_frequencies(cfg)
        self.register_buffer("rope_freqs", freqs, persistent=False)
        self.register_buffer("rope_axes", axes, persistent=False)
        for name, p in self.named_parameters():
            if p.ndim == 2 and not name.startswith("tasks."):
                nn.init.normal_(p, std=0.02)
        for block in self.blocks:  # residual branches start small, as in GPT-2
            nn.init.normal_(block.attn.proj.weight, std=0.02 / (2 * cfg.layers * cfg.loops) ** 0.5)
            nn.init.normal_(block.out.weight, std=0.02 / (2 * cfg.layers * cfg.loops) ** 0.5)

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = pos[..., self.rope_axes].float() * self.rope_freqs  # [B, L, Dh/2]
        return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, task: torch.Tensor, view: torch.Tensor,
                role: torch.Tensor, mask, cache: KVCache | None = None, return_hidden: bool = False):
        """tokens, task, view, role: [B, L]; pos: [B, L, 3]. `mask` is a boolean [B, 1, L, Lkeys]
        tensor (True = may attend), a flex BlockMask, or None for plain causal attention. Returns logits
        [B, L, VOCAB], and with `return_hidden` also the final hidden states [B, L, hidden] (the head's
        input; for distillation)."""
        x = self.tok(tokens) + self.view(view) + self.tasks(task, role)
        cos, sin = self.rope(pos)
        slot = 0
        for _ in range(self.config.loops):
            for block in self.blocks:
                x = block(x, cos, sin, mask, cache, slot)
                slot += 1
        if cache is not None:
            cache.length += tokens.shape[1]
        hidden = self.norm(x)
        logits = self.head(hidden).float()
        return (logits, hidden) if return_hidden else logits

    def shared_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("tasks."))

    def replace_tasks(self, tasks: TaskEmbeddings) -> None:
        self.tasks = tasks
        self.config = self.config.model_copy(update={"num_tasks": tasks.num_tasks})

    def extend_tasks(self, count: int) -> int:
        """Append `count` task rows (task vector and colour roles), each the mean of the trained rows: the
        start of a task the model has no row for (adaptation, a teacher's unseen task, the ONNX graphs'
        unknown row). Returns the first new row."""
        old = self.tasks
        first = old.num_tasks if self.config.num_tasks else 0
        new = TaskEmbeddings(first + count, self.config.hidden).to(old.task.weight.device)
        with torch.no_grad():
            if first:
                new.task.weight[:first] = old.task.weight[:first]
                new.colour.weight[:first * NUM_COLORS] = old.colour.weight[:first * NUM_COLORS]
                new.task.weight[first:] = old.task.weight[:first].mean(0)
                mean_roles = old.colour.weight[:first * NUM_COLORS].view(first, NUM_COLORS, -1).mean(0)
                new.colour.weight[first * NUM_COLORS:] = mean_roles.repeat(count, 1)
        self.replace_tasks(new)
        return first


def document_mask(doc: torch.Tensor) -> torch.Tensor:
    """Dense causal mask within documents, [B, 1, L, L], for packed rows off the GPU."""
    n = doc.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=doc.device).tril()
    return ((doc[:, :, None] == doc[:, None, :]) & causal).unsqueeze(1)


def packed_mask(doc: torch.Tensor):
    """The document mask for packed rows: a flex BlockMask on CUDA, a dense tensor elsewhere."""
    return flex_document_mask(doc) if doc.device.type == "cuda" else document_mask(doc)


def flex_document_mask(doc: torch.Tensor):
    """The same mask as a flex-attention BlockMask: blocks outside any document are skipped."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, k):
        return (doc[b, q] == doc[b, k]) & (q >= k)

    return create_block_mask(mask_mod, doc.shape[0], None, doc.shape[1], doc.shape[1], device=doc.device,
                             _compile=True)
