"""One e2e run of a peer pipeline (ezmsg or MNE-LSL) on the loopback rig, measured as rtdecode's is.

The same three-process layout as end_to_end.run_rtdecode, with the pipeline in a child of its
own: the rig's Pusher (1024-channel noise at 1 kHz, one sample per push), the pipeline child
(peer_ezmsg.EzmsgPipeline or peer_mne_lsl.MneLslPipeline) and the rig's Subscriber, which reads
the same wire format from every pipeline. Latency = receipt - newest sample's LSL timestamp;
the pipeline's own inference time comes in its frame headers (stages "normalised" ->
"inferred"), so the per-frame overhead is computed as for rtdecode (frame_stats).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtdecode.rig import CpuMeter, Pusher, Subscriber, free_tcp_address

from .frame_stats import analyse_frames, stage_breakdown
from .peer_decode import peer_available


def pipeline_class(kind: str):
    if kind == "ezmsg":
        from .peer_ezmsg import EzmsgPipeline

        return EzmsgPipeline
    if kind == "mne-lsl":
        from .peer_mne_lsl import MneLslPipeline

        return MneLslPipeline
    raise ValueError(f"unknown peer pipeline {kind!r}; expected 'ezmsg' or 'mne-lsl'")


def run_peer(kind: str, model_path: str | Path, *, stride_ms: float, duration_s: float, threads: int | None = None,
             n_channels: int = 1024, keep_images: bool = False, progress=print) -> tuple[dict, np.ndarray, dict]:
    """One run; returns (row, latency series ms, extra: {"frames": FrameLog, "base": pusher base time}).

    A peer that is not installed, or fails (its error), gives a row with "skipped" and no frames.
    """
    why = peer_available(kind)
    if why:
        return {"pipeline": kind, "stride_ms": stride_ms, "skipped": why, "frames_received": 0,
                "latency_ms": {"count": 0}}, np.empty(0), {}
    try:
        return _run(kind, model_path, stride_ms=stride_ms, duration_s=duration_s, threads=threads,
                    n_channels=n_channels, keep_images=keep_images, progress=progress)
    except (TimeoutError, RuntimeError) as e:  # a peer that fails is reported, the bench goes on
        progress(f"e2e {kind} stride {stride_ms:g} ms failed: {e}")
        return {"pipeline": kind, "stride_ms": stride_ms, "skipped": f"failed: {e}", "frames_received": 0,
                "latency_ms": {"count": 0}}, np.empty(0), {}


def _run(kind: str, model_path, *, stride_ms: float, duration_s: float, threads: int | None, n_channels: int,
         keep_images: bool, progress) -> tuple[dict, np.ndarray, dict]:
    cls = pipeline_class(kind)
    address = free_tcp_address()
    with Pusher.noise(n_channels=n_channels, duration_s=duration_s + 4.0) as pusher, \
            Subscriber(address, keep_images=keep_images) as sub:
        with cls(model_path, pusher.name, address, stride_ms=stride_ms, duration_s=duration_s + 1.0,
                 threads=threads) as pipe:
            base = pusher.base(60)
            meter = CpuMeter({"pusher": pusher.pid, "subscriber": sub.pid, "pipeline": pipe.pid}, self_name="bench")
            state = pipe.wait_for("done", duration_s + 40.0, what=f"the {kind} pipeline to finish")
            cpu = meter.read()
    frames = sub.frames
    row, lat = analyse_frames(frames, stride_ms)
    if frames is not None and len(frames):
        row["stages_ms"] = stage_breakdown(frames.since(0.5))
    pipeline_cores = cpu.get("pipeline_cores")
    row.update(pipeline=kind, stride_ms=stride_ms, threads=threads, cpu=cpu,
               cpu_percent=None if pipeline_cores is None else pipeline_cores * 100.0,
               frames_published=state.get("frames"), skipped_windows=None, dropped_samples=None,
               engine="onnxruntime InferenceSession.run (rtdecode's session options)")
    s = row["latency_ms"]
    progress(f"e2e {kind} stride {stride_ms:g} ms: {row['frames_received']} frames, "
             f"p50 {s.get('p50_ms', float('nan')):.2f} ms p99 {s.get('p99_ms', float('nan')):.2f} ms")
    return row, lat, {"frames": frames, "base": base}
