"""The SAGE control policy: observation encoder -> condition -> flow-matching velocity field over an action chunk.

Training (`loss`): draw noise x0 and a time t, mix x_t = (1 - t) x0 + t x1 with the expert chunk x1, and
regress the velocity x1 - x0 (rectified flow). Inference (`sample`): start from noise and take K Euler
steps; `refine` exposes one step at a time for the IRP, whose energy is the size of the step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_control import ControlConfig


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class SpatialSoftmax(nn.Module):
    """Expected (x, y) of each channel's activation: where things are, which a pooled vector loses."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = torch.softmax(x.flatten(2) / self.temperature, dim=-1).view(b, c, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
        return torch.cat([(attn.sum(2) * xs).sum(-1), (attn.sum(3) * ys).sum(-1)], dim=1)


class ImageEncoder(nn.Module):
    """Four stride-2 stages (128 px -> 8x8) over the image plus two coordinate channels, then keypoints
    (spatial softmax) of the 16x16 and 8x8 maps beside a pooled vector. The camera is fixed, so where a
    thing appears in the frame is where it is on the table: the coordinates and the finer keypoints keep
    that (a goal marker is a few pixels wide)."""

    def __init__(self, cfg: ControlConfig) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        c_in = 3 + 2
        for i, c in enumerate(cfg.channels):
            k = 5 if i == 0 else 3
            self.stages.append(nn.Sequential(nn.Conv2d(c_in, c, k, stride=2, padding=k // 2), _norm(c), nn.SiLU(),
                                             nn.Conv2d(c, c, 3, padding=1), _norm(c), nn.SiLU()))
            c_in = c
        self.fine = SpatialSoftmax()
        self.coarse = SpatialSoftmax()
        self.out = nn.Linear(2 * cfg.channels[-2] + 3 * cfg.channels[-1], cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: (B, H, W, 3), uint8 or float in [0, 255]."""
        x = pixels.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        b, _, h, w = x.shape
        ys = torch.linspace(-1, 1, h, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([x, xs, ys], dim=1)
        for stage in self.stages[:-1]:
            x = stage(x)
        fine = self.fine(x)
        x = self.stages[-1](x)
        return self.out(torch.cat([fine, self.coarse(x), x.mean((2, 3))], dim=1))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class FiLMBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.film = nn.Linear(width, 2 * width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond).chunk(2, dim=-1)
        return h + self.mlp(self.norm(h) * (1 + scale) + shift)


class ControlPolicy(nn.Module):
    def __init__(self, cfg: ControlConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        if cfg.obs == "pixels":
            self.encoder: nn.Module = ImageEncoder(cfg)
        else:
            self.encoder = nn.Sequential(nn.Linear(cfg.state_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.proprio = nn.Sequential(nn.Linear(2 * cfg.proprio_dim, 128), nn.SiLU(), nn.Linear(128, 128))
        self.task = nn.Embedding(cfg.num_tasks, 64)
        self.cond = nn.Sequential(nn.Linear(w + 128 + 64, w), nn.SiLU(), nn.Linear(w, w))
        self.time = nn.Sequential(nn.Linear(128, w), nn.SiLU(), nn.Linear(w, w))
        flat = cfg.chunk * cfg.action_dim
        self.inp = nn.Linear(flat, w)
        self.blocks = nn.ModuleList(FiLMBlock(w) for _ in range(cfg.depth))
        self.head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, flat))
        # Normalisers, set from the training data (`set_normalizers`) and saved with the weights.
        self.register_buffer("proprio_mean", torch.zeros(2 * cfg.proprio_dim))
        self.register_buffer("proprio_std", torch.ones(2 * cfg.proprio_dim))
        self.register_buffer("state_mean", torch.zeros(cfg.state_dim))
        self.register_buffer("state_std", torch.ones(cfg.state_dim))

    def set_normalizers(self, proprio: torch.Tensor, state: torch.Tensor | None) -> None:
        """proprio: (N, 2 * proprio_dim) [now, now - previous]; state: (N, state_dim)."""
        self.proprio_mean.copy_(proprio.mean(0))
        self.proprio_std.copy_(proprio.std(0).clamp_min(1e-3))
        if state is not None:
            self.state_mean.copy_(state.mean(0))
            self.state_std.copy_(state.std(0).clamp_min(1e-3))

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The condition for the velocity field, computed once per chunk.
        batch: `pixels` (B,H,W,3) uint8 or `state` (B,39); `proprio` (B, 2*4); `task_index` (B,)."""
        if self.cfg.obs == "pixels":
            obs = self.encoder(batch["pixels"])
        else:
            obs = self.encoder((batch["state"] - self.state_mean) / self.state_std)
        proprio = self.proprio((batch["proprio"] - self.proprio_mean) / self.proprio_std)
        return self.cond(torch.cat([obs, proprio, self.task(batch["task_index"])], dim=-1))

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x: (B, chunk, action_dim) at time t (B,) in [0, 1] -> velocity of the same shape."""
        temb = self.time(time_embedding(t, 128))
        h = self.inp(x.flatten(1)) + temb
        c = cond + temb
        for block in self.blocks:
            h = block(h, c)
        return self.head(h).view_as(x)

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss; `action` (B, chunk, A), `action_is_pad` (B, chunk) masks steps past the end."""
        x1 = batch["action"]
        x0 = torch.randn(x1.shape, device=x1.device, generator=generator)
        t = torch.rand(x1.shape[0], device=x1.device, generator=generator)
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
        err = (self.velocity(xt, t, self.encode(batch)) - (x1 - x0)).pow(2).mean(-1)
        keep = (~batch["action_is_pad"]).float()
        return (err * keep).sum() / keep.sum().clamp_min(1.0)

    def start(self, batch_size: int, device: torch.device | str) -> torch.Tensor:
        return torch.randn(batch_size, self.cfg.chunk, self.cfg.action_dim, device=device)

    def refine(self, x: torch.Tensor, step: int, steps: int, cond: torch.Tensor) -> torch.Tensor:
        """One Euler step from time step/steps to (step + 1)/steps."""
        t = torch.full((x.shape[0],), step / steps, device=x.device)
        return x + self.velocity(x, t, cond) / steps

    @torch.no_grad()
    def sample(self, batch: dict[str, torch.Tensor], steps: int | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """(B, chunk, action_dim) actions in [-1, 1] after `steps` (default cfg.flow_steps) Euler steps from
        `noise` (default: fresh standard normal)."""
        steps = steps or self.cfg.flow_steps
        cond = self.encode(batch)
        x = self.start(cond.shape[0], cond.device) if noise is None else noise.to(cond.device)
        for k in range(steps):
            x = self.refine(x, k, steps, cond)
        return x.clamp(-1.0, 1.0)
