"""Model names sit below the config: checking them imports no net (and no torch), and the
nets of ``imseg.models`` are still there when asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

import imseg.models
from imseg.models import names


def test_loading_the_config_imports_no_net_and_no_torch():
    code = ("import sys, imseg.config; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('imseg.models')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "['imseg.models', 'imseg.models.names']"


def test_the_nets_load_on_first_use():
    from imseg.models import EvalNet, build_unet
    from imseg.models.evalnet import EvalNet as home

    assert EvalNet is home and callable(build_unet)
    with pytest.raises(AttributeError, match="no attribute 'Unet'"):
        imseg.models.Unet  # noqa: B018


def test_a_weight_value_is_a_file_by_its_separator_or_ending():
    assert names.is_weight_file("weights/enc.pt") and names.is_weight_file("enc.safetensors")
    assert not names.is_weight_file(names.PRETRAINED) and not names.is_weight_file("none")
