"""Sources of live MUA for the serve loop.

A source fills a `rtdecode.ringbuffer.RingBuffer` from a background thread and reports what it
saw (samples, gaps, NaN, reconnects) into a `rtdecode.telemetry.Telemetry`. The serve loop
only reads the ring, the source's `markers` queue and its `error` (a failed thread).

Thread failures: a source thread that fails stores the exception in `error`, logs it and
stops; the service then stops cleanly. With RTDECODE_RAISE_IN_THREADS=1 (the test suite sets
it) the service re-raises that exception instead, so no test passes over a dead thread.
"""

from __future__ import annotations

import os


def raise_in_threads() -> bool:
    """True when background-thread errors must be re-raised by the service (tests)."""
    return os.environ.get("RTDECODE_RAISE_IN_THREADS", "") not in ("", "0", "false", "False")
