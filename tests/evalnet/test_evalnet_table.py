"""evalnet_results.csv: rows survive a reload; the lowest val MAEs are kept."""

from __future__ import annotations

import math

import pytest

from imseg.evalnet.table import EvalNetTable


def _row(index: int, mae: float, kind: str = "im_plus_plus") -> dict:
    return {"kind": kind, "run": 0, "index": index, "seed": 10 + index, "val_mae": mae,
            "val_spearman": 0.5, "n_train": 30, "n_val": 9, "kept": None, "best_epoch": 2,
            "seconds": 1.5, "checkpoint": f"evalnets/{kind}/r0/e{index}.pt"}


def test_rows_round_trip_and_kept_marks(tmp_path):
    path = tmp_path / "evalnet_results.csv"
    table = EvalNetTable(path)
    for i, mae in enumerate([0.3, 0.1, float("nan"), 0.2]):
        table.add(_row(i, mae))
    table.add(_row(0, 0.05, kind="evalnet"))
    kept = table.mark_kept("im_plus_plus", 0, keep=2)
    assert [r["index"] for r in kept] == [1, 3]
    again = EvalNetTable(path)
    rows = again.select("im_plus_plus", 0)
    assert [r["kept"] for r in rows] == [False, True, False, True]
    assert rows[1]["val_mae"] == pytest.approx(0.1) and rows[1]["seed"] == 11
    assert rows[2]["val_mae"] is None  # NaN is written as empty
    assert again.get("evalnet", 0, 0)["kept"] is None
    assert again.get("evalnet", 0, 1) is None
    assert not math.isnan(rows[0]["val_spearman"])


def test_duplicates_and_unknown_columns_are_refused(tmp_path):
    table = EvalNetTable(tmp_path / "t.csv")
    table.add(_row(0, 0.1))
    with pytest.raises(ValueError, match="already has"):
        table.add(_row(0, 0.2))
    with pytest.raises(KeyError, match="unknown"):
        table.add({**_row(1, 0.1), "colour": "red"})
