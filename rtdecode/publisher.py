"""ZeroMQ PUB side of the wire format in rtdecode/protocol.py, and a preallocated frame encoder.

`FramePublisher` binds a PUB socket (loopback by default), sends [topic, header, payload]
with copy=True (faster than zero-copy at these sizes, see reference/realtime-facts.md) and a
small SNDHWM: a subscriber that does not keep up loses frames; the decoder never waits.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .errors import ConfigError
from .protocol import TOPIC, FrameHeader

log = logging.getLogger(__name__)


class FrameEncoder:
    """Decoder output [3, H, W] float in [0, 1] -> payload [H, W, 3] (uint8 or float32), no allocation.

    Same values as rtdecode.protocol.encode_frame (round half up to 0..255 for uint8).
    """

    def __init__(self, height: int, width: int, dtype: str = "uint8"):
        if dtype not in ("uint8", "float32"):
            raise ConfigError(f"frame dtype must be 'uint8' or 'float32', got {dtype!r}")
        self.dtype = dtype
        self.shape = (int(height), int(width), 3)
        self._scratch = np.empty(self.shape, dtype=np.float32)
        self.out = np.empty(self.shape, dtype=np.uint8 if dtype == "uint8" else np.float32)

    def encode(self, frame_chw: np.ndarray) -> np.ndarray:
        hwc = np.moveaxis(frame_chw, 0, -1)  # a view
        if self.dtype == "float32":
            np.clip(hwc, 0.0, 1.0, out=self.out)
            return self.out
        s = self._scratch
        np.clip(hwc, 0.0, 1.0, out=s)
        np.multiply(s, 255.0, out=s)
        np.add(s, 0.5, out=s)
        np.copyto(self.out, s, casting="unsafe")
        return self.out


class FramePublisher:
    """PUB socket for frames. `publish(header, payload)` never blocks; refused sends are counted."""

    def __init__(self, address: str, *, sndhwm: int = 4, context: Any = None):
        import zmq

        self._zmq = zmq
        self.address = address
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.SNDHWM, int(sndhwm))
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

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
