import re
from pathlib import Path

import pytest

from imseg.errors import DataError
from imseg.results import COLUMNS, ResultsTable, checkpoint_name, learned_from, top_k

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


def _stored(tmp_path: Path, *rows: dict) -> Path:
    """results.csv holding ``rows``, each with its model's checkpoint file on disk."""
    path = tmp_path / "results.csv"
    table = ResultsTable(path)
    for row in rows:
        row = {"run": 0, "n_teachers": None, "generation": 0, **row}
        (tmp_path / checkpoint_name(row)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / checkpoint_name(row)).write_bytes(b"weights")
        table.add({**row, "checkpoint": checkpoint_name(row)})
    return path


@pytest.mark.parametrize(("line", "why"), [
    ('x,1,2,"unterminated', "line 4: damaged (fewer cells than the header has)"),
    ("ldt,ldt,zero" + "," * 21, "line 4: damaged (run 'zero' is not a whole number)"),
    ("ldt,ldt,0,,0,2,1,tiny_unet,0.5,10,4,high" + "," * 12,
     "line 4: damaged (val_iou 'high' is not a number)"),
    ("ldt,ldt,0,,0,2" + "," * 30, "line 4: damaged (12 cells more than the header has)"),
])
def test_a_damaged_line_is_one_error_naming_the_file_and_line(tmp_path: Path, line, why):
    path = _stored(tmp_path, _row(0, 0.5), _row(1, 0.6))
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DataError, match=f"results.csv {re.escape(why)}.*delete that line"):
        ResultsTable(path)


def test_a_file_that_is_no_results_table_is_named(tmp_path: Path):
    path = tmp_path / "results.csv"
    path.write_text("name,score\na,1\n")
    with pytest.raises(DataError, match="results.csv: not a table imseg wrote .no column stage"):
        ResultsTable(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not text"):
        ResultsTable(path)


def test_two_rows_of_one_model_are_an_error(tmp_path: Path):
    path = _stored(tmp_path, _row(0, 0.5))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DataError, match="two rows for ldt r0 c0"):
        ResultsTable(path)


def test_rows_without_their_checkpoint_are_not_used_but_kept(tmp_path: Path, caplog):
    path = _stored(tmp_path, _row(0, 0.5), _row(1, 0.6), _row(2, 0.7))
    (tmp_path / "models/ldt/r0_g0/c1.pt").unlink()  # lost
    pasted = {**_row(3, 0.99), "checkpoint": "models/ldt/r0_g0/c0.pt"}  # another model's file
    table = ResultsTable(path)
    table.merge([pasted])
    table = ResultsTable(path)
    assert [r["candidate"] for r in table.rows] == [0, 2]
    assert top_k(table.rows, 1)[0]["candidate"] == 2  # the pasted 0.99 is not counted
    assert "2 rows are not used" in caplog.text
    assert "ldt r0 c1: its checkpoint models/ldt/r0_g0/c1.pt is missing" in caplog.text
    assert "ldt r0 c3: it names checkpoint models/ldt/r0_g0/c0.pt, not its own" in caplog.text
    assert table.previous(**_row(1, None), n_teachers=None).row["val_iou"] == 0.6
    # training the lost model again replaces its row; the unmatched rows stay in the file
    (tmp_path / "models/ldt/r0_g0/c1.pt").write_bytes(b"weights")
    table.add({**_row(1, 0.61), "n_teachers": None, "checkpoint": "models/ldt/r0_g0/c1.pt"})
    again = ResultsTable(path)
    assert sorted(r["candidate"] for r in again.rows) == [0, 1, 2]
    assert again.get(**_row(1, None), n_teachers=None)["val_iou"] == 0.61
    assert [u.row["candidate"] for u in again.unmatched.values()] == [3]


def test_a_folder_without_models_is_not_checked(tmp_path: Path):
    table = ResultsTable(tmp_path / "results.csv")
    table.add({**_row(0, 0.5), "checkpoint": "models/ldt/r0_g0/c0.pt"})
    assert len(ResultsTable(tmp_path / "results.csv").rows) == 1  # results copied alone


def test_a_worker_sees_the_unmatched_rows_it_is_given(tmp_path: Path):
    path = _stored(tmp_path, _row(0, 0.5), _row(1, 0.6))
    (tmp_path / "models/ldt/r0_g0/c1.pt").unlink()
    driver = ResultsTable(path)
    worker = ResultsTable(tmp_path / "journal" / "stage_ldt_r0.csv", known=driver.every_row(),
                          run_dir=tmp_path)
    assert [r["candidate"] for r in worker.rows] == [0]
    assert worker.previous(**_row(1, None), n_teachers=None) is not None


def _ssl(generation: int, approach: str = "im", run: int = 0, n: int = 2) -> dict:
    return {"stage": "ssl", "approach": approach, "run": run, "n_teachers": n,
            "generation": generation, "candidate": 0}


def test_learned_from_follows_stages_and_chains():
    ldt = {**_row(0, 0.5), "n_teachers": None}
    rows = [ldt, _ssl(1), _ssl(2), _ssl(1, n=3), _ssl(1, "noisy_student", n=None),
            _ssl(1, run=1)]
    assert learned_from(rows, ldt) == rows[1:5]  # every SSL row of its run
    assert learned_from(rows, _ssl(1)) == [_ssl(2)]  # later generations of its chain
    assert learned_from(rows, _ssl(2)) == []


def test_a_known_row_with_its_model_stands_in_for_an_unmatched_one(tmp_path: Path):
    """results.csv's row of a model names another checkpoint (pasted from elsewhere) and a
    worker has retrained the model: a table that knows the worker's row (a live report)
    uses it, and the file keeps its own row, unused."""
    path = _stored(tmp_path, _row(0, 0.5))
    ResultsTable(path).add({**_row(1, 0.6), "n_teachers": None, "checkpoint": "models/x.pt"})
    (tmp_path / "models/ldt/r0_g0/c1.pt").write_bytes(b"retrained")
    retrained = {**_row(1, 0.7), "n_teachers": None, "checkpoint": "models/ldt/r0_g0/c1.pt"}
    assert [r["candidate"] for r in ResultsTable(path).rows] == [0]
    table = ResultsTable(path, known=[retrained])
    assert sorted((r["candidate"], r["val_iou"]) for r in table.rows) == [(0, 0.5), (1, 0.7)]
    assert "models/x.pt" in path.read_text()
