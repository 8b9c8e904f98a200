"""The SAGE ARC model through ONNX Runtime's CPU provider: the graphs `sage-distill export` writes,
driven by the same decoding loop as the torch path (`generate._generate`); only the model calls
differ. Keys and values grow by one position per step (past -> present), so each step attends over
the keys written so far, not over a preallocated maximum length."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import SageError
from .configuration_sage import SageConfig

MANIFEST = "sage-onnx.json"
FORMAT = "sage-onnx/1"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise SageError("onnxruntime is not installed: pip install -e '.[onnx]' (make demo / make test do)",
                        file="--runtime") from None
    return onnxruntime


def read_manifest(folder: str | Path) -> dict:
    """The export's manifest, or a SageError when `folder` holds no exported graphs."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        hint = " (a torch model folder: export it first with `sage-distill export`)" if (
            folder / "config.json").is_file() else ""
        raise SageError(f"{folder}: no exported ONNX graphs here (missing {MANIFEST}){hint}", file="--model")
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        for graph in meta["graphs"].values():
            if not (folder / graph["file"]).is_file():
                raise ValueError(f"missing graph file {graph['file']}")
        meta["tasks"]["fingerprints"], meta["tasks"]["unknown_row"]  # noqa: B018
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise SageError(f"{path}: invalid ONNX export manifest: {e}") from None
    return meta


class OnnxSage:
    """Both graphs of an export, loaded into ONNX Runtime sessions on the CPU."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        ort = import_onnxruntime()

        folder = Path(folder)
        self.meta = read_manifest(folder)
        self.config = SageConfig.model_validate(self.meta["config"])
        self.fingerprints: list[str] = self.meta["tasks"]["fingerprints"]
        self.unknown_row: int = self.meta["tasks"]["unknown_row"]
        self.precision: str = self.meta["precision"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        try:
            self.prefill = ort.InferenceSession(str(folder / self.meta["graphs"]["prefill"]["file"]), opts,
                                                providers=["CPUExecutionProvider"])
            self.step = ort.InferenceSession(str(folder / self.meta["graphs"]["decode_step"]["file"]), opts,
                                             providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
            raise SageError(f"{folder}: cannot load the ONNX graphs: {' '.join(str(e).split())[:200]}") from None
        self.past_names = [i.name for i in self.step.get_inputs() if i.name.startswith("past_key_values.")]

    def steps(self) -> OnnxSteps:
        return OnnxSteps(self)


class OnnxSteps:
    """`TorchSteps`'s interface (prefill, step, keep) over the two ONNX Runtime sessions."""

    device = torch.device("cpu")

    def __init__(self, runner: OnnxSage) -> None:
        self.runner = runner
        self.mask: np.ndarray | None = None
        self.past: list[np.ndarray] = []

    @staticmethod
    def _feeds(tokens, pos, task, view, role) -> dict[str, np.ndarray]:
        b, n = tokens.shape
        return {"input_ids": tokens.numpy(), "position_ids": np.ascontiguousarray(pos.numpy()),
                "task_ids": np.ascontiguousarray(task.expand(b, n).numpy()),
                "view_ids": np.ascontiguousarray(view.expand(b, n).numpy()),
                "role_ids": np.ascontiguousarray(role.numpy())}

    def prefill(self, tokens, pos, task, view, role, valid, max_new: int) -> torch.Tensor:
        self.mask = valid.numpy().astype(np.int64)
        outs = self.runner.prefill.run(None, {**self._feeds(tokens, pos, task, view, role),
                                              "attention_mask": self.mask})
        self.past = outs[1:]
        return torch.from_numpy(outs[0])

    def step(self, tokens, pos, task, view, role) -> torch.Tensor:
        self.mask = np.concatenate([self.mask, np.ones((self.mask.shape[0], 1), dtype=np.int64)], axis=1)
        feeds = {**self._feeds(tokens, pos, task, view, role), "attention_mask": self.mask,
                 **dict(zip(self.runner.past_names, self.past, strict=True))}
        outs = self.runner.step.run(None, feeds)
        self.past = outs[1:]
        return torch.from_numpy(outs[0])

    def keep(self, rows: torch.Tensor) -> None:
        idx = rows.numpy()
        self.mask = self.mask[idx]
        self.past = [np.ascontiguousarray(a[idx]) for a in self.past]
