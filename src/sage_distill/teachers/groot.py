"""GR00T N1.5's vision-language backbone (Eagle 2.5), rebuilt from stock transformers classes.

SigLIP vision tower (last_hidden_state after post_layernorm; its pooling head is not built, its
output was unused) -> Linear(1152 -> 2048) -> image features scattered into the <IMG_CONTEXT>
positions -> Qwen3 truncated to its first 12 layers, read after the final RMSNorm: that hidden
state is GR00T's `backbone_features` [B, L, 2048]. The LM head is never run. sdpa attention only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from .base import INSTRUCTION, TeacherError, render_canvases

IMG_CONTEXT, IMG_START, IMG_END = 151669, 151670, 151671
IM_START, IM_END, NEWLINE = 151644, 151645, 198  # Qwen chat-template tokens and "\n"


class GrootArch(BaseModel):
    """Shapes of the backbone. `full()` is GR00T N1.5-3B; `tiny()` keeps every special token id valid."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = 224
    patch_size: int = 14
    vision_hidden: int = 1152
    vision_layers: int = 27
    vision_heads: int = 16
    vision_mlp: int = 4304
    text_hidden: int = 2048
    text_layers: int = 12  # of Qwen3-1.7B's 28: GR00T keeps the first 12
    text_heads: int = 16
    text_kv_heads: int = 8
    head_dim: int = 128
    text_mlp: int = 6144
    vocab: int = 151680
    rope_theta: float = 1e6

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @staticmethod
    def full() -> GrootArch:
        return GrootArch()

    @staticmethod
    def tiny(vocab: int = 151680) -> GrootArch:
        return GrootArch(image_size=28, vision_hidden=32, vision_layers=2, vision_heads=2, vision_mlp=64,
                         text_hidden=16, text_layers=2, text_heads=2, text_kv_heads=1, head_dim=8, text_mlp=32,
                         vocab=vocab)

    def vision_config(self) -> SiglipVisionConfig:
        cfg = SiglipVisionConfig(hidden_size=self.vision_hidden, intermediate_size=self.vision_mlp,
                                 num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                                 image_size=self.image_size, patch_size=self.patch_size,
                                 hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)
        cfg._attn_implementation = "sdpa"
        return cfg

    def text_config(self) -> Qwen3Config:
        cfg = Qwen3Config(vocab_size=self.vocab, hidden_size=self.text_hidden, intermediate_size=self.text_mlp,
                          num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                          num_key_value_heads=self.text_kv_heads, head_dim=self.head_dim, rms_norm_eps=1e-6,
                          max_position_embeddings=40960, tie_word_embeddings=True, use_cache=False,
                          rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta})
        cfg._attn_implementation = "sdpa"
        return cfg


