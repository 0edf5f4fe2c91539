"""Writes that fail (full disk, unwritable folder) give one message and leave nothing behind;
writes that succeed leave files as readable as the umask allows."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest

from imseg.cli import main
from imseg.errors import DataError, StorageError
from imseg.storage import atomic_write, atomic_write_text, load_checkpoint, save_checkpoint

FLAGS = ["--epochs", "1", "--candidates", "1", "--alpha", "0.25", "--batch-size", "4",
         "--device", "cpu", "--no-progress"]


def _disk_full_after_half(monkeypatch, suffix: str) -> None:
    """Writes of files whose temporary name holds ``suffix`` stop half-way with ENOSPC."""
    real = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if suffix in self.name:
            real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_failed_write_names_the_path_and_errno_and_leaves_no_file(tmp_path):
    target = tmp_path / "out.txt"

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(StorageError) as err:
        atomic_write(target, fail)
    text = str(err.value)
    assert str(target) in text and "errno 28 ENOSPC" in text and "resume" in text
    assert list(tmp_path.iterdir()) == []


def test_an_old_file_survives_a_failed_rewrite(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    save_checkpoint(target, {"w": 1})
    before = target.read_bytes()
    _disk_full_after_half(monkeypatch, ".pt.")
    with pytest.raises(StorageError, match="errno 28"):
        save_checkpoint(target, {"w": 2})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_a_folder_that_cannot_exist_is_one_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="errno 20 ENOTDIR"):
        atomic_write_text(blocker / "sub" / "a.txt", "x")


def test_training_on_a_full_disk_stops_with_one_line_and_keeps_no_half_model(
        binary_data, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _disk_full_after_half(monkeypatch, ".pt.")
    assert main(["train", "--data", str(binary_data), "--out", str(run), *FLAGS]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("imseg: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert "c0.pt" in lines[0] and "No space left on device (errno 28 ENOSPC)" in lines[0]
    assert not list(run.rglob("*.pt*"))  # neither the checkpoint nor its temporary file
    assert not (run / "results.csv").exists()  # the row comes only after its checkpoint
    monkeypatch.undo()
    assert main(["train", "--data", str(binary_data), "--out", str(run), *FLAGS]) == 0
    with (run / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 1


def test_an_output_folder_under_a_file_is_one_message(binary_data, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--data", str(binary_data), "--out", str(blocker / "run"), *FLAGS]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'run'}" in err and "ENOTDIR" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04cut short"])
def test_a_damaged_checkpoint_is_one_error_naming_it(tmp_path, content):
    path = tmp_path / "e0.pt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"e0.pt: not an imseg checkpoint"):
        load_checkpoint(path)


@pytest.fixture
def group_umask():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_written_files_and_sample_sets_follow_the_umask_not_private_temp_files(
        tmp_path, group_umask):
    from imseg.data.sources.sample import prepare_sample

    new = tmp_path / "results.csv"
    atomic_write_text(new, "a\n")
    assert new.stat().st_mode & 0o777 == 0o640  # 0666 under umask 027, not mkstemp's 0600
    new.chmod(0o604)
    atomic_write_text(new, "b\n")  # a rewrite keeps the file's own permissions
    assert new.stat().st_mode & 0o777 == 0o604
    data = tmp_path / "sample"
    prepare_sample("binary", data, n=8, size=16, seed=0)
    assert data.stat().st_mode & 0o777 == 0o750  # not mkdtemp's 0700
    assert (data / "dataset.yaml").stat().st_mode & 0o777 == 0o640
