"""The SAGE ARC model through ONNX Runtime's CPU provider: the graphs `sage-distill export` writes,
driven by the same decoding loop as the torch path (`generate._generate`); only the model calls
differ. The prompt's keys and values (prefill's presents) are fed to every step unchanged; the answer's
live in a buffer that grows BLOCK positions at a time, into which each step's presents (the keys and values
of its tokens: the chosen one and the drafted ones) are written in place; the slots not written yet, and
those of drafts a row did not keep, are masked. No step copies a cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..utils import onnx_export
from .configuration_sage import SageConfig

MANIFEST = "sage-onnx.json"
FORMAT = "sage-onnx/4"  # /2: the prompt's keys and values are inputs of their own; /3: a step's present is its own;
# /4: a step takes several tokens and returns the logits of each (drafted tokens, `student/drafts.py`)
BLOCK = 64  # answer-buffer growth: a step attends over at most BLOCK - 1 slots not written yet


def read_manifest(folder: str | Path) -> dict:
    """The export's manifest, or a SageError when `folder` holds no exported graphs."""
    def check(meta: dict) -> None:
        meta["tasks"]["fingerprints"], meta["tasks"]["unknown_row"]  # noqa: B018

    return onnx_export.read_manifest(folder, MANIFEST, FORMAT, "--model", "sage-distill export", check)


class OnnxSage:
    """Both graphs of an export, loaded into ONNX Runtime sessions on the CPU."""

    def __init__(self, folder: str | Path, threads: int = 0) -> None:
        folder = Path(folder)
        self.meta = read_manifest(folder)
        self.config = SageConfig.model_validate(self.meta["config"])
        self.fingerprints: list[str] = self.meta["tasks"]["fingerprints"]
        self.unknown_row: int = self.meta["tasks"]["unknown_row"]
        self.precision: str = self.meta["precision"]
        graphs = self.meta["graphs"]
        self.prefill = onnx_export.cpu_session(folder / graphs["prefill"]["file"], threads)
        self.step = onnx_export.cpu_session(folder / graphs["decode_step"]["file"], threads)
        inputs = [i.name for i in self.step.get_inputs()]
        self.prompt_names = [n for n in inputs if n.startswith("prompt_key_values.")]
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]

    def steps(self) -> OnnxSteps:
        return OnnxSteps(self)


class OnnxSteps:
    """`TorchSteps`'s interface (prefill, step, keep) over the two ONNX Runtime sessions."""

    device = torch.device("cpu")

    def __init__(self, runner: OnnxSage) -> None:
        self.runner = runner
        self.mask: np.ndarray | None = None  # the prompt's keys: 1 real, 0 left padding
        self.prompt: list[np.ndarray] = []  # prefill's keys and values, read by every step
        self.past: list[np.ndarray] = []  # the answer's buffer: slots before `written` filled, the rest masked
        self.answer = np.zeros((0, 0), dtype=np.int64)  # [B, slots]: 1 where a row kept the token written there
        self.written = self.fed = 0

    @staticmethod
    def _feeds(tokens, pos, task, view, role) -> dict[str, np.ndarray]:
        b, n = tokens.shape
        return {"input_ids": tokens.numpy(), "position_ids": np.ascontiguousarray(pos.numpy()),
                "task_ids": np.ascontiguousarray(task.expand(b, n).numpy()),
                "view_ids": np.ascontiguousarray(view.expand(b, n).numpy()),
                "role_ids": np.ascontiguousarray(role.numpy())}

    def prefill(self, tokens, pos, task, view, role, valid, max_new: int) -> torch.Tensor:
        """Prefill each group of equal-length prompts without its left padding (on the demo's tasks a third
        of a left-padded batch's prompt tokens are padding, and prefill is compute-bound), then lay the
        groups' keys and values out left-padded, as the steps read them; padded slots stay zero and masked."""
        self.mask = valid.numpy().astype(np.int64)
        lengths = self.mask.sum(1)
        b, p = tokens.shape
        logits, self.prompt = None, []
        for n in np.unique(lengths).tolist():
            rows = np.nonzero(lengths == n)[0]
            at = torch.from_numpy(rows)
            outs = self.runner.prefill.run(None, {
                **self._feeds(tokens[at, p - n:], pos[at, p - n:], task[at], view[at], role[at, p - n:]),
                "attention_mask": np.ones((len(rows), n), dtype=np.int64)})
            if logits is None:
                logits = np.zeros((b, outs[0].shape[-1]), dtype=np.float32)
                self.prompt = [np.zeros((b, o.shape[1], p, o.shape[3]), dtype=np.float32) for o in outs[1:]]
            logits[rows] = outs[0]
            for whole, part in zip(self.prompt, outs[1:], strict=True):
                whole[rows, :, p - n:] = part
        self.past = [np.zeros((b, a.shape[1], BLOCK, a.shape[3]), dtype=np.float32) for a in self.prompt]
        self.answer = np.zeros((b, BLOCK), dtype=np.int64)  # 1: a kept token's slot
        self.written, self.fed = 0, 0
        return torch.from_numpy(logits)

    def step(self, tokens, pos, task, view, role) -> torch.Tensor:
        """N tokens per sequence ([B, N]) -> logits [B, N, VOCAB]; their keys and values are written into the
        answer buffer at `written`, and `commit` says how many of each row's count."""
        (b, n), slots = tokens.shape, self.past[0].shape[2]
        if self.written + n > slots:  # full: grow by blocks (a copy once every BLOCK kept tokens or so)
            extra = BLOCK * -(-(self.written + n - slots) // BLOCK)
            self.past = [np.pad(a, ((0, 0), (0, 0), (0, extra), (0, 0))) for a in self.past]
            self.answer = np.pad(self.answer, ((0, 0), (0, extra)))
        feeds = {**self._feeds(tokens, pos, task, view, role),
                 "attention_mask": np.concatenate([self.mask, self.answer, np.ones((b, n), np.int64)], axis=1),
                 **dict(zip(self.runner.prompt_names, self.prompt, strict=True)),
                 **dict(zip(self.runner.past_names, self.past, strict=True))}
        outs = self.runner.step.run(None, feeds)
        for buffer, present in zip(self.past, outs[1:], strict=True):
            buffer[:, :, self.written:self.written + n] = present
        self.fed = n
        return torch.from_numpy(outs[0])

    def commit(self, counts: np.ndarray) -> None:
        """Row i keeps the first counts[i] tokens of the last step; the next step writes past the most any row
        kept, the other rows' unkept slots staying masked."""
        self.answer[:, self.written:self.written + self.fed] = np.arange(self.fed)[None] < counts[:, None]
        self.written += int(counts.max())

    def keep(self, rows: torch.Tensor) -> None:
        idx = rows.numpy()
        self.mask = self.mask[idx]
        self.prompt = [np.ascontiguousarray(a[idx]) for a in self.prompt]
        self.past = [np.ascontiguousarray(a[idx]) for a in self.past]
        self.answer = self.answer[idx]
