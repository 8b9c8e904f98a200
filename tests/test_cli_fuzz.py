"""Hypothesis fuzz per command: generated bad values must give exit 2, exactly one stderr line starting
with `error:`, and nothing written. A fixed, small example budget keeps the whole file fast; a new
option inherits the contract by adding a strategy here."""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from reliability_world import build_world, copy_world, snapshot  # noqa: E402
from sage_distill.arc.datasets import SHIPPED, SPLITS  # noqa: E402
from sage_distill.errors import TASK_ID_RE  # noqa: E402
from sage_distill.evaluation.baselines import BASELINES  # noqa: E402

FUZZ = settings(max_examples=12, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Option values as a user might mistype them: no leading '-', no NUL (argv cannot carry one).
words = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                max_size=12).filter(lambda s: not s.startswith("-") and s.strip() == s and s != "")
bad_ids = st.text(min_size=0, max_size=80).filter(lambda s: not TASK_ID_RE.fullmatch(s))
not_int = st.one_of(st.text(st.characters(whitelist_categories=("L", "P")), min_size=1, max_size=6)
                    .filter(lambda s: not s.startswith("-")), st.floats(allow_nan=False).map(lambda f: f"{f}.5"))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_world(tmp_path_factory.mktemp("fuzzworld"))


def check(cli, template: Path, argv: list[str], prepare=None, lines: int | None = 1) -> None:
    """Run argv ({w} = a fresh copy of the world) and assert the contract."""
    with tempfile.TemporaryDirectory() as d:
        w = copy_world(template, Path(d) / "w")
        if prepare is not None:
            prepare(w)
        before = snapshot(w)
        code, _, err = cli(*[a.replace("{w}", str(w)) for a in argv])
        after = snapshot(w)
    got = err.strip().splitlines()
    assert code == 2, f"{argv}: exit {code}: {err[-1000:]}"
    assert got and all(g.startswith("error: ") for g in got), err[-1000:]
    if lines is not None:
        assert len(got) == lines, err[-1000:]
    assert after == before, f"{argv}: wrote {sorted(set(after) ^ set(before))}"


@FUZZ
@given(words)
def test_data_list(cli, template: Path, extra: str) -> None:
    check(cli, template, ["data", "list", extra])


@FUZZ
@given(words.filter(lambda s: s not in SHIPPED))
def test_data_stats(cli, template: Path, name: str) -> None:
    check(cli, template, ["data", "stats", "--dataset", name])


@FUZZ
@given(st.one_of(st.integers().filter(lambda v: not 0 <= v <= 9), st.text(max_size=3), st.none(),
                 st.floats(), st.booleans(), st.lists(st.integers(0, 9), max_size=2)),
       st.sampled_from(["train", "test"]), st.booleans())
def test_data_validate(cli, template: Path, cell: object, part: str, output: bool) -> None:
    task = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}],
            "test": [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}]}
    task[part][0]["output" if output else "input"][1][0] = cell
    check(cli, template, ["data", "validate", "{w}/x.json"], lambda w: (w / "x.json").write_text(json.dumps(task)))


@FUZZ
@given(words.filter(lambda s: s not in SPLITS))
def test_data_export(cli, template: Path, split: str) -> None:
    check(cli, template, ["data", "export", "--dataset", "arc1", "--split", split, "--out", "{w}/e"])


@FUZZ
@given(words.filter(lambda s: s not in BASELINES))
def test_baseline(cli, template: Path, method: str) -> None:
    check(cli, template, ["baseline", "--challenges", "{w}/challenges.json", "--out", "{w}/b.json",
                          "--method", method])


@FUZZ
@given(bad_ids)
def test_score(cli, template: Path, task_id: str) -> None:
    check(cli, template, ["score", "--predictions", "{w}/x.json", "--solutions", "{w}/solutions.json"],
          lambda w: (w / "x.json").write_text(json.dumps({task_id: [{"attempt_1": [[1]]}]})))


@FUZZ
@given(st.one_of(st.integers().filter(lambda v: not 2 <= v <= 200).map(str), not_int))
def test_render(cli, template: Path, cell_size: str) -> None:
    check(cli, template, ["render", "--file", "{w}/challenges.json", "--task", "t1", "--out", "{w}/t.png",
                          "--cell-size", cell_size])


# Real config keys only (an unknown key is refused whatever its value, so fuzzing one proves nothing;
# test_run_fuzzed_keys_exist keeps this list honest), each with values outside its constraint.
RUN_BAD_VALUES = {
    "orchestrator.base_budget": st.floats(max_value=0) | st.just(math.inf),
    "orchestrator.floor": st.floats(min_value=1.0001, allow_infinity=False) | st.floats(max_value=-1e-9),
    "orchestrator.max_workers": st.integers(max_value=0),
    "orchestrator.trust.rate_truth": st.floats(min_value=1.0001) | st.floats(max_value=-1e-9),
    "plugins.arc_solver.max_views": st.integers(max_value=0) | st.integers(min_value=1025),
    "plugins.arc_solver.adapt_lr": st.floats(max_value=0),
    "plugins.arc_solver.energy_threshold": st.floats(min_value=1.0001) | st.floats(max_value=-1e-9),
    "plugins.memory_retrieval.k": st.integers(max_value=0),
    "device": words.filter(lambda s: s not in ("cpu", "mps") and not s.startswith("cuda")),
    "stream.idle_every": st.integers(max_value=-1),
    "seed": st.integers(max_value=-1),
}
RUN_BAD = st.one_of(*[st.tuples(st.just(k), v) for k, v in RUN_BAD_VALUES.items()])


