"""The transport floor: what LSL alone and the ZeroMQ hop alone cost, measured in the same run.

- LSL alone: the rig's Pusher (same stream: 1024 channels at 1 kHz, one sample per push) to a
  bare pylsl inlet in this process pulling as rtdecode's inlet thread does
  (pull_chunk(dest_obj=..., min_samples=1), blocking); per chunk, arrival - its newest sample's
  LSL timestamp.
- ZeroMQ alone: this process publishes frames of the pipelines' size (the same JSON header and
  H x W x 3 uint8 payload, three parts) every stride on a PUB socket, its header's newest_ts set
  just before the send; the rig's Subscriber child receives them: receipt - newest_ts.

A pipeline cannot beat the sum: `floor_quantiles` combines the two series (independent draws)
into the floor's p50 and p99, which the report subtracts from each pipeline's overhead.
"""

from __future__ import annotations

import time

import numpy as np

from rtdecode.rig import Pusher, Subscriber, free_tcp_address
from rtdecode.telemetry import latency_summary


def lsl_floor(duration_s: float, *, n_channels: int = 1024, fs: float = 1000.0) -> np.ndarray:
    """LSL outlet -> inlet latency (ms) per pulled chunk, after a 0.5 s warm-up."""
    from rtdecode.lslconfig import lsl

    pylsl = lsl()
    out: list[float] = []
    with Pusher.noise(n_channels=n_channels, fs=fs, duration_s=duration_s + 1.0) as pusher:
        infos = pylsl.resolve_byprop("name", pusher.name, 1, 20.0)
        if not infos:
            raise RuntimeError(f"transport floor: stream {pusher.name} not found")
        inlet = pylsl.StreamInlet(infos[0], max_buflen=60, recover=False, processing_flags=pylsl.proc_clocksync)
        inlet.open_stream(20.0)
        staging = np.zeros((256, n_channels), dtype=np.float32)
        base = pusher.base(30)
        end = base + duration_s + 0.5
        while True:
            _, ts = inlet.pull_chunk(timeout=0.2, max_samples=256, dest_obj=staging, min_samples=1)
            now = time.monotonic()
            if len(ts):
                if ts[-1] > base + 0.5:
                    out.append((now - float(ts[-1])) * 1e3)
            elif now > end:
                break
            if now > end:
                break
        inlet.close_stream()
    return np.asarray(out)


def zmq_floor(duration_s: float, stride_ms: float, *, height: int, width: int, model_id: str = "floor") -> np.ndarray:
    """PUB (this process) -> rig Subscriber (child) latency (ms) of frames of [height, width, 3] uint8."""
    import zmq

    from rtdecode.protocol import TOPIC
    from rtdecode.sinks.publisher import STAGE_NAMES, HeaderEncoder

    enc = HeaderEncoder(model_id, (height, width, 3), "uint8")
    payload = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    address = free_tcp_address()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 4)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    with Subscriber(address) as sub:
        time.sleep(0.3)  # the SUB connects and subscribes
        t = time.monotonic()
        end = t + duration_s + 0.5
        seq = 0
        while t < end:
            now = time.monotonic()
            pub.send_multipart((TOPIC, enc.encode(seq, now, now, (now,) * len(STAGE_NAMES)), payload),
                               flags=zmq.NOBLOCK, copy=True)
            seq += 1
            t += stride_ms / 1000.0
            time.sleep(max(0.0, t - time.monotonic()))
        time.sleep(0.2)
    pub.close(0)
    ctx.term()
    frames = sub.frames
    if frames is None or not len(frames):
        return np.empty(0)
    kept = frames.since(0.5)
    return (kept.col("received") - kept.col("newest_ts")) * 1e3


def floor_quantiles(lsl_ms: np.ndarray, zmq_ms: np.ndarray, n: int = 20000, seed: int = 0) -> dict:
    """Summary (rtdecode.telemetry.latency_summary) of LSL + ZeroMQ, drawn independently."""
    if not len(lsl_ms) or not len(zmq_ms):
        return {"count": 0}
    rng = np.random.default_rng(seed)
    return latency_summary(rng.choice(lsl_ms, n) + rng.choice(zmq_ms, n))


def floor_row(stride_ms: float, lsl_ms: np.ndarray, zmq_ms: np.ndarray) -> dict:
    return {"stride_ms": stride_ms, "lsl_ms": latency_summary(lsl_ms), "zmq_ms": latency_summary(zmq_ms),
            "floor_ms": floor_quantiles(lsl_ms, zmq_ms)}
