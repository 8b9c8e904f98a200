"""The SAGE student: vision IRP -> looped reasoning core with a halting head -> control IRP.

One file, read top to bottom:
- `GridEncoder` (vision IRP): cell tokens on the 30x30 canvas + 2-D position + task tokens.
- `ReasoningCore`: one refinement step = `layers_per_step` pre-norm transformer blocks applied to
  the current answer state plus the encoded input (input injection). Weights are shared across
  steps, so more steps cost compute, not parameters.
- `GridDecoder` (control IRP): per-cell colour logits (plus OUTSIDE), output height and width.
- The halting head reads the state after every step: its logit estimates "this step's answer is
  exactly right"; energy = -logit, so low energy means confident the answer is final.

Task conditioning: each task (and each fixed augmentation of it) has a `code` vector, fitted from
its demonstration pairs; a shared linear map turns it into `task_tokens` prefix tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_sage import SageConfig


class Block(nn.Module):
    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.heads = cfg.heads
        self.norm1 = nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d)
        hidden = int(d * cfg.mlp_ratio)
        self.fc = nn.Linear(d, 2 * hidden, bias=False)  # SwiGLU: gate and value in one matmul
        self.out = nn.Linear(hidden, d, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        gate, value = self.fc(self.norm2(x)).chunk(2, dim=-1)
        return x + self.out(F.silu(gate) * value)


class GridEncoder(nn.Module):
    """Vision IRP: canvas tokens [B, 30, 30] + task codes [B, code_dim] -> embeddings [B, T+900, d]."""

    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        d, c = cfg.hidden, cfg.canvas
        self.cfg = cfg
        self.cell = nn.Embedding(cfg.vocab, d)
        self.row = nn.Parameter(torch.randn(c, 1, d) * 0.02)
        self.col = nn.Parameter(torch.randn(1, c, d) * 0.02)
        self.task = nn.Linear(cfg.code_dim, cfg.task_tokens * d)
        self.task_pos = nn.Parameter(torch.randn(cfg.task_tokens, d) * 0.02)

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        cells = (self.cell(tokens) + self.row + self.col).reshape(b, -1, self.cfg.hidden)
        task = self.task(codes).view(b, self.cfg.task_tokens, self.cfg.hidden) + self.task_pos
        return torch.cat([task, cells], dim=1)


class ReasoningCore(nn.Module):
    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers_per_step))
        self.init_state = nn.Parameter(torch.zeros(1, 1, cfg.hidden))

    def initial(self, x: torch.Tensor) -> torch.Tensor:
        return self.init_state.expand_as(x)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        h = state + x  # inject the input at every step so refinement never forgets it
        for block in self.blocks:
            h = block(h)
        return h


@dataclass
class SageReadout:
    logits: torch.Tensor  # [B, 30, 30, vocab]: colours 0-9 and OUTSIDE
    height_logits: torch.Tensor  # [B, 30]: class i means height i + 1
    width_logits: torch.Tensor  # [B, 30]
    halt_logit: torch.Tensor  # [B]: > 0 means "this answer is final"
    state: torch.Tensor  # [B, T+900, d]: the core's features (distillation reads these)

    @property
    def energy(self) -> torch.Tensor:
        return -self.halt_logit


class GridDecoder(nn.Module):
    """Control IRP for ARC: state -> per-cell logits, size logits, halting logit."""

    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.cfg = cfg
        self.norm = nn.RMSNorm(d)
        self.cells = nn.Linear(d, cfg.vocab)
        self.size = nn.Linear(d, 2 * cfg.canvas)
        self.halt = nn.Linear(d, 1)

    def forward(self, state: torch.Tensor) -> SageReadout:
        c, t = self.cfg.canvas, self.cfg.task_tokens
        h = self.norm(state)
        cells = self.cells(h[:, t:]).view(-1, c, c, self.cfg.vocab)
        pooled = h[:, :t].mean(dim=1)  # the task tokens summarise the whole answer
        height, width = self.size(pooled).float().chunk(2, dim=-1)
        return SageReadout(cells.float(), height, width, self.halt(pooled).squeeze(-1).float(), state)


class SageModel(nn.Module):
    def __init__(self, cfg: SageConfig) -> None:
        super().__init__()
        self.config = cfg
        self.encoder = GridEncoder(cfg)
        self.core = ReasoningCore(cfg)
        self.decoder = GridDecoder(cfg)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def encode(self, tokens: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return self.encoder(tokens, codes)

    def initial_state(self, x: torch.Tensor) -> torch.Tensor:
        return self.core.initial(x)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, SageReadout]:
        """One refinement step (one IRP step): new state and its readout."""
        state = self.core(x, state)
        return state, self.decoder(state)

    def forward(self, tokens: torch.Tensor, codes: torch.Tensor, steps: int | None = None,
                detach_between_steps: bool = False) -> list[SageReadout]:
        """Run `steps` refinement steps and return every step's readout (deep supervision).

        With `detach_between_steps`, gradients stay inside one step (each step learns to improve
        whatever state it is given), which keeps training memory flat in the number of steps."""
        x = self.encode(tokens, codes)
        state = self.initial_state(x)
        readouts = []
        for i in range(steps or self.config.max_steps):
            if detach_between_steps and i > 0:  # the initial state is a parameter: keep its gradient
                state = state.detach()
            state, readout = self.step(x, state)
            readouts.append(readout)
        return readouts

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
