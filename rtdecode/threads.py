"""One policy for background threads: the error is stored with context and surfaces in the owner.

Every background thread of the runtime (the LSL inlet, the recorder's writer, the marker feed,
the dashboard's receiver) runs its loop inside a `ThreadGuard`:

    with self._guard:        # in the thread
        ...loop...

- The thread's first error is stored as a `ThreadFailure` (thread name, what it was doing, the
  exception), logged once with its traceback, and the thread ends. On Python >= 3.11 the
  exception also carries the context as a note, so it reads the same wherever it is raised.
- One bad input item is not a thread failure: a malformed message or marker is counted and
  skipped by the thread itself, which carries on (like bad samples in the inlet).
- The owner surfaces the failure: each worker has `failure`, `error` (the exception itself) and
  `raise_if_failed()`. Owners' reactions (docs/serving.md):
    DecoderService, inlet failed     stops; the summary holds the failure (exit code 1)
    DecoderService, a sink failed    the sink is dropped, a `sink_failed` event is recorded, frames
                                     keep flowing (the recorder's write() raises its thread's error)
    marker feed readers              `at()` / `onsets()` raise the error
    Dashboard                        shows the failure on its page and /stats.json, keeps serving
- RTDECODE_RAISE_IN_THREADS (read by `raise_in_threads()` only, nowhere else): where an owner
  would carry on or stop quietly, it raises the thread's exception instead (the service re-raises
  it from run(); Dashboard.close() raises it). The test suite sets it, so no test passes over a
  dead thread.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger(__name__)

RAISE_ENV = "RTDECODE_RAISE_IN_THREADS"


def raise_in_threads() -> bool:
    """True when owners must raise a background thread's error instead of carrying on (tests).

    Off when RTDECODE_RAISE_IN_THREADS is unset, empty, 0, false, no or off (any case).
    """
    return os.environ.get(RAISE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class ThreadFailure:
    """A background thread's first error, with the thread's name and what it was doing."""

    thread: str
    doing: str
    error: BaseException
    traceback: TracebackType | None

    def __str__(self) -> str:
        return f"thread {self.thread!r} failed while {self.doing}: {type(self.error).__name__}: {self.error}"


class ThreadGuard:
    """Stores the first error of one background thread; the owner reads or raises it.

    `doing` says what the thread is busy with (the thread updates it at phase changes); it is
    the context stored with an error. Thread-safety: `capture` may run in the thread while the
    owner reads `failure` from another; the first capture wins.
    """

    def __init__(self, thread: str, doing: str = "running"):
        self.thread = thread
        self.doing = doing
        self.failure: ThreadFailure | None = None
        self._lock = threading.Lock()

    @property
    def error(self) -> BaseException | None:
        f = self.failure
        return None if f is None else f.error

    def capture(self, error: BaseException) -> None:
        """Store `error` with context (the first one only) and log it once, with its traceback."""
        with self._lock:
            if self.failure is not None:
                log.debug("thread %r: later error ignored after the first: %r", self.thread, error)
                return
            failure = ThreadFailure(self.thread, self.doing, error, error.__traceback__)
            if hasattr(error, "add_note"):  # Python >= 3.11
                error.add_note(f"(in background thread {self.thread!r}, while {self.doing})")
            self.failure = failure
        log.error("%s", failure, exc_info=(type(error), error, failure.traceback))

    def raise_if_failed(self) -> None:
        """Raise the stored exception (with the thread's traceback), if there is one."""
        f = self.failure
        if f is not None:
            raise f.error.with_traceback(f.traceback)

    def __enter__(self) -> ThreadGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if error is None:
            return False
        self.capture(error)
        return True  # the thread ends here; the owner surfaces the error


class GuardedWorker:
    """The owner's view of one background thread's failure: `failure`, `error`, `raise_if_failed()`.

    Mixed into every class that runs a background thread under `self._guard` (a ThreadGuard).
    """

    _guard: ThreadGuard

    @property
    def failure(self) -> ThreadFailure | None:
        """The background thread's error with its context, or None."""
        return self._guard.failure

    @property
    def error(self) -> BaseException | None:
        """The background thread's exception, or None."""
        return self._guard.error

    def raise_if_failed(self) -> None:
        """Raise the background thread's exception (with its traceback), if there is one."""
        self._guard.raise_if_failed()

