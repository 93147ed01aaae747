"""Latency, frame-interval and per-stage statistics of the frames a rig Subscriber received.

Shared by the rtdecode run (end_to_end.py) and the first-try baseline (first_try.py); every
duration is summarised with rtdecode.telemetry.latency_summary (count, mean_ms, p50_ms, ...).
"""

from __future__ import annotations

import numpy as np

from rtdecode.rig import FrameLog
from rtdecode.telemetry import latency_summary

# per-stage durations: (from, to) among the frame header's stamps, the newest sample's LSL
# timestamp ("newest_ts") and the subscriber's receipt ("received")
STAGES = {"lsl_in": ("newest_ts", "pulled"), "wait": ("pulled", "started"),
          "assemble": ("started", "assembled"), "normalise": ("assembled", "normalised"),
          "infer": ("normalised", "inferred"), "encode": ("inferred", "published"),
          "zmq_out": ("published", "received")}


def analyse_frames(log: FrameLog | None, stride_ms: float, skip_first_s: float = 0.5) -> tuple[dict, np.ndarray]:
    """Latency and frame-interval statistics (frames of the first `skip_first_s` dropped);
    returns (stats, latency series in ms)."""
    if log is None or not len(log):
        return {"frames_received": 0, "latency_ms": {"count": 0}, "frame_interval_ms": {"count": 0}}, np.empty(0)
    kept = log.since(skip_first_s)
    if len(kept) < 2:
        kept = log
    recv = kept.col("received")
    lat = (recv - kept.col("newest_ts")) * 1e3
    intervals = np.diff(recv) * 1e3
    seq = kept.col("seq")
    iv = latency_summary(intervals)
    iv["sd_ms"] = float(intervals.std()) if intervals.size else None
    iv["nominal_ms"] = stride_ms
    out = {"frames_received": len(log), "frames_analysed": len(kept),
           "latency_ms": latency_summary(lat), "frame_interval_ms": iv,
           "frames_lost_in_transport": int(max(0, (seq.max() - seq.min() + 1) - seq.size)) if seq.size else 0,
           "frames_passed_over": int(log.discarded)}  # of those lost: skipped by the keep-newest subscriber
    return out, lat


def stage_breakdown(log: FrameLog) -> dict:
    """Per-stage durations (ms) from the rtdecode headers' monotonic stage stamps.

    lsl_in: newest sample's LSL timestamp -> its chunk pulled into the ring (LSL + inlet thread);
    wait: pulled -> decode started (loop wake-up); assemble / normalise / infer; encode: frame
    encoding + header; zmq_out: ZeroMQ send -> the subscriber process has the frame;
    e2e_minus_infer: per frame, latency minus that frame's own inference time (the pipeline's
    overhead around the engine). Stages no frame stamped are left out.
    """
    out = {}
    for name, (a, b) in STAGES.items():
        out[name] = latency_summary((log.col(b) - log.col(a)) * 1e3)
    e2e = log.col("received") - log.col("newest_ts")
    out["e2e_minus_infer"] = latency_summary((e2e - (log.col("inferred") - log.col("normalised"))) * 1e3)
    return {k: v for k, v in out.items() if v["count"]}


def overhead_ms(log: FrameLog | None, skip_first_s: float = 0.5) -> np.ndarray:
    """Per frame: latency minus that frame's own inference (ms), the series behind
    stage_breakdown's e2e_minus_infer (frames without both stamps are left out)."""
    if log is None or not len(log):
        return np.empty(0)
    kept = log.since(skip_first_s)
    v = ((kept.col("received") - kept.col("newest_ts")) - (kept.col("inferred") - kept.col("normalised"))) * 1e3
    return v[np.isfinite(v)]


def infer_ms(log: FrameLog | None, skip_first_s: float = 0.5) -> dict:
    """Summary of each frame's own inference time (header stamps normalised -> inferred)."""
    if log is None or not len(log):
        return {"count": 0}
    kept = log.since(skip_first_s)
    return latency_summary((kept.col("inferred") - kept.col("normalised")) * 1e3)


def shown_age_ms(log: FrameLog | None, skip_first_s: float = 0.5) -> float | None:
    """Mean age (ms) of the frame a display shows, over time: between receipts k and k+1 the
    shown frame is k, whose age grows from (received_k - newest_ts_k) to (received_k+1 - newest_ts_k).

    Per-frame latency alone cannot compare schedulers that publish different frames (one that
    waits for a fresh sample has fresher frames, but fewer): this is what a viewer sees."""
    if log is None or len(log) < 2:
        return None
    kept = log.since(skip_first_s)
    if len(kept) < 2:
        return None
    recv, ts = kept.col("received"), kept.col("newest_ts")
    dt = np.diff(recv)
    if dt.sum() <= 0:
        return None
    start = recv[:-1] - ts[:-1]
    return float(((start + dt / 2.0) * dt).sum() / dt.sum() * 1e3)
