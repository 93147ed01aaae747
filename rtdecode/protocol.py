"""Wire format of published frames (ZeroMQ PUB/SUB), and a small subscriber for Python clients.

Every message is multipart [topic, header, payload]:
  topic    b"frame" (subscribers filter on it)
  header   UTF-8 JSON object (no pickle, ever), schema version PROTOCOL_VERSION:
             v            int    schema version
             seq          int    sequence number, +1 per published frame (gaps = frames dropped by PUB)
             model_id     str
             ref_time     float  LSL timestamp of the window's reference sample (t = 0 of the windows)
             newest_ts    float  LSL timestamp of the newest sample the frame used
             stages       {name: monotonic seconds} e.g. pulled, assembled, inferred, published
                          (time.monotonic(); on Linux the same clock as pylsl.local_clock())
             shape        [H, W, 3] payload shape, row-major
             dtype        "uint8" (0..255) or "float32" (0..1)
             flags        list[str], e.g. ["nan_samples", "gap"] when the frame was decoded anyway
             skipped      int    windows skipped so far (stale, gap, bad samples)
             stimulus     int | null  image index when known (event-locked mode, playback markers)
  payload  raw frame bytes, H x W x 3, RGB, C order

A subscriber measures latency itself: pylsl.local_clock() at receipt minus header.newest_ts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RtdecodeError

PROTOCOL_VERSION = 1
TOPIC = b"frame"
DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"


class MalformedFrameError(RtdecodeError, ValueError):
    """A message on the frame socket is not an rtdecode frame (parts, header or payload)."""


@dataclass
class FrameHeader:
    seq: int
    model_id: str
    ref_time: float
    newest_ts: float
    shape: tuple[int, int, int]
    dtype: str = "uint8"
    stages: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    skipped: int = 0
    stimulus: int | None = None
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        d = {"v": self.v, "seq": self.seq, "model_id": self.model_id, "ref_time": self.ref_time,
             "newest_ts": self.newest_ts, "stages": self.stages, "shape": list(self.shape),
             "dtype": self.dtype, "flags": self.flags, "skipped": self.skipped, "stimulus": self.stimulus}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, b: bytes) -> FrameHeader:
        d = json.loads(b)
        if not isinstance(d, dict) or "v" not in d:
            raise ValueError("frame header is not an rtdecode header (no schema version 'v')")
        if d["v"] > PROTOCOL_VERSION:
            raise ValueError(f"frame header schema {d['v']} is newer than this client ({PROTOCOL_VERSION})")
        return cls(seq=int(d["seq"]), model_id=str(d["model_id"]), ref_time=float(d["ref_time"]),
                   newest_ts=float(d["newest_ts"]), shape=tuple(d["shape"]), dtype=str(d["dtype"]),
                   stages=dict(d.get("stages", {})), flags=list(d.get("flags", [])),
                   skipped=int(d.get("skipped", 0)), stimulus=d.get("stimulus"), v=int(d["v"]))


def to_uint8(values: np.ndarray, out: np.ndarray | None = None, *, scratch: np.ndarray | None = None
             ) -> np.ndarray:
    """Frame values, float in [0, 1] (any shape), -> uint8 0..255: THE quantisation of frames.

    Clipped to [0, 1], scaled by 255, rounded half up (+0.5, truncated), in the input's float
    precision. uint8 input is returned as it is. `out` (uint8) and `scratch` (float, the
    input's shape) are used when given, so a caller with preallocated buffers allocates nothing.
    Used by the publisher's FrameEncoder, the dashboard, the viewer and the frame exporters.
    """
    a = np.asarray(values)
    if a.dtype == np.uint8:
        return a
    s = np.clip(a, 0.0, 1.0, out=scratch)
    np.multiply(s, 255.0, out=s)
    np.add(s, 0.5, out=s)
    if out is None:
        out = np.empty(s.shape, dtype=np.uint8)
    np.copyto(out, s, casting="unsafe")
    return out


def encode_frame(frame_chw: np.ndarray, dtype: str = "uint8", out: np.ndarray | None = None, *,
                 scratch: np.ndarray | None = None) -> np.ndarray:
    """Decoder output [3, H, W] float in [0, 1] -> payload array [H, W, 3] (uint8 or float32).

    The one frame encoding: uint8 as `to_uint8`, float32 clipped to [0, 1]. With `out` (and for
    uint8 a float32 `scratch` [H, W, 3]) nothing is allocated (see sinks.publisher.FrameEncoder).
    """
    hwc = np.moveaxis(frame_chw, 0, -1)  # a view
    if dtype == "float32":
        if out is None:
            out = np.empty(hwc.shape, dtype=np.float32)
        np.clip(hwc, 0.0, 1.0, out=out)
        return out
    if dtype != "uint8":
        raise ValueError(f"frame dtype must be 'uint8' or 'float32', got {dtype!r}")
    return to_uint8(hwc, out, scratch=scratch)


def decode_payload(header: FrameHeader, payload: bytes | memoryview) -> np.ndarray:
    dt = np.uint8 if header.dtype == "uint8" else np.float32
    a = np.frombuffer(payload, dtype=dt)
    if a.size != int(np.prod(header.shape)):
        raise ValueError(f"payload holds {a.size} values, header shape {header.shape} needs {int(np.prod(header.shape))}")
    return a.reshape(header.shape)


@dataclass
class ReceivedFrame:
    header: FrameHeader
    image: np.ndarray  # [H, W, 3]
    received: float  # time.monotonic() at receipt

    @property
    def latency_s(self) -> float:
        """Newest sample's LSL timestamp -> receipt (same machine: one monotonic clock)."""
        return self.received - self.header.newest_ts


class FrameSubscriber:
    """ZeroMQ SUB client for rtdecode frames: `with FrameSubscriber(addr) as s: f = s.recv(timeout=1)`."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, rcvhwm: int = 100, context: Any = None):
        import zmq

        self._zmq = zmq
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        self.sock.connect(address)
        self.address = address
        self._poller = zmq.Poller()  # one poller for all recv(timeout) calls (Socket.poll builds one per call)
        self._poller.register(self.sock, zmq.POLLIN)

    def recv(self, timeout: float | None = None) -> ReceivedFrame | None:
        """Next frame, or None after `timeout` seconds (None = wait forever).

        A message that is not an rtdecode frame raises MalformedFrameError (it is consumed: the
        next call reads the next message).
        """
        if timeout is not None and not self._poller.poll(int(timeout * 1000)):
            return None
        parts = self.sock.recv_multipart(copy=True)
        received = time.monotonic()
        if len(parts) != 3 or parts[0] != TOPIC:
            raise MalformedFrameError(f"unexpected message with {len(parts)} parts on {self.address}; "
                                      "expected [topic, header, payload]")
        try:
            header = FrameHeader.from_bytes(parts[1])
            image = decode_payload(header, parts[2])
        except (ValueError, KeyError, TypeError) as e:  # JSON, missing keys, wrong types, payload size
            raise MalformedFrameError(f"malformed frame on {self.address}: {type(e).__name__}: {e}") from e
        return ReceivedFrame(header, image, received)

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
