"""What a stored precision changes: a model folder re-saved at `--precision` against the folder as loaded,
teacher-forced on packed training rows of its own data (output tokens only): argmax agreement, accuracy
of each, the mean change of the labels' log-probability, the relative error of the weight matrices
(||W' - W|| / ||W|| over all of them), and the folder's size.

Usage: python scripts/bench_quantization.py --model models/sage-arc --precision int4 [--rows 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from sage_distill.student.checkpoint import load_model, save_model
from sage_distill.student.modeling_sage import document_mask
from sage_distill.training.data import PackedRows, assemble


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--precision", default="int4")
    ap.add_argument("--rows", type=int, default=6)
    a = ap.parse_args()
    base, fingerprints = load_model(a.model)
    run = json.loads((Path(a.model) / "run.json").read_text())["config"]["data"]
    with tempfile.TemporaryDirectory() as tmp:
        save_model(tmp, base, fingerprints, precision=a.precision)
        megabytes = sum(f.stat().st_size for f in Path(tmp).glob("*.safetensors")) / 1e6
        other, _ = load_model(tmp)
    pairs = [(w, other.state_dict()[n]) for n, w in base.state_dict().items() if w.ndim == 2]
    squared = sum(float(((v - w) ** 2).sum()) for w, v in pairs)
    weight_error = (squared / sum(float((w ** 2).sum()) for w, _ in pairs)) ** 0.5
    table, _ = assemble([tuple(x) for x in run["training"]], [tuple(x) for x in run["evaluation"]],
                        run["include_eval_demos"])
    packed = PackedRows(table, 2048, 0, base.config.palette_views)
    agree = right_base = right_other = tokens = 0
    change = 0.0
    with torch.no_grad():
        for g in range(a.rows):
            b = {k: torch.as_tensor(v)[None] for k, v in packed.row(g).items()}
            args = (b["tokens"], b["pos"], b["task"], b["view"], b["role"], document_mask(b["doc"]))
            logp_base, logp_other = (torch.log_softmax(m(*args), -1) for m in (base, other))
            sel, labels = b["labels"] >= 0, b["labels"].clamp(min=0)[..., None]
            y = b["labels"][sel]
            pb, po = logp_base.argmax(-1)[sel], logp_other.argmax(-1)[sel]
            agree += int((pb == po).sum())
            right_base += int((pb == y).sum())
            right_other += int((po == y).sum())
            tokens += int(sel.sum())
            label_base, label_other = (x.gather(-1, labels)[..., 0][sel] for x in (logp_base, logp_other))
            change += float((label_base - label_other).sum())
    print(json.dumps({"precision": a.precision, "megabytes": round(megabytes, 2), "tokens": tokens,
                      "argmax_agreement": agree / tokens, "accuracy_loaded": right_base / tokens,
                      "accuracy_resaved": right_other / tokens, "mean_logprob_change": change / tokens,
                      "relative_weight_error": weight_error}, indent=1))


if __name__ == "__main__":
    main()
