"""The SAGE control policy as one ONNX graph per action chunk, and that graph run through ONNX Runtime.

`policy.onnx` maps one observation batch and the initial noise to the whole chunk: the encoder, then the
K Euler steps of `ControlPolicy.sample` unrolled (K = the policy's `flow_steps`, or the export's
`--flow-steps`), then the clamp to [-1, 1]. One call = one chunk. The graph is a trace of `sample` itself,
so it cannot drift from the torch path. Inputs are the raw observations `policy_batch` builds; the
normalisers (the policy's buffers) and the pixel scaling are inside the graph, and are also written to
`policy-onnx.json` for a reader who feeds the graph from elsewhere.

`OnnxPolicy` has `ControlPolicy.sample`'s interface, so `run_episodes`, `chunk_latency` and `policy_batch`
drive it unchanged: with the same per-episode noise (`episode_noise`) the actions match the torch path.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..utils import onnx_export as ox
from ..utils.io import atomic_write_json
from .policies.sage_control import ControlConfig, ControlPolicy
from .train import load_policy, policy_hash

MANIFEST = "policy-onnx.json"
FORMAT = "sage-control-onnx/1"
GRAPH = "policy.onnx"
OUTPUT = "actions"


def obs_key(cfg: ControlConfig) -> str:
    return "pixels" if cfg.obs == "pixels" else "state"


class ChunkGraph(nn.Module):
    """(observation, proprio, task_index, noise) -> the chunk after `steps` Euler steps: `sample`, traced."""

    def __init__(self, policy: ControlPolicy, steps: int) -> None:
        super().__init__()
        self.policy, self.steps = policy, steps

    def forward(self, obs: torch.Tensor, proprio: torch.Tensor, task_index: torch.Tensor,
                noise: torch.Tensor) -> torch.Tensor:
        batch = {obs_key(self.policy.cfg): obs, "proprio": proprio, "task_index": task_index}
        return self.policy.sample(batch, self.steps, noise=noise)


def example_inputs(cfg: ControlConfig, batch: int = 2) -> tuple[torch.Tensor, ...]:
    if cfg.obs == "pixels":
        obs = torch.randint(0, 256, (batch, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8)
    else:
        obs = torch.randn(batch, cfg.state_dim)
    return (obs, torch.randn(batch, 2 * cfg.proprio_dim), torch.zeros(batch, dtype=torch.long),
            torch.randn(batch, cfg.chunk, cfg.action_dim))


def input_names(cfg: ControlConfig) -> list[str]:
    return [obs_key(cfg), "proprio", "task_index", "noise"]


def export_graph(policy: ControlPolicy, path: Path, steps: int) -> None:
    """Trace `ChunkGraph` to `path` (TorchScript exporter; the batch axis dynamic)."""
    names = input_names(policy.cfg)
    dyn = {name: {0: "batch"} for name in [*names, OUTPUT]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python ints (the image size)
        torch.onnx.export(ChunkGraph(policy, steps).eval(), example_inputs(policy.cfg), str(path),
                          input_names=names, output_names=[OUTPUT], dynamic_axes=dyn, opset_version=ox.OPSET,
                          dynamo=False, do_constant_folding=True)


def _manifest(policy: ControlPolicy, policy_dir: Path, tasks: list[str], precision: str, steps: int,
              graph: dict) -> dict:
    from .envs import all_tasks

    cfg = policy.cfg
    names = all_tasks()
    obs = ({"pixels": f"uint8 [batch, {cfg.image_size}, {cfg.image_size}, 3], the corner2 camera (RGB, 0-255)"}
           if cfg.obs == "pixels" else {"state": f"float32 [batch, {cfg.state_dim}], the simulator state"})
    norm = {"proprio": {"mean": policy.proprio_mean.tolist(), "std": policy.proprio_std.tolist(),
                        "applied": "inside the graph: (proprio - mean) / std"}}
    if cfg.obs == "pixels":
        norm["pixels"] = {"applied": "inside the graph: pixels / 255 - 0.5"}
    else:
        norm["state"] = {"mean": policy.state_mean.tolist(), "std": policy.state_std.tolist(),
                         "applied": "inside the graph: (state - mean) / std"}
    return {
        "format": FORMAT, "precision": precision, "opset": ox.OPSET, "source": str(policy_dir),
        "policy_sha256": policy_hash(policy_dir), "flow_steps": steps,
        "config": {**cfg.model_dump(mode="json"), "flow_steps": steps}, "graphs": {"chunk": graph},
        "inputs": {**obs,
                   "proprio": f"float32 [batch, {2 * cfg.proprio_dim}]: the end effector's (x, y, z, gripper) now, "
                              "then now minus one step ago (zeros at an episode's first step)",
                   "task_index": "int64 [batch]: the task's place in task_names",
                   "noise": f"float32 [batch, {cfg.chunk}, {cfg.action_dim}]: the chunk's initial noise, "
                            "standard normal (robot eval draws it per episode and query: episode_noise)"},
        "outputs": {OUTPUT: f"float32 [batch, {cfg.chunk}, {cfg.action_dim}] in [-1, 1] after {steps} Euler "
                            f"steps; execute the first {cfg.n_action_steps}, then query again"},
        "normalisers": norm, "tasks": tasks, "task_names": names,
    }


def export_policy(policy_dir: str | Path, out: str | Path, precision: str = "fp32",
                  flow_steps: int | None = None) -> dict:
    """Write `out/` with policy.onnx and policy-onnx.json, whole or not at all (`staged_folder`); the graph
    is loaded into ONNX Runtime before the folder appears. int8: ONNX Runtime's dynamic quantisation of the
    weight matrices (the image encoder's convolutions stay float32)."""
    out = ox.check_export_args(policy_dir, out, precision, option="--policy")
    ox.import_onnxruntime()
    ox.check_exporter()
    policy, tasks = load_policy(policy_dir)  # a SageError when it is not a policy folder
    steps = flow_steps or policy.cfg.flow_steps
    start = time.perf_counter()
    with ox.staged_folder(out) as tmp:
        path = tmp / GRAPH
        export_graph(policy, path, steps)
        if precision == "int8":
            ox.quantize_int8(path)
        spec = ox.graph_spec(GRAPH, ox.cpu_session(path, 1))
        atomic_write_json(tmp / MANIFEST, _manifest(policy, Path(policy_dir), tasks, precision, steps, spec),
                          indent=1)
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"out": str(out), "precision": precision, "flow_steps": steps,
            "seconds": round(time.perf_counter() - start, 1), "megabytes": round(size / 2**20, 2)}


