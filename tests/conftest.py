"""Shared test set-up. Tests never touch the network: the hub libraries are forced offline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def load_script(name: str):
    """A module of scripts/ (benchmarks run as `python scripts/NAME.py`), imported for a smoke test."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_task(n_train: int = 2, n_test: int = 1) -> dict:
    """A small valid task: the rule is 'swap colours 1 and 2'."""
    def pair(k: int) -> dict:
        grid = [[1, 2, 0], [k % 10, 1, 2]]
        swap = {1: 2, 2: 1}
        return {"input": grid, "output": [[swap.get(v, v) for v in row] for row in grid]}
    return {"train": [pair(i) for i in range(n_train)], "test": [pair(i + 5) for i in range(n_test)]}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread is faster, and far faster on a shared, loaded CPU (no OpenMP spinning).
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def write_json(tmp_path: Path):
    def write(name: str, obj: object) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        return path
    return write


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run `sage-distill ARGS` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from sage_distill.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["sage-distill", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err
    return run


def tiny_policy(folder: Path, **kw) -> ControlPolicy:  # noqa: F821
    """A random tiny policy whose FiLM layers and normalisers are not at their starting values, so that the
    chunk depends on every input (FiLM starts at zero: the observation would not reach the actions)."""
    import torch

    from sage_distill.robot.policies.sage_control import ControlConfig, ControlPolicy
    from sage_distill.robot.train import save_policy

    torch.manual_seed(0)
    cfg = ControlConfig(width=32, depth=2, chunk=4, n_action_steps=4, flow_steps=3, **kw)
    policy = ControlPolicy(cfg)
    for block in policy.blocks:
        block.film.reset_parameters()
    policy.set_normalizers(torch.randn(64, 8) * 3 + 1, torch.randn(64, cfg.state_dim) * 2 - 1)
    save_policy(folder, policy.state_dict(), cfg, ["reach-v3", "push-v3"])
    return policy.eval()
