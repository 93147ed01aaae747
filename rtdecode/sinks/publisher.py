"""ZeroMQ PUB side of the wire format in rtdecode/protocol.py, and a preallocated frame encoder.

`FramePublisher` binds a PUB socket (loopback by default), sends [topic, header, payload]
with copy=True (faster than zero-copy at these sizes, see reference/realtime-facts.md), a
small SNDHWM and a small kernel send buffer (SO_SNDBUF, protocol.SOCKET_BUFFER_BYTES): a
subscriber that does not keep up loses frames, the decoder never waits, and what waits for a
stalled subscriber is a few frames, not the megabytes loopback TCP would grow to. It also sends
the service's heartbeats ([b"heartbeat", JSON], protocol.Heartbeat).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..protocol import (
    HEARTBEAT_TOPIC,
    PROTOCOL_VERSION,
    SOCKET_BUFFER_BYTES,
    TOPIC,
    FrameHeader,
    Heartbeat,
    encode_frame,
)

log = logging.getLogger(__name__)


class FrameEncoder:
    """Decoder output [3, H, W] float in [0, 1] -> payload [H, W, 3] (uint8 or float32), no allocation.

    protocol.encode_frame with preallocated buffers: the payload `out` is reused for every frame.
    """

    def __init__(self, height: int, width: int, dtype: str = "uint8"):
        if dtype not in ("uint8", "float32"):
            raise ConfigError(f"frame dtype must be 'uint8' or 'float32', got {dtype!r}")
        self.dtype = dtype
        self.shape = (int(height), int(width), 3)
        self._scratch = np.empty(self.shape, dtype=np.float32)
        self.out = np.empty(self.shape, dtype=np.uint8 if dtype == "uint8" else np.float32)

    def encode(self, frame_chw: np.ndarray) -> np.ndarray:
        return encode_frame(frame_chw, self.dtype, self.out, scratch=self._scratch)


STAGE_NAMES = ("pulled", "started", "assembled", "normalised", "inferred", "published")


def _num(x: float) -> str:
    """A float as json.dumps writes it (repr; NaN/Infinity spelled the JSON-module way)."""
    return repr(x) if math.isfinite(x) else json.dumps(x)


class HeaderEncoder:
    """JSON frame headers from a template: the constant fields are formatted once.

    `encode(...)` gives the same JSON object as FrameHeader(...).to_bytes() (same keys, same
    order, floats as repr), for the stages in STAGE_NAMES; it builds no dict per frame.
    """

    def __init__(self, model_id: str, shape: Sequence[int], dtype: str, stages: Sequence[str] = STAGE_NAMES,
                 session: str | None = None):
        self.model_id = model_id
        self.session = session
        self.shape = tuple(int(v) for v in shape)
        self.dtype = dtype
        self.stage_names = tuple(stages)
        self._pre = f'{{"v":{PROTOCOL_VERSION},"seq":'
        self._mid = f',"model_id":{json.dumps(model_id)},"ref_time":'
        self._stage_keys = [("{" if i == 0 else ",") + json.dumps(k) + ":" for i, k in enumerate(self.stage_names)]
        self._post = (f'}},"shape":{json.dumps(list(self.shape), separators=(",", ":"))},"dtype":{json.dumps(dtype)},"flags":')
        self._end = f',"session":{json.dumps(session)}}}'

    def encode(self, seq: int, ref_time: float, newest_ts: float, stages: Sequence[float],
               flags: Sequence[str] = (), skipped: int = 0, stimulus: int | None = None) -> bytes:
        """stages: one monotonic time per name in `stage_names`, in that order."""
        parts = [self._pre, str(int(seq)), self._mid, _num(ref_time), ',"newest_ts":', _num(newest_ts), ',"stages":']
        for key, t in zip(self._stage_keys, stages, strict=True):
            parts.append(key)
            parts.append(_num(t))
        parts.append(self._post)
        parts.append(json.dumps(list(flags), separators=(",", ":")) if flags else "[]")
        parts.append(',"skipped":')
        parts.append(str(int(skipped)))
        parts.append(',"stimulus":')
        parts.append("null" if stimulus is None else str(int(stimulus)))
        parts.append(self._end)
        return "".join(parts).encode()

    def header(self, seq: int, ref_time: float, newest_ts: float, stages: Sequence[float],
               flags: Sequence[str] = (), skipped: int = 0, stimulus: int | None = None) -> FrameHeader:
        """The same header as a FrameHeader object (for sinks)."""
        return FrameHeader(seq=int(seq), model_id=self.model_id, ref_time=ref_time, newest_ts=newest_ts,
                           shape=self.shape, dtype=self.dtype,
                           stages=dict(zip(self.stage_names, stages, strict=True)), flags=list(flags),
                           skipped=int(skipped), stimulus=stimulus, session=self.session)


class FramePublisher:
    """PUB socket for frames. `publish(header, payload)` never blocks; refused sends are counted.

    The service publishes through `publish` with a pre-encoded header; as a Sink (`write`) it can
    also be handed to a service as an extra output.
    """

    def __init__(self, address: str, *, sndhwm: int = 4, sndbuf: int = SOCKET_BUFFER_BYTES, context: Any = None):
        import zmq

        self._zmq = zmq
        self.address = address
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, int(sndhwm))
        if sndbuf:  # 0: the OS default (grows to megabytes per subscriber on loopback)
            self.sock.setsockopt(zmq.SNDBUF, int(sndbuf))
        self.sock.setsockopt(zmq.LINGER, 0)
        try:
            self.sock.bind(address)
        except zmq.ZMQError as e:
            self.sock.close(0)
            raise ConfigError(f"cannot bind the frame publisher to {address!r} ({e}); "
                              "is another rtdecode serve running on it? choose another --address") from e
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.sent = 0
        self.dropped = 0
        self.heartbeats = 0

    def publish(self, header: FrameHeader | bytes, payload: np.ndarray) -> bool:
        """Send one frame; False when the socket refused it (then it is counted in `dropped`)."""
        hb = header if isinstance(header, bytes) else header.to_bytes()
        try:
            self.sock.send_multipart((TOPIC, hb, payload), flags=self._zmq.NOBLOCK, copy=True)
        except self._zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def publish_heartbeat(self, heartbeat: Heartbeat) -> bool:
        """Send one heartbeat [b"heartbeat", JSON]; False when the socket refused it (not counted)."""
        try:
            self.sock.send_multipart((HEARTBEAT_TOPIC, heartbeat.to_bytes()), flags=self._zmq.NOBLOCK)
        except self._zmq.Again:
            return False
        self.heartbeats += 1
        return True

    def write(self, header: FrameHeader, image: np.ndarray) -> None:
        """Sink: publish (a refused send is counted in `dropped`, as for publish)."""
        self.publish(header, image)

    def write_telemetry(self, record: dict[str, Any]) -> None:
        """Sink: nothing to do; the wire carries frames only (their headers hold the stage times)."""

    def close(self, linger_s: float = 0.0) -> None:
        """Close the socket; `linger_s` > 0 gives messages still queued (a last heartbeat) that long to leave."""
        self.sock.close(int(linger_s * 1000))

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