def read_manifest(folder: str | Path) -> dict:
    """The export's manifest, its config checked; a SageError when `folder` holds no exported policy."""
    def check(meta: dict) -> None:
        meta["config"] = ControlConfig(**meta["config"])  # pydantic's ValidationError is a ValueError
        if not isinstance(meta["tasks"], list) or not isinstance(meta["policy_sha256"], str):
            raise ValueError("tasks must be a list and policy_sha256 a string")

    return ox.read_manifest(folder, MANIFEST, FORMAT, "--policy", "sage-distill robot export", check)


class OnnxPolicy:
    """An exported policy in an ONNX Runtime CPU session, behind `ControlPolicy.sample`'s interface."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        folder = Path(folder)
        self.meta = read_manifest(folder)
        self.cfg: ControlConfig = self.meta["config"]
        self.tasks: list[str] = self.meta["tasks"]
        self.precision: str = self.meta["precision"]
        self.policy_sha256: str = self.meta["policy_sha256"]
        self.session = ox.cpu_session(folder / self.meta["graphs"]["chunk"]["file"], threads)
        self.names = input_names(self.cfg)

    def check_steps(self, steps: int | None, option: str = "--flow-steps") -> int:
        """The graph unrolls one number of Euler steps; any other is refused, never silently replaced."""
        if steps is not None and steps != self.cfg.flow_steps:
            raise ConfigError(f"the exported graph takes {self.cfg.flow_steps} Euler steps per chunk, not {steps}; "
                              "export again with `robot export --flow-steps N`", where=option)
        return self.cfg.flow_steps

    def eval(self) -> OnnxPolicy:
        return self

    def sample(self, batch: dict[str, torch.Tensor], steps: int | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """`ControlPolicy.sample` through the graph: (B, chunk, action_dim) float32 on the CPU."""
        self.check_steps(steps)
        n = batch["proprio"].shape[0]
        if noise is None:
            noise = torch.randn(n, self.cfg.chunk, self.cfg.action_dim)
        obs = batch[obs_key(self.cfg)].cpu()
        feeds = [obs if self.cfg.obs == "pixels" else obs.float(), batch["proprio"].cpu().float(),
                 batch["task_index"].cpu().long(), noise.cpu().float()]
        out = self.session.run([OUTPUT], {k: v.contiguous().numpy() for k, v in zip(self.names, feeds, strict=True)})
        return torch.from_numpy(out[0])
