"""Counters and per-stage latency histograms of the serve loop, in constant memory.

Each stage keeps a fixed histogram of log-spaced bins from 1 us to 10 s (40 bins per decade,
~6% wide), so a service that runs for days uses the same memory as one that runs for a
second; percentiles are read from the histogram (bin's geometric centre, error < 3%), and the
exact min / max / mean are kept beside it. `Telemetry` is a plain class: the serve loop writes
it, a status line or an exporter (e.g. a Prometheus endpoint) reads `snapshot()` from another
thread (reads may be a frame behind; nothing blocks the loop).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import numpy as np

# Stage durations recorded per published frame (seconds):
STAGES = (
    "transport",  # newest sample's LSL timestamp -> pulled into the ring (LSL + inlet thread)
    "wait",  # pulled -> decode started (service loop wake-up)
    "assemble",  # window assembly from the ring
    "normalise",  # z-scoring in place
    "infer",  # engine.infer
    "publish",  # encode + ZeroMQ send + extra sinks
    "end_to_end",  # newest sample's LSL timestamp -> published
)



# The one latency summary of rtdecode: the service's histograms, benchmarks, the soak, the demo and
# the recorder all report durations with these keys ({"count": 0} when there is nothing).
PERCENTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p99.9_ms", 99.9))
SUMMARY_KEYS = ("count", "mean_ms", "min_ms", *(k for k, _ in PERCENTILES), "max_ms")


def latency_summary(values_ms: Any) -> dict[str, float]:
    """count, mean_ms, min_ms, p50_ms, p90_ms, p99_ms, p99.9_ms, max_ms of durations in milliseconds.

    Non-finite values are left out; exact percentiles (numpy), where Histogram's are binned.
    """
    a = np.asarray(values_ms, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"count": 0}
    out: dict[str, float] = {"count": int(a.size), "mean_ms": float(a.mean()), "min_ms": float(a.min())}
    for name, q in PERCENTILES:
        out[name] = float(np.percentile(a, q))
    out["max_ms"] = float(a.max())
    return out

class LatencyHistogram:
    """Log-spaced histogram of durations in seconds (constant memory, no allocation per record)."""

    def __init__(self, lo: float = 1e-6, hi: float = 10.0, bins_per_decade: int = 40):
        self.lo = float(lo)
        self.hi = float(hi)
        self.bpd = int(bins_per_decade)
        self._log_lo = math.log10(self.lo)
        self.n_bins = int(math.ceil((math.log10(self.hi) - self._log_lo) * self.bpd))
        # bin 0: < lo (underflow); bins 1..n_bins; bin n_bins + 1: >= hi (overflow)
        self.counts = np.zeros(self.n_bins + 2, dtype=np.int64)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        if not seconds > 0.0:  # also catches NaN; clocks may give 0 or tiny negatives
            i = 0
            seconds = max(seconds, 0.0) if seconds == seconds else 0.0
        elif seconds >= self.hi:
            i = self.n_bins + 1
        else:
            i = int((math.log10(seconds) - self._log_lo) * self.bpd) + 1
            i = 0 if i < 1 else i
        self.counts[i] += 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def _centre(self, i: int) -> float:
        if i == 0:
            return self.lo / 2
        if i > self.n_bins:
            return self.hi
        return 10 ** (self._log_lo + (i - 0.5) / self.bpd)

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN when empty. Clamped to the exact min/max."""
        if self.count == 0:
            return math.nan
        target = q / 100.0 * self.count
        cum = 0
        for i, c in enumerate(self.counts):
            cum += int(c)
            if cum >= target and c:
                return min(max(self._centre(i), self.min), self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def summary(self) -> dict[str, float]:
        """The latency summary (see `latency_summary`) of what was recorded, in milliseconds."""
        if self.count == 0:
            return {"count": 0}
        ms = 1000.0
        out: dict[str, float] = {"count": self.count, "mean_ms": self.mean * ms, "min_ms": self.min * ms}
        for name, q in PERCENTILES:
            out[name] = self.percentile(q) * ms
        out["max_ms"] = self.max * ms
        return out

    def reset(self) -> None:
        self.counts[:] = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf


INCIDENT_KINDS = ("lost", "reconnected")
MAX_INCIDENTS = 10000


class Telemetry:
    """What the service did: frames, skipped windows by reason, stream health, latencies."""

    def __init__(self, stages: tuple[str, ...] = STAGES, *, max_events: int = 200):
        self.stages = {name: LatencyHistogram() for name in stages}
        self.started = time.monotonic()
        self.frames = 0
        self.skipped: dict[str, int] = {}
        self.publish_dropped = 0  # frames the PUB socket refused (never blocks)
        # stream health, written by the source
        self.samples = 0
        self.chunks = 0
        self.gaps = 0
        self.missing_samples = 0  # estimated from gap lengths
        self.out_of_order = 0
        self.duplicates = 0
        self.nan_samples = 0
        self.reconnects = 0
        self.lost = False  # the outlet is gone right now (set by the source)
        self.markers = 0
        self.newest_ts = math.nan  # LSL timestamp of the newest sample pulled
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)  # the newest bad ranges
        # outlet losses and reconnects are kept apart, never evicted by a long run of bad ranges
        # (bounded all the same: past MAX_INCIDENTS only the counts grow)
        self.incidents: list[dict[str, Any]] = []
        self.event_counts: dict[str, int] = {}  # every event ever recorded, by kind
        self.input_fit: dict[str, Any] | None = None  # written by rtdecode.fit.FitMonitor (state, score per area)
        self._last_status = (self.started, 0)

    # ---- writers -------------------------------------------------------------------------
    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def event(self, kind: str, **info: Any) -> None:
        """Remember a notable range or incident; counted by kind for ever.

        `lost` / `reconnected` go to `incidents` (kept, up to MAX_INCIDENTS); the bad ranges to
        `events` (bounded: the oldest are forgotten).
        """
        self.event_counts[kind] = self.event_counts.get(kind, 0) + 1
        if kind in INCIDENT_KINDS:
            if len(self.incidents) < MAX_INCIDENTS:
                self.incidents.append({"kind": kind, **info})
        else:
            self.events.append({"kind": kind, **info})

    def record_frame(self, durations: dict[str, float]) -> None:
        self.frames += 1
        for name, d in durations.items():
            h = self.stages.get(name)
            if h is not None:
                h.record(d)

    # ---- readers -------------------------------------------------------------------------
    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def lag_s(self, now_lsl: float) -> float:
        """Age of the newest sample pulled (LSL clock)."""
        return now_lsl - self.newest_ts

    def status_line(self, now: float | None = None, now_lsl: float | None = None) -> str:
        """One line for the log: rate since the last line, totals, e2e p50/p99, lag."""
        now = time.monotonic() if now is None else now
        t0, f0 = self._last_status
        rate = (self.frames - f0) / max(now - t0, 1e-9)
        self._last_status = (now, self.frames)
        e2e = self.stages.get("end_to_end")
        inf = self.stages.get("infer")
        lag = self.lag_s(now if now_lsl is None else now_lsl) * 1000.0
        parts = [f"{rate:6.1f} frames/s", f"frames {self.frames}", f"skipped {self.skipped_total}"]
        if e2e is not None and e2e.count:
            parts.append(f"e2e p50 {e2e.percentile(50) * 1e3:.2f} ms p99 {e2e.percentile(99) * 1e3:.2f} ms")
        if inf is not None and inf.count:
            parts.append(f"infer p50 {inf.percentile(50) * 1e3:.2f} ms")
        parts.append(f"lag {lag:.1f} ms" if math.isfinite(lag) else "lag -")
        if self.gaps or self.reconnects or self.nan_samples:
            parts.append(f"gaps {self.gaps} reconnects {self.reconnects} nan {self.nan_samples}")
        fit = self.input_fit
        if fit is not None and fit.get("state") != "off":
            score = " ".join(f"{k} {v:.2f}" for k, v in fit.get("score", {}).items())
            parts.append(f"fit {fit['state'].upper() if fit['state'] == 'misfit' else fit['state']}"
                         + (f" {score}" if score else ""))
        return " | ".join(parts)

    def snapshot(self) -> dict[str, Any]:
        """Everything as plain JSON-able values (milliseconds for latencies)."""
        elapsed = time.monotonic() - self.started
        return {
            "elapsed_s": elapsed,
            "frames": self.frames,
            "frames_per_s": self.frames / elapsed if elapsed > 0 else 0.0,
            "skipped": dict(self.skipped),
            "skipped_total": self.skipped_total,
            "publish_dropped": self.publish_dropped,
            "stream": {"samples": self.samples, "chunks": self.chunks, "gaps": self.gaps,
                       "missing_samples": self.missing_samples, "out_of_order": self.out_of_order,
                       "duplicates": self.duplicates, "nan_samples": self.nan_samples,
                       "reconnects": self.reconnects, "markers": self.markers, "lost": self.lost},
            "latency_ms": {name: _clean(h.summary()) for name, h in self.stages.items()},
            "events": list(self.events),
            "input_fit": None if self.input_fit is None else dict(self.input_fit),
            "event_counts": dict(self.event_counts),
            "incidents": list(self.incidents),
        }


