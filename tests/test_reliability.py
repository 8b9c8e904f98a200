"""The contract of every command this suite covers, case by case: bad input gives exit 2, exactly one
stderr line starting with `error:`, and nothing written. CASES is the source of the table in
docs/RELIABILITY.md (`python tests/test_reliability.py` prints the counts per command).

Each case is (command, id, argv, mutate): argv may hold {w} (the case's copy of the world, see
reliability_world.py); `mutate(w)` breaks one input file before the command runs."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reliability_world import KEY, build_world, copy_world, snapshot  # noqa: E402

Mutate = Callable[[Path], None] | None


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def f(w: Path) -> None:
        p = w / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return f


def _json(name: str, obj: object) -> Callable[[Path], None]:
    return _write(name, json.dumps(obj))


def _edit_json(name: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def f(w: Path) -> None:
        obj = json.loads((w / name).read_text())
        fn(obj)
        (w / name).write_text(json.dumps(obj))
    return f


def _manifest(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    return _edit_json("store/manifest.json", fn)


def _truncate(name: str, keep: int = 100) -> Callable[[Path], None]:
    def f(w: Path) -> None:
        p = w / name
        p.write_bytes(p.read_bytes()[:keep])
    return f


def _yaml(text: str) -> Callable[[Path], None]:
    return _write("bad.yaml", text)


def _set(d: dict, path: str, value: object) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d[k]
    d[last] = value


DV = ["data", "validate", "{w}/x.json"]
TASK = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[1]]}]}
GOOD_TASK = json.dumps(TASK)
RUN = ["run", "--challenges", "{w}/challenges.json", "--model", "{w}/model", "--out", "{w}/out", "--no-progress"]
RUNC = [*RUN, "--config", "{w}/bad.yaml"]
EXTRACT = ["extract", "--teacher", "hf", "--weights", "{w}/hf", "--dataset", "arc1", "--split", "training",
           "--out", "{w}/store2", "--limit", "1"]
RENDER = ["render", "--file", "{w}/challenges.json", "--task", "t1", "--out", "{w}/t.png"]
SCORE = ["score", "--predictions", "{w}/predictions.json", "--solutions", "{w}/solutions.json"]
BASE = ["baseline", "--challenges", "{w}/challenges.json", "--out", "{w}/b.json"]
SHOW = ["trace", "show", "{w}/trace.jsonl", "--out", "{w}/tl.png"]
FV = ["features", "validate", "{w}/store"]
PRED = ["predict", "--model", "{w}/model", "--challenges", "{w}/challenges.json", "--out", "{w}/pred/p.json"]
EVAL = ["eval", "--model", "{w}/model", "--dataset", "arc1", "--limit", "1", "--out", "{w}/ev"]
TRAIN = ["train", "--config", "{w}/t.yaml"]
GOOD_TRAIN = "out_dir: {w}/run\npreset: tiny\noptim: {steps: 2, rows: 1, row_len: 2048}\n"

# robot: a tiny state-only dataset, a tiny policy and a cut evaluation (reliability_world.build_robot_world)
RCOL = ["robot", "collect", "--tasks", "reach-v3", "--episodes", "1", "--image-size", "0", "--out", "{w}/col"]
RTRAIN = ["robot", "train", "--data", "{w}/robot_data", "--out", "{w}/rt", "--obs", "state", "--steps", "1"]
RTRAINC = [*RTRAIN, "--config", "{w}/bad.yaml"]
RTRAIN_RESUME = ["robot", "train", "--data", "{w}/robot_data", "--out", "{w}/policy", "--obs", "state"]
REVAL = ["robot", "eval", "--policy", "{w}/policy", "--tasks", "reach-v3", "--episodes", "2", "--out", "{w}/rev"]
REVAL_PART = ["robot", "eval", "--policy", "{w}/policy", "--tasks", "reach-v3", "--episodes", "2",
              "--out", "{w}/ev_partial"]
RLAT = ["robot", "latency", "--policy", "{w}/policy", "--task", "reach-v3"]
RQUANT = ["robot", "quantize", "--policy", "{w}/policy", "--out", "{w}/rq"]
RIRP = ["robot", "irp", "--policy", "{w}/policy", "--tasks", "reach-v3", "--episodes", "1", "--out", "{w}/ri"]
RCONV = ["robot", "convert", "{w}/robot_data", "--out", "{w}/conv"]
RSHOW = ["robot", "show", "{w}/robot_data"]
# robot dagger: the world's tiny policy's model, so that --policy {w}/policy fits (checks only; no case rolls out)
RDAG_YAML = "obs: state\nwidth: 16\ndepth: 1\nchunk: 4\nn_action_steps: 2\nflow_steps: 2\nbatch: 4\nwarmup: 1\n"
RDAG = ["robot", "dagger", "--data", "{w}/robot_data", "--out", "{w}/dg", "--config", "{w}/bad.yaml", "--rounds", "1",
        "--episodes", "1", "--steps", "1"]
RDAG_STATE = "dg/dagger_state.json"
RINFO = "robot_data/meta/info.json"
PCFG = "policy/config.json"
OUTSIDE = "../outside/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODE_ROW = {"task": "reach-v3", "protocol": "heldout", "seed": 0, "flow_steps": 2, "success": False, "steps": 500}


def _partial(name: str, rows: str = "", views: int = 8, header: bool = True) -> Callable[[Path], None]:
    """A killed predict's partial answers file beside `name`, with the real settings header (made with --views
    `views`) and the given answer lines."""
    def f(w: Path) -> None:
        from sage_distill.evaluation.predict import PredictConfig, resume_settings

        path = w / f"{name}.partial.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = resume_settings(w / "model", PredictConfig(views=views), w / "challenges.json")
        path.write_text((json.dumps({"settings": settings}) + "\n" if header else "") + rows)
    return f


PARTIAL_ROW = json.dumps({"task": "t1", "attempts": [{"attempt_1": [[1]], "attempt_2": [[1]]}], "views": 8,
                          "invalid": 0, "seconds": 0.1}) + "\n"


def _train_yaml(text: str) -> Callable[[Path], None]:
    def f(w: Path) -> None:
        (w / "t.yaml").write_text(text.replace("{w}", str(w)))
    return f


def _with(argv: list[str], option: str, value: str) -> list[str]:
    out = list(argv)
    if option in out:
        out[out.index(option) + 1] = value
    else:
        out += [option, value]
    return out


CASES: list[tuple[str, str, list[str], Mutate]] = [
    # ---- predict
    *[("predict", f"{o} {v}", _with(PRED, o, v), None) for o, v in [
        ("--views", "0"), ("--views", "-3"), ("--views", "5000"), ("--views", "many"), ("--adapt-minutes", "-1"),
        ("--minutes", "0"), ("--minutes", "-2"), ("--device", "tpu"), ("--device", "cuda"), ("--batch", "-1"),
        ("--limit", "0"), ("--limit", "-1"), ("--seed", "-1"), ("--seed", "4294967296"), ("--batch", "5000"),
        ("--minutes", "inf"), ("--adapt-minutes", "nan"), ("--out", "{w}/adir"), ("--model", "{w}/nope"),
        ("--model", "{w}/afile.txt"), ("--model", "{w}/adir"), ("--challenges", "{w}/nope.json"),
        ("--adapt-mode", "both"), ("--drafts", "-1"), ("--drafts", "17"), ("--drafts", "some")]],
    ("predict", "truncated weights", PRED, _truncate("model/model.safetensors")),
    ("predict", "config.json not JSON", PRED, _write("model/config.json", "{")),
    ("predict", "tasks.json missing", PRED, lambda w: (w / "model/tasks.json").unlink()),
    ("predict", "challenges not JSON", PRED, _write("challenges.json", "{")),
    ("predict", "challenges cell 12", PRED,
     _json("challenges.json", {"t1": {**TASK, "train": [{"input": [[12]], "output": [[1]]}]}})),
    ("predict", "challenges task id ../x", PRED, _json("challenges.json", {"../x": TASK})),
    ("predict", "resume: other --views", PRED, _partial("pred/p.json", PARTIAL_ROW, views=3)),
    ("predict", "resume: other --drafts", _with(PRED, "--drafts", "0"), _partial("pred/p.json", PARTIAL_ROW)),
    ("predict", "resume: other --adapt-mode", _with(PRED, "--adapt-mode", "rows"),
     _partial("pred/p.json", PARTIAL_ROW)),
    ("predict", "resume: other --model", _with(PRED, "--model", "{w}/m2"), lambda w: (
        shutil.copytree(w / "model", w / "m2"), _edit_json("m2/config.json", lambda c: c.update(palette_views=True))(w),
        _partial("pred/p.json", PARTIAL_ROW)(w))),
    ("predict", "resume: a line not JSON", PRED, _partial("pred/p.json", "{\n" + PARTIAL_ROW)),
    ("predict", "resume: a task not in the challenges", PRED, _partial("pred/p.json", PARTIAL_ROW.replace("t1", "t9"))),
    ("predict", "resume: a cell 12", PRED, _partial("pred/p.json", PARTIAL_ROW.replace("[[1]]", "[[12]]", 1))),
    ("predict", "resume: a task twice", PRED, _partial("pred/p.json", PARTIAL_ROW * 2)),
    ("predict", "resume: no settings header", PRED, _partial("pred/p.json", PARTIAL_ROW, header=False)),
    *[("predict", f"config.json {case}", PRED, _edit_json("model/config.json", lambda c, u=update: c.update(u)))
      for case, update in [("num_tasks 1e9 (256 GB)", {"num_tasks": 1e9}), ("hidden 100000", {"hidden": 100000}),
                           ("heads 3 (odd head width)", {"heads": 3}), ("loops 1000", {"loops": 1000}),
                           ("disagrees with the weights", {"hidden": 128}),
                           ("~1 TB within every bound", {"hidden": 8192, "heads": 64, "layers": 128})]],
    # ---- eval
    *[("eval", f"{o} {v}", _with(EVAL, o, v), None) for o, v in [
        ("--views", "0"), ("--minutes", "0"), ("--dataset", "arc9"), ("--split", "test"), ("--device", "tpu"),
        ("--device", "cuda"), ("--limit", "0"), ("--model", "{w}/nope"), ("--adapt-minutes", "-5"),
        ("--adapt-mode", "whole")]],
    ("eval", "truncated weights", EVAL, _truncate("model/model.safetensors")),
    ("eval", "resume: other --views", EVAL, _partial("ev/predictions.json", views=3)),
    # ---- train
    *[("train", case, TRAIN, _train_yaml(text)) for case, text in [
        ("empty config", ""), ("config a list", "- 1\n"), ("lr negative", GOOD_TRAIN + "optim: {lr: -1}\n"),
        ("steps negative", "optim: {steps: -5}\n"), ("steps 0", "optim: {steps: 0}\n"),
        ("unknown key", "optim: {stepz: 5}\n"), ("preset nope", "preset: huge\n"),
        ("hidden 8", "model: {hidden: 8}\n"), ("rows 0", "optim: {rows: 0}\n"),
        ("row_len 10", "optim: {row_len: 10}\n"),
        ("snapshot 2", "snapshots: [2]\n"), ("workers -1", "workers: -1\n"), ("max_minutes 0", "max_minutes: 0\n"),
        ("dataset nope", "data: {training: [[arc9, training]]}\n"), ("not YAML", "a: [\n")]],
    ("train", "config missing", _with(TRAIN, "--config", "{w}/nope.yaml"), None),
    ("train", "config a directory", _with(TRAIN, "--config", "{w}/adir"), None),
    ("train", "--set without =", [*TRAIN, "--set", "optim.steps"], _train_yaml(GOOD_TRAIN)),
    ("train", "--set a bad value", [*TRAIN, "--set", "optim.lr=-3"], _train_yaml(GOOD_TRAIN)),
    ("train", "--resume a missing run", [*TRAIN, "--resume", "{w}/norun"], _train_yaml(GOOD_TRAIN)),
    # ---- demo
    ("demo", "--model without a model", ["demo", "--model", "{w}/adir", "--out", "{w}/demo"], None),
    ("demo", "--tasks 0", ["demo", "--tasks", "0", "--out", "{w}/demo"], None),
    ("demo", "--views 0", ["demo", "--views", "0", "--out", "{w}/demo"], None),
    # ---- data list
    ("data list", "extra argument", ["data", "list", "arc1"], None),
    ("data list", "unknown option", ["data", "list", "--json"], None),
    # ---- data stats
    ("data stats", "unknown dataset", ["data", "stats", "--dataset", "nope"], None),
    ("data stats", "empty dataset name", ["data", "stats", "--dataset", ""], None),
    ("data stats", "dataset as a path", ["data", "stats", "--dataset", "../../etc/passwd"], None),
    ("data stats", "missing --dataset", ["data", "stats"], None),
    ("data stats", "unknown option", ["data", "stats", "--dataset", "arc1", "--csv"], None),
    ("data stats", "value given to a flag", ["data", "stats", "--dataset", "arc1", "--json=yes"], None),
    # ---- data validate (one problem -> one line)
    ("data validate", "missing file", ["data", "validate", "{w}/nope.json"], None),
    ("data validate", "folder without json", ["data", "validate", "{w}/adir"], None),
    ("data validate", "not JSON", DV, _write("x.json", "{nope")),
    ("data validate", "binary file", DV, _write("x.json", b"\xff\xfe\x00\x01")),
    ("data validate", "empty file", DV, _write("x.json", "")),
    ("data validate", "top level a list", DV, _json("x.json", [TASK])),
    ("data validate", "empty object", DV, _json("x.json", {})),
    ("data validate", "task id ../../etc/x", DV, _json("x.json", {"../../etc/x": TASK})),
    ("data validate", "task id too long", DV, _json("x.json", {"a" * 65: TASK})),
    ("data validate", "task id with a space", DV, _json("x.json", {"a b": TASK})),
    ("data validate", "cell 10", DV,
     _json("x.json", {"t": {**TASK, "train": [{"input": [[10]], "output": [[1]]}]}})),
    ("data validate", "ragged grid", DV,
     _json("x.json", {"t": {**TASK, "train": [{"input": [[1, 2], [1]], "output": [[1]]}]}})),
    ("data validate", "bool cell", DV,
     _json("x.json", {"t": {**TASK, "train": [{"input": [[True]], "output": [[1]]}]}})),
    ("data validate", "31 rows", DV,
     _json("x.json", {"t": {**TASK, "train": [{"input": [[1]] * 31, "output": [[1]]}]}})),
    ("data validate", "empty train", DV, _json("x.json", {"t": {**TASK, "train": []}})),
    ("data validate", "missing test", DV, _json("x.json", {"t": {"train": TASK["train"]}})),
    ("data validate", "no paths", ["data", "validate"], None),
    # ---- data export
    ("data export", "unknown dataset", ["data", "export", "--dataset", "nope", "--split", "evaluation",
                                        "--out", "{w}/e"], None),
    ("data export", "unknown split", ["data", "export", "--dataset", "arc1", "--split", "test", "--out", "{w}/e"],
     None),
    ("data export", "--out an existing file", ["data", "export", "--dataset", "arc1", "--split", "evaluation",
                                               "--out", "{w}/afile.txt"], None),
    ("data export", "--out under a file", ["data", "export", "--dataset", "arc1", "--split", "evaluation",
                                           "--out", "{w}/afile.txt/sub"], None),
    ("data export", "missing --out", ["data", "export", "--dataset", "arc1", "--split", "evaluation"], None),
    ("data export", "missing --split", ["data", "export", "--dataset", "arc1", "--out", "{w}/e"], None),
    # ---- baseline
    ("baseline", "missing challenges", _with(BASE, "--challenges", "{w}/nope.json"), None),
    ("baseline", "challenges a folder", _with(BASE, "--challenges", "{w}/adir"), None),
    ("baseline", "unknown method", [*BASE, "--method", "oracle"], None),
    ("baseline", "--out an existing folder", _with(BASE, "--out", "{w}/adir"), None),
    ("baseline", "--out under a file", _with(BASE, "--out", "{w}/afile.txt/b.json"), None),
    ("baseline", "challenges not JSON", _with(BASE, "--challenges", "{w}/x.json"), _write("x.json", "[1,")),
    ("baseline", "challenges a list", _with(BASE, "--challenges", "{w}/x.json"), _json("x.json", [])),
    ("baseline", "challenges empty", _with(BASE, "--challenges", "{w}/x.json"), _json("x.json", {})),
    ("baseline", "task id ../../etc/x", _with(BASE, "--challenges", "{w}/x.json"),
     _json("x.json", {"../../etc/x": TASK})),
    # ---- score
    ("score", "missing predictions", _with(SCORE, "--predictions", "{w}/nope.json"), None),
    ("score", "predictions not JSON", _with(SCORE, "--predictions", "{w}/x.json"), _write("x.json", "{")),
    ("score", "predictions a list", _with(SCORE, "--predictions", "{w}/x.json"), _json("x.json", [])),
    ("score", "prediction task id ../x", _with(SCORE, "--predictions", "{w}/x.json"),
     _json("x.json", {"../x": [{"attempt_1": [[1]]}]})),
    ("score", "attempt_3", _with(SCORE, "--predictions", "{w}/x.json"),
     _json("x.json", {"t1": [{"attempt_1": [[1]], "attempt_3": [[1]]}]})),
    ("score", "entries not a list", _with(SCORE, "--predictions", "{w}/x.json"), _json("x.json", {"t1": {}})),
    ("score", "too many entries", _with(SCORE, "--predictions", "{w}/x.json"),
     _json("x.json", {"t1": [{"attempt_1": [[1]]}] * 3})),
    ("score", "missing solutions", _with(SCORE, "--solutions", "{w}/nope.json"), None),
    ("score", "solutions empty", _with(SCORE, "--solutions", "{w}/x.json"), _json("x.json", {})),
    ("score", "challenges disagree with solutions", [*SCORE, "--challenges", "{w}/x.json"],
     _json("x.json", {"zz": TASK})),
    # ---- render
    ("render", "both --dataset and --file", [*RENDER, "--dataset", "arc1"], None),
    ("render", "neither --dataset nor --file", ["render", "--task", "t1", "--out", "{w}/t.png"], None),
    ("render", "unknown task", _with(RENDER, "--task", "zz"), None),
    ("render", "--out an existing folder", _with(RENDER, "--out", "{w}/adir"), None),
    ("render", "--out under a file", _with(RENDER, "--out", "{w}/afile.txt/t.png"), None),
    ("render", "--cell-size 1", [*RENDER, "--cell-size", "1"], None),
    ("render", "--cell-size abc", [*RENDER, "--cell-size", "abc"], None),
    ("render", "--cell-size 100000", [*RENDER, "--cell-size", "100000"], None),
    ("render", "missing --file", _with(RENDER, "--file", "{w}/nope.json"), None),
    ("render", "predictions not JSON", [*RENDER, "--predictions", "{w}/x.json"], _write("x.json", "nope")),
    ("render", "solutions for other tasks", [*RENDER, "--solutions", "{w}/x.json"], _json("x.json", {"zz": [[[1]]]})),
    ("render", "unknown split", ["render", "--dataset", "arc1", "--split", "dev", "--task", "x", "--out", "{w}/t.png"],
     None),
    # ---- run
    ("run", "--out an existing file", _with(RUN, "--out", "{w}/afile.txt"), None),
    ("run", "--config a folder", _with(RUN, "--config", "{w}/adir"), None),
    ("run", "--config missing", _with(RUN, "--config", "{w}/nope.yaml"), None),
    ("run", "device: tpu", RUNC, _yaml("device: tpu\n")),
    ("run", "base_budget: -5", RUNC, _yaml("orchestrator: {base_budget: -5}\n")),
    ("run", "base_budget: 0", RUNC, _yaml("orchestrator: {base_budget: 0}\n")),
    ("run", "base_budget: .nan", RUNC, _yaml("orchestrator: {base_budget: .nan}\n")),
    ("run", "floor: 2", RUNC, _yaml("orchestrator: {floor: 2}\n")),
    ("run", "max_workers: 0", RUNC, _yaml("orchestrator: {max_workers: 0}\n")),
    ("run", "max_views: 0", RUNC, _yaml("plugins: {arc_solver: {max_views: 0}}\n")),
    ("run", "adapt_lr: -1", RUNC, _yaml("plugins: {arc_solver: {adapt_lr: -1}}\n")),
    ("run", "unknown key", RUNC, _yaml("orchestrator: {budget: 5}\n")),
    ("run", "config a list", RUNC, _yaml("- a\n- b\n")),
    ("run", "config empty", RUNC, _yaml("")),
    ("run", "config not YAML", RUNC, _yaml("a: [1\n")),
    ("run", "salience weight unknown", RUNC, _yaml("orchestrator: {salience_weights: {fear: 1}}\n")),
    ("run", "--limit 0", [*RUN, "--limit", "0"], None),
    ("run", "--limit -1", [*RUN, "--limit", "-1"], None),
    ("run", "--limit abc", [*RUN, "--limit", "abc"], None),
    ("run", "no model", [a for a in RUN if a not in ("--model", "{w}/model")], None),
    ("run", "--model missing", _with(RUN, "--model", "{w}/nope"), None),
    ("run", "truncated model.safetensors", RUN, _truncate("model/model.safetensors")),
    ("run", "challenges missing", _with(RUN, "--challenges", "{w}/nope.json"), None),
    ("run", "challenge task id ../../etc/x", _with(RUN, "--challenges", "{w}/x.json"),
     _json("x.json", {"../../etc/x": TASK})),
    ("run", "memory is a folder", RUNC, lambda w: (w / "bad.yaml").write_text(f"memory: {w}/adir\n")),
    ("run", "solutions missing", RUNC, lambda w: (w / "bad.yaml").write_text(f"solutions: {w}/nope.json\n")),
    ("run", "solutions lack a task", RUNC, lambda w: ((w / "s.json").write_text('{"t1": [[[2, 1]]]}'),
                                                      (w / "bad.yaml").write_text(f"solutions: {w}/s.json\n"))),
    # ---- trace show
    ("trace show", "missing trace", ["trace", "show", "{w}/nope.jsonl", "--out", "{w}/tl.png"], None),
    ("trace show", "trace a folder", ["trace", "show", "{w}/adir", "--out", "{w}/tl.png"], None),
    ("trace show", "bad JSON line", SHOW, _write("trace.jsonl", "{\"cycle\": 1}\nnope\n{}\n")),
    ("trace show", "binary trace", SHOW, _write("trace.jsonl", b"\xff\xfe\xfa")),
    ("trace show", "no cycle records", SHOW, _write("trace.jsonl", "{\"feedback\": \"k\"}\n")),
    ("trace show", "unknown state", SHOW, _write("trace.jsonl", "{\"cycle\": 1, \"state\": \"SLEEP\"}\n")),
    ("trace show", "energies not a list", SHOW,
     _write("trace.jsonl", "{\"cycle\": 1, \"state\": \"WAKE\", \"plugins\": {\"a\": {\"energies\": 3}}}\n")),
    ("trace show", "record a list", SHOW, _write("trace.jsonl", "[1, 2]\n{\"cycle\": 1, \"state\": \"WAKE\"}\n")),
    ("trace show", "--out an existing folder", _with(SHOW, "--out", "{w}/adir"), None),
    ("trace show", "--out not .png", _with(SHOW, "--out", "{w}/tl.txt"), None),
    ("trace show", "--out a symlink to a file", _with(SHOW, "--out", "{w}/link.png"),
     lambda w: (w / "link.png").symlink_to(w / "afile.txt")),
    # ---- extract
    ("extract", "unknown teacher", _with(EXTRACT, "--teacher", "gpt"), None),
    ("extract", "bad pool", [*EXTRACT, "--pool", "3x4"], None),
    ("extract", "pool 0x0", [*EXTRACT, "--pool", "0x0"], None),
    ("extract", "--batch-size 0", [*EXTRACT, "--batch-size", "0"], None),
    ("extract", "--shard-size -1", [*EXTRACT, "--shard-size", "-1"], None),
    ("extract", "--limit 0", _with(EXTRACT, "--limit", "0"), None),
    ("extract", "--device tpu", [*EXTRACT, "--device", "tpu"], None),
    ("extract", "--weights missing", _with(EXTRACT, "--weights", "{w}/nope"), None),
    ("extract", "--out an existing file", _with(EXTRACT, "--out", "{w}/afile.txt"), None),
    ("extract", "unknown dataset", _with(EXTRACT, "--dataset", "nope"), None),
    ("extract", "unknown split", _with(EXTRACT, "--split", "dev"), None),
    ("extract", "--context all", [*EXTRACT, "--context", "all"], None),
    ("extract", "--store-dtype int8", [*EXTRACT, "--store-dtype", "int8"], None),
    ("extract", "truncated teacher weights", EXTRACT, _truncate("hf/model.safetensors")),
    ("extract", "sage teacher (not extracted)", _with(EXTRACT, "--teacher", "sage"), None),
    # ---- robot collect
    *[("robot collect", f"{o} {v}", _with(RCOL, o, v), None) for o, v in [
        ("--image-size", "-2"), ("--image-size", "7"), ("--image-size", "16"), ("--image-size", "100000"),
        ("--episodes", "0"), ("--episodes", "-1"), ("--episodes", "1000000"), ("--workers", "-1"),
        ("--workers", "1000"), ("--after-success", "-1"), ("--tasks", "push-v9"), ("--tasks", ""),
        ("--tasks", "reach-v3,reach-v3"), ("--out", "{w}/afile.txt"), ("--out", "{w}/afile.txt/sub"),
        ("--out", "{w}/hf")]],
    ("robot collect", "resume: collect_state.json truncated", _with(RCOL, "--out", "{w}/robot_data"),
     _write("robot_data/collect_state.json", '{"failed": [["reach-v3", ')),
    ("robot collect", "resume: collect_state.json seeds not pairs", _with(RCOL, "--out", "{w}/robot_data"),
     _json("robot_data/collect_state.json", {"failed": [["reach-v3"]]})),
    ("robot collect", "resume: other --image-size", _with(_with(RCOL, "--out", "{w}/robot_data"), "--image-size",
                                                         "64"), None),
    ("robot collect", "resume: info.json not JSON", _with(RCOL, "--out", "{w}/robot_data"), _write(RINFO, "{")),
    # ---- robot train
    *[("robot train", f"{o} {v}", _with(RTRAIN, o, v), None) for o, v in [
        ("--device", "tpu"), ("--device", "cuda"), ("--steps", "0"), ("--steps", "-1"), ("--batch", "0"),
        ("--obs", "video"), ("--tasks", "push-v9"), ("--data", "{w}/nope"), ("--data", "{w}/afile.txt"),
        ("--out", "{w}/afile.txt"), ("--out", "{w}/afile.txt/sub"), ("--config", "{w}/nope.yaml")]],
    *[("robot train", case, RTRAINC, _yaml(text)) for case, text in [
        ("width: 100000 (40 GB)", "width: 100000\n"), ("flow_steps: 65", "flow_steps: 65\n"),
        ("lr: .nan", "lr: .nan\n"), ("n_action_steps > chunk", "chunk: 4\nn_action_steps: 8\n"),
        ("unknown key", "widht: 16\n"), ("device: tpu", "device: tpu\n"), ("config a list", "- 1\n"),
        ("tasks: an unknown one", "tasks: [reach-v3, push-v9]\n"), ("seed: 2**65", "seed: 36893488147419103232\n")]],
    ("robot train", "data_path leaves the dataset", RTRAIN, _edit_json(RINFO, lambda i: i.update(data_path=OUTSIDE))),
    ("robot train", "dataset fps 0.0001", RTRAIN, _edit_json(RINFO, lambda i: i.update(fps=0.0001))),
    ("robot train", "resume: state.json truncated", RTRAIN_RESUME, _write("policy/train_state/state.json", '{"st')),
    ("robot train", "resume: state.json step -1", RTRAIN_RESUME,
     _json("policy/train_state/state.json", {"step": -1, "settings": {}})),
    ("robot train", "resume: truncated weights", RTRAIN_RESUME, _truncate("policy/train_state/weights.safetensors")),
    # ---- robot dagger
    *[("robot dagger", f"{o} {v}", _with(RDAG, o, v), _yaml(RDAG_YAML)) for o, v in [
        ("--rounds", "0"), ("--rounds", "101"), ("--episodes", "0"), ("--steps", "0"), ("--workers", "-1"),
        ("--workers", "1000"), ("--device", "tpu"), ("--device", "cuda"), ("--tasks", "push-v9"),
        ("--tasks", "push-v3"), ("--data", "{w}/nope"), ("--data", "{w}/afile.txt"), ("--data", "{w}/adir"),
        ("--out", "{w}/afile.txt"), ("--out", "{w}/afile.txt/sub"), ("--out", "{w}/robot_data/sub"),
        ("--out", "{w}/hf"), ("--config", "{w}/nope.yaml"), ("--policy", "{w}/nope"), ("--policy", "{w}/adir"),
        ("--policy", "{w}/afile.txt")]],
    *[("robot dagger", case, RDAG, _yaml(RDAG_YAML + text)) for case, text in [
        ("config not YAML", "dagger: [\n"), ("unknown key", "dagger: {round: 2}\n"), ("beta 2", "dagger: {beta: 2}\n"),
        ("beta_decay -1", "dagger: {beta_decay: -1}\n"), ("parallel 0", "dagger: {parallel: 0}\n"),
        ("teacher kind sage", "teacher: {kind: sage, path: models/sage-arc}\n"),
        ("teacher with a tokenizer", "teacher: {kind: policy, path: metaworld-expert, tokenizer: t}\n"),
        ("teacher folder missing", "teacher: {kind: policy, path: /nonexistent/sage-teacher}\n"),
        ("start folder missing", "dagger: {start: /nonexistent/sage-policy}\n"), ("minutes set", "minutes: 5\n"),
        ("init set", "init: /nonexistent/sage-policy\n"), ("episodes_per_task set", "episodes_per_task: 3\n")]],
    ("robot dagger", "seeds past the held-out ones", RDAG[:8],  # no --rounds/--episodes over the YAML's
     _yaml(RDAG_YAML + "dagger: {rounds: 100, episodes_per_task: 10000}\n")),
    ("robot dagger", "obs pixels on a state dataset", RDAG, _yaml(RDAG_YAML.replace("state", "pixels"))),
    ("robot dagger", "--policy of another model", [*RDAG, "--policy", "{w}/policy"],
     _yaml(RDAG_YAML.replace("width: 16", "width: 32"))),
    ("robot dagger", "--policy weights truncated", [*RDAG, "--policy", "{w}/policy"],
     lambda w: (_yaml(RDAG_YAML)(w), _truncate("policy/model.safetensors")(w))),
    ("robot dagger", "--policy config.json disagrees with weights", [*RDAG, "--policy", "{w}/policy"],
     lambda w: (_yaml(RDAG_YAML)(w), _edit_json(PCFG, lambda c: c["config"].update(width=32))(w))),
    ("robot dagger", "dataset info.json not JSON", RDAG, lambda w: (_yaml(RDAG_YAML)(w), _write(RINFO, "{")(w))),
    ("robot dagger", "resume: dagger_state.json truncated", RDAG,
     lambda w: (_yaml(RDAG_YAML)(w), _write(RDAG_STATE, '{"settings": ')(w))),
    ("robot dagger", "resume: rounds not a list", RDAG,
     lambda w: (_yaml(RDAG_YAML)(w), _json(RDAG_STATE, {"settings": {}, "rounds": {}})(w))),
    ("robot dagger", "resume: other settings", RDAG,
     lambda w: (_yaml(RDAG_YAML)(w), _json(RDAG_STATE, {"settings": {"seed": 5}, "rounds": []})(w))),
    # ---- robot eval
    *[("robot eval", f"{o} {v}", _with(REVAL, o, v), None) for o, v in [
        ("--device", "tpu"), ("--device", "cuda"), ("--episodes", "0"), ("--episodes", "100000"),
        ("--workers", "-1"), ("--workers", "1000"), ("--flow-steps", "0"), ("--flow-steps", "65"),
        ("--flow-steps", "100000"), ("--videos", "-1"), ("--protocol", "train"), ("--tasks", "push-v9"),
        ("--tasks", "push-v3"), ("--out", "{w}/afile.txt"), ("--out", "{w}/afile.txt/sub"), ("--policy", "{w}/nope"),
        ("--policy", "{w}/adir"), ("--policy", "{w}/afile.txt")]],
    ("robot eval", "config.json not JSON", REVAL, _write(PCFG, "{")),
    ("robot eval", "config.json width 100000", REVAL, _edit_json(PCFG, lambda c: c["config"].update(width=100000))),
    ("robot eval", "config.json disagrees with weights", REVAL,
     _edit_json(PCFG, lambda c: c["config"].update(width=32))),
    ("robot eval", "config.json tasks not a list", REVAL, _edit_json(PCFG, lambda c: c.update(tasks=5))),
    ("robot eval", "truncated weights", REVAL, _truncate("policy/model.safetensors")),
    ("robot eval", "resume: other --episodes", _with(REVAL_PART, "--episodes", "3"), None),
    ("robot eval", "resume: other --flow-steps", [*REVAL_PART, "--flow-steps", "3"], None),
    ("robot eval", "resume: other --tasks", _with(REVAL_PART, "--tasks", "reach-v3,push-v3"),
     _edit_json(PCFG, lambda c: c.update(tasks=[]))),
    ("robot eval", "resume: other --protocol", [*REVAL_PART, "--protocol", "fixed"], None),
    ("robot eval", "resume: another policy", REVAL_PART, _edit_json(PCFG, lambda c: c.update(tasks=["reach-v3"],
                                                                                             note="retrained"))),
    ("robot eval", "resume: a bad line", REVAL_PART,
     _write("ev_partial/episodes.jsonl", "{\n" + json.dumps(EPISODE_ROW) + "\n")),
    ("robot eval", "resume: seed out of range", REVAL_PART,
     _write("ev_partial/episodes.jsonl", json.dumps({**EPISODE_ROW, "seed": 7}) + "\n")),
    ("robot eval", "resume: an episode twice", REVAL_PART,
     _write("ev_partial/episodes.jsonl", (json.dumps(EPISODE_ROW) + "\n") * 2)),
    ("robot eval", "resume: settings truncated", REVAL_PART, _truncate("ev_partial/eval_settings.json", 20)),
    ("robot eval", "resume: no settings file", REVAL_PART, lambda w: (w / "ev_partial/eval_settings.json").unlink()),
    # ---- robot latency
    *[("robot latency", f"{o} {v}", _with(RLAT, o, v), None) for o, v in [
        ("--device", "tpu"), ("--device", "cuda"), ("--flow-steps", "0"), ("--flow-steps", "65"),
        ("--flow-steps", "abc"), ("--flow-steps", ","), ("--flow-steps", "2,2"), ("--task", "push-v9"),
        ("--task", "reach-v3,push-v3"), ("--task", "push-v3"), ("--policy", "{w}/nope")]],
    ("robot latency", "config.json width 100000", RLAT, _edit_json(PCFG, lambda c: c["config"].update(width=100000))),
    ("robot latency", "truncated weights", RLAT, _truncate("policy/model.safetensors")),
    # ---- robot quantize
    *[("robot quantize", f"{o} {v}", _with(RQUANT, o, v), None) for o, v in [
        ("--precision", "int4"), ("--precision", "fp32"), ("--precision", ""), ("--out", "{w}/afile.txt"),
        ("--out", "{w}/afile.txt/sub"), ("--out", "{w}/robot_data"), ("--policy", "{w}/nope"),
        ("--policy", "{w}/adir"), ("--policy", "{w}/afile.txt")]],
    ("robot quantize", "config.json not JSON", RQUANT, _write(PCFG, "{")),
    ("robot quantize", "config.json precision fp16", RQUANT, _edit_json(PCFG, lambda c: c.update(precision="fp16"))),
    ("robot quantize", "config.json disagrees with weights", RQUANT,
     _edit_json(PCFG, lambda c: c["config"].update(width=32))),
    ("robot quantize", "truncated weights", RQUANT, _truncate("policy/model.safetensors")),
    # ---- robot irp
    *[("robot irp", f"{o} {v}", _with(RIRP, o, v), None) for o, v in [
        ("--device", "tpu"), ("--device", "cuda"), ("--episodes", "0"), ("--episodes", "100000"),
        ("--protocol", "train"), ("--tasks", "push-v9"), ("--tasks", "push-v3"), ("--out", "{w}/afile.txt"),
        ("--out", "{w}/afile.txt/sub"), ("--out", "{w}/robot_data"), ("--policy", "{w}/nope"),
        ("--policy", "{w}/adir")]],
    ("robot irp", "config.json precision int3", RIRP, _edit_json(PCFG, lambda c: c.update(precision="int3"))),
    ("robot irp", "truncated weights", RIRP, _truncate("policy/model.safetensors")),
    # ---- robot convert
    ("robot convert", "source missing", ["robot", "convert", "{w}/nope", "--out", "{w}/conv"], None),
    ("robot convert", "source a file", ["robot", "convert", "{w}/afile.txt", "--out", "{w}/conv"], None),
    ("robot convert", "source not a dataset", ["robot", "convert", "{w}/adir", "--out", "{w}/conv"], None),
    *[("robot convert", f"--out {v}", _with(RCONV, "--out", v), None) for v in [
        "{w}/afile.txt", "{w}/afile.txt/sub", "{w}/robot_data/sub", "{w}/hf"]],
    ("robot convert", "data_path leaves the dataset", RCONV, _edit_json(RINFO, lambda i: i.update(data_path=OUTSIDE))),
    ("robot convert", "fps NaN", RCONV, _edit_json(RINFO, lambda i: i.update(fps=float("nan")))),
    ("robot convert", "fps 0.0001", RCONV, _edit_json(RINFO, lambda i: i.update(fps=0.0001))),
    ("robot convert", "info.json not JSON", RCONV, _write(RINFO, "{")),
    ("robot convert", "codebase_version v9", RCONV, _edit_json(RINFO, lambda i: i.update(codebase_version="v9"))),
    # ---- robot show
    ("robot show", "missing folder", ["robot", "show", "{w}/nope"], None),
    ("robot show", "a file", ["robot", "show", "{w}/afile.txt"], None),
    ("robot show", "info.json not JSON", RSHOW, _write(RINFO, "{")),
    ("robot show", "fps inf", RSHOW, _edit_json(RINFO, lambda i: i.update(fps=float("inf")))),
    ("robot show", "fps 0", RSHOW, _edit_json(RINFO, lambda i: i.update(fps=0))),
    ("robot show", "data_path leaves the dataset", RSHOW, _edit_json(RINFO, lambda i: i.update(data_path=OUTSIDE))),
    ("robot show", "data_path absolute", RSHOW, _edit_json(RINFO, lambda i: i.update(data_path="/etc/passwd"))),
    ("robot show", "truncated data file", RSHOW, _truncate("robot_data/data/chunk-000/file-000.parquet")),
    ("robot show", "truncated episode metadata", RSHOW,
     _truncate("robot_data/meta/episodes/chunk-000/file-000.parquet")),
    ("robot show", "value given to --json", [*RSHOW, "--json=yes"], None),
    # ---- features validate
    ("features validate", "missing folder", ["features", "validate", "{w}/nope"], None),
    ("features validate", "a file, not a folder", ["features", "validate", "{w}/afile.txt"], None),
    ("features validate", "no manifest", ["features", "validate", "{w}/adir"], None),
    ("features validate", "manifest not JSON", FV, _write("store/manifest.json", "{")),
    ("features validate", "manifest a list", FV, _json("store/manifest.json", [])),
    ("features validate", "unknown format", FV, _manifest(lambda m: m.update(format="other/2"))),
    ("features validate", "shard path ../../etc/passwd", FV,
     _manifest(lambda m: m["shards"][0].update(file="../../etc/passwd"))),
    ("features validate", "absolute shard path", FV, _manifest(lambda m: m["shards"][0].update(file="/etc/passwd"))),
    ("features validate", "row task id ../../etc/x", FV, _manifest(lambda m: m["rows"][0].update(task="../../etc/x"))),
    ("features validate", "spec task id with /", FV, _manifest(lambda m: m["spec"].update(tasks=["a/b"]))),
    ("features validate", "shard_size 0", FV, _manifest(lambda m: m["spec"].update(shard_size=0))),
    ("features validate", "dtype int8", FV, _manifest(lambda m: m["spec"].update(dtype="int8"))),
    ("features validate", "row key not hex", FV, _manifest(lambda m: m["rows"][0].update(key="../x"))),
    ("features validate", "shards not a list", FV, _manifest(lambda m: m.update(shards={}))),
    ("features validate", "shard index repeated", FV, _manifest(lambda m: m["shards"][1].update(index=0))),
    ("features validate", "incomplete", FV, _manifest(lambda m: m.update(complete=False))),
    ("features validate", "truncated shard", FV, _truncate("store/shard-00000.safetensors")),
    ("features validate", "missing stats", FV, lambda w: (w / "store/stats.safetensors").unlink()),
    ("features validate", "shard checksum altered", FV,
     _manifest(lambda m: m["shards"][0].update(sha256=KEY + KEY))),
]


@pytest.fixture(scope="module")
def world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("world"))


def run_case(cli, template: Path, w: Path, argv: list[str], mutate: Mutate) -> tuple[int, str, str, list[str]]:
    copy_world(template, w)
    if mutate is not None:
        mutate(w)
    before = snapshot(w)
    code, out, err = cli(*[a.replace("{w}", str(w)) for a in argv])
    after = snapshot(w)
    written = sorted(set(after) - set(before)) + sorted(k for k in before if k in after and after[k] != before[k])
    return code, out, err, written


@pytest.mark.parametrize("command,case,argv,mutate", CASES, ids=[f"{c}: {i}" for c, i, _, _ in CASES])
def test_bad_input(cli, world_template: Path, tmp_path: Path, command: str, case: str, argv: list[str],
                   mutate: Mutate) -> None:
    code, out, err, written = run_case(cli, world_template, tmp_path / "w", argv, mutate)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr not one error line: {err[-2000:]}"
    assert "Traceback" not in err
    assert written == [], f"written on bad input: {written}"


def test_the_world_is_valid(cli, world_template: Path, tmp_path: Path) -> None:
    """The cases break one thing each: unbroken, the same commands succeed."""
    w = copy_world(world_template, tmp_path / "w")
    for argv in (["data", "validate", "{w}/challenges.json"], BASE, SCORE, RENDER, SHOW, FV, EXTRACT, RSHOW, RCONV):
        code, _, err = cli(*[a.replace("{w}", str(w)) for a in argv])
        assert code == 0, (argv, err)


def test_every_arc_command_succeeds_on_the_unbroken_world(cli, world_template: Path, tmp_path: Path) -> None:
    """The happy path of the commands that do the work (the robot ones run Meta-World and have theirs in
    test_robot_control.py / test_robot_dagger.py): exit 0 and the promised files."""
    w = copy_world(world_template, tmp_path / "w")
    _train_yaml(GOOD_TRAIN)(w)
    runs = [
        (PRED, ["pred/p.json", "pred/p.stats.json"]),
        ([*PRED[:-1], "{w}/pred/q.json", "--rescore", "2", "--views", "2"], ["pred/q.json", "pred/q.votes.json"]),
        ([*EVAL, "--views", "1"], ["ev/scores.json", "ev/predictions.json"]),
        (TRAIN, ["run/model.safetensors.index.json", "run/train_state/state.json", "run/metrics.jsonl"]),
        (RUN, ["out/predictions.json"]),
        (["demo", "--model", "{w}/model", "--tasks", "1", "--views", "1", "--runtime", "torch", "--no-robot",
          "--out", "{w}/demo"],
         ["demo/scores.json"]),
        (["export", "--model", "{w}/model", "--out", "{w}/onnx"], ["onnx/sage-onnx.json"]),
        (["data", "list"], []), (["data", "stats", "--dataset", "arc1"], []),
        (["data", "export", "--dataset", "arc1", "--split", "evaluation", "--out", "{w}/exp"],
         ["exp/challenges.json", "exp/solutions.json"]),
    ]
    for argv, files in runs:
        code, _, err = cli(*[a.replace("{w}", str(w)) for a in argv])
        assert code == 0, (argv, err[-2000:])
        assert all((w / f).is_file() for f in files), (argv, [f for f in files if not (w / f).is_file()])


def test_unexpected_errors_are_one_line_and_exit_1(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sage_distill.arc import commands

    def boom(*a, **k):
        raise ZeroDivisionError("boom\nsecond line")

    monkeypatch.setattr(commands, "list_datasets", boom)
    monkeypatch.delenv("SAGE_DEBUG", raising=False)
    code, _, err = cli("data", "list")
    assert code == 1 and err.strip().splitlines() == [
        "error: unexpected ZeroDivisionError: boom second line (rerun with --debug for the traceback)"]
    code, _, err = cli("--debug", "data", "list")
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: unexpected")
    import os

    assert "SAGE_DEBUG" not in os.environ  # --debug is read per call, never left behind
    monkeypatch.setenv("SAGE_DEBUG", "1")
    code, _, err = cli("data", "list")
    assert code == 1 and "Traceback" in err


def counts() -> dict[str, int]:
    out: dict[str, int] = {}
    for command, *_ in CASES:
        out[command] = out.get(command, 0) + 1
    return out


def classify(argv: list[str], mutate: Mutate, template: Path, w: Path) -> dict[str, bool]:
    """One case run through the real entry point outside pytest: what a user would have seen."""
    import contextlib
    import io

    from sage_distill.cli import main

    def cli(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        sys.argv = ["sage-distill", *args]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException as e:  # an entry point without the error path: a traceback
                import traceback

                traceback.print_exc(file=err)
                code = 1
                del e
        return code, out.getvalue(), err.getvalue()

    if os.environ.get("RELIABILITY_BEFORE"):  # measuring a version without these options
        argv = [a for a in argv if a != "--no-progress"]
    code, _, err, written = run_case(cli, template, w, argv, mutate)
    lines = err.strip().splitlines()
    traceback_seen = "Traceback" in err or "error: unexpected" in err or code not in (0, 2)
    return {"clear": code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not written,
            "traceback": traceback_seen, "silent": code == 0, "left": bool(written)}


def table() -> str:
    """The markdown table of docs/RELIABILITY.md, measured now."""
    import tempfile

    rows: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as d:
        template = build_world(Path(d) / "world")
        for i, (command, case, argv, mutate) in enumerate(CASES):
            if os.environ.get("RELIABILITY_BEFORE") and case == "--cell-size 100000":
                r = {"clear": False, "traceback": True, "silent": False, "left": False}  # killed: out of memory
            else:
                r = classify(argv, mutate, template, Path(d) / f"case{i}")
            row = rows.setdefault(command, [0, 0, 0, 0, 0])
            row[0] += 1
            for j, k in enumerate(("clear", "traceback", "silent", "left"), 1):
                row[j] += r[k]
    lines = ["| command | bad inputs tried | clear error (exit 2, one line) | tracebacks | silent accepts "
             "| files left behind |", "|---|---:|---:|---:|---:|---:|"]
    total = [0] * 5
    for command, row in rows.items():
        lines.append(f"| `{command}` | " + " | ".join(map(str, row)) + " |")
        total = [a + b for a, b in zip(total, row, strict=True)]
    lines.append("| **total** | " + " | ".join(f"**{v}**" for v in total) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
