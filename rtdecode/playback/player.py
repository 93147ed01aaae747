"""Play a Recording as a live LSL stream with its recorded timing (real time x speed).

One float32 outlet carries the MUA (channel labels, area and array in the stream's XML
description); one string outlet carries the markers, each stamped with the LSL timestamp of the
sample it belongs to. Samples are pushed in small chunks (1 ms by default) with explicit
timestamps on pylsl.local_clock(), so a serve process on the same machine can measure latency
from them. Pacing is a deadline loop against that monotonic clock: sample i is due at
t0 + i / (fs * speed), whatever happened before, so the stream never drifts; pushes that go out
more than one chunk late are counted.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError
from ..layout import ElectrodeLayout
from ..sessions.recording import Block, Recording

log = logging.getLogger(__name__)

# A push counts as late when it goes out this much after its last sample's timestamp (on top of
# one chunk's duration): a sleeping loop wakes a fraction of a millisecond late as a matter of course.
LATE_TOLERANCE_S = 0.002
PROGRESS_INTERVAL_S = 2.0  # on a terminal (one line, rewritten)
LOG_INTERVAL_S = 10.0  # as log lines otherwise
DEFAULT_CONSUMER_TIMEOUT_S = 30.0


@dataclass
class PlaybackStats:
    """What one play() call did; `stopped_by` is end | duration | stop_event | interrupt."""

    stream_name: str
    source_id: str
    sampling_rate_hz: float
    speed: float
    samples: int = 0
    chunks: int = 0
    markers: int = 0
    passes: int = 0  # completed passes over the recording (loop)
    late_pushes: int = 0
    max_late_s: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    elapsed_s: float = 0.0
    consumer_found: bool | None = None  # None when not waited for
    stopped_by: str = "end"
    marker_stream: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def rate_hz(self) -> float:
        """Samples per second of wall-clock time actually achieved."""
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rate_hz"] = self.rate_hz
        return d

    def summary(self) -> str:
        return (f"played {self.samples} samples ({self.samples / self.sampling_rate_hz:.1f} s of recording) "
                f"in {self.elapsed_s:.1f} s at speed {self.speed:g} on {self.stream_name!r}: "
                f"{self.rate_hz:.0f} samples/s, {self.chunks} chunks, {self.markers} markers, "
                f"{self.passes} full pass(es), {self.late_pushes} late pushes "
                f"(max {self.max_late_s * 1e3:.1f} ms); stopped by {self.stopped_by}")


def stream_info(recording: Recording, *, stream_name: str, stream_type: str, source_id: str,
                chunk_samples: int):
    """The MUA stream's StreamInfo, with channel labels and the layout in its XML description."""
    from ..lslconfig import lsl

    pylsl = lsl()
    layout = recording.layout
    info = pylsl.StreamInfo(stream_name, stream_type, layout.n_channels, recording.sampling_rate_hz,
                            pylsl.cf_float32, source_id)
    desc = info.desc()
    desc.append_child_value("manufacturer", "rtdecode")
    channels = desc.append_child("channels")
    for c in range(layout.n_channels):
        ch = channels.append_child("channel")
        ch.append_child_value("label", channel_label(layout, c))
        ch.append_child_value("unit", "a.u.")
        ch.append_child_value("type", "MUA")
        ch.append_child_value("area", layout.areas[c])
        ch.append_child_value("array", str(int(layout.arrays[c])))
        ch.append_child_value("usable", "1" if layout.usable[c] else "0")
    rt = desc.append_child("rtdecode")
    rt.append_child_value("recording", recording.name)
    rt.append_child_value("layout_name", layout.name)
    rt.append_child_value("layout", layout.to_json())
    rt.append_child_value("chunk_samples", str(chunk_samples))
    return info


def channel_label(layout: ElectrodeLayout, c: int) -> str:
    """'A03-17-V1': array id, electrode index within the array (1-based), area."""
    arrays = np.asarray(layout.arrays)
    a = int(arrays[c])
    within = int(np.count_nonzero(arrays[:c] == a)) + 1
    return f"A{a:02d}-{within:02d}-{layout.areas[c]}"


