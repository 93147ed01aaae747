"""The one thread-error policy (rtdecode.threads): the switch, and a guard storing the first error."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from rtdecode.threads import RAISE_ENV, ThreadGuard, raise_in_threads


@pytest.mark.parametrize("value,expected", [
    (None, False), ("", False), ("0", False), ("false", False), ("False", False), ("no", False),
    (" off ", False), ("1", True), ("true", True), ("yes", True),
])
def test_the_switch_is_parsed_in_one_place(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(RAISE_ENV, raising=False)
    else:
        monkeypatch.setenv(RAISE_ENV, value)
    assert raise_in_threads() is expected


def test_guard_stores_the_first_error_with_context_and_logs_it_once(caplog):
    guard = ThreadGuard("worker-x", doing="starting")

    def work():
        with guard:
            guard.doing = "writing item 3"
            raise OSError("disk full")

    with caplog.at_level(logging.ERROR, logger="rtdecode.threads"):
        t = threading.Thread(target=work)
        t.start()
        t.join(10)
        guard.capture(ValueError("a later error"))  # the first error wins
    assert not t.is_alive()
    f = guard.failure
    assert f is not None and f.thread == "worker-x" and f.doing == "writing item 3"
    assert str(f) == "thread 'worker-x' failed while writing item 3: OSError: disk full"
    assert isinstance(guard.error, OSError)
    logged = [r for r in caplog.records if r.name == "rtdecode.threads" and r.levelno == logging.ERROR]
    assert len(logged) == 1 and "worker-x" in logged[0].getMessage() and logged[0].exc_info is not None
    for _ in range(2):  # raised with the thread's traceback, however often the owner asks
        with pytest.raises(OSError, match="disk full") as info:
            guard.raise_if_failed()
        assert info.value is guard.error
        assert any(entry.name == "work" for entry in info.traceback)
        if sys.version_info >= (3, 11):
            assert info.value.__notes__ == ["(in background thread 'worker-x', while writing item 3)"]


def test_guard_without_an_error_raises_nothing():
    guard = ThreadGuard("quiet")
    with guard:
        pass
    guard.raise_if_failed()
    assert guard.failure is None and guard.error is None