def test_run_fuzzed_keys_exist() -> None:
    from pydantic import BaseModel

    from sage_distill.irp.config import RunConfig

    for path in RUN_BAD_VALUES:
        model: type[BaseModel] = RunConfig
        *head, last = path.split(".")
        for key in head:
            model = model.model_fields[key].annotation
        assert last in model.model_fields, f"{path} is not a config key"


@FUZZ
@given(RUN_BAD)
def test_run_config(cli, template: Path, bad: tuple[str, object]) -> None:
    path, value = bad
    cfg: dict = {}
    node = cfg
    *head, last = path.split(".")
    for k in head:
        node = node.setdefault(k, {})
    node[last] = value
    check(cli, template, ["run", "--challenges", "{w}/challenges.json", "--model", "{w}/model", "--out", "{w}/out",
                          "--config", "{w}/bad.yaml", "--no-progress"],
          lambda w: (w / "bad.yaml").write_text(yaml.safe_dump(cfg)))


@FUZZ
@given(st.integers(max_value=0).map(str) | not_int)
def test_run_limit(cli, template: Path, limit: str) -> None:
    check(cli, template, ["run", "--challenges", "{w}/challenges.json", "--model", "{w}/model", "--out", "{w}/out",
                          "--limit", limit, "--no-progress"])


@FUZZ
@given(st.binary(min_size=0, max_size=200))
def test_trace_show(cli, template: Path, data: bytes) -> None:
    check(cli, template, ["trace", "show", "{w}/x.jsonl", "--out", "{w}/tl.png"],
          lambda w: (w / "x.jsonl").write_bytes(data))


@FUZZ
@given(st.sampled_from(["--batch-size", "--shard-size", "--limit"]), st.integers(max_value=0))
def test_extract(cli, template: Path, option: str, value: int) -> None:
    check(cli, template, ["extract", "--teacher", "hf", "--weights", "{w}/hf", "--dataset", "arc1",
                          "--split", "training", "--out", "{w}/store2", option, str(value)])


MANIFEST_BAD = st.one_of(
    st.tuples(st.just(("rows", 0, "task")), bad_ids),
    st.tuples(st.just(("shards", 0, "file")), words.map(lambda s: "../" + s)),
    st.tuples(st.just(("spec", "shard_size")), st.integers(max_value=0)),
    st.tuples(st.just(("spec", "dtype")), words.filter(lambda s: s not in ("bfloat16", "float16", "float32"))),
    st.tuples(st.just(("shards", 0, "count")), st.integers(max_value=0)),
    st.tuples(st.just(("rows", 0, "key")), words.filter(lambda s: not all(c in "0123456789abcdef" for c in s))),
)


@FUZZ
@given(MANIFEST_BAD)
def test_features_validate(cli, template: Path, bad: tuple[tuple, object]) -> None:
    where, value = bad

    def prepare(w: Path) -> None:
        m = json.loads((w / "store/manifest.json").read_text())
        node = m
        for k in where[:-1]:
            node = node[k]
        node[where[-1]] = value
        (w / "store/manifest.json").write_text(json.dumps(m))
    check(cli, template, ["features", "validate", "{w}/store"], prepare)


PREDICT = ["predict", "--model", "{w}/model", "--challenges", "{w}/challenges.json", "--out", "{w}/pred/p.json"]


@FUZZ
@given(st.sampled_from(["--views", "--batch", "--seed", "--limit"]),
       st.one_of(st.integers(max_value=0).map(str), not_int))
def test_predict_integer_options(cli, template: Path, option: str, value: str) -> None:
    if option in ("--batch", "--seed") and value == "0":
        value = "-1"  # 0 is a valid batch (automatic) and seed
    check(cli, template, [*PREDICT, option, value])


@FUZZ
@given(st.sampled_from(["--minutes", "--adapt-minutes"]),
       st.one_of(st.floats(max_value=-1e-6, allow_infinity=False).map(str), not_int))
def test_predict_time_options(cli, template: Path, option: str, value: str) -> None:
    check(cli, template, [*PREDICT, option, value])


@FUZZ
@given(words.filter(lambda s: s not in ("cpu", "cuda")))
def test_predict_and_eval_device(cli, template: Path, device: str) -> None:
    check(cli, template, [*PREDICT, "--device", device])
    check(cli, template, ["eval", "--model", "{w}/model", "--dataset", "arc1", "--out", "{w}/ev", "--device", device])


@FUZZ
@given(st.sampled_from(["optim.steps", "optim.rows", "optim.row_len", "optim.lr", "optim.warmup", "seed",
                        "log_every", "model.hidden", "model.layers"]),
       st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-3, allow_infinity=False), st.text(max_size=4)))
def test_train_config_values(cli, template: Path, key: str, value: object) -> None:
    def prepare(w: Path) -> None:
        raw: dict = {"out_dir": str(w / "run"), "preset": "tiny"}
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        (w / "t.yaml").write_text(yaml.safe_dump(raw))
    check(cli, template, ["train", "--config", "{w}/t.yaml"], prepare)
