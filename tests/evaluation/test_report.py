"""imseg report on hand-made results.csv files: the table's numbers, pooling, figures."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imseg.cli import main
from imseg.data.layout import DatasetInfo, write_info
from imseg.errors import DataError
from imseg.evaluation.report import (
    Stat,
    load_run,
    metric_label,
    panels_of,
    score_stats,
    scores_figure,
    stats_csv,
    write_report,
)
from imseg.evaluation.visualize import sample_figures

HEADER = ["stage", "approach", "run", "n_teachers", "generation", "candidate", "val_iou",
          "test_iou", "pseudo_iou", "im_fraction", "checkpoint"]
# stage, approach, run, n, gen, cand, val, test, pseudo, im_fraction
RUN1 = [
    ("ldt", "ldt", 0, "", 0, 0, .50, .60, "", ""),
    ("ldt", "ldt", 0, "", 0, 1, .40, .70, "", ""),
    ("ldt", "ldt", 0, "", 0, 2, .30, .80, "", ""),
    ("ssl", "im", 0, 2, 1, 0, .90, .71, .5, .2),
    ("ssl", "im", 0, 2, 1, 1, .80, .73, .5, .2),
    ("ssl", "im", 0, 2, 1, 2, .10, .50, .5, .2),
    ("ssl", "im", 0, 3, 1, 0, .60, .75, .7, .4),
    ("ssl", "im", 0, 2, 2, 0, .60, .82, .8, .1),
    ("ssl", "noisy_student", 0, "", 1, 0, .50, .64, .6, ""),
    ("evalnet", "evalnet", 0, "", 0, 0, .99, .99, "", ""),  # EvalNet training: not a student
]
RUN2 = [  # same data set as RUN1: pooled into its panel
    ("ldt", "ldt", 1, "", 0, 0, .45, .66, "", ""),
    ("ssl", "im", 1, 2, 1, 0, .70, .77, .9, .6),
]
RUN3 = [  # another data set
    ("fdt", "fdt", 0, "", 0, 0, .9, .90, "", ""),
    ("aldt", "aldt", 0, "", 0, 0, .8, .85, "", ""),
    ("ldt", "ldt", 0, "", 0, 0, .7, .70, "", ""),
    ("ssl", "im", 0, 2, 1, 0, .7, .74, .6, .3),
]


def write_run(folder: Path, rows: list[tuple], data: Path, config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    with (folder / "results.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows([*r, ""] for r in rows)
    (folder / "run.yaml").write_text(yaml.safe_dump({"data": str(data)}))
    if config:
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    tmp_path = tmp_path_factory.mktemp("runs")
    shared = tmp_path / "data_a"  # no dataset.yaml there: default names
    other = tmp_path / "data_b"
    write_info(other, DatasetInfo(task="binary", classes=["lesion"], image_size=(8, 8)))
    return [
        write_run(tmp_path / "run1", RUN1, shared, {"ssl": {"keep": 2}, "benchmark": {"keep": 1}}),
        write_run(tmp_path / "run2", RUN2, shared),
        write_run(tmp_path / "run3", RUN3, other),
    ]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> tuple[Path, list[Path]]:
    """One report of the three runs (drawing figures is the slow part)."""
    out = tmp_path_factory.mktemp("report")
    return out, write_report(runs, out, samples=False)


def read_csv(path: Path) -> dict[tuple, dict]:
    return read_csv_text(path.read_text())


def expect(row: dict, values: list[float]) -> None:
    assert float(row["mean"]) == pytest.approx(statistics.fmean(values), rel=1e-5)
    assert float(row["std"]) == pytest.approx(statistics.pstdev(values), rel=1e-5, abs=1e-7)
    assert int(row["n"]) == len(values)


def test_table_pools_runs_on_one_data_set_and_teacher_counts(report):
    out, _ = report
    table = read_csv(out / "scores.csv")
    assert {k[0] for k in table} == {"data_a", "data_b (binary)"}
    expect(table[("data_a", "ldt", 0)], [.60, .70, .80, .66])
    expect(table[("data_a", "im", 1)], [.71, .73, .50, .75, .77])
    expect(table[("data_a", "im", 2)], [.82])
    expect(table[("data_a", "noisy_student", 1)], [.64])
    expect(table[("data_b (binary)", "fdt", 0)], [.90])
    assert ("data_a", "evalnet", 0) not in table
    md = (out / "scores.md").read_text()
    im1 = [.71, .73, .50, .75, .77]
    assert f"| IM | {statistics.fmean(im1):.3f} ± {statistics.pstdev(im1):.3f} (5) | 0.820" in md
    assert "| FDT | 0.900 ± 0.000 (1) |" in md
    assert "| approach | G1 | G2 |" in md


def as_table(stats: list[Stat]) -> dict[tuple, dict]:
    return read_csv_text(stats_csv(stats))


def read_csv_text(text: str) -> dict[tuple, dict]:
    return {(r["dataset"], r["approach"], int(r["generation"])): r
            for r in csv.DictReader(text.splitlines())}


def test_kept_only_uses_each_stage_top_k_by_validation(runs):
    table = as_table([s for p in panels_of(runs) for s in score_stats(p, kept_only=True)])
    # run1 keeps LDT top-1 (val .50 → test .60); run2 has no config: default keep 4
    expect(table[("data_a", "ldt", 0)], [.60, .66])
    # n=2 stage keeps max(2, 2) students (val .9, .8), n=3 keeps its only one, run2 all
    expect(table[("data_a", "im", 1)], [.71, .73, .75, .77])


def check_quality(path: Path) -> None:
    """Pseudo-label IoU and IM size are averaged over stages, not students."""
    with path.open() as fh:
        rows = {(r["dataset"], r["column"], r["approach"], r["generation"]): r
                for r in csv.DictReader(fh)}
    pseudo = rows[("data_a", "pseudo_iou", "im", "1")]
    assert float(pseudo["mean"]) == pytest.approx(statistics.fmean([.5, .7, .9]), rel=1e-5)
    assert float(pseudo["std"]) == pytest.approx(statistics.pstdev([.5, .7, .9]), rel=1e-5)
    assert pseudo["n_stages"] == "3"
    assert float(rows[("data_a", "im_fraction", "im", "1")]["mean"]) == pytest.approx(.4)
    assert ("data_a", "im_fraction", "noisy_student", "1") not in rows  # not recorded


def test_figures_one_panel_per_data_set_with_consistent_colours(runs, report):
    out, written = report
    check_quality(out / "quality.csv")
    for name in ("scores.png", "scores.pdf", "quality.png", "quality.pdf"):
        assert out / name in written and (out / name).stat().st_size > 1000
    assert Image.open(out / "scores.png").size[0] > 800
    panels = panels_of(runs)
    assert [len(p.runs) for p in panels] == [2, 1]
    fig = scores_figure(panels, [score_stats(p) for p in panels], "test_iou")
    assert len(fig.axes) == 2
    im_colors = [next(line.get_color() for line in ax.get_lines() if line.get_label() == "IM")
                 for ax in fig.axes]
    assert im_colors[0] == im_colors[1]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(legend) == {"IM", "Noisy Student", "FDT", "ALDT", "LDT"}
    bench = {ln.get_label(): ln.get_ydata()[0] for ln in fig.axes[1].get_lines()
             if ln.get_linestyle() == "--"}
    assert bench == {"FDT": .90, "ALDT": .85, "LDT": .70}  # dashed horizontal lines


def write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_sample_figures_from_a_runs_samples(runs, tmp_path):
    run3 = runs[2]
    g1 = run3 / "samples" / "im" / "r0_n2_g1"
    g2 = run3 / "samples" / "im" / "r0_n2_g2"
    for folder in (g1, g2):
        folder.mkdir(parents=True)
        write_png(folder / "u7_image.png", np.full((8, 8, 3), 90))
        write_png(folder / "u7_teacher0.png", np.full((8, 8), 255))
        write_png(folder / "u7_teacher1.png", np.zeros((8, 8)))
    write_png(g1 / "u7_im.png", np.full((8, 8), 255))
    write_png(g1 / "u7_label.png", np.zeros((8, 8)))
    write_png(g1 / "u7_input.png", np.zeros((8, 8, 3)))  # g2: dropped by the filter
    run = load_run(run3)
    written = sample_figures(run3, tmp_path / "fig", run.info, run.data_path)
    assert sorted(p.name for p in written) == ["im_r0_n2_u7_g1_im.pdf", "im_r0_n2_u7_g1_im.png",
                                               "im_r0_n2_u7_strip.pdf", "im_r0_n2_u7_strip.png"]
    assert all(p.is_file() for p in written)


def test_errors_and_cli(runs, tmp_path, capsys):
    with pytest.raises(DataError, match="results.csv not found"):
        write_report([tmp_path / "nothing"], tmp_path / "r")
    with pytest.raises(DataError, match="unknown metric"):
        write_report(runs, tmp_path / "r", column="test_accuracy")
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "cli"), "--metric",
                 "val_iou", "--no-samples"]) == 0
    assert "val IoU" in capsys.readouterr().out
    table = read_csv(tmp_path / "cli" / "scores.csv")
    expect(table[("data_a", "im", 1)], [.90, .80, .10, .60, .70])


def test_metric_labels_name_the_headline_classes():
    binary = DatasetInfo(task="binary", classes=["nucleus"], image_size=(32, 32))
    hela = DatasetInfo(task="multilabel", classes=["alive", "dead", "position"],
                       image_size=(32, 32), headline_classes=["alive", "dead"])
    assert metric_label("test_iou", binary) == "test IoU"
    assert metric_label("val_dice", hela) == "val mDice (alive, dead)"
    assert metric_label("seconds", hela) == "seconds"


def test_a_number_in_test_details_is_a_metric_of_its_own(tmp_path, capsys):
    """HeLa's cell-count error (and per-class scores) live in ``test_details``."""
    data = tmp_path / "hela"
    write_info(data, DatasetInfo(task="multilabel", classes=["alive", "dead", "position"],
                                 image_size=(8, 8), headline_classes=["alive", "dead"]))
    details = ['{"count_error":4.0,"iou_alive":0.7,"count_error_rel":NaN}',
               '{"count_error":2.0,"iou_alive":0.5}', '{"count_error":1.0}', ""]
    rows = [("ldt", "ldt", 0, "", 0, 0, .5, .6, "", ""), ("ldt", "ldt", 0, "", 0, 1, .4, .7, "", ""),
            ("ssl", "im", 0, 2, 1, 0, .6, .7, .5, .2), ("ssl", "im", 0, 2, 1, 1, .6, .7, .5, .2)]
    run = tmp_path / "run"
    run.mkdir()
    with (run / "results.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*HEADER, "test_details"])
        writer.writerows([*r, "", d] for r, d in zip(rows, details, strict=True))
    (run / "run.yaml").write_text(yaml.safe_dump({"data": str(data)}))
    write_report([run], tmp_path / "r", column="test_count_error", samples=False)
    table = read_csv(tmp_path / "r" / "scores.csv")
    expect(table[("hela (multilabel)", "ldt", 0)], [4.0, 2.0])
    expect(table[("hela (multilabel)", "im", 1)], [1.0])  # the row without details has no count
    assert "test cell-count error, mean" in (tmp_path / "r" / "scores.md").read_text()
    with pytest.raises(DataError, match="unknown metric") as error:
        write_report([run], tmp_path / "r", column="test_count_error_rel")  # only NaN: none
    assert "test_count_error, test_iou_alive" in str(error.value)
    assert main(["report", str(run), "--out", str(tmp_path / "cli"), "--metric",
                 "test_iou_alive", "--no-samples"]) == 0
    expect(read_csv(tmp_path / "cli" / "scores.csv")[("hela (multilabel)", "ldt", 0)], [0.7, 0.5])


def test_rows_of_other_settings_are_never_pooled(tmp_path):
    """Issue 27: a stage holding models of two settings is a row and a series per
    settings, named by their ids; ``groups_of`` may put several ids in one group."""
    header = ["stage", "approach", "run", "n_teachers", "generation", "candidate", "val_iou",
              "test_iou", "settings"]
    rows = [("ldt", "ldt", 0, "", 0, 0, .5, .60, "aaa"), ("ldt", "ldt", 0, "", 0, 1, .5, .70, "aaa"),
            ("ldt", "ldt", 0, "", 0, 2, .5, .20, "bbb"), ("ssl", "im", 0, 2, 1, 0, .5, .75, "bbb")]
    run = tmp_path / "run"
    run.mkdir()
    with (run / "results.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    out = tmp_path / "report"
    write_report([run], out, samples=False)
    found = {(r["approach"], r["settings"]): r
             for r in csv.DictReader((out / "scores.csv").read_text().splitlines())}
    expect(found[("ldt", "aaa")], [.60, .70])
    expect(found[("ldt", "bbb")], [.20])
    assert found[("im", "")]["n"] == "1"  # alone in its stage: no mark
    md = (out / "scores.md").read_text()
    assert "| LDT [settings aaa] | 0.650" in md and "| LDT [settings bbb] | 0.200" in md
    assert "different settings" in md

    write_report([run], out, samples=False, groups_of=lambda _run, rows: ["same"] * len(rows))
    pooled = list(csv.DictReader((out / "scores.csv").read_text().splitlines()))
    assert [(r["approach"], r["n"], r["settings"]) for r in pooled] == [("ldt", "3", ""),
                                                                     ("im", "1", "")]


def test_a_running_parallel_study_reports_its_journals_rows(tmp_path):
    """Rows a Ray worker has journaled but the driver has not merged yet are in the report,
    and the report leaves the journal in place (the driver merges it)."""
    run = write_run(tmp_path / "run", RUN1[:3], tmp_path / "data")
    write_run(tmp_path / "run" / "journal" / "x", RUN1[3:5], tmp_path / "data")
    journal = run / "journal" / "im_r0_n2.csv"
    (run / "journal" / "x" / "results.csv").rename(journal)
    rows = load_run(run).rows
    assert sorted((r["stage"], r["candidate"]) for r in rows) == [
        ("ldt", 0), ("ldt", 1), ("ldt", 2), ("ssl", 0), ("ssl", 1)]
    assert journal.is_file()
