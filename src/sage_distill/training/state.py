"""Resumable training state without pickle: tensors go to safetensors, the rest to JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..utils.io import atomic_save_safetensors, atomic_write_json


def save_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    atomic_save_safetensors(folder / "optimizer.safetensors", tensors)
    atomic_write_json(folder / "optimizer.json", {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, value in {**load_file(folder / "optimizer.safetensors"), **meta["scalars"]}.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
