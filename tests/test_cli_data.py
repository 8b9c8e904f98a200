"""The commands end to end on the shipped datasets, through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_task


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sage_distill.arc.export import export_split

    out = tmp_path_factory.mktemp("arc1_eval")
    export_split("arc1", "evaluation", out)
    return out


def test_stats_json_shape(cli) -> None:
    code, out, _ = cli("data", "stats", "--dataset", "arc1", "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["dataset"] == "arc1" and set(stats["splits"]) == {"training", "evaluation"}
    ev = stats["splits"]["evaluation"]
    assert (ev["tasks"], ev["test_inputs"]) == (400, 419)
    assert ev["pairs"] > ev["tasks"]  # every task has at least one demonstration pair
    assert sum(ev["grid_size_histogram"].values()) == ev["grids"] == 2 * ev["pairs"] + 2 * ev["test_inputs"]
    assert sum(ev["color_frequencies"].values()) == pytest.approx(1.0, abs=1e-4)
    code, out, _ = cli("data", "stats", "--dataset", "arc2")
    assert code == 0 and "evaluation: 120 tasks" in out and "training: 1000 tasks" in out


def test_unknown_dataset_exits_2(cli) -> None:
    code, _, err = cli("data", "stats", "--dataset", "nope")
    assert code == 2 and "unknown dataset 'nope'" in err


def test_validate(cli, write_json) -> None:
    good = write_json("good.json", {"t1": make_task(), "t2": make_task()})
    one = write_json("abc.json", make_task())
    code, out, _ = cli("data", "validate", good, one, good)
    assert code == 0 and "ok" in out

    bad = make_task()
    bad["train"][0]["input"][1][2] = 10
    other = write_json("other.json", {"t2": make_task(), "t3": bad, "t4": {"train": []}})
    broken = write_json("broken.json", "{not json")
    code, _, err = cli("data", "validate", good, other, broken)
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines)
    assert code == 2 and len(lines) == 4, out
    assert any("task t3, train pair 0, input, row 1, column 2: cell is 10" in line for line in lines)
    assert any("task t4" in line and "missing 'test'" in line for line in lines)
    assert any(str(broken) in line and "not valid JSON" in line for line in lines)
    assert any(f"{other}: task t2: duplicate task id, also in {good}" in line for line in lines)


def test_export(exported: Path) -> None:
    challenges = json.loads((exported / "challenges.json").read_text())
    solutions = json.loads((exported / "solutions.json").read_text())
    assert len(challenges) == 400 and list(challenges) == list(solutions)
    assert all("output" not in pair for t in challenges.values() for pair in t["test"])
    assert sum(len(v) for v in solutions.values()) == 419
    assert all(len(solutions[k]) == len(t["test"]) for k, t in challenges.items())
    assert sorted(p.name for p in exported.iterdir()) == ["challenges.json", "solutions.json"]  # no temp files


def test_export_cli(cli, tmp_path) -> None:
    code, out, _ = cli("data", "export", "--dataset", "arc2", "--split", "evaluation", "--out", tmp_path)
    assert code == 0 and len(json.loads((tmp_path / "challenges.json").read_text())) == 120


def test_baseline_then_score(cli, exported: Path, tmp_path) -> None:
    ch, sol, pred = exported / "challenges.json", exported / "solutions.json", tmp_path / "bg.json"
    code, _, _ = cli("baseline", "--challenges", ch, "--out", pred, "--method", "background")
    assert code == 0
    code, out, _ = cli("score", "--predictions", pred, "--solutions", sol, "--challenges", ch, "--json")
    assert code == 0
    report = json.loads(out)
    for key in ("tasks", "pass@2", "pass@1", "strict@2", "pixel_accuracy", "foreground_accuracy",
                "shape_accuracy", "per_color", "baselines", "missing"):
        assert key in report
    assert report["tasks"] == 400 and report["missing"] == {"tasks": [], "entries": []}
    assert all(0.0 <= report[k] <= 1.0 for k in ("pass@2", "pixel_accuracy", "shape_accuracy"))
    assert report["foreground_accuracy"] == 0.0  # background never paints a foreground cell
    bg = report["baselines"]["background"]
    assert {k: bg[k] for k in ("pass@2", "pixel_accuracy", "shape_accuracy")} == \
        {k: report[k] for k in ("pass@2", "pixel_accuracy", "shape_accuracy")}
    assert set(report["baselines"]) == {"copy", "background"}
    code, out, _ = cli("score", "--predictions", pred, "--solutions", sol, "--challenges", ch)
    assert out.splitlines()[0].split() == ["metric", "bg.json", "copy", "background"]  # the file, not "(model)"
    code, out, _ = cli("score", "--predictions", pred, "--solutions", sol, "--challenges", ch)
    assert code == 0 and "pass@2 (official)" in out and "background" in out and "copy" in out


def test_score_reports_missing_and_malformed(cli, exported: Path, write_json) -> None:
    sol = exported / "solutions.json"
    partial = write_json("partial.json", {"00576224": [{"attempt_1": [[0]], "attempt_2": [[0]]}]})
    code, out, _ = cli("score", "--predictions", partial, "--solutions", sol, "--json")
    report = json.loads(out)
    assert code == 0 and len(report["missing"]["tasks"]) == 399 and report["pass@2"] == 0.0
    bad = write_json("bad.json", {"00576224": [{"attempt_1": [[0, "x"]], "attempt_2": [[0]]}]})
    code, _, err = cli("score", "--predictions", bad, "--solutions", sol)
    assert code == 2 and "task 00576224, entry 0, attempt_1, row 0, column 1" in err


def test_render(cli, exported: Path, tmp_path) -> None:
    out = tmp_path / "a.png"
    code, _, _ = cli("render", "--dataset", "arc1", "--task", "00576224", "--cell-size", "10", "--out", out)
    assert code == 0 and Image.open(out).format == "PNG"
    pred = tmp_path / "p.json"
    cli("baseline", "--challenges", exported / "challenges.json", "--out", pred)
    out2 = tmp_path / "b.png"
    code, _, _ = cli("render", "--file", exported / "challenges.json", "--task", "00576224",
                     "--predictions", pred, "--solutions", exported / "solutions.json", "--out", out2)
    assert code == 0 and Image.open(out2).width > Image.open(out).width
    code, _, err = cli("render", "--dataset", "arc1", "--task", "nope", "--out", tmp_path / "c.png")
    assert code == 2 and "task nope" in err
