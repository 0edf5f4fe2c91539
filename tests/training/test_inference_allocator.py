"""The CPU allocator switch: the environment variable decides, and RAM by default."""

from __future__ import annotations

import sys

import pytest

from imseg.training import inference

reuse = inference.reuse_freed_memory.__wrapped__  # the uncached function


def test_off_when_asked(monkeypatch):
    monkeypatch.setenv("IMSEG_REUSE_FREED_MEMORY", "0")
    assert reuse() is False


def test_default_follows_physical_memory(monkeypatch):
    monkeypatch.delenv("IMSEG_REUSE_FREED_MEMORY", raising=False)
    monkeypatch.setattr(inference, "_physical_memory", lambda: inference._REUSE_MIN_RAM - 1)
    assert reuse() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt only")
def test_forced_on_applies_on_glibc(monkeypatch):
    monkeypatch.setenv("IMSEG_REUSE_FREED_MEMORY", "1")
    monkeypatch.setattr(inference, "_physical_memory", lambda: 0)
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert reuse() is True
