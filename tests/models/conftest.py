"""Fixtures of the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def smp():
    """segmentation_models_pytorch, with timm; the test skips without the models extra."""
    pytest.importorskip("timm")
    return pytest.importorskip("segmentation_models_pytorch")
