"""A SAGE model folder: config.json, weights in safetensors shards of at most 15 MiB with
model.safetensors.index.json, and tasks.json (the task fingerprint of every embedding row; never a
task id). Weights are stored in bf16; in int8 with one float scale per output row (`<name>` int8 +
`<name>.scale` [rows, 1]); or in int4 with one float16 scale per group of 32 inputs, the clipped range of least
squared error (`<name>` uint8, two
values a byte, [rows, cols / 2] + `<name>.scale` [rows, cols / 32]). Matrices whose width is not a multiple
of 32 stay int8 in an int4 folder; vectors stay bf16. Everything is upcast to float32 on load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import ConfigError, SageError
from ..utils.io import atomic_save_safetensors, atomic_write_json, read_safetensors_header
from ..utils.quantize import GROUP, dequantize, quantize
from .configuration_sage import SageConfig
from .modeling_sage import SageModel

MAX_SHARD_BYTES = 15 * 1024 * 1024
INDEX = "model.safetensors.index.json"
PRECISIONS = ("bf16", "int8", "int4")


def save_model(folder: str | Path, model: SageModel, fingerprints: list[str],
               state_dict: dict[str, torch.Tensor] | None = None, precision: str = "bf16") -> None:
    """Write the inference folder atomically, file by file (index and tasks.json last)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else model.state_dict()
    weights = {k: v for k, v in weights.items() if not k.startswith("rope_")}
    if precision not in PRECISIONS:
        raise SageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        stored = {k: v.detach().to(torch.bfloat16).cpu().contiguous() for k, v in weights.items()}
    else:
        stored = quantize(weights, precision)
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
    """The model (eval mode, float32) and the fingerprint of each task-embedding row. config.json is checked
    (sizes within bounds) against the shards' headers (every tensor's shape) before the model is built, so a
    small folder whose config asks for a huge model is refused without allocating it."""
    folder = Path(folder)
    for name in ("config.json", INDEX, "tasks.json"):
        if not (folder / name).is_file():
            raise SageError(f"{folder}: not a SAGE model folder (missing {name})")
    cfg_path = folder / "config.json"
    try:
        raw = json.loads(cfg_path.read_text())
        raw.pop("precision", None)
        index = json.loads((folder / INDEX).read_text())["weight_map"]
        fingerprints = json.loads((folder / "tasks.json").read_text())["fingerprints"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SageError(f"{folder}: invalid model folder: {e}") from None
    try:
        cfg = SageConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        got = f" (got {str(first.get('input'))[:40]})" if where else ""  # a whole-config check names its values
        raise SageError(first["msg"].removeprefix("Value error, ") + got, file=cfg_path, where=where or None) from None
    if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
        raise SageError("weight_map must map tensor names to shard file names", file=folder / INDEX)
    if not isinstance(fingerprints, list) or len(fingerprints) != cfg.num_tasks:
        count = len(fingerprints) if isinstance(fingerprints, list) else "no list of"
        raise SageError(f"{folder / 'tasks.json'}: {count} fingerprints for {cfg.num_tasks} task rows")
    shards = []
    header: dict[str, dict] = {}
    for shard in sorted(set(index.values())):
        path = (folder / shard).resolve()
        if path.parent != folder.resolve():
            raise SageError(f"{folder / INDEX}: shard {shard!r} is outside the model folder")
        header.update({k: {**t, "path": path} for k, t in read_safetensors_header(path).items()})
        shards.append(path)
    check_shapes(cfg, cfg_path, header)
    stored: dict[str, torch.Tensor] = {}
    for path in shards:
        try:
            stored.update(load_file(path))
        except (SafetensorError, OSError) as e:
            raise SageError(f"{path}: cannot read weights: {e}") from None
    model = SageModel(cfg)
    model.load_state_dict(dequantize(stored), strict=False)  # strict: check_shapes matched every name
    return model.to(device).eval(), fingerprints


def check_shapes(cfg: SageConfig, cfg_path: Path, header: dict[str, dict]) -> None:
    """Every weight the config's model needs is in the shards with its shape (int8 matrices with their
    per-row `.scale`), and nothing else is: built on the meta device, so no memory is allocated."""
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in SageModel(cfg).state_dict().items() if not k.startswith("rope_")}
    for name, t in header.items():
        if t["dtype"] in ("I8", "U8") and name + ".scale" not in header:
            raise SageError(f"{name} is quantised without its {name}.scale", file=t["path"])
        base = name.removesuffix(".scale")
        if name != base and base in expected:
            rows, cols = expected[base]
            want = [rows, cols // GROUP] if header.get(base, {}).get("dtype") == "U8" else [rows, 1]
            if t["shape"] != want:
                raise SageError(f"{name} has shape {t['shape']}, expected {want}", file=t["path"])
    names = {k for k in header if not (k.endswith(".scale") and k.removesuffix(".scale") in expected)}
    for k in sorted(expected.keys() | names):
        if k not in header:
            raise SageError(f"the weights lack {k!r}, which config.json's model needs", file=cfg_path.parent)
        if k not in expected:
            raise SageError(f"the weights hold {k!r}, which config.json's model has no place for",
                            file=header[k]["path"])
        want = expected[k]
        if header[k]["dtype"] == "U8":  # int4: two values a byte, whole groups only
            if len(want) != 2 or want[1] % GROUP:
                raise SageError(f"{k} is int4 but its width {want[-1]} is not a multiple of {GROUP}",
                                file=header[k]["path"])
            want = [want[0], want[1] // 2]
        if header[k]["shape"] != want:
            raise SageError(f"{k} has shape {header[k]['shape']} in {header[k]['path'].name}, config.json's model "
                            f"needs {want}", file=cfg_path)


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
