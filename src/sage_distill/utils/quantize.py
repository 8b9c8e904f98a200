"""Weight-only quantisation of a state dict, shared by the ARC model folders and the control policies.

int8: one float32 scale per output row (`<name>` int8 + `<name>.scale` [rows, 1]). int4: one float16 scale per
group of GROUP inputs, the clipped range of least squared error (`<name>` uint8, two values a byte, [rows,
cols / 2] + `<name>.scale` [rows, cols / GROUP]); matrices whose width is not a multiple of GROUP stay int8.
Tensors that are not matrices stay bf16 (a caller flattens what it wants quantised, e.g. conv kernels)."""

from __future__ import annotations

import torch

GROUP = 32  # int4: inputs per scale (a finer group keeps outliers from flattening their neighbours)


def quantize(weights: dict[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    """Symmetric quantisation of every matrix (int8 per row, int4 per group of GROUP inputs); vectors stay
    bf16 (they are tiny)."""
    out = {}
    for name, w in weights.items():
        w = w.detach().float().cpu()
        if w.ndim != 2:
            out[name] = w.to(torch.bfloat16)
        elif precision == "int4" and w.shape[1] % GROUP == 0:
            groups = w.view(w.shape[0], -1, GROUP)
            scale = int4_scales(groups)
            q = (torch.round(groups / scale).clamp(-8, 7) + 8).to(torch.uint8).view(w.shape[0], -1)
            out[name] = q[:, 0::2] | (q[:, 1::2] << 4)
            out[name + ".scale"] = scale[..., 0].to(torch.float16)
        else:
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
            out[name] = torch.round(w / scale).to(torch.int8)
            out[name + ".scale"] = scale.to(torch.float32)
    return out


def int4_scales(groups: torch.Tensor) -> torch.Tensor:
    """Per group of GROUP inputs ([rows, groups, GROUP] -> [rows, groups, 1]), the scale with the least squared
    error among clipped ranges (1.0 to 0.5 of the group's largest magnitude): with 16 levels, rounding the
    many small values finely is worth more than representing one outlier exactly. 1.0 is a candidate, so
    the error is never above plain absmax scaling."""
    absmax = groups.abs().amax(dim=2, keepdim=True).clamp(min=1e-8)
    best, best_err = absmax / 7.0, torch.full_like(absmax, float("inf"))
    for clip in torch.linspace(1.0, 0.5, 11).tolist():
        scale = absmax * clip / 7.0
        err = ((torch.round(groups / scale).clamp(-8, 7) * scale - groups) ** 2).sum(dim=2, keepdim=True)
        better = err < best_err
        best, best_err = torch.where(better, scale, best), torch.where(better, err, best_err)
    return best


def dequantize(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, w in stored.items():
        if name.endswith(".scale"):
            continue
        if w.dtype == torch.uint8:  # int4, two a byte: low nibble first
            q = torch.stack([w & 0xF, w >> 4], dim=-1).view(w.shape[0], -1).float() - 8
            scale = stored[name + ".scale"].float()
            out[name] = (q.view(w.shape[0], -1, GROUP) * scale[..., None]).view(w.shape[0], -1)
        elif w.dtype == torch.int8:
            out[name] = w.float() * stored[name + ".scale"]
        else:
            out[name] = w.float()
    return out
