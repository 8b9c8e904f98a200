"""A SAGE model folder: config.json, model.safetensors, and the task-code table
(task_codes.safetensors + task_codes.json) that holds the codes fitted to known tasks'
demonstration pairs, keyed by their fingerprint (never by task id)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..errors import SageError
from ..utils.io import atomic_save_safetensors, atomic_write_json
from .configuration_sage import SageConfig
from .modeling_sage import SageModel


class TaskCodes:
    """Fingerprint -> [variants, code_dim] codes, plus their mean (the start for an unseen task)."""

    def __init__(self, table: torch.Tensor, fingerprints: list[str], variants: int) -> None:
        self.table, self.variants = table, variants
        self.rows = {fp: i for i, fp in enumerate(fingerprints)}

    def lookup(self, fp: str) -> torch.Tensor | None:
        i = self.rows.get(fp)
        if i is None:
            return None
        return self.table[i * self.variants:(i + 1) * self.variants]

    def mean(self) -> torch.Tensor:
        return self.table.view(-1, self.variants, self.table.shape[-1]).mean(0)

    def save(self, folder: Path, keep: set[str] | None = None) -> None:
        fps = [fp for fp in self.rows if keep is None or fp in keep]
        table = torch.cat([self.lookup(fp) for fp in fps]) if fps else self.table[:0]
        atomic_save_safetensors(folder / "task_codes.safetensors", {"codes": table.float().contiguous()})
        atomic_write_json(folder / "task_codes.json", {"variants": self.variants, "fingerprints": fps})


def save_model(folder: str | Path, model: SageModel, codes: TaskCodes | None = None,
               state_dict: dict[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
    """Write the inference folder. bf16 halves the file (the released small model is ~11 MB);
    weights are upcast to float32 on load."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "config.json", model.config.model_dump(), indent=2)
    weights = state_dict if state_dict is not None else model.state_dict()
    atomic_save_safetensors(folder / "model.safetensors", {k: v.detach().to(dtype) for k, v in weights.items()})
    if codes is not None:
        codes.save(folder)


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[SageModel, TaskCodes | None]:
    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise SageError(f"{folder}: not a SAGE model folder (missing {name})")
    try:
        cfg = SageConfig.model_validate_json((folder / "config.json").read_text())
    except ValueError as e:
        raise SageError(f"{folder / 'config.json'}: invalid SAGE config: {e}") from None
    model = SageModel(cfg)
    state = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SageError(f"{folder / 'model.safetensors'}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device).eval()
    codes = None
    if (folder / "task_codes.json").is_file():
        meta = json.loads((folder / "task_codes.json").read_text())
        table = load_file(folder / "task_codes.safetensors")["codes"].to(device)
        codes = TaskCodes(table, meta["fingerprints"], meta["variants"])
    return model, codes
