"""GR00T N1.5 checkpoint folders: map their tensor names onto `GrootBackbone`, refuse any mismatch.

Layout: model.safetensors.index.json ({"weight_map": {name: shard}}) beside the shards, or a single
model.safetensors. Names: backbone.eagle_model.{vision_model.vision_model, mlp1, language_model}.*;
action_head.* and the unused heads are ignored and reported as such.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils.io import atomic_save_safetensors, atomic_write_json
from .base import TeacherError
from .groot import GrootArch, GrootBackbone
from .store import inside, open_safetensors

PREFIX = "backbone.eagle_model."
# Present in a real checkpoint, never computed here: the action head, SigLIP's pooling head, the LM head.
IGNORED = re.compile(r"^(action_head\.|backbone\.eagle_model\.vision_model\.vision_model\.head\."
                     r"|backbone\.eagle_model\.language_model\.lm_head\.)")


def checkpoint_names(model: GrootBackbone) -> dict[str, str]:
    """Checkpoint name -> our parameter name, for every tensor the backbone needs.

    transformers 5 flattened SiglipVisionModel (no inner `vision_model.`); GR00T's checkpoint has it,
    so it is added back here whichever way the installed version lays the module out."""
    names = {}
    for ours in model.state_dict():
        if ours == "language_model.lm_head.weight":
            continue  # tied to embed_tokens
        if ours.startswith("vision_model."):
            inner = ours.removeprefix("vision_model.").removeprefix("vision_model.")
            names[f"{PREFIX}vision_model.vision_model.{inner}"] = ours
        else:
            names[PREFIX + ours] = ours
    return names


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshapen: list[str] = field(default_factory=list)  # "name: checkpoint (a, b) vs model (c, d)"
    ignored: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen)

    def message(self, limit: int = 8) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("misshapen", self.misshapen)):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
        return "; ".join(parts) or f"all tensors matched ({self.ignored} ignored)"


def weight_map(folder: Path) -> dict[str, str]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            wmap = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise TeacherError(f"not a safetensors index (needs a 'weight_map' object): {e}", file=index) from None
        if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
            raise TeacherError("'weight_map' must map tensor names to shard files", file=index)
        for shard in set(wmap.values()):
            inside(folder, shard, index.name)
        return wmap
    single = folder / "model.safetensors"
    if not single.exists():
        raise TeacherError(f"{folder}: no model.safetensors.index.json and no model.safetensors")
    with open_safetensors(single) as f:
        return {k: single.name for k in f.keys()}


def load_groot(folder: str | Path, arch: GrootArch | None = None,
               device: str | torch.device = "cpu") -> tuple[GrootBackbone, LoadReport]:
    """Build the backbone and fill it from a GR00T checkpoint folder; raise TeacherError (naming the
    tensors) on any missing, unexpected or misshapen tensor rather than run with random weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TeacherError(f"GR00T checkpoint folder not found: {folder}")
    with torch.device(device):  # random init on the GPU takes a moment; on CPU at full size, minutes
        model = GrootBackbone(arch or GrootArch.full())
    wanted, shapes = checkpoint_names(model), {k: v.shape for k, v in model.state_dict().items()}
    wmap = weight_map(folder)
    report = LoadReport()
    report.missing = sorted(set(wanted) - set(wmap))
    for name in sorted(wmap):
        if name not in wanted:
            if IGNORED.match(name):
                report.ignored += 1
            else:
                report.unexpected.append(name)
    state = {}
    by_shard: dict[str, list[str]] = {}
    for name in wanted:
        if name in wmap:
            by_shard.setdefault(wmap[name], []).append(name)
    for shard, names in sorted(by_shard.items()):
        with open_safetensors(inside(folder, shard, 'model.safetensors.index.json')) as f:
            for name in names:
                t = f.get_tensor(name)
                if t.shape != shapes[wanted[name]]:
                    report.misshapen.append(f"{name}: checkpoint {tuple(t.shape)} vs model "
                                            f"{tuple(shapes[wanted[name]])}")
                state[wanted[name]] = t
    if not report.ok:
        raise TeacherError(f"{folder} does not match the GR00T N1.5 backbone: {report.message()}")
    model.load_state_dict(state, strict=False)  # lm_head is tied; everything else was checked above
    return model, report


def save_groot(model: GrootBackbone, folder: str | Path, max_shard_tensors: int = 16,
               extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write a backbone in GR00T's checkpoint layout (sharded + index). Used by tests to make
    stand-in checkpoints; `extra` adds tensors such as action_head.* as a real checkpoint has."""
    folder = Path(folder)
    ours = model.state_dict()
    tensors = {ck: ours[name].detach().clone() for ck, name in checkpoint_names(model).items()}
    tensors.update(extra or {})
    names = sorted(tensors)
    chunks = [names[i:i + max_shard_tensors] for i in range(0, len(names), max_shard_tensors)]
    wmap = {}
    for i, chunk in enumerate(chunks):
        shard = f"model-{i + 1:05d}-of-{len(chunks):05d}.safetensors"
        atomic_save_safetensors(folder / shard, {n: tensors[n] for n in chunk}, metadata={"format": "pt"})
        wmap.update(dict.fromkeys(chunk, shard))
    atomic_write_json(folder / "model.safetensors.index.json", {"metadata": {}, "weight_map": wmap}, indent=2)
