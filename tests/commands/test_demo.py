"""`imseg demo` end to end on tiny generated data: the table, the figures, determinism."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from imseg.cli import main
from imseg.results import ResultsTable

# Over the demo preset: one step per model, two LDT models as IM's two teachers, and every
# pseudo pair kept (the binary filter would drop the labels of such untrained teachers).
TINY = """\
device: cpu
train: {alpha: 0.25, epochs: 1, steps_per_epoch: 1, batch_size: 4, eval_batch_size: 32}
benchmark: {candidates: 2, keep: 2}
ssl:
  teachers: [2]
  samples_per_generation: 2
  inconsistency: {binary_filter: false}
"""
ROW = re.compile(r"^(LDT|IM G1|Noisy Student G1|FDT) +(\d\.\d{3}) ± (\d\.\d{3}) +(\d+)"
                 r"(?: +([+-]\d\.\d{3}))?$")


def _demo(tmp: Path, name: str) -> tuple[Path, str]:
    """Run the tiny demo into ``tmp/name``; return the run folder and what it printed."""
    config = tmp / "tiny.yaml"
    config.write_text(TINY)
    out = tmp / name
    argv = ["demo", "--out", str(out), "--config", str(config), "--n", "24", "--size", "32",
            "--no-progress"]
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(argv) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def two_demos(tmp_path_factory) -> list[tuple[Path, str]]:
    """The same demo run twice, into two folders."""
    tmp = tmp_path_factory.mktemp("demo")
    return [_demo(tmp, "a"), _demo(tmp, "b")]


def _table(printed: str) -> dict[str, tuple[float, float, int, float | None]]:
    rows = {}
    for line in printed.splitlines():
        m = ROW.match(line)
        if m:
            gain = float(m[5]) if m[5] else None
            rows[m[1]] = (float(m[2]), float(m[3]), int(m[4]), gain)
    return rows


def test_demo_trains_the_four_stages_and_prints_their_scores(two_demos):
    out, printed = two_demos[0]
    table = _table(printed)
    assert list(table) == ["LDT", "IM G1", "Noisy Student G1", "FDT"]

    # Each row is the mean ± population sd of its models' test IoU in results.csv.
    rows = ResultsTable(out / "results.csv").rows
    by_name = {"LDT": "ldt", "IM G1": "im", "Noisy Student G1": "noisy_student", "FDT": "fdt"}
    for name, (mean, sd, n, gain) in table.items():
        scores = [float(r["test_iou"]) for r in rows if r["approach"] == by_name[name]]
        assert n == len(scores) == 2
        assert mean == pytest.approx(np.mean(scores), abs=6e-4)
        assert sd == pytest.approx(np.std(scores), abs=6e-4)
        if name == "LDT":
            assert gain is None
        else:
            assert gain == pytest.approx(mean - table["LDT"][0], abs=1.1e-3)

    # IM trained on the labeled pairs and the pseudo-labeled ones, and says how good they were.
    assert re.search(r"IM G1: 24 training pairs \(2 labeled \+ 22 pseudo-labeled\), "
                     r"pseudo-label IoU \d\.\d{3} outside the IM", printed)

    # Both figures exist where the demo says they are.
    for label in ("scores figure:", "IM creation figure:"):
        line = next(x for x in printed.splitlines() if x.startswith(label))
        path = Path(line.split(":", 1)[1].strip())
        assert path.is_file() and path.suffix == ".png" and path.is_relative_to(out / "report")
        assert path.stat().st_size > 1000


def test_demo_gives_the_same_numbers_twice(two_demos):
    (_, first), (_, second) = two_demos
    assert _table(first) == _table(second) and len(_table(first)) == 4


def test_demo_reports_a_bad_override_without_training(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "x"), "--n", "8", "--size", "32",
                 "--set", "train.epochz=1"]) == 2
    err = capsys.readouterr().err
    assert "train.epochz" in err and "unknown key" in err
    assert not (tmp_path / "x" / "results.csv").exists()


def test_the_plan_names_each_recipes_teacher_stage_and_generations():
    from imseg.commands.demo import plan
    from imseg.config import build_config

    config = build_config(["demo"], overrides={"ssl": {
        "approaches": ["im", "consistency_loss", "unimatch_im"], "generations": 2}})
    lines = plan(config, 20, 200).splitlines()
    assert "IM: 2 generation(s)" in lines[2] and "LDT's top 3 models" in lines[2]
    assert "Consistency Loss: 1 generation(s)" in lines[3]  # the recipe stops at one
    assert "UniMatch+IM: 2 generation(s)" in lines[4] and "UniMatch's top 3" in lines[4]
