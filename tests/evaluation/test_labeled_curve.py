"""imseg report's score against labeled images: runs on versions of one data set are
placed by their own copy of dataset.yaml, lined up by how their labels were chosen."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from imseg.data.layout import DatasetInfo, write_info
from imseg.evaluation.labeled_curve import AS_PREPARED, Point, curve, run_points
from imseg.evaluation.report import write_report

HEADER = ["stage", "approach", "run", "n_teachers", "generation", "candidate", "val_iou",
          "test_iou"]


def round_run(folder: Path, labeled: int, chosen_by: list[str], scores: list[float],
              source: str = "/data/nuclei") -> Path:
    """A run folder of LDT candidates with ``scores``, trained on a set of ``labeled``
    images whose additions were chosen by ``chosen_by``."""
    folder.mkdir(parents=True)
    history = [{"version": i + 2, "added": [], "chosen_by": c} for i, c in enumerate(chosen_by)]
    write_info(folder, DatasetInfo("binary", ["nucleus"], (32, 32), source=source,
                                   counts={"train_labeled": labeled},
                                   extra={"history": history} if history else {}))
    with (folder / "results.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for c, s in enumerate(scores):
            writer.writerow(["ldt", "ldt", 0, "", 0, c, s, s])
    return folder


def test_runs_are_placed_by_their_sets_count_and_lined_up_by_how_labels_were_chosen(tmp_path):
    runs = [
        round_run(tmp_path / "start_s0", 10, [], [0.4, 0.6]),          # mean 0.5
        round_run(tmp_path / "start_s1", 10, [], [0.3]),
        round_run(tmp_path / "im_s0_r1", 20, ["im"], [0.7, 0.9]),      # mean 0.8
        round_run(tmp_path / "im_s1_r1", 20, ["im"], [0.6]),
        round_run(tmp_path / "random_s0_r1", 20, ["random"], [0.55]),
        round_run(tmp_path / "im_s0_r2", 30, ["im", "im"], [0.95]),
    ]
    out = tmp_path / "report"
    written = write_report(runs, out, samples=False)
    assert out / "labeled.png" in written and (out / "labeled.png").stat().st_size > 0
    with (out / "labeled.csv").open() as fh:
        rows = {(r["chosen_by"], int(r["labeled"])): r for r in csv.DictReader(fh)}
    assert set(rows) == {("im", 10), ("im", 20), ("im", 30), ("random", 10), ("random", 20)}
    start = rows[("im", 10)]  # both seeds' start runs begin every line
    assert float(start["mean"]) == pytest.approx(0.4)  # (0.5 + 0.3) / 2: runs, not models
    assert (float(start["low"]), float(start["high"]), start["n_runs"]) == (0.3, 0.5, "2")
    assert float(rows[("im", 20)]["mean"]) == pytest.approx(0.7)
    assert rows[("random", 20)]["n_runs"] == "1" and rows[("im", 30)]["stage"] == "LDT"


def test_a_run_is_placed_by_its_own_copy_of_the_data_sets_info(tmp_path):
    run = round_run(tmp_path / "run", 12, ["entropy"], [0.5])
    data = tmp_path / "data"  # the data folder has moved on to a later version since
    write_info(data, DatasetInfo("binary", ["nucleus"], (32, 32), counts={"train_labeled": 40}))
    (run / "run.yaml").write_text(f"data: {data}\n")
    [point] = run_points(run, [{"approach": "ldt", "generation": 0, "test_iou": 0.5}],
                         "test_iou")
    assert (point.labeled, point.chosen_by) == (12, "entropy")


def test_one_labeled_count_or_another_source_draws_no_curve(tmp_path):
    same_count = [Point("a", AS_PREPARED, "LDT", 10, 0.5), Point("a", "im", "LDT", 10, 0.6)]
    assert curve(same_count) == []
    other_sources = [Point("a", AS_PREPARED, "LDT", 10, 0.5), Point("b", AS_PREPARED, "LDT", 20,
                                                                   0.6)]
    assert curve(other_sources) == []
    fractions = [Point("a", AS_PREPARED, "LDT", 10, 0.5), Point("a", AS_PREPARED, "LDT", 20, 0.6)]
    assert [(p.chosen_by, p.labeled) for p in curve(fractions)] == [(AS_PREPARED, 10),
                                                                    (AS_PREPARED, 20)]
    runs = [round_run(tmp_path / "one", 10, [], [0.5])]
    assert not (set(write_report(runs, tmp_path / "r", samples=False))
                & {tmp_path / "r" / "labeled.png"})
