"""Behaviour cloning of the SAGE control policy on a LeRobot dataset of expert demonstrations.

The whole dataset sits on the training device (uint8 frames: 128x128 MT50 at 50 demos a task is ~15 GB,
which one H100 holds), so a batch is an index draw and a gather: no loader processes. Each step's batch
is a pure function of (seed, step), so a run resumed after a kill continues exactly. The loop is the
project's one training loop (`training.loop`): checkpoints are the EMA weights for inference
(`model.safetensors` + `config.json`) and the resumable state in `train_state/`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors.torch import load_file
from tqdm import tqdm

from ..errors import SageError
from ..training.loop import Loop, LoopSettings
from ..utils.io import atomic_save_safetensors, atomic_write_json, files_sha256, read_safetensors_header
from ..utils.quantize import dequantize, quantize
from .collect import IMAGE_KEY
from .datasets import open_dataset
from .envs import all_tasks
from .policies.sage_control import ControlConfig, ControlPolicy

log = logging.getLogger(__name__)
STORED_PRECISIONS = ("fp32", "bf16", "int8")  # of a policy folder's weights; every command reads each


class RobotTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Path
    out: Path
    obs: str = Field("pixels", pattern="^(pixels|state)$")
    tasks: list[str] | None = None  # default: every task in the dataset
    episodes_per_task: int | None = Field(None, ge=1)  # default: all
    steps: int = Field(20_000, ge=1, le=10_000_000)
    batch: int = Field(256, ge=1, le=65_536)
    lr: float = Field(3e-4, gt=0, le=1, allow_inf_nan=False)
    warmup: int = Field(500, ge=0, le=10_000_000)
    weight_decay: float = Field(1e-4, ge=0, le=10, allow_inf_nan=False)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    schedule: Literal["wsd", "cosine"] = "cosine"
    grad_clip: float = Field(1.0, gt=0, allow_inf_nan=False)
    # train this long, the schedule on the wall clock
    minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    # stop with a checkpoint after this long (resume later)
    max_minutes: float | None = Field(None, gt=0, allow_inf_nan=False)
    shift: int = Field(3, ge=0, le=32)  # random-shift augmentation in pixels (DrQ); large shifts blur where things are
    # Photometric augmentation (`photometric`), against the renderer: brightness and contrast scaled by 1 +- jitter,
    # a blur of up to `blur` pixels (sigma), Gaussian noise of `noise` levels (of 255). 0: off.
    jitter: float = Field(0.0, ge=0, le=0.5, allow_inf_nan=False)
    blur: float = Field(0.0, ge=0, le=3, allow_inf_nan=False)
    noise: float = Field(0.0, ge=0, le=32, allow_inf_nan=False)
    chunk: int = Field(16, ge=1, le=256)
    n_action_steps: int = Field(8, ge=1, le=256)
    width: int = Field(512, ge=16, le=4096)  # 4096 wide: ~0.5 GB of weights
    depth: int = Field(4, ge=1, le=64)
    flow_steps: int = Field(8, ge=1, le=64)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    # A policy folder whose weights (normalisers included) start this run instead of a random draw: a fine-tune,
    # and how each DAgger round continues the previous round's student. Its model must be this config's.
    init: Path | None = None
    device: str = "cpu"
    save_every: int = Field(2000, ge=1)
    log_every: int = Field(100, ge=1)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("no task given (leave tasks out for every task of the dataset)")
            known = set(all_tasks())
            bad = next((t for t in v if t not in known), None)
            if bad is not None:
                raise ValueError(f"unknown Meta-World task {bad!r}")
            if len(set(v)) != len(v):
                raise ValueError("a task is listed twice")
        return v

    @model_validator(mode="after")
    def _steps_within_chunk(self) -> RobotTrainConfig:
        if self.n_action_steps > self.chunk:
            raise ValueError(f"n_action_steps ({self.n_action_steps}) cannot exceed chunk ({self.chunk})")
        return self


def build_tables(cfg: RobotTrainConfig, device: torch.device) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Every frame of the chosen episodes as tensors on `device`, plus (N, chunk) indices of each frame's
    action chunk and the mask of steps past its episode's end."""
    ds = open_dataset(cfg.data)
    names = all_tasks()
    wanted = set(cfg.tasks) if cfg.tasks else None
    keys = ["observation.state", "action"] + (["observation.environment_state"] if cfg.obs == "state" else [])
    if cfg.obs == "pixels":
        if IMAGE_KEY not in ds.video_keys:
            raise SageError(f"no {IMAGE_KEY} video: collect with --image-size, or train with --obs state",
                            file=cfg.data)
        keys.append(IMAGE_KEY)
    per_task: dict[str, int] = {}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    tasks, starts, lengths = [], [], []
    total = 0
    for ep in tqdm(ds.episodes, desc="load", unit="ep"):
        name = ep.extra.get("task_name") or ep.tasks[0]
        if (wanted and name not in wanted) or name not in names:
            continue
        if cfg.episodes_per_task and per_task.get(name, 0) >= cfg.episodes_per_task:
            continue
        per_task[name] = per_task.get(name, 0) + 1
        frames = ds.frames(ep.index, keys)
        for k in keys:
            cols[k].append(frames[k])
        tasks.append(np.full(ep.length, names.index(name)))
        starts.append(total)
        lengths.append(ep.length)
        total += ep.length
    if not total:
        raise SageError(f"no episodes of {sorted(wanted) if wanted else 'any task'} in the dataset", file=cfg.data)
    pos = np.concatenate(cols["observation.state"]).astype(np.float32)
    prev = np.concatenate([np.concatenate([c[:1], c[:-1]]) for c in cols["observation.state"]]).astype(np.float32)
    # Each frame's chunk: the next `chunk` actions of its own episode, the end clamped and masked.
    ep_start = np.repeat(starts, lengths)
    ep_end = ep_start + np.repeat(lengths, lengths) - 1
    idx = np.arange(total)[:, None] + np.arange(cfg.chunk)[None]
    pad = idx > ep_end[:, None]
    idx = np.minimum(idx, ep_end[:, None])
    t = {"proprio": torch.from_numpy(np.concatenate([pos, pos - prev], 1)),
         "action": torch.from_numpy(np.concatenate(cols["action"]).astype(np.float32)).clamp(-1, 1),
         "task_index": torch.from_numpy(np.concatenate(tasks)),
         "chunk_index": torch.from_numpy(idx), "chunk_is_pad": torch.from_numpy(pad)}
    if cfg.obs == "pixels":
        t["pixels"] = torch.from_numpy(np.concatenate(cols[IMAGE_KEY]))
    else:
        t["state"] = torch.from_numpy(np.concatenate(cols["observation.environment_state"]).astype(np.float32))
    log.info("%d frames from %d episodes of %d tasks", total, len(lengths), len(per_task))
    return {k: v.to(device) for k, v in t.items()}, sorted(per_task)


