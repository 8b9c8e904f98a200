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
    from sage_distill.arc.task import fingerprint
    from sage_distill.arc.validate import parse_task
    from sage_distill.student import SageConfig, SageModel
    from sage_distill.student.checkpoint import save_model
    from sage_distill.teachers.store import write_store

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
    build_robot_world(root)
    return root


def build_robot_world(root: Path) -> None:
    """The robot commands' inputs: `robot_data` (a state-only LeRobot v3.0 dataset as `robot collect` makes
    it, 2 tiny episodes of reach-v3), `policy` (a tiny untrained state policy with a resumable train_state),
    and `ev_partial` (an evaluation of it cut after one episode)."""
    import numpy as np

    from sage_distill.robot.collect import FPS, features
    from sage_distill.robot.datasets import LeRobotWriter
    from sage_distill.robot.evaluate import SETTINGS_FILE, policy_hash
    from sage_distill.robot.policies.sage_control import ControlConfig, ControlPolicy
    from sage_distill.robot.train import save_policy

    data = root / "robot_data"
    w = LeRobotWriter(data, fps=FPS, robot_type="sawyer", features=features(None))
    rng = np.random.default_rng(0)
    for seed in range(2):
        frames = {k: rng.uniform(-1, 1, (5, *f["shape"])).astype(np.float32) for k, f in features(None).items()}
        w.add_episode(frames, task="reach-v3", extra={"task_name": "reach-v3", "seed": seed, "variant": "train"})
    w.close()
    (data / "collect_state.json").write_text(json.dumps({"failed": []}))
    torch.manual_seed(0)
    cfg = ControlConfig(obs="state", width=16, depth=1, chunk=4, n_action_steps=2, flow_steps=2)
    model = ControlPolicy(cfg)
    save_policy(root / "policy", model.state_dict(), cfg, ["reach-v3"])
    state = root / "policy" / "train_state"
    state.mkdir()
    for name in ("weights", "ema"):
        shutil.copy(root / "policy" / "model.safetensors", state / f"{name}.safetensors")
    (state / "state.json").write_text(json.dumps({"step": 1, "minutes": 0.0, "settings": {}}))
    ev = root / "ev_partial"
    ev.mkdir()
    settings = {"policy_sha256": policy_hash(root / "policy"), "tasks": ["reach-v3"], "protocol": "heldout",
                "episodes": 2, "flow_steps": 2}
    (ev / SETTINGS_FILE).write_text(json.dumps(settings))
    row = {"task": "reach-v3", "protocol": "heldout", "seed": 0, "flow_steps": 2, "success": False, "steps": 500}
    (ev / "episodes.jsonl").write_text(json.dumps(row) + "\n")


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
