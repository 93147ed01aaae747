"""LSL inlet source: resolve the MUA stream, check it against the model, pull it into the ring.

- Resolution by name OR type (`--stream MUA` matches either) within a timeout; on failure a
  StreamNotFoundError lists every stream that was seen (name, type, channels, format, rate, host).
- Start-up checks (StreamMismatchError naming the stream and the numbers): channel count equal
  to the layout's, format float32 (double64 is accepted and converted, with a log line), nominal
  rate equal to the model's sampling rate (within 0.1%).
- A thread pulls chunks with pull_chunk(dest_obj=staging, min_samples=1) - liblsl writes into a
  preallocated array - checks them (a few calls for the usual clean chunk) and writes them into
  the ring; it wakes the serve loop after each chunk, or, when a backlog is being drained after
  a stall, once it is drained. liblsl's inlet queue holds `inlet_buffer_s` (60 s) of samples, so
  a stall of the process shorter than that loses none:
  gaps (dt > 1.5 / fs), out-of-order and duplicated timestamps, NaN/Inf samples are counted,
  flagged per sample in the ring (see ringbuffer.FLAG_*) and remembered as bad ranges.
- Outlet restarts lose nothing that reached the inlet. The inlet is opened with recover=True:
  liblsl keeps the samples already queued when the outlet vanishes (with recover=False its
  pull raises LostError before handing out any of them), and the full stream info is fetched
  at connect so no later pull waits for it. When no sample comes for `loss_check_s`, the
  thread asks the resolver whether the outlet it reads (its uid) is still there: if not, a
  `lost` event is recorded; once a stream with the same source_id (else the same query) and a
  new uid appears, a fresh inlet is opened (with backoff; a stream that vanishes again while
  it is being opened is just retried) and the old one, empty (silence, nothing available), is
  closed. When liblsl's own recovery reconnects the old inlet first (a
  stalled process: it takes ~1 s), that inlet is kept: its queue holds the old outlet's
  samples then the new one's, in order. Either way the first sample after it is flagged as a
  gap and `reconnected` is recorded. A stream without source_id cannot be recovered by
  liblsl: pylsl raises LostError and the queue is lost with it (give outlets a source_id).
  StreamLostError after `reconnect_timeout_s` without the stream.
- Optional marker inlet (string stream, JSON markers per rtdecode.sessions.recording.parse_marker),
  polled by the same thread; onsets land in `markers` as (lsl_time, event dict).
- A failure of the thread (StreamLostError after the reconnect timeout, or anything else)
  follows rtdecode.threads: stored with context in `failure`, logged once, the loop is woken;
  the service stops (or re-raises it under RTDECODE_RAISE_IN_THREADS).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ..errors import StreamLostError, StreamMismatchError, StreamNotFoundError
from ..lslconfig import lsl
from ..ringbuffer import FLAG_DISORDER, FLAG_GAP, FLAG_NAN, RingBuffer
from ..sessions.recording import parse_marker
from ..telemetry import Telemetry
from ..threads import GuardedWorker, ThreadGuard

log = logging.getLogger(__name__)

RATE_TOLERANCE = 1e-3  # relative
TRANSPORT_STALE_S = 1.0  # available_since trusts a transport-time estimate learnt this recently
CLOCK_REFRESH_S = 5.0  # how often the clock offset is taken again (as liblsl's proc_clocksync does)


def _follow(estimate: float, value: float) -> float:
    """A moving average quick to come down and slow to go up (each step capped at doubling): one
    late pull (the puller descheduled, a new connection's burst of samples) moves it little."""
    return estimate + (0.3 if value < estimate else 0.05) * (min(value, 2.0 * estimate) - estimate)


def describe_info(info: Any) -> str:
    """'name' (type, N ch, format, rate Hz, host, source_id) of a pylsl StreamInfo."""
    fmt = _format_name(info.channel_format())
    sid = info.source_id()
    return (f"{info.name()!r} (type {info.type()!r}, {info.channel_count()} ch, {fmt}, "
            f"{info.nominal_srate():g} Hz, host {info.hostname()}{', source_id ' + repr(sid) if sid else ''})")


def _format_name(fmt: int) -> str:
    names = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
    return names.get(int(fmt), f"format {fmt}")


def _predicate(query: str) -> str:
    q = '"' + query + '"' if "'" in query else "'" + query + "'"
    return f"name={q} or type={q}"


def resolve_stream(query: str, timeout_s: float, *, want_string: bool = False) -> Any:
    """The StreamInfo whose name or type is `query` (name matches preferred), else StreamNotFoundError."""
    pylsl = lsl()
    infos = pylsl.resolve_bypred(_predicate(query), minimum=1, timeout=timeout_s)
    if want_string:
        infos = [i for i in infos if i.channel_format() == pylsl.cf_string] or infos
    if not infos:
        seen = [describe_info(i) for i in pylsl.resolve_streams(wait_time=min(1.0, timeout_s))]
        raise StreamNotFoundError(f"no LSL stream named or typed {query!r} appeared within {timeout_s:g} s",
                                  query=query, seen=seen)
    infos.sort(key=lambda i: (i.name() != query, i.created_at()))
    if len(infos) > 1:
        log.warning("%d streams match %r; using %s (others: %s)", len(infos), query, describe_info(infos[0]),
                    ", ".join(describe_info(i) for i in infos[1:]))
    return infos[0]


class LslSource(GuardedWorker):
    """The MUA stream (and optional marker stream) read into a RingBuffer by a background thread.

    Use: `src = LslSource(...); src.open(); src.start(); ...; src.stop()`. `ring`, `markers`,
    `info` and `failure` are read by the serve loop; `wake` is set after every chunk and when the
    thread ends.
    """

    def __init__(self, query: str, *, n_channels: int, sampling_rate_hz: float, capacity: int,
                 telemetry: Telemetry | None = None, resolve_timeout_s: float = 10.0,
                 reconnect: bool = True, reconnect_timeout_s: float = 30.0, backoff_s: float = 0.1,
                 backoff_max_s: float = 2.0, marker_query: str | None = None, max_chunk: int = 256,
                 pull_timeout_s: float = 0.02, wake: threading.Event | None = None,
                 clock_sync: bool = True, max_events: int = 200, inlet_buffer_s: float = 60.0,
                 loss_check_s: float = 0.1):
        self.query = query
        self.n_channels = int(n_channels)
        self.fs = float(sampling_rate_hz)
        self.capacity = int(capacity)
        self.telemetry = telemetry or Telemetry()
        self.resolve_timeout_s = float(resolve_timeout_s)
        self.reconnect = reconnect
        self.reconnect_timeout_s = float(reconnect_timeout_s)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self.marker_query = marker_query
        self.max_chunk = max(1, min(int(max_chunk), self.capacity // 4 or 1))
        self.pull_timeout_s = float(pull_timeout_s)
        self.wake = wake or threading.Event()
        self.clock_sync = clock_sync
        self.loss_check_s = float(loss_check_s)  # silence before asking whether the outlet is gone
        # liblsl's own queue (seconds of samples) is what bridges a stall of this process: the
        # ring only has to hold the windows, the inlet queue must hold everything not pulled yet
        self.inlet_buffer_s = max(float(inlet_buffer_s), self.capacity / self.fs)
        self._since_wake = 0
        self.ring = RingBuffer(self.capacity, self.n_channels)
        self.markers: deque[tuple[float, dict]] = deque(maxlen=10000)
        self._guard = ThreadGuard(f"lsl-inlet-{query}", doing=f"reading stream {query!r}")
        self.info: dict[str, Any] = {}
        self.converted_from_double = False
        self.clock_offset_s = 0.0  # LSL time_correction of the data stream (remote -> local clock)
        self._inlet: Any = None
        self._marker_inlet: Any = None
        self._stream_info: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_ts = -math.inf
        self._after_reconnect = False
        self._disordered_run = 0  # duplicated/backward samples at the end of the last chunk
        self._masks: dict[str, np.ndarray] = {}
        self._uid = ""  # uid of the outlet the inlet reads (a restarted outlet has a new one)
        self._last_data = time.monotonic()  # when a sample was last pulled
        self._next_check = 0.0
        self._next_clock = 0.0  # when to take liblsl's clock-offset estimate again
        self._lost_at: float | None = None  # monotonic time the outlet was found gone
        self._misses = 0  # silence checks in a row that did not find the outlet
        self._watch: Any = None  # a ContinuousResolver on the source_id (new outlets show up early)
        self._watch_sid = ""
        self._dead_uids: set[str] = set()  # outlets left behind (a resolver may still list them)
        self._backoff = self.backoff_s
        self.lost = False  # the outlet is gone and no new one was connected yet (the heartbeat's stream_lost)
        self._staging: np.ndarray | None = None
        self._flags = np.zeros(self.max_chunk, dtype=np.uint8)
        self._gap_dt = 1.5 / self.fs
        # of pulls that waited for their chunk (so were on time): samples per pull and LSL timestamp
        # -> pulled, moving averages (the usual arrival interval, and when a queued sample arrived)
        self.chunk_samples = 1.0
        self.transport_s: float | None = None
        self._transport_at = -math.inf  # when transport_s was last learnt

    # ---- set-up --------------------------------------------------------------------------
    def check(self, info: Any) -> None:
        """Refuse a stream whose channels, format or rate disagree with the model."""
        pylsl = lsl()
        name = info.name()
        if info.channel_count() != self.n_channels:
            raise StreamMismatchError(f"has {info.channel_count()} channels; the model's layout expects "
                                      f"{self.n_channels}", stream=name)
        fmt = info.channel_format()
        if fmt not in (pylsl.cf_float32, pylsl.cf_double64):
            raise StreamMismatchError(f"channel format is {_format_name(fmt)}; expected float32 "
                                      "(double64 is accepted and converted)", stream=name)
        rate = info.nominal_srate()
        if not rate > 0 or abs(rate - self.fs) > RATE_TOLERANCE * self.fs:
            raise StreamMismatchError(f"nominal rate is {rate:g} Hz; the model was trained at {self.fs:g} Hz "
                                      f"({'irregular streams are not supported' if not rate > 0 else 'resample the stream or retrain'})",
                                      stream=name)

    def open(self) -> LslSource:
        """Resolve, check and connect (data stream, then marker stream). Raises on any mismatch."""
        info = resolve_stream(self.query, self.resolve_timeout_s)
        self.check(info)
        self._connect(info)
        pylsl = lsl()
        self.converted_from_double = info.channel_format() == pylsl.cf_double64
        if self.converted_from_double:
            log.info("stream %r sends double64 samples; converting them to float32", info.name())
        self.info = {"name": info.name(), "type": info.type(), "channels": info.channel_count(),
                     "format": _format_name(info.channel_format()), "rate_hz": info.nominal_srate(),
                     "host": info.hostname(), "source_id": info.source_id(),
                     "converted_from_double": self.converted_from_double,
                     "clock_offset_s": self.clock_offset_s}
        if self.marker_query:
            minfo = resolve_stream(self.marker_query, self.resolve_timeout_s, want_string=True)
            if minfo.channel_format() != pylsl.cf_string:
                raise StreamMismatchError(f"marker stream has format {_format_name(minfo.channel_format())}; "
                                          "expected string markers", stream=minfo.name())
            self._marker_inlet = pylsl.StreamInlet(minfo, max_buflen=360, recover=True,
                                                   processing_flags=self._proc_flags())
            self._marker_inlet.open_stream(timeout=self.resolve_timeout_s)
            if self.clock_sync:
                try:  # as for the data inlet: estimate the offset now, not on the first marker
                    self._marker_inlet.time_correction(timeout=max(2.0, self.resolve_timeout_s))
                except Exception as e:  # liblsl keeps estimating in the background
                    log.warning("no initial LSL clock offset for the marker stream (%s)", e)
            self.info["markers"] = describe_info(minfo)
        log.info("reading %s", describe_info(info))
        self._watched()  # start watching the source_id now, so a restarted outlet is seen at once
        return self

    def _proc_flags(self) -> int:
        pylsl = lsl()
        return pylsl.proc_clocksync if self.clock_sync else pylsl.proc_none

    def _connect(self, info: Any, *, wait_clock: bool = True) -> None:
        """Open an inlet on `info` (recover=True, full info fetched) and make it the one read."""
        self._inlet = self._open_inlet(info, wait_clock=wait_clock)
        self._stream_info = info
        self._uid = info.uid()

    def _open_inlet(self, info: Any, *, wait_clock: bool = True) -> Any:
        pylsl = lsl()
        dtype = np.float64 if info.channel_format() == pylsl.cf_double64 else np.float32
        if self._staging is None or self._staging.dtype != dtype:
            self._staging = np.zeros((self.max_chunk, self.n_channels), dtype=dtype)
        buflen = max(1, int(math.ceil(self.inlet_buffer_s)))
        # recover=True: a vanished outlet does not discard the queued samples (see the docstring)
        # proc_none: liblsl's clocksync post-processing holds the first pull of a new inlet ~0.6 s for
        # its first offset estimate (a reconnect's frames with it); the offset is added in _pull_once
        inlet = pylsl.StreamInlet(info, max_buflen=buflen, recover=True,
                                  processing_flags=pylsl.proc_none, as_numpy=True)
        # a reconnect waits briefly: an outlet that vanished again would hold the thread (and the
        # frames) for the whole resolve timeout; the next check retries
        open_timeout = self.resolve_timeout_s if wait_clock else min(self.resolve_timeout_s, 1.0)
        try:
            inlet.open_stream(timeout=open_timeout)
            # the full info, cached now: a pull after the outlet vanished would otherwise wait for it
            inlet.info(timeout=open_timeout)
        except Exception as e:
            try:
                inlet.close_stream()
            except Exception:  # closing a half-open inlet may fail; nothing to do about it
                pass
            raise StreamLostError(f"cannot open the stream ({type(e).__name__}: {e})", stream=info.name()) from e
        # The first clock-offset estimate takes ~0.5 s; made here, it does not hold back the first
        # samples in the pull thread (they wait in the inlet's buffer meanwhile). After a reconnect
        # it is not waited for: the last offset stays in use (the same source, so the same host)
        # until liblsl's background estimate for the new inlet is refreshed in (_refresh_clock).
        try:
            off = inlet.time_correction(timeout=max(2.0, self.resolve_timeout_s) if wait_clock else 0.0)
            if self.clock_sync:
                self.clock_offset_s = off
        except Exception as e:  # a timeout here: liblsl keeps estimating in the background
            if wait_clock and self.clock_sync:
                log.warning("no initial LSL clock offset for %r (%s); timestamps may shift a little at first",
                            info.name(), e)
        return inlet

    # ---- thread --------------------------------------------------------------------------
    def start(self, thread: bool = True) -> None:
        """Start pulling: in a thread of its own, or (thread=False) only when the owner calls `poll`."""
        if self._inlet is None:
            self.open()
        self._stop.clear()
        if not thread:
            return
        self._thread = threading.Thread(target=self._run, name=f"lsl-inlet-{self.query}", daemon=True)
        self._thread.start()

    def poll(self, timeout: float, *, after_empty: bool = False) -> int:
        """Pull in the caller's thread (after start(thread=False)): wait up to `timeout` s for a
        sample, then drain what is queued into the ring; returns the samples pulled. Same checks,
        reconnects and failure policy as the thread (a failure is stored in `failure`, never
        raised here). `after_empty`: the caller's previous poll found nothing a moment ago (a
        busy-poll), so what this one finds was pulled on arrival."""
        if self._guard.failure is not None or self._inlet is None:
            return 0
        pylsl = lsl()
        n = total = 0
        with self._guard:
            try:
                n = total = self._pull_once(timeout, on_arrival=after_empty)
                while n == self.max_chunk:  # a backlog after a stall: all of it before the loop decides
                    n = self._pull_once(0.0)
                    total += n
            except pylsl.util.LostError:
                self._reconnect()
            if self._marker_inlet is not None:
                self._pull_markers()
        return total

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for inlet in (self._inlet, self._marker_inlet):
            if inlet is not None:
                try:
                    inlet.close_stream()
                except Exception:  # closing a lost inlet may fail; nothing to do about it
                    pass
        self._inlet = self._marker_inlet = None
        self._watch = None  # the continuous resolver stops when dropped

    @property
    def arrival_interval_s(self) -> float:
        """The usual time between arrivals (pulled chunks): samples per pull / sampling rate."""
        return self.chunk_samples / self.fs

    def available_since(self, index: int) -> float:
        """When sample `index` reached this machine (monotonic s): its pull time, or earlier when it
        sat in liblsl's queue before that pull began (inlet="loop" pulls only between decodes):
        then its LSL timestamp plus the usual timestamp -> pull time of samples pulled on arrival."""
        # before any pull waited (a loop that never waits): the timestamp alone, which makes the
        # sample look older, so the loop waits for the next one, and that pull teaches the rest
        # an estimate not renewed for TRANSPORT_STALE_S (a loop that never waited since) is not
        # trusted either: were it too high, no sample would look stale, the loop would never wait
        # and so never learn it again
        t = self.transport_s if time.monotonic() - self._transport_at < TRANSPORT_STALE_S else None
        return min(self.ring.arrival(index), self.ring.timestamp(index) + (t or 0.0))

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        pylsl = lsl()
        try:
            with self._guard:
                while not self._stop.is_set():
                    try:
                        self._pull_once()
                    except pylsl.util.LostError:  # only a stream without source_id raises it
                        self._reconnect()
                    if self._marker_inlet is not None:
                        self._pull_markers()
        finally:
            self.wake.set()

    def _pull_once(self, timeout: float | None = None, on_arrival: bool = False) -> int:
        """One pull_chunk into the ring; returns how many samples it brought. `on_arrival`: the
        caller knows the queue was empty just before (a busy-poll)."""
        staging = self._staging
        timeout = self.pull_timeout_s if timeout is None else timeout
        # nothing queued before a pull that may wait (or a busy-poll's): what comes was pulled on arrival
        waits = on_arrival or (timeout > 0.0 and not self._inlet.samples_available())
        _, ts = self._inlet.pull_chunk(timeout=timeout,
                                       max_samples=self.max_chunk, dest_obj=staging, min_samples=1)
        n = len(ts)
        arrival = time.monotonic()
        if n == 0:
            if arrival - self._last_data >= self.loss_check_s and arrival >= self._next_check:
                self._check_outlet(arrival)
            return 0
        self._last_data = arrival
        if waits and timeout > 0.0:  # this chunk arrived while the pull waited: the stream's chunking
            # (not from busy-polls: one that was descheduled for a moment finds several samples)
            self.chunk_samples = _follow(self.chunk_samples, n)
        if self.clock_sync:
            if arrival >= self._next_clock:
                self._refresh_clock(arrival)
            if self.clock_offset_s:
                ts = np.asarray(ts, dtype=np.float64) + self.clock_offset_s
        if waits:
            lat = arrival - float(ts[-1])
            self.transport_s = lat if self.transport_s is None else _follow(self.transport_s, lat)
            self._transport_at = arrival
        reset = self._inlet.was_clock_reset()  # liblsl's own recovery reconnected this inlet
        if self.lost or reset:
            # a new outlet; after liblsl's own recovery the chunk may still begin with the old
            # outlet's queued samples, so the timestamps (not a forced flag) mark the gap
            # relearn the uid: liblsl may have moved this inlet to a new outlet without saying so
            # (was_clock_reset needs a clock offset, which a just-opened inlet may not have yet)
            self._recovered(arrival, force_gap=self.lost, relearn=True)
        elif self._misses:  # a silence check missed the outlet, then samples came: same reason
            self._misses = 0
            self._relearn()
        self._write(staging[:n], ts, arrival)
        # A full chunk may leave a backlog (after a stall): pull it all before waking the loop,
        # so it decodes the newest window instead of the stale ones in between - but wake it at
        # least every half ring, before unread windows are overwritten.
        self._since_wake += n
        if n < self.max_chunk or self._since_wake >= self.capacity // 2 or not self._backlog():
            self._since_wake = 0
            self.wake.set()
        return n

    def _refresh_clock(self, now: float) -> None:
        """Take liblsl's current offset estimate for this inlet without waiting (as proc_clocksync
        would, every CLOCK_REFRESH_S); none yet (a just-reconnected inlet): keep the last one."""
        self._next_clock = now + CLOCK_REFRESH_S
        try:
            self.clock_offset_s = float(self._inlet.time_correction(timeout=0.0))
        except Exception:  # no estimate yet: liblsl is making one in the background
            self._next_clock = now + 0.25

    def _write(self, data: np.ndarray, ts: np.ndarray, arrival: float) -> None:
        """Check a pulled chunk and append it to the ring (flags and bad ranges when not clean)."""
        n = len(ts)
        t = self.telemetry
        if self._clean(data, ts, n):  # the usual chunk: finite, in order, no gap
            self.ring.write(data, ts, arrival)
        else:
            flags = self._flags[:n]
            flags[:] = 0
            self._check_chunk(data, ts, flags)
            start = self.ring.write(data, ts, arrival, flags)
            self._record_ranges(flags, start, ts)
        t.samples += n
        t.chunks += 1
        t.newest_ts = float(ts[-1])

    def _backlog(self) -> bool:
        try:
            return self._inlet.samples_available() > 0
        except Exception:  # a lost inlet: the next pull raises LostError and reconnects
            return False

    def _clean(self, data: np.ndarray, ts: np.ndarray, n: int) -> bool:
        """Fast check of the usual chunk (a few calls, no temporaries for one sample).

        True when every sample is finite and every timestamp follows the previous one by
        (0, 1.5/fs]; then nothing is flagged and `_check_chunk` would have found nothing. The
        sum runs in float64, so finite float32 samples cannot overflow it.
        """
        last = self._last_ts
        first = float(ts[0])
        if self._after_reconnect or self._disordered_run or not (last < first <= last + self._gap_dt):
            return False
        if n > 1:
            d = np.diff(ts)
            if not (d.min() > 0.0 and d.max() <= self._gap_dt):
                return False
        if not math.isfinite(np.add.reduce(data, axis=None, dtype=np.float64)):
            return False
        self._last_ts = float(ts[-1])
        return True

    def _check_chunk(self, data: np.ndarray, ts: np.ndarray, flags: np.ndarray) -> None:
        t = self.telemetry
        bad = ~np.isfinite(data).all(axis=1)
        if bad.any():
            flags[bad] |= FLAG_NAN
            t.nan_samples += int(bad.sum())
        ref = np.maximum.accumulate(np.concatenate(([self._last_ts], ts)))
        dt = ts - ref[:-1]  # against the latest timestamp seen before each sample
        if not math.isfinite(self._last_ts):
            dt[0] = 1.0 / self.fs  # the very first sample follows nothing
        self._last_ts = float(ref[-1])
        dup = dt == 0
        back = dt < 0
        disordered = dup | back
        # A duplicated or backward sample still took a sample's slot: the step to the next in-order
        # sample is measured without it (no phantom "missing" sample), and it is no gap.
        step = dt
        if disordered.any() or self._disordered_run:
            step = dt.copy()
            run = self._disordered_run  # disordered samples just before this chunk
            for i in range(len(dt)):
                if disordered[i]:
                    run += 1
                elif run:
                    step[i] -= run / self.fs
                    run = 0
            self._disordered_run = run
        gap = step > self._gap_dt
        if self._after_reconnect:
            gap[0] = True
            self._after_reconnect = False
        if gap.any():
            flags[gap] |= FLAG_GAP
            t.gaps += int(gap.sum())
            finite = step[gap][np.isfinite(step[gap])]
            t.missing_samples += int(np.maximum(np.rint(finite * self.fs) - 1, 0).sum())
        if disordered.any():
            flags[disordered] |= FLAG_DISORDER
            t.out_of_order += int(back.sum())
            t.duplicates += int(dup.sum())
        self._masks = {"duplicate": dup, "backward": back}

    def _record_ranges(self, flags: np.ndarray, start: int, ts: np.ndarray) -> None:
        if not flags.any():
            return
        kinds = [("nan_samples", (flags & FLAG_NAN) != 0), ("gap", (flags & FLAG_GAP) != 0),
                 ("duplicate", self._masks["duplicate"]), ("backward", self._masks["backward"])]
        for kind, mask in kinds:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                continue
            # runs of consecutive flagged samples -> [first, stop) ranges
            breaks = np.flatnonzero(np.diff(idx) > 1)
            for lo, hi in zip(np.r_[0, breaks + 1], np.r_[breaks, idx.size - 1], strict=True):
                a, b = int(idx[lo]), int(idx[hi])
                self.telemetry.event(kind, first_sample=start + a, stop_sample=start + b + 1,
                                     first_ts=float(ts[a]), last_ts=float(ts[b]))

    def _pull_markers(self) -> None:
        samples, ts = self._marker_inlet.pull_chunk(timeout=0.0, max_samples=64)
        for s, t in zip(samples or (), ts or (), strict=False):
            d = parse_marker(s[0] if isinstance(s, (list, tuple)) else s)
            if d is None:
                continue
            self.markers.append((float(t), d))
            self.telemetry.markers += 1
        if samples:
            self.wake.set()

    # ---- outlet loss and restart ---------------------------------------------------------
    def _resolve_same(self, timeout: float) -> list:
        """Streams that are the one read: same source_id (and name), else same query."""
        pylsl = lsl()
        info = self._stream_info
        sid = info.source_id()
        if sid:
            infos = pylsl.resolve_byprop("source_id", sid, minimum=1, timeout=timeout)
            return [i for i in infos if i.name() == info.name()]
        return pylsl.resolve_bypred(_predicate(self.query), minimum=1, timeout=timeout)

    def _check_outlet(self, now: float) -> None:
        """No sample for loss_check_s: is the outlet still there? Connect a restarted one."""
        name = self._stream_info.name()
        watched = self._watched()  # what the background resolver saw lately (forgets after 1 s)
        infos = watched
        if not any(i.uid() != self._uid for i in watched):  # no new outlet seen there: ask now
            try:
                infos = self._resolve_same(max(0.3, min(self._backoff, 1.0)))
            except Exception as e:  # the resolver itself failed: try again later
                log.warning("resolving stream %r failed (%s)", name, e)
                infos = []
            # still there, only quiet (a one-shot resolve on a busy machine may miss a live outlet:
            # two misses in a row before it counts as lost)
            if any(i.uid() == self._uid for i in infos):
                self._next_check = time.monotonic() + self.loss_check_s
                self._backoff = self.backoff_s
                self._misses = 0
                return
            self._misses += 1
        fresh = [i for i in infos if i.uid() != self._uid and i.uid() not in self._dead_uids]
        if not self.lost and (fresh or self._misses >= 2):  # one miss may be the resolver's
            self._mark_lost(now)
        if self._inlet.was_clock_reset() or self._backlog():
            # liblsl's recovery already reconnected this inlet: keep it (it holds everything)
            self._recovered(time.monotonic(), force_gap=False, relearn=True)
            return
        if fresh:
            new = max(fresh, key=lambda i: i.created_at())  # the newest: older ones may be gone too
            try:
                self.check(new)
                inlet = self._open_inlet(new, wait_clock=False)
            except StreamLostError as e:  # it vanished again while being opened: retry
                log.warning("stream %r: %s; retrying", name, e)
            else:
                if self._backlog():
                    # liblsl's recovery reconnected the old inlet while the new one was opened:
                    # keep the old (what it holds came to no other inlet), drop the new one unread
                    self._close_old(inlet)
                    self._recovered(time.monotonic(), force_gap=False, relearn=True)
                    return
                old, self._inlet = self._inlet, inlet
                self._dead_uids.add(self._uid)
                self._stream_info, self._uid = new, new.uid()
                self._close_old(old)
                self._recovered(time.monotonic(), force_gap=True, relearn=False)
                return
        waited = time.monotonic() - (self._lost_at or now)
        if not self.lost:
            self._next_check = time.monotonic() + self.loss_check_s
            return
        if not self.reconnect or waited >= self.reconnect_timeout_s:
            why = "reconnect is off" if not self.reconnect else \
                f"did not come back within {self.reconnect_timeout_s:g} s"
            raise StreamLostError(f"the outlet vanished and {why}", stream=name)
        self._next_check = time.monotonic() + min(self._backoff, max(0.0, self.reconnect_timeout_s - waited))
        self._backoff = min(self._backoff * 2, self.backoff_max_s)

    def _watched(self) -> list:
        """Streams with the source_id read, as a background resolver keeps finding them ([] without one)."""
        sid = self._stream_info.source_id()
        if not sid:
            return []
        try:
            if self._watch is None or self._watch_sid != sid:
                self._watch = lsl().ContinuousResolver(prop="source_id", value=sid, forget_after=1.0)
                self._watch_sid = sid
            return [i for i in self._watch.results()
                    if i.name() == self._stream_info.name() and i.uid() not in self._dead_uids]
        except Exception as e:  # the one-shot resolve still works
            log.debug("continuous resolver failed (%s)", e)
            return []

    @staticmethod
    def _close_old(old: Any) -> None:
        """Close the inlet of a vanished outlet. Its queue was empty when the switch began (no sample
        for loss_check_s, none available); anything in it now came from liblsl's own recovery onto
        the new outlet, which the new inlet delivers too, so it is not drained (no duplicates)."""
        try:
            old.close_stream()
        except Exception:  # closing a lost inlet may fail; nothing to do about it
            pass

    def _relearn(self) -> None:
        """The uid of the outlet now read (after liblsl's recovery moved the inlet): the newest live one."""
        try:
            infos = [i for i in self._resolve_same(1.0) if i.uid() not in self._dead_uids]
            if infos:
                new = max(infos, key=lambda i: i.created_at())
                self._stream_info, self._uid = new, new.uid()
        except Exception:  # the next silence check resolves again
            pass

    def _mark_lost(self, now: float) -> None:
        name = self._stream_info.name()
        self.lost = True  # (its uid is not marked dead: a resolver may only have missed it)
        self._lost_at = now
        self.telemetry.lost = True
        self.telemetry.event("lost", last_ts=self._last_ts, sample=self.ring.count)
        log.warning("stream %r lost after sample %d; reconnecting (source_id %r)", name, self.ring.count,
                    self._stream_info.source_id())
        if self.reconnect:
            self._guard.doing = f"reconnecting to stream {name!r}"

    def _recovered(self, now: float, *, force_gap: bool, relearn: bool) -> None:
        """A new outlet is read (by a fresh inlet, or liblsl reconnected the old one)."""
        if not self.lost:  # liblsl recovered before the silence was noticed (e.g. a stalled process)
            self.telemetry.event("lost", last_ts=self._last_ts, sample=self.ring.count, noticed="at reconnect")
        lost_at = self._lost_at if self._lost_at is not None else self._last_data
        self.lost = False
        self.telemetry.lost = False
        self._lost_at = None
        self._misses = 0
        self._backoff = self.backoff_s
        self._after_reconnect = self._after_reconnect or force_gap
        self._last_data = now
        if relearn:  # liblsl's recovery: learn the new outlet's uid
            self._relearn()
        self.telemetry.reconnects += 1
        self.telemetry.event("reconnected", after_s=max(0.0, now - lost_at), sample=self.ring.count)
        log.warning("stream %r back after %.2f s", self._stream_info.name(), max(0.0, now - lost_at))
        self._guard.doing = f"reading stream {self.query!r}"

    def _reconnect(self) -> None:
        """A stream without source_id vanished (LostError): re-resolve with backoff and reconnect."""
        info = self._stream_info
        name = info.name()
        lost_at = time.monotonic()
        self._mark_lost(lost_at)
        try:
            self._inlet.close_stream()
        except Exception:  # the inlet is already broken
            pass
        if not self.reconnect:
            raise StreamLostError("the outlet vanished and reconnect is off", stream=name)
        backoff = self.backoff_s
        while not self._stop.is_set():
            try:
                infos = self._resolve_same(backoff)
                if infos:
                    new = infos[0]
                    self.check(new)
                    self._connect(new, wait_clock=False)
                    self._recovered(time.monotonic(), force_gap=True, relearn=False)
                    return
            except StreamLostError as e:  # it vanished again while being opened: retry
                log.warning("stream %r: %s; retrying", name, e)
            waited = time.monotonic() - lost_at
            if waited >= self.reconnect_timeout_s:
                raise StreamLostError(f"the outlet vanished and did not come back within "
                                      f"{self.reconnect_timeout_s:g} s", stream=name)
            self._stop.wait(min(backoff, max(0.0, self.reconnect_timeout_s - waited)))
            backoff = min(backoff * 2, self.backoff_max_s)