def marker_info(marker_stream: str, source_id: str):
    from ..lslconfig import lsl

    pylsl = lsl()
    info = pylsl.StreamInfo(marker_stream, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                            source_id + "-markers")
    info.desc().append_child_value("manufacturer", "rtdecode")
    return info


def play(recording: Recording, *, stream_name: str = "MUA", stream_type: str = "MUA",
         marker_stream: str | None = "MUA-markers", speed: float = 1.0, loop: bool = False,
         duration: float | None = None, stop_event: threading.Event | None = None,
         chunk_ms: float = 1.0, source_id: str | None = None, progress: bool = True,
         wait_for_consumer: bool | float = False, linger_s: float = 0.2) -> PlaybackStats:
    """Push `recording` to LSL in real time x `speed`; return when it ends, `duration` seconds of
    wall-clock time have passed, `stop_event` is set, or on Ctrl-C.

    - `loop`: start over at the end (timestamps keep increasing).
    - `marker_stream`: name of the string marker outlet, None for none.
    - `wait_for_consumer`: True (30 s) or seconds to wait for an inlet before pushing; samples
      pushed before an inlet connects are never delivered to it.
    - `linger_s`: keep the outlets open this long after the last push while an inlet is connected
      (cut short by `stop_event`), so consumers get the last chunk and can stop first.
    """
    if not speed > 0:
        raise ConfigError(f"playback speed must be > 0, got {speed!r}")
    if duration is not None and not duration > 0:
        raise ConfigError(f"playback duration must be > 0 seconds (or None), got {duration!r}")
    if not chunk_ms > 0:
        raise ConfigError(f"chunk_ms must be > 0, got {chunk_ms!r}")
    fs = float(recording.sampling_rate_hz)
    if not fs > 0:
        raise ConfigError(f"recording {recording.name!r} has sampling rate {fs!r}; expected > 0 Hz")

    from ..lslconfig import lsl

    pylsl = lsl()
    source_id = source_id or f"rtdecode-playback:{recording.name}:{stream_name}"
    chunk_n = max(1, int(round(chunk_ms * fs / 1000.0)))
    n_channels = recording.layout.n_channels
    outlet = pylsl.StreamOutlet(stream_info(recording, stream_name=stream_name, stream_type=stream_type,
                                            source_id=source_id, chunk_samples=chunk_n),
                                chunk_size=0)
    m_outlet = pylsl.StreamOutlet(marker_info(marker_stream, source_id)) if marker_stream else None
    stats = PlaybackStats(stream_name, source_id, fs, float(speed), marker_stream=marker_stream)
    dt = 1.0 / (fs * speed)
    max_samples = None if duration is None else int(round(duration * fs * speed))
    late_after = chunk_n * dt + LATE_TOLERANCE_S
    reporter = _Progress(progress, recording, fs, speed, max_samples, loop)
    start_wall = pylsl.local_clock()

    try:
        if wait_for_consumer:
            timeout = DEFAULT_CONSUMER_TIMEOUT_S if wait_for_consumer is True else float(wait_for_consumer)
            stats.consumer_found = _wait_for_consumer(outlet, timeout, stop_event)
            if not stats.consumer_found:
                log.warning("no consumer of %r connected within %.1f s; playing anyway", stream_name, timeout)
        t0 = start_wall = pylsl.local_clock()
        i = 0  # absolute sample index since t0
        for block in _blocks(recording, loop, stats):
            mua = np.ascontiguousarray(block.mua, dtype=np.float32)
            if mua.ndim != 2 or mua.shape[1] != n_channels:
                raise ConfigError(f"recording {recording.name!r} yielded a block of shape {mua.shape}; "
                                  f"its layout needs [n, {n_channels}]")
            markers = sorted(block.markers, key=lambda m: m[0])
            mk = 0
            n = mua.shape[0]
            s = 0
            while s < n:
                e = min(n, s + chunk_n)
                if max_samples is not None:
                    e = min(e, s + (max_samples - i))
                last_ts = t0 + (i + e - s - 1) * dt
                # deadline loop: the chunk is due when its newest sample "exists"
                while True:
                    now = pylsl.local_clock()
                    wait = last_ts - now
                    if wait <= 0:
                        break
                    if stop_event is not None and stop_event.is_set():
                        stats.stopped_by = "stop_event"
                        return stats
                    time.sleep(min(wait, 0.05))
                late = now - last_ts
                if late > late_after:
                    # behind (a stall): catch up with one push of every sample already due
                    stats.late_pushes += 1
                    due = min(n - s, int((now - t0) / dt) + 1 - i)
                    if max_samples is not None:
                        due = min(due, max_samples - i)
                    if due > e - s:
                        e = s + due
                        last_ts = t0 + (i + e - s - 1) * dt
                stats.max_late_s = max(stats.max_late_s, late)
                if e - s == 1:
                    outlet.push_chunk(mua[s:e], last_ts)
                else:
                    outlet.push_chunk(mua[s:e], (t0 + np.arange(i, i + e - s) * dt).tolist())
                if stats.first_ts is None:
                    stats.first_ts = t0 + i * dt
                stats.last_ts = last_ts
                while mk < len(markers) and markers[mk][0] < e:
                    idx, text = markers[mk]
                    mk += 1
                    if idx < s or m_outlet is None:
                        continue
                    m_outlet.push_sample([str(text)], t0 + (i + idx - s) * dt)
                    stats.markers += 1
                stats.chunks += 1
                stats.samples += e - s
                i += e - s
                s = e
                if stop_event is not None and stop_event.is_set():
                    stats.stopped_by = "stop_event"
                    return stats
                reporter.update(stats, now - start_wall)
                if max_samples is not None and i >= max_samples:
                    stats.stopped_by = "duration"
                    return stats
        stats.stopped_by = "end"
        return stats
    except KeyboardInterrupt:
        stats.stopped_by = "interrupt"
        return stats
    finally:
        stats.elapsed_s = pylsl.local_clock() - start_wall
        reporter.close(stats)
        # let inlets drain what was pushed last before the outlet disappears
        _linger(outlet, linger_s, stop_event)
        del outlet, m_outlet