class GrootBackbone(nn.Module):
    """Attribute names mirror `backbone.eagle_model.*` so checkpoint names map one to one."""

    def __init__(self, arch: GrootArch) -> None:
        super().__init__()
        if arch.vocab <= IMG_END:
            raise TeacherError(f"vocab {arch.vocab} has no room for the image tokens (ids up to {IMG_END})")
        self.arch = arch
        self.vision_model = SiglipVisionModel(arch.vision_config())
        self.mlp1 = nn.Sequential(nn.Linear(arch.vision_hidden, arch.text_hidden))
        self.language_model = Qwen3ForCausalLM(arch.text_config())

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, tokens_per_image, text_hidden]."""
        return self.mlp1(self.vision_model(pixel_values=pixel_values).last_hidden_state)

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """backbone_features [B, L, text_hidden]. Images fill the <IMG_CONTEXT> slots in reading order."""
        lm = self.language_model.model  # the decoder alone: the LM head's logits would be thrown away
        embeds = lm.embed_tokens(input_ids)
        slots = input_ids == IMG_CONTEXT
        if pixel_values.shape[0]:
            feats = self.image_features(pixel_values.to(embeds.dtype)).reshape(-1, embeds.shape[-1])
            if feats.shape[0] != int(slots.sum()):
                raise TeacherError(f"{int(slots.sum())} <IMG_CONTEXT> slots for {feats.shape[0]} image tokens")
            embeds = embeds.masked_scatter(slots[..., None], feats.to(embeds.dtype))
        # Right padding needs no mask: causal attention never lets a real token see a later pad.
        return lm(inputs_embeds=embeds, use_cache=False).last_hidden_state

    def truncate(self, layers: int) -> None:
        """Run only the first `layers` decoder layers (still followed by the final RMSNorm)."""
        lm = self.language_model.model
        if not 1 <= layers <= len(lm.layers):
            raise TeacherError(f"layer must be 1..{len(lm.layers)}, got {layers}")
        lm.layers = lm.layers[:layers]
        lm.config.num_hidden_layers = layers


TextIds = Callable[[str], list[int]]


def placeholder_text_ids(text: str) -> list[int]:
    """Stand-in ids (one per word) for runs with no tokenizer: benchmarks only, never extraction."""
    return [1000 + sum(map(ord, w)) % 5000 for w in text.replace("\n", " \n ").split(" ") if w]


def prompt_ids(n_images: int, tokens_per_image: int, text_ids: TextIds, instruction: str = INSTRUCTION) -> list[int]:
    """Qwen chat template, images first (<img> + n x <IMG_CONTEXT> + </img> each), then the instruction."""
    ids = [IM_START, *text_ids("user\n")]
    for _ in range(n_images):
        ids += [IMG_START, *[IMG_CONTEXT] * tokens_per_image, IMG_END, NEWLINE]
    return ids + [*text_ids(instruction), IM_END, NEWLINE, IM_START, *text_ids("assistant\n")]


def load_qwen_tokenizer(folder: str) -> TextIds:
    """A local Qwen3 tokenizer folder (never downloaded). Only plain text goes through it; the image
    tokens are inserted by id, so the folder need not define them."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise TeacherError(f"cannot load a tokenizer from {folder}: {e}") from None
    return lambda text: tok.encode(text, add_special_tokens=False)


class GrootTeacher:
    """GR00T backbone as a teacher: features are the hidden states at the query image's 256 slots
    ([B, 256, 2048], a 16x16 spatial grid); the prompt may show demonstration pairs first."""

    name = "groot"

    def __init__(self, model: GrootBackbone, text_ids: TextIds, layer: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.layer = layer or model.arch.text_layers
        if self.layer != model.arch.text_layers:
            model.truncate(self.layer)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.arch, self.text_ids = model.arch, text_ids
        self.device, self.dtype = torch.device(device), dtype
        self.feature_dim = model.arch.text_hidden
        side = model.arch.image_size // model.arch.patch_size
        self.tokens_hw = (side, side)

    @torch.no_grad()  # not inference_mode: targets must stay usable in autograd and in-place ops
    def encode(self, queries: torch.Tensor, context: list[list[torch.Tensor]] | None = None
               ) -> dict[str, torch.Tensor]:
        b, n_tok = queries.shape[0], self.arch.tokens_per_image
        context = context or [[] for _ in range(b)]
        canvases = [c for i in range(b) for c in [*context[i], queries[i]]]  # reading order
        pixels = render_canvases(torch.stack([c.to(self.device) for c in canvases]), self.arch.image_size)
        rows = [prompt_ids(len(context[i]) + 1, n_tok, self.text_ids) for i in range(b)]
        width = max(map(len, rows))
        ids = torch.full((b, width), NEWLINE, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
        hidden = self.model(ids.to(self.device), pixels.to(self.dtype))
        # The query image is each row's last image: its slots are the last n_tok <IMG_CONTEXT> ids.
        slots = (ids == IMG_CONTEXT).to(self.device)
        rank = slots.flip(1).cumsum(1).flip(1)  # how many slots from here to the row's end
        feats = hidden[slots & (rank <= n_tok)].view(b, n_tok, -1)
        return {"features": feats}