def random_shift(pixels: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation: pad by replication and crop back at a random offset, per sample."""
    b, h, w, _ = pixels.shape
    x = F.pad(pixels.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device, generator=generator)
    rows = (oy[:, None] + torch.arange(h, device=x.device)[None])  # (b, h)
    cols = (ox[:, None] + torch.arange(w, device=x.device)[None])  # (b, w)
    bi = torch.arange(b, device=x.device)[:, None, None]
    x = x.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, 3)
    return x


def photometric(pixels: torch.Tensor, jitter: float, blur: float, noise: float,
                generator: torch.Generator) -> torch.Tensor:
    """Per sample: a 3x3 Gaussian blur of sigma drawn up to `blur` pixels, contrast and brightness scaled by
    1 +- `jitter`, Gaussian noise of `noise` levels; float pixels (B, H, W, 3) in [0, 255]. MuJoCo's GPU (EGL) and
    CPU (Mesa) renderers draw the same scene 1.5 levels apart on average, most of it at edges, and a policy
    trained on one's frames lost 18 points of success on the other's (docs/BENCHMARKS.md, robot section)."""
    if not (jitter or blur or noise):
        return pixels
    x, b, dev = pixels.float(), pixels.shape[0], pixels.device

    def draw() -> torch.Tensor:  # uniform in [-1, 1], one per sample
        return torch.rand(b, 1, 1, 1, device=dev, generator=generator) * 2 - 1

    if blur:
        sigma = (draw() + 1) / 2 * blur
        side = torch.exp(-0.5 / sigma.clamp(min=1e-3) ** 2)  # the kernel's weight one pixel away (0 at sigma 0)
        w0, w1 = 1 / (1 + 2 * side), side / (1 + 2 * side)
        p = F.pad(x.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)  # (B, H+2, W+2, 3)
        p = w1 * p[:, :, :-2] + w0 * p[:, :, 1:-1] + w1 * p[:, :, 2:]  # along the width
        x = w1 * p[:, :-2] + w0 * p[:, 1:-1] + w1 * p[:, 2:]  # along the height
    if jitter:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + jitter * draw()) + mean * (1 + jitter * draw())
    if noise:
        x = x + noise * torch.randn(x.shape, device=dev, generator=generator)
    return x.clamp(0, 255)


def control_config(cfg: RobotTrainConfig, image_size: int | None) -> ControlConfig:
    """The model a run of `cfg` builds, on frames of `image_size` (None: a state dataset)."""
    return ControlConfig(obs=cfg.obs, image_size=image_size or 128, num_tasks=len(all_tasks()), chunk=cfg.chunk,
                         n_action_steps=cfg.n_action_steps, width=cfg.width, depth=cfg.depth,
                         flow_steps=cfg.flow_steps)


def check_init(init: Path, model_cfg: ControlConfig) -> tuple[ControlPolicy, list[str]]:
    """The starting policy of `init` and its trained tasks, checked to be the model `model_cfg` describes."""
    start, tasks = load_policy(init)
    if start.cfg != model_cfg:
        have, want = start.cfg.model_dump(), model_cfg.model_dump()
        differ = [f"{k} {have[k]} here, {want[k]} in this run" for k in want if have[k] != want[k]]
        raise SageError(f"its model differs from this run's ({'; '.join(differ)})", file=Path(init) / "config.json")
    return start, tasks


class RobotFamily:
    """The control policy for the one training loop (`training.loop`): batches drawn from the tables on
    the device, the policy's flow-matching loss, AdamW."""

    extra = None

    def __init__(self, cfg: RobotTrainConfig) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.data, self.tasks = build_tables(cfg, self.device)
        image_size = int(self.data["pixels"].shape[1]) if "pixels" in self.data else None
        self.model_cfg = control_config(cfg, image_size)
        torch.manual_seed(cfg.seed)
        self.model = ControlPolicy(self.model_cfg).to(self.device)
        if cfg.init is not None:
            # The starting weights keep their normalisers: the function being continued stays the same one.
            self.model.load_state_dict(check_init(cfg.init, self.model_cfg)[0].state_dict())
        else:
            self.model.set_normalizers(self.data["proprio"], self.data.get("state"))
        self._optimizers = {"policy": torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                                        weight_decay=cfg.weight_decay)}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def clipped(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def batch(self, step: int) -> dict:
        g = torch.Generator(self.device).manual_seed(self.cfg.seed * 1_000_003 + step)
        n = self.data["action"].shape[0]
        i = torch.randint(0, n, (self.cfg.batch,), device=self.device, generator=g)
        b = {"proprio": self.data["proprio"][i], "task_index": self.data["task_index"][i],
             "action": self.data["action"][self.data["chunk_index"][i]],
             "action_is_pad": self.data["chunk_is_pad"][i], "generator": g}
        if "pixels" in self.data:
            px = self.data["pixels"][i]
            px = random_shift(px, self.cfg.shift, g) if self.cfg.shift else px
            b["pixels"] = photometric(px, self.cfg.jitter, self.cfg.blur, self.cfg.noise, g)
        else:
            b["state"] = self.data["state"][i]
        return b

    def batches(self, start: int):
        for step in range(start, self.cfg.steps):
            yield self.batch(step)

    def loss(self, net: torch.nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        loss = net.loss(batch, generator=batch["generator"])
        return loss, {}

    def metrics(self, batch: dict, out: dict) -> dict[str, float]:
        return {"lr": self._optimizers["policy"].param_groups[0]["lr"]}

    def work(self, batch: dict) -> dict[str, float]:
        return {"samples": float(self.cfg.batch)}

    def save_inference(self, folder: Path, weights: dict[str, torch.Tensor]) -> None:
        save_policy(folder, weights, self.model_cfg, self.tasks)

    def settings(self) -> dict:
        """What a resume must match; the dataset by its resolved path, so another spelling of it resumes."""
        init = None if self.cfg.init is None else str(Path(self.cfg.init).resolve())
        return {**self.cfg.model_dump(mode="json"), "data": str(Path(self.cfg.data).resolve()), "init": init}


def build(cfg: RobotTrainConfig) -> tuple[RobotFamily, Loop]:
    """The family and its loop; a folder holding a checkpoint is resumed (with the same settings only)."""
    family = RobotFamily(cfg)
    settings = LoopSettings(out=cfg.out, steps=cfg.steps, warmup=cfg.warmup, schedule=cfg.schedule,
                            minutes=cfg.minutes, max_minutes=cfg.max_minutes, grad_clip=cfg.grad_clip,
                            ema_decay=cfg.ema_decay, log_every=cfg.log_every, checkpoint_every=cfg.save_every,
                            seed=cfg.seed)
    resume = (cfg.out / "train_state" / "state.json").is_file()
    return family, Loop(family, settings, resume=resume)


def save_policy(folder: Path, weights: dict[str, torch.Tensor], cfg: ControlConfig, tasks: list[str],
                precision: str = "fp32") -> None:
    """model.safetensors (weights and normalisers) and config.json (the ControlConfig, the trained tasks and the
    stored precision). bf16 halves every floating tensor; int8 stores every weight of two or more dimensions per
    output row (conv kernels flattened to [out, in * k * k]) and keeps the vectors, normalisers included, in
    fp32: they are tiny, and a bf16 mean would shift every input by up to 0.4%."""
    if precision not in STORED_PRECISIONS:
        raise SageError(f"precision must be one of {', '.join(STORED_PRECISIONS)}, got {precision!r}",
                        where="--precision")
    stored = {k: v.detach().float().cpu().contiguous() for k, v in weights.items()}
    if precision == "bf16":
        stored = {k: v.to(torch.bfloat16) for k, v in stored.items()}
    elif precision == "int8":
        stored |= quantize({k: v.flatten(1) for k, v in stored.items() if v.ndim >= 2}, "int8")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(folder / "model.safetensors", stored)
    atomic_write_json(folder / "config.json", {"policy": "sage_control", "config": cfg.model_dump(mode="json"),
                                               "tasks": tasks, "precision": precision}, indent=1)


def _stored_shapes(expected: dict[str, list[int]], precision: str) -> dict[str, list[int]]:
    """What the weights file of `precision` holds for a model of these tensor shapes."""
    if precision != "int8":
        return expected
    out = {}
    for k, shape in expected.items():
        if len(shape) >= 2:
            out[k], out[k + ".scale"] = [shape[0], math.prod(shape[1:])], [shape[0], 1]
        else:
            out[k] = shape
    return out


def policy_hash(policy_dir: str | Path) -> str:
    """sha256 of the policy's config.json and weights: an evaluation resumes only with the same policy, and an
    ONNX export names the policy it was made from."""
    return files_sha256(Path(policy_dir) / name for name in ("config.json", "model.safetensors"))


def load_policy(folder: str | Path, device: str = "cpu") -> tuple[ControlPolicy, list[str]]:
    """A policy folder's model, after checking config.json (sizes within bounds) against the weights' header
    (every tensor's shape), so that neither a wrong config nor a truncated file builds anything."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SageError("not a policy folder (not a directory)", file=folder)
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise SageError("missing: not a trained control policy folder", file=p)
    try:
        meta = json.loads(cfg_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SageError(f"not valid JSON ({' '.join(str(exc).split())[:200]})", file=cfg_path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise SageError("expected an object with a 'config' object", file=cfg_path)
    if meta.get("policy", "sage_control") != "sage_control":
        raise SageError(f"{meta.get('policy')!r} is not a sage_control policy", file=cfg_path, where="policy")
    tasks = meta.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise SageError("expected a list of task names", file=cfg_path, where="tasks")
    precision = meta.get("precision", "fp32")
    if precision not in STORED_PRECISIONS:
        raise SageError(f"expected one of {', '.join(STORED_PRECISIONS)}, got {str(precision)[:40]!r}",
                        file=cfg_path, where="precision")
    try:
        cfg = ControlConfig(**meta["config"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "config." + ".".join(str(p) for p in first["loc"]) if first["loc"] else "config"
        raise SageError(f"{first['msg'].removeprefix('Value error, ')} (got {str(first.get('input'))[:40]})",
                        file=cfg_path, where=where) from None
    except TypeError as exc:
        raise SageError(f"config: {' '.join(str(exc).split())[:200]}", file=cfg_path) from None
    header = read_safetensors_header(weights)
    with torch.device("meta"):
        shapes = {k: list(v.shape) for k, v in ControlPolicy(cfg).state_dict().items()}
    expected = _stored_shapes(shapes, precision)
    for k in sorted(expected.keys() | header.keys()):
        if k not in header:
            raise SageError(f"the weights lack {k!r}, which config.json's model needs", file=weights)
        if k not in expected:
            raise SageError(f"the weights hold {k!r}, which config.json's model has no place for", file=weights)
        if header[k]["shape"] != expected[k]:
            raise SageError(f"{k} has shape {header[k]['shape']} in the weights, config.json's model needs "
                            f"{expected[k]}", file=cfg_path, where="config")
    model = ControlPolicy(cfg)
    try:
        stored = load_file(weights)
        if precision == "int8":
            stored = {k: v.view(shapes[k]) for k, v in dequantize(stored).items()}
        model.load_state_dict({k: v.float() for k, v in stored.items()})
    except Exception as exc:
        raise SageError(f"weights do not fit the config: {' '.join(str(exc).split())[:300]}", file=weights) from None
    return model.to(device).eval(), tasks


def check_resume_state(out: Path) -> None:
    """A policy folder's resumable state, checked before anything loads or writes: `train_state/state.json`
    (an object with a step and the settings) and every weights file it needs, whole (headers against sizes)."""
    state = out / "train_state"
    path = state / "state.json"
    if not path.is_file():
        return
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SageError(f"unreadable or truncated ({' '.join(str(exc).split())[:150]}); use a new --out",
                        file=path) from None
    step = meta.get("step") if isinstance(meta, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0 or not isinstance(meta.get("settings"), dict):
        raise SageError("expected an object with a step (a whole number >= 0) and the settings", file=path)
    minutes = meta.get("minutes", 0.0)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 <= minutes < float("inf"):
        raise SageError(f"expected minutes >= 0, got {minutes!r}", file=path, where="minutes")
    for name in ("weights.safetensors", "ema.safetensors"):
        if not (state / name).is_file():
            raise SageError("missing: the checkpoint is incomplete; use a new --out", file=state / name)
        read_safetensors_header(state / name)


def train(cfg: RobotTrainConfig) -> dict[str, float]:
    return build(cfg)[1].fit()
