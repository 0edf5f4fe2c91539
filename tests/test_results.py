from pathlib import Path

import pytest

from imseg.results import COLUMNS, ResultsTable, top_k

REQUIRED = ("stage approach run n_teachers generation candidate seed alpha params n_train_pairs "
            "val_iou test_iou val_dice test_dice pseudo_iou im_fraction seconds").split()


def _row(candidate: int, val: float, **kw) -> dict:
    return {"stage": "ldt", "approach": "ldt", "run": 0, "generation": 0,
            "candidate": candidate, "val_iou": val, **kw}


def test_has_the_issue_columns():
    assert set(REQUIRED) <= set(COLUMNS)


def test_rows_survive_a_reload_and_duplicates_are_refused(tmp_path: Path):
    path = tmp_path / "results.csv"
    table = ResultsTable(path)
    table.add(_row(0, 0.5, test_iou=0.25, alpha=0.5))
    table.add(_row(1, 0.75))
    again = ResultsTable(path)
    assert len(again.rows) == 2
    assert again.get(stage="ldt", approach="ldt", run=0, n_teachers=None, generation=0,
                     candidate=0)["test_iou"] == 0.25
    assert again.has(stage="ldt", approach="ldt", run=0, generation=0, candidate=1)
    with pytest.raises(ValueError, match="already has a row"):
        again.add(_row(1, 0.1))
    with pytest.raises(KeyError):
        again.add({"stage": "x", "nonsense": 1})


def test_no_temporary_files_left(tmp_path: Path):
    table = ResultsTable(tmp_path / "results.csv")
    table.add(_row(0, 0.5))
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_top_k_by_validation_score():
    rows = [_row(0, 0.2), _row(1, 0.9), _row(2, 0.5), _row(3, None)]
    assert [r["candidate"] for r in top_k(rows, 2)] == [1, 2]
    assert [r["candidate"] for r in top_k(rows, 4)] == [1, 2, 0, 3]
