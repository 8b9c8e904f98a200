"""A SAGE model folder: config.json, weights in safetensors shards of at most 15 MiB with
model.safetensors.index.json, and tasks.json (the task fingerprint of every embedding row; never a
task id). Weights are stored in bf16, or in int8 with one float scale per output row
(`<name>` int8 + `<name>.scale`), and are upcast to float32 on load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import ConfigError, SageError
from ..utils.io import atomic_save_safetensors, atomic_write_json
from .configuration_sage import SageConfig
from .modeling_sage import SageModel

MAX_SHARD_BYTES = 15 * 1024 * 1024
INDEX = "model.safetensors.index.json"


def quantize_int8(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Symmetric per-row int8 for every matrix; vectors stay in bf16 (they are tiny)."""
    out = {}
    for name, w in weights.items():
        w = w.detach().float().cpu()
        if w.ndim == 2:
            scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
            out[name] = torch.round(w / scale).to(torch.int8)
            out[name + ".scale"] = scale.to(torch.float32)
        else:
            out[name] = w.to(torch.bfloat16)
    return out


def dequantize(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, w in stored.items():
        if name.endswith(".scale"):
            continue
        out[name] = w.float() * stored[name + ".scale"] if w.dtype == torch.int8 else w.float()
    return out


def save_model(folder: str | Path, model: SageModel, fingerprints: list[str],
               state_dict: dict[str, torch.Tensor] | None = None, precision: str = "bf16") -> None:
    """Write the inference folder atomically, file by file (index and tasks.json last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else model.state_dict()
    weights = {k: v for k, v in weights.items() if not k.startswith("rope_")}
    if precision == "int8":
        stored = quantize_int8(weights)
    elif precision == "bf16":
        stored = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in weights.items()}
    else:
        raise SageError(f"precision must be bf16 or int8, got {precision!r}")
    split = split_torch_state_dict_into_shards(stored, max_shard_size=MAX_SHARD_BYTES)
    for old in folder.glob("model*.safetensors"):
        if old.name not in split.filename_to_tensors:
            old.unlink()
    for filename, names in split.filename_to_tensors.items():
        atomic_save_safetensors(folder / filename, {n: stored[n] for n in names})
    atomic_write_json(folder / "config.json", {**model.config.model_dump(), "precision": precision}, indent=2)
    atomic_write_json(folder / INDEX, {"metadata": {"precision": precision}, "weight_map": {
        n: f for f, names in split.filename_to_tensors.items() for n in names}}, indent=1)
    atomic_write_json(folder / "tasks.json", {"fingerprints": fingerprints})


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> tuple[SageModel, list[str]]:
    """The model (eval mode, float32) and the fingerprint of each task-embedding row."""
    folder = Path(folder)
    for name in ("config.json", INDEX, "tasks.json"):
        if not (folder / name).is_file():
            raise SageError(f"{folder}: not a SAGE model folder (missing {name})")
    try:
        raw = json.loads((folder / "config.json").read_text())
        raw.pop("precision", None)
        cfg = SageConfig.model_validate(raw)
        index = json.loads((folder / INDEX).read_text())["weight_map"]
        fingerprints = json.loads((folder / "tasks.json").read_text())["fingerprints"]
    except (ValueError, KeyError, TypeError) as e:
        raise SageError(f"{folder}: invalid model folder: {e}") from None
    stored: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index.values())):
        path = (folder / shard).resolve()
        if path.parent != folder.resolve():
            raise SageError(f"{folder / INDEX}: shard {shard!r} is outside the model folder")
        try:
            stored.update(load_file(path))
        except (SafetensorError, OSError) as e:
            raise SageError(f"{path}: cannot read weights: {e}") from None
    model = SageModel(cfg)
    missing, unexpected = model.load_state_dict(dequantize(stored), strict=False)
    if missing or unexpected:
        raise SageError(f"{folder}: weights do not match config.json: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    if len(fingerprints) != cfg.num_tasks:
        raise SageError(f"{folder / 'tasks.json'}: {len(fingerprints)} fingerprints for {cfg.num_tasks} task rows")
    return model.to(device).eval(), fingerprints


def load_sage_model(folder: str | Path, device: str, option: str = "--model") -> tuple[SageModel, list[str]]:
    """`load_model` for the commands that only read a folder (run, a teacher): a missing, truncated or
    corrupt folder becomes one ConfigError that names it, never a traceback."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: give a SAGE model folder", file=option)
    try:
        return load_model(folder, device)
    except SageError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(f"cannot load the model (truncated or corrupt file?): {msg}", file=folder) from None
