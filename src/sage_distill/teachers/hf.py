"""Any local Hugging Face vision encoder (or the vision tower of a vision-language model) as a teacher:
hidden states from a chosen layer at the image's patch tokens. Local folders only, no remote code."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError

from .base import TeacherError, render_canvases


def _vision_part(model: torch.nn.Module) -> torch.nn.Module:
    """A vision-language model's vision tower; a vision encoder is its own."""
    for name in ("vision_model", "vision_tower", "visual", "vision_encoder"):
        part = getattr(model, name, None)
        if isinstance(part, torch.nn.Module):
            return part
    return model


def _norm_stats(folder: Path) -> tuple[float, float]:
    """Image normalisation from preprocessor_config.json (first channel; ARC colours are exact
    anyway, so a per-channel difference would only shift the features), else SigLIP's 0.5 / 0.5."""
    pre = folder / "preprocessor_config.json"
    if pre.exists():
        cfg = json.loads(pre.read_text())
        mean, std = cfg.get("image_mean", [0.5]), cfg.get("image_std", [0.5])
        return float(mean[0]), float(std[0])
    return 0.5, 0.5


class HFTeacher:
    """Features: hidden_states[layer] at the patch tokens ([B, H*W, D]); a leading CLS token is dropped.
    `layer` indexes hidden_states (0 = embeddings, -1 = last encoder layer)."""

    name = "hf"

    def __init__(self, folder: str | Path, layer: int = -1, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        from transformers import AutoConfig, AutoModel

        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise TeacherError(f"{folder}: not a Hugging Face model folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, config=config, local_files_only=True,
                                              attn_implementation="sdpa", dtype=dtype)
        except (OSError, ValueError, KeyError, SafetensorError) as e:  # a truncated file is a SafetensorError
            raise TeacherError(f"cannot load a model from {folder}: {e}") from None
        self.model = _vision_part(model).to(device).eval()
        vcfg = getattr(config, "vision_config", None) or config
        self.image_size = vcfg.image_size if isinstance(vcfg.image_size, int) else vcfg.image_size[0]
        self.mean, self.std = _norm_stats(folder)
        self.layer, self.feature_dim = layer, vcfg.hidden_size
        self.device, self.dtype = torch.device(device), dtype
        side = self.image_size // (vcfg.patch_size if isinstance(vcfg.patch_size, int) else vcfg.patch_size[0])
        self.tokens_hw = (side, side)
        n_layers = vcfg.num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise TeacherError(f"layer must be in -{n_layers + 1}..{n_layers} for this model, got {layer}")

    @torch.no_grad()  # not inference_mode: targets must stay usable in autograd and in-place ops
    def encode(self, queries: torch.Tensor, context: list[list[torch.Tensor]] | None = None
               ) -> dict[str, torch.Tensor]:
        if context and any(context):
            raise TeacherError("a vision-encoder teacher sees one grid at a time; use context 'none'")
        pixels = render_canvases(queries.to(self.device), self.image_size, self.mean, self.std).to(self.dtype)
        hidden = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[self.layer]
        n = self.tokens_hw[0] * self.tokens_hw[1]
        extra = hidden.shape[1] - n  # CLS / register tokens sit in front of the patches
        if extra < 0 or math.isqrt(n) ** 2 != n:
            raise TeacherError(f"cannot find a {self.tokens_hw} patch grid in {hidden.shape[1]} tokens")
        return {"features": hidden[:, extra:]}