def _blocks(recording: Recording, loop: bool, stats: PlaybackStats) -> Iterator[Block]:
    while True:
        got = False
        for block in recording.blocks():
            got = True
            yield block
        if not got:
            raise ConfigError(f"recording {recording.name!r} has no samples to play")
        stats.passes += 1
        if not loop:
            return


def _wait_for_consumer(outlet, timeout: float, stop_event: threading.Event | None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if outlet.wait_for_consumers(min(0.1, max(0.0, deadline - time.monotonic()))):
            return True
        if stop_event is not None and stop_event.is_set():
            return False
    return bool(outlet.have_consumers())


def _linger(outlet, seconds: float, stop_event: threading.Event | None) -> None:
    """Give connected inlets time to receive the last chunk (there is no flush in LSL)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and outlet.have_consumers():
            if stop_event is not None and stop_event.is_set():
                return
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    except Exception:  # the outlet may already be gone on interpreter shutdown
        pass


class _Progress:
    """One status line: elapsed / total, rate, late pushes; \\r-updated on a terminal, else logged."""

    def __init__(self, enabled: bool, recording: Recording, fs: float, speed: float,
                 max_samples: int | None, loop: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        total = max_samples
        if total is None and recording.n_samples is not None and not loop:
            total = recording.n_samples
        self.total_s = None if total is None else total / (fs * speed)
        self.fs = fs
        self.interval = PROGRESS_INTERVAL_S if self.tty else LOG_INTERVAL_S
        self.next_at = self.interval
        self.name = recording.name

    def update(self, stats: PlaybackStats, elapsed: float) -> None:
        if not self.enabled or elapsed < self.next_at:
            return
        self.next_at = elapsed + self.interval
        total = f"/{self.total_s:.0f}" if self.total_s is not None else ""
        line = (f"playback {self.name}: {elapsed:.0f}{total} s, {stats.samples / elapsed:.0f} samples/s, "
                f"{stats.markers} markers, {stats.late_pushes} late")
        if self.tty:
            sys.stderr.write("\r" + line + "   ")
            sys.stderr.flush()
        else:
            log.info(line)

    def close(self, stats: PlaybackStats) -> None:
        if self.tty and self.next_at > self.interval:
            sys.stderr.write("\n")
            sys.stderr.flush()