def summary_text(snap: dict[str, Any]) -> str:
    """Human-readable multi-line summary of a `Telemetry.snapshot()`."""
    s = snap["stream"]
    lines = [
        f"frames published: {snap['frames']} in {snap['elapsed_s']:.1f} s "
        f"({snap['frames_per_s']:.1f}/s); dropped by PUB: {snap['publish_dropped']}",
        "skipped windows: " + (", ".join(f"{k} {v}" for k, v in sorted(snap["skipped"].items())) or "none"),
        f"stream: {s['samples']} samples in {s['chunks']} chunks; gaps {s['gaps']} "
        f"(~{s['missing_samples']} samples missing); out-of-order {s['out_of_order']}; "
        f"duplicates {s['duplicates']}; NaN/Inf samples {s['nan_samples']}; reconnects {s['reconnects']}",
    ]
    if s.get("lost"):
        lines.append("STREAM LOST: the outlet was gone when the run ended (no new one connected)")
    if snap.get("event_counts"):
        lines.append("events: " + ", ".join(f"{k} {v}" for k, v in sorted(snap["event_counts"].items())))
    lines.append(f"{'latency (ms)':<14}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for name, h in snap["latency_ms"].items():
        if not h["count"]:
            continue
        lines.append(f"{name:<14}{h['p50_ms']:>9.3f}{h['p90_ms']:>9.3f}{h['p99_ms']:>9.3f}{h['max_ms']:>9.3f}")
    fit = snap.get("input_fit")
    if fit:
        lines.append(f"input fit: {fit['state']}" + (f" ({fit['reason']})" if fit.get("reason") else
                     f"; {fit.get('misfit_blocks', 0)} of {fit.get('blocks', 0)} blocks out of range; latest "
                     + (" ".join(f"{k} {v:.2f}" for k, v in fit.get("score", {}).items()) or "-")))
    return "\n".join(lines)


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
