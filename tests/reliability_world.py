"""A small world of valid inputs for the reliability and fuzz tests: every bad-input case starts from
these files and breaks one thing. Built once per session and copied per case (cheap)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml

from conftest import make_task

KEY = "0123456789abcdef0123456789abcdef"


def build_world(root: Path) -> Path:
    from sage_distill.arc.validate import parse_task
    from sage_distill.student import SageConfig, SageModel
    from sage_distill.student.checkpoint import save_model
    from sage_distill.teachers.store import write_store
    from sage_distill.training.data import fingerprint

    root.mkdir(parents=True, exist_ok=True)
    tasks = {"t1": make_task(), "t2": make_task(n_train=3, n_test=2)}
    challenges = {k: {"train": v["train"], "test": [{"input": p["input"]} for p in v["test"]]}
                  for k, v in tasks.items()}
    (root / "challenges.json").write_text(json.dumps(challenges))
    (root / "solutions.json").write_text(json.dumps({k: [p["output"] for p in v["test"]] for k, v in tasks.items()}))
    (root / "predictions.json").write_text(json.dumps(
        {k: [{"attempt_1": p["input"], "attempt_2": p["input"]} for p in v["test"]] for k, v in tasks.items()}))
    (root / "task.json").write_text(json.dumps(make_task()))
    torch.manual_seed(0)
    save_model(root / "model", SageModel(SageConfig.preset("tiny").model_copy(update={"num_tasks": 2})),
               [fingerprint(parse_task(t, k, file=None)) for k, t in challenges.items()])
    (root / "orch.yaml").write_text(yaml.safe_dump({"orchestrator": {"base_budget": 100.0}}))
    trace = [{"cycle": 1, "state": "WAKE", "plugins": {"a": {"spent": 5.0, "energies": [3, 2, 1]}}, "limit": 10},
             {"cycle": 2, "state": "FOCUS", "plugins": {"a": {"spent": 8.0, "energies": [2, 1]}}, "limit": 10}]
    (root / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trace))
    rows = [{"key": f"{i:032x}", "task": "t1", "place": f"train {i} input"} for i in range(3)]
    spec = {"teacher": "sage", "layer": -1, "pooling": "grid", "context": "none", "dtype": "float32",
            "feature_dim": 8, "tokens_hw": [2, 2], "shard_size": 2, "tasks": ["t1"]}
    write_store(root / "store", spec, rows, lambda start, count: {"features": torch.randn(count, 4, 8)})
    from transformers import SiglipVisionConfig, SiglipVisionModel

    tiny_vit = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=28, patch_size=14)
    SiglipVisionModel(tiny_vit).save_pretrained(root / "hf")
    (root / "afile.txt").write_text("not a directory\n")
    (root / "adir").mkdir()
    return root


def copy_world(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, dirs_exist_ok=True)
    return dest


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root, with size and modification time: what a command wrote."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out
