"""The decoding service: LSL ring buffer -> windows -> normaliser -> engine -> ZeroMQ frames.

`DecoderService(config).run()` blocks until stopped (`stop()`, a signal handler calling it,
`duration_s` or `max_frames`) and returns a `ServeSummary`.

Scheduling. Sliding mode is driven by the data: whenever the newest reference sample whose
whole span [t, t + span) has arrived is at least one stride past the last decoded one, the
service decodes THAT newest window (never a queued older one). Windows that fell due while
the service was busy are counted as skipped "stale". Event mode decodes one window per onset
marker, once the window's span has arrived.

Policy per error class (see docs/serving.md): config/model/engine/stream-mismatch errors stop
at start-up; a lost outlet is reconnected by the source; windows holding NaN/Inf or spanning a
gap are skipped or decoded with a flag (`on_bad_samples`); a failed source thread stops the
service cleanly with the failure in the summary; a sink that raises (a recorder whose writer
thread failed raises that error from write) is dropped and frames keep flowing. Under
RTDECODE_RAISE_IN_THREADS (rtdecode.threads) both re-raise instead.

Heartbeat. Every `heartbeat_interval_s`, and at once when it changes, the service publishes its
state (streaming / stream_lost / idle / stopping) on the PUB socket under its own topic, with
this run's session id, which every frame header carries too (sinks.heartbeat, docs/protocol.md).

Garbage collection: after set-up, everything allocated so far is frozen (gc.freeze), so the
collector's full passes walk only what the run itself allocates, not the whole heap of onnx,
numpy and the model (a full collection of that heap took 33-60 ms on the 2-core Xeon).

Hot path: no per-frame allocation of arrays. Windows are read as views of the ring,
assembled straight into the engine's bound input, normalised in place, and encoded into a
preallocated payload; only the small JSON header is built per frame, from a template
(publisher.HeaderEncoder; a FrameHeader object only when there are extra sinks). The inlet
thread checks a clean chunk in a few calls (see LslSource._clean) before it wakes this loop.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ServeConfig
from .errors import ConfigError, RtdecodeError
from .fit import MISFIT_FLAG, monitor_for
from .ringbuffer import FLAG_NAMES, FLAG_NAN
from .sinks import SINK_METHODS, Sink
from .sinks.heartbeat import HeartbeatSender, new_session_id
from .telemetry import Telemetry, summary_text
from .threads import raise_in_threads

log = logging.getLogger(__name__)

SPIN_MAX_S = 0.005  # busy_poll: longest spin for one sample before blocking again (a stalled stream)


@dataclass
class ServeSummary:
    """What a finished run did (JSON-able via to_dict)."""

    frames: int
    skipped: dict[str, int]
    stop_reason: str
    telemetry: dict[str, Any]
    engine: str = ""
    model_id: str = ""
    stream: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    stream_lost: bool = False  # the run ended while the outlet was gone (no new one connected)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "skipped": self.skipped, "stop_reason": self.stop_reason,
                "error": self.error, "engine": self.engine, "model_id": self.model_id,
                "stream": self.stream, "stream_lost": self.stream_lost, "telemetry": self.telemetry}

    def text(self) -> str:
        head = [f"stopped: {self.stop_reason}", f"model {self.model_id} on {self.engine}"]
        if self.error:
            head.append(f"error: {self.error}")
        if self.stream_lost:
            head.append("the stream was lost when the run ended (exit status 3)")
        return "\n".join(head) + "\n" + summary_text(self.telemetry)


class DecoderService:
    """One stream, one model, one publisher, plus extra sinks (rtdecode.sinks.Sink).

    Sinks receive every frame's header and payload array [H, W, 3] (reused for the next frame,
    so a sink that keeps it must copy it), a telemetry snapshot every status interval, and
    close() at the end.
    """

    def __init__(self, config: ServeConfig, *, sinks: Iterable[Sink] = (),
                 stop_event: threading.Event | None = None, announce: Callable[[str], None] | None = None):
        if not isinstance(config, ServeConfig):
            raise ConfigError(f"DecoderService needs a ServeConfig, got {type(config).__name__}")
        if not config.model:
            raise ConfigError("no model given: set 'model' (--model M.onnx)")
        self.config = config
        self.sinks: list[Sink] = list(sinks)
        for sink in self.sinks:
            if not isinstance(sink, Sink):
                missing = [m for m in SINK_METHODS if not callable(getattr(sink, m, None))]
                raise ConfigError(f"sink {sink!r} lacks {', '.join(missing)}; a sink needs "
                                  f"{', '.join(SINK_METHODS)} (see rtdecode.sinks.Sink)")
        self._dropped_sinks: list[Sink] = []  # sinks that raised: closed at the end, quietly
        self.announce = announce or (lambda text: log.info("%s", text))
        self.stop_event = stop_event or threading.Event()
        self.telemetry = Telemetry()
        self.contract: Any = None
        self.engine: Any = None
        self.source: Any = None
        self.publisher: Any = None
        self.endpoint: str | None = None  # the bound address (tcp://...:port), once started
        self.started = threading.Event()  # set when the loop is about to run (for tests, demos)
        self._stop_reason = "stopped"
        self.fit_monitor: Any = None  # rtdecode.fit.FitMonitor when the model carries input-fit statistics
        self.preassembled = 0  # frames whose window was partly assembled while its samples arrived
        self.session = new_session_id()  # in every frame header and heartbeat: seq restarts with it
        self.heartbeat: Any = None  # sinks.heartbeat.HeartbeatSender, once the publisher is bound
        self._frozen = False  # set-up's objects are frozen out of the collector (gc.freeze) until the end

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to finish (thread- and signal-safe)."""
        if not self.stop_event.is_set():
            self._stop_reason = reason
        self.stop_event.set()
        if self.source is not None:
            self.source.wake.set()

    # ---- set-up --------------------------------------------------------------------------
    def _setup(self) -> None:
        from .contract import read_contract
        from .engines import create_engine
        from .lslconfig import configure_lsl
        from .sinks.publisher import FrameEncoder, FramePublisher, HeaderEncoder
        from .sources.lsl_inlet import LslSource

        cfg = self.config
        configure_lsl(scope=cfg.lsl_scope)
        self.contract = c = read_contract(cfg.model)
        opts = {**cfg.engine_options, **({} if cfg.threads is None else {"threads": cfg.threads})}
        self.engine = create_engine(cfg.engine, cfg.model, c, **opts)
        selection = getattr(self.engine, "selection", None)
        if selection is not None:  # --engine auto: which engine and why the faster ones were passed over
            self.announce(selection.summary())
        self.announce(f"engine: {self.engine.describe()}")
        m, e = c.input_shape
        bound = getattr(self.engine, "x", None)
        if isinstance(bound, np.ndarray) and bound.shape == (1, m, e) and bound.dtype == np.float32 \
                and bound.flags.c_contiguous:
            self.x = bound  # assemble straight into the engine's bound input
        else:
            self.x = np.zeros((1, m, e), dtype=np.float32)
        for _ in range(3):  # warm-up: first runs allocate and tune
            self.engine.infer(self.x)
        self.assembler = c.assembler()
        self.normaliser = c.normaliser()
        self.fit_monitor = monitor_for(c, self.telemetry, cfg.mode, self.announce)  # None: not monitored
        self.encoder = FrameEncoder(c.image_height, c.image_width, cfg.frame_dtype)
        self.header_encoder = HeaderEncoder(c.model_id, self.encoder.shape, self.encoder.dtype, session=self.session)
        fs = c.plan.sampling_rate_hz
        self.span = c.plan.span
        self.stride = max(1, int(round(cfg.stride_ms * fs / 1000.0)))
        capacity = max(int(round(cfg.buffer_s * fs)), 4 * self.span, 4 * self.stride, 64)
        if cfg.binds_beyond_loopback:
            log.warning("publishing frames on %s: reachable from other machines", cfg.address)
        self.publisher = FramePublisher(cfg.address, sndhwm=cfg.sndhwm, sndbuf=cfg.sndbuf)
        self.endpoint = self.publisher.endpoint
        self.heartbeat = HeartbeatSender(self.publisher, session=self.session, interval_s=cfg.heartbeat_interval_s,
                                         model_id=c.model_id, stream=cfg.stream)
        if cfg.record:
            from .sinks.recorder import FrameRecorder

            # the model's id and contract travel with the frames (frames --export-nwb archives them)
            self.sinks.append(FrameRecorder(cfg.record, source=f"serve {cfg.model}",
                                            meta={"model_id": c.model_id, "contract": c.to_metadata()}))
        # what set-up made (the model, onnx, numpy, ...) lives as long as the run: out of the
        # collector's sight, a full collection no longer walks it (measured: 33-60 ms pauses).
        # Before the inlet opens: the samples it queues would wait for this collection.
        gc.collect()
        gc.freeze()
        self._frozen = True
        self.source = LslSource(
            cfg.stream, n_channels=c.layout.n_channels, sampling_rate_hz=fs, capacity=capacity,
            telemetry=self.telemetry, resolve_timeout_s=cfg.resolve_timeout_s, reconnect=cfg.reconnect,
            reconnect_timeout_s=cfg.reconnect_timeout_s, backoff_s=cfg.reconnect_backoff_s,
            backoff_max_s=cfg.reconnect_backoff_max_s,
            marker_query=cfg.marker_stream if cfg.mode == "event" else None)
        self.source.open()
        self.announce(f"serving model {c.model_id} ({m} maps x {e} electrodes, span {self.span} samples, "
                      f"stride {self.stride} samples, {cfg.mode} mode) from stream {self.source.info['name']!r} "
                      f"to {self.endpoint}")

    def _teardown(self) -> None:
        if self.heartbeat is not None:  # first: closing the source and sinks may take a while
            self.heartbeat.stop(self._stop_reason, newest_ts=self.telemetry.newest_ts)
        if self.source is not None:
            self.source.stop()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # a sink that fails to close must not hide the summary
                log.error("closing sink %r failed: %s", sink, e)
        for sink in self._dropped_sinks:  # their failure was reported when they were dropped
            try:
                sink.close()
            except Exception as e:
                log.debug("closing dropped sink %r: %s", sink, e)
        if self.publisher is not None:
            self.telemetry.publish_dropped = self.publisher.dropped
            self.publisher.close(linger_s=0.2 if self.heartbeat is not None and self.heartbeat.sent else 0.0)
        if self.engine is not None:
            self.engine.close()

    # ---- loop ----------------------------------------------------------------------------
    def run(self) -> ServeSummary:
        error: str | None = None
        affinity = None
        try:
            self._setup()
            self.source.start(thread=self.config.inlet == "thread")
            affinity = self._pin()  # after the inlet thread started: it keeps the other CPUs
            self.telemetry.started = time.monotonic()
            self.started.set()
            if self.config.mode == "event":
                self._loop_event()
            else:
                self._loop_sliding()
            failure = self.source.failure
            if failure is not None:  # logged by the thread; surfaced here (rtdecode.threads)
                if raise_in_threads():
                    self.source.raise_if_failed()
                error = str(failure)
                self._stop_reason = "source failed"
        finally:
            self.started.set()
            if self._frozen:
                gc.unfreeze()
                self._frozen = False
            if affinity is not None:
                os.sched_setaffinity(0, affinity)
            self._teardown()
        snap = self.telemetry.snapshot()
        return ServeSummary(frames=self.telemetry.frames, skipped=dict(self.telemetry.skipped),
                            stop_reason=self._stop_reason, telemetry=snap,
                            engine=self.engine.describe() if self.engine else "",
                            model_id=self.contract.model_id if self.contract else "",
                            stream=dict(self.source.info) if self.source else {}, error=error,
                            stream_lost=bool(getattr(self.source, "lost", False)))

    def _pin(self) -> set[int] | None:
        """Pin this thread (the serve loop) to config.pin_cpu; returns the affinity to restore."""
        cpu = self.config.pin_cpu
        if cpu is None:
            return None
        if not hasattr(os, "sched_setaffinity"):
            raise ConfigError("pin_cpu needs os.sched_setaffinity (Linux)")
        old = os.sched_getaffinity(0)
        if cpu not in old:
            raise ConfigError(f"pin_cpu {cpu} is not among the CPUs this process may use ({sorted(old)})")
        os.sched_setaffinity(0, {cpu})  # pid 0: the calling thread only, on Linux
        return old

    def _should_stop(self, t_end: float) -> bool:
        cfg = self.config
        if self.stop_event.is_set():
            return True
        if self.source.failure is not None:
            return True
        if cfg.max_frames is not None and self.telemetry.frames >= cfg.max_frames:
            self._stop_reason = f"max_frames {cfg.max_frames} reached"
            return True
        if time.monotonic() >= t_end:
            self._stop_reason = f"duration {cfg.duration_s:g} s reached"
            return True
        return False

    def _beat(self, now: float) -> None:
        """The heartbeat's tick (called with every status check, i.e. at least every 50 ms)."""
        self.heartbeat.tick(now, self.telemetry.frames, lost=self.source.lost, newest_ts=self.telemetry.newest_ts)

    def _status(self, now: float) -> None:
        self._beat(now)
        iv = self.config.status_interval_s
        if iv > 0 and now >= self._next_status:
            self._next_status = now + iv
            log.info("%s", self.telemetry.status_line(now))
            if self.sinks:
                snap = self.telemetry.snapshot()
                snap.pop("events", None)
                for sink in list(self.sinks):
                    try:
                        sink.write_telemetry(snap)
                    except Exception as e:
                        self._drop_sink(sink, e)

    def _drop_sink(self, sink: Sink, error: Exception) -> None:
        """Policy for a sink that raised: drop it, record why, keep publishing (tests: re-raise)."""
        self.sinks.remove(sink)
        self._dropped_sinks.append(sink)
        context = " ".join(getattr(error, "__notes__", ()))
        self.telemetry.event("sink_failed", sink=repr(sink), error=f"{type(error).__name__}: {error}",
                             context=context)
        if raise_in_threads():
            raise error
        log.error("sink %r failed and is dropped: %s: %s %s", sink, type(error).__name__, error, context)

    def _loop_sliding(self) -> None:
        """Decode the newest due window; while waiting for it, assemble the maps it already holds.

        The next window (reference sample last_ref + stride) is known before its last sample
        arrives, and every map but the latest ones lies in samples that are already in the
        ring: those maps are assembled on the wake-ups before (WindowAssembler.assemble_ready,
        straight into the engine input), so at decode time only the maps that hold the newest
        samples are left. If the window decoded is another one (the loop fell behind), it is
        assembled in full. Either way the values are the same.

        Catching up (config.catch_up "fresh"): when a decode ends with the next window already
        due, its newest sample has been waiting for part of the decode. If that wait is longer
        than a third of the usual interval between arrivals, the loop decodes the window ending
        at the next sample to arrive instead (pre-assembled meanwhile). The frame it publishes
        is then that much fresher, and so is what a display shows on average: with arrivals
        every I and the newest sample a old, waiting changes the mean age of the shown image
        by (I - 3a) / 2, a gain when a > I / 3. Only right after a decode, so a loop that
        wakes late never waits twice.
        """
        ring, wake, span, stride = self.source.ring, self.source.wake, self.span, self.stride
        asm, x = self.assembler, self.x
        src = self.source
        in_loop = self.config.inlet == "loop"  # this loop pulls LSL itself (no inlet thread)
        spin = in_loop and self.config.busy_poll
        t_end = math.inf if self.config.duration_s is None else time.monotonic() + self.config.duration_s
        self._next_status = time.monotonic() + self.config.status_interval_s
        last_ref = -(1 << 62)
        fresh = self.config.catch_up == "fresh"
        fresh_ref = last_ref  # after a late decode: the window ending at the next sample to arrive
        decoded = False  # the last pass decoded a frame
        target, done = -1, 0  # next window's reference sample; maps of it already in x
        while not self._should_stop(t_end):
            wake.clear()
            if in_loop:
                src.poll(0.0)  # what arrived meanwhile (e.g. during the last decode), before deciding
            count = ring.count
            ref = count - span
            due = max(last_ref + stride, fresh_ref)
            if decoded and fresh and ref >= due >= 0 and \
                    time.monotonic() - src.available_since(count - 1) > src.arrival_interval_s / 3.0:
                fresh_ref = due = ref + 1  # the newest sample is stale: wait for the next one
            decoded = False
            if ref < 0 or ref < due:
                nxt = max(due, 0)
                if nxt != target:
                    target, done = nxt, 0
                avail = min(count - target, span)
                if avail > 0 and done < len(asm.ready_order) and asm.ready_stops[done] <= avail:
                    block = ring.window(target, avail)
                    done = 0 if block is None else asm.assemble_ready(block, x[0], done, avail)
                if spin and count + 1 >= nxt + span:  # the next sample completes the due window
                    self._spin(count)
                elif in_loop:
                    src.poll(0.05)  # blocks in liblsl (GIL released) until a sample arrives
                else:
                    wake.wait(0.05)
                self._status(time.monotonic())
                continue
            if last_ref >= 0:
                missed = (ref - last_ref) // stride - 1
                if missed > 0:
                    self.telemetry.skip("stale", missed)
            last_ref = ref
            self._decode(ref, None, done if ref == target else 0)
            decoded = True
            target, done = -1, 0
            self._status(time.monotonic())

    def _spin(self, count: int) -> None:
        """busy_poll: poll liblsl without blocking until sample `count` is in the ring (at most
        SPIN_MAX_S, then one blocking poll): no wake-up from a condition variable for the sample
        that completes the due window. Each poll releases the GIL; the loop keeps its core."""
        src, ring = self.source, self.source.ring
        t_stop = time.monotonic() + SPIN_MAX_S
        empty = False  # the last poll found nothing: what the next one finds came just now
        while ring.count == count and time.monotonic() < t_stop and src.failure is None:
            empty = src.poll(0.0, after_empty=empty) == 0
        if ring.count == count:
            src.poll(0.05)

    def _loop_event(self) -> None:
        src = self.source
        ring, wake, span = src.ring, src.wake, self.span
        tol = 0.5 / self.contract.plan.sampling_rate_hz
        t_end = math.inf if self.config.duration_s is None else time.monotonic() + self.config.duration_s
        self._next_status = time.monotonic() + self.config.status_interval_s
        pending: list[tuple[float, dict]] = []
        in_loop = self.config.inlet == "loop"
        while not self._should_stop(t_end):
            wake.clear()
            if in_loop:
                src.poll(0.0)
            while src.markers:
                t, d = src.markers.popleft()
                if d.get("event") == "onset":
                    pending.append((t, d))
            progressed = False
            while pending:
                t, d = pending[0]
                idx = ring.find_time(t, tol)
                if idx is None:
                    break  # the onset's sample has not arrived yet
                if idx < 0 or idx < ring.oldest:
                    self.telemetry.skip("overwritten")
                    pending.pop(0)
                    continue
                if idx + span > ring.count:
                    break  # its span is still arriving
                pending.pop(0)
                image = d.get("image")
                self._decode(idx, int(image) if isinstance(image, (int, float)) else None)
                progressed = True
            if not progressed:
                if in_loop:
                    src.poll(0.05)
                else:
                    wake.wait(0.05)
            self._status(time.monotonic())

    def _decode(self, ref: int, stimulus: int | None, assembled: int = 0) -> bool:
        """Decode the window starting at absolute sample `ref` and publish it; False if skipped.

        `assembled`: maps of this window already in the engine input (in the assembler's
        ready_order), assembled while its last samples were arriving.
        """
        t_start = time.monotonic()
        ring, span, tel = self.source.ring, self.span, self.telemetry
        newest = ref + span - 1
        bad = ring.window_flags(ref, span)
        flags: list[str] | tuple[()] = ()
        if bad:
            names = [FLAG_NAMES[b] for b in sorted(FLAG_NAMES) if bad & b]
            if self.config.on_bad_samples == "skip":
                tel.skip(names[0])
                return False
            flags = names
        newest_ts = ring.timestamp(newest)
        ref_ts = ring.timestamp(ref)
        pulled = ring.arrival(newest)
        if self.config.max_lag_ms is not None and (t_start - newest_ts) * 1000.0 > self.config.max_lag_ms:
            tel.skip("lagging")
            return False
        block = ring.window(ref, span)
        if block is None:
            tel.skip("overwritten")
            return False
        x = self.x
        if assembled:
            self.assembler.assemble_ready(block, x[0], assembled, span)
            self.preassembled += 1
        else:
            self.assembler.assemble(block, out=x[0])
        if not ring.intact(ref):  # also covers the reads of the maps assembled before
            tel.skip("overwritten")
            return False
        t_asm = time.monotonic()
        self.normaliser(x[0])
        if bad & FLAG_NAN:
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # NaN maps -> training mean
        t_norm = time.monotonic()
        y = self.engine.infer(x)
        t_inf = time.monotonic()
        fit = self.fit_monitor
        if fit is not None and fit.misfit:  # the latest block of windows did not fit the training data
            flags = (*flags, MISFIT_FLAG)
        payload = self.encoder.encode(y[0])
        seq, skipped = tel.frames, tel.skipped_total
        t_pub = time.monotonic()
        stages = (pulled, t_start, t_asm, t_norm, t_inf, t_pub)
        self.publisher.publish(self.header_encoder.encode(seq, ref_ts, newest_ts, stages, flags, skipped, stimulus),
                               payload)
        if self.sinks:
            header = self.header_encoder.header(seq, ref_ts, newest_ts, stages, flags, skipped, stimulus)
            for sink in list(self.sinks):
                try:
                    sink.write(header, payload)
                except Exception as e:  # a broken sink is dropped; the display keeps getting frames
                    self._drop_sink(sink, e)
        t_done = time.monotonic()
        tel.record_frame({"transport": pulled - newest_ts, "wait": t_start - pulled,
                          "assemble": t_asm - t_start, "normalise": t_norm - t_asm, "infer": t_inf - t_norm,
                          "publish": t_done - t_inf, "end_to_end": t_pub - newest_ts})
        if fit is not None:  # after publishing, outside the stage times: one window scored per 50 ms (rtdecode.fit)
            fit.observe(ref, x[0])
        return True


__all__ = ["DecoderService", "ServeSummary", "ServeConfig", "RtdecodeError"]
