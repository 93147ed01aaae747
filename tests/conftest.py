"""Test-wide set-up: LSL discovery stays on this machine, in this process and its children."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LSLAPICFG", str(ROOT / "deploy" / "lsl_api.cfg"))
# Owners raise a background thread's error instead of carrying on (see rtdecode/threads.py).
os.environ.setdefault("RTDECODE_RAISE_IN_THREADS", "1")


@pytest.fixture
def rng():
    """A seeded numpy Generator: tests make their own small, reproducible data."""
    import numpy as np

    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip with a reason where CUDA or TensorRT is missing."""
    try:
        import torch  # noqa: F401

        cuda = bool(torch.cuda.is_available())
    except Exception:
        cuda = False
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA (none visible here)"))
