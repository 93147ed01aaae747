"""The one progress helper: a tqdm bar when tqdm is installed, log lines without it, silence when off."""

from __future__ import annotations

import logging
import sys

import pytest

from rtdecode.progress import progress_bar


@pytest.fixture
def no_tqdm(monkeypatch):
    """tqdm made unimportable for the duration of a test (the runtime does not depend on it)."""
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rtdecode.progress"]


def test_without_tqdm_logs_about_every_tenth(no_tqdm, caplog):
    caplog.set_level(logging.INFO, logger="rtdecode.progress")
    with progress_bar(100, "simulate", unit="trial") as bar:
        for _ in range(100):
            bar.update(1)
        bar.set_postfix({"loss": "0.1"})  # no bar: accepted and ignored
        bar.write("a line")
    assert _lines(caplog) == [f"simulate: {k}/100 trial" for k in range(10, 101, 10)]


def test_without_tqdm_counts_from_initial_and_big_steps(no_tqdm, caplog):
    caplog.set_level(logging.INFO, logger="rtdecode.progress")
    bar = progress_bar(1000, "train", unit="step", initial=500)
    bar.update(50)   # 550: below the next tenth (600)
    bar.update(250)  # 800: one line, however many tenths were crossed
    bar.update(200)
    bar.close()
    assert bar.n == 1000
    assert _lines(caplog) == ["train: 800/1000 step", "train: 1000/1000 step"]


def test_disabled_is_silent(caplog, capsys):
    caplog.set_level(logging.INFO, logger="rtdecode.progress")
    bar = progress_bar(10, "export", enabled=False)
    for _ in range(10):
        bar.update(1)
    bar.set_postfix("step")
    bar.write("not shown")
    bar.close()
    assert _lines(caplog) == []
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_with_tqdm_drives_a_bar(capsys):
    pytest.importorskip("tqdm", reason="tqdm is an optional extra (train)")
    with progress_bar(4, "export", unit="step", initial=1, leave=True, mininterval=0.0) as bar:
        bar.update(3)
        bar.set_postfix("parity ok")
        bar.write("step line")
        assert bar._bar.n == 4 and bar._bar.unit == "step"
    out = capsys.readouterr()
    assert "step line" in out.out
    assert "export" in out.err and "4/4" in out.err and "parity ok" in out.err
