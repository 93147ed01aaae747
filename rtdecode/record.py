"""Record published frames: a FrameSubscriber feeding a FrameRecorder until told to stop.

What `rtdecode record` runs; the recorder (rtdecode.sinks.recorder) writes crash-safe HDF5
chunks, so killing the process loses at most the chunk being written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def record_frames(address: str, recorder, *, duration: float | None = None, max_frames: int | None = None,
                  should_stop: Callable[[], bool] = lambda: False, on_ready: Callable[[], None] | None = None,
                  log_interval_s: float = 5.0) -> int:
    """Receive frames from `address` into `recorder` until `duration` s passed, `max_frames` were
    written or `should_stop()` is true; closes the recorder (all received frames are written).
    Returns the number of frames received."""
    from .errors import ConfigError
    from .protocol import FrameSubscriber

    if duration is not None and duration <= 0:
        raise ConfigError(f"record duration must be > 0 seconds (or None), got {duration}")
    frames = 0
    t_start = time.monotonic()
    last_log = t_start
    try:
        with FrameSubscriber(address, rcvhwm=1000) as sub:
            if on_ready is not None:
                on_ready()
            log.info("recording %s -> %s", address, recorder.directory)
            while not should_stop():
                now = time.monotonic()
                if duration is not None and now - t_start >= duration:
                    break
                if max_frames is not None and frames >= max_frames:
                    break
                f = sub.recv(timeout=0.1)
                if f is None:
                    continue
                recorder.write(f.header, f.image, received=f.received)
                frames += 1
                if now - last_log >= log_interval_s:
                    last_log = now
                    log.info("recorded %d frames (%s)", frames, recorder.stats())
    finally:
        recorder.close()
    return frames
