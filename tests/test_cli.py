"""The command line's own options: --version for bug reports."""

from __future__ import annotations

import re

import pytest
import torch

from imseg import __version__
from imseg.cli import main


def test_version_names_imseg_torch_and_python(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"imseg {__version__} (torch {torch.__version__}, ")
    assert re.search(r", (CUDA [\d.]+|CPU only), Python 3\.\d+\.\d+\)$", line), line
