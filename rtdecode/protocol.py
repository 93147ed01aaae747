"""Wire format of published frames and heartbeats (ZeroMQ PUB/SUB), and a small subscriber for Python clients.

Every frame is a multipart message [topic, header, payload]:
  topic    b"frame" (subscribers filter on it)
  header   UTF-8 JSON object (no pickle, ever), schema version PROTOCOL_VERSION:
             v            int    schema version
             seq          int    0 at every service start, +1 per published frame (gaps = frames dropped)
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
             session      str | null  id of the service run that published it (seq restarts with it)
  payload  raw frame bytes, H x W x 3, RGB, C order

A subscriber measures latency itself: pylsl.local_clock() at receipt minus header.newest_ts.

Heartbeats are [b"heartbeat", JSON] on the same socket (see `Heartbeat`); a subscriber to b"frame"
never sees them. Fields are only ever added within a schema version (clients ignore keys they do
not know); `v` changes when a field changes meaning or goes. docs/protocol.md has the history.

Keeping only the newest frame (docs/protocol.md, "Keeping up"): `FrameSubscriber.recv_newest`
waits for a message, drains everything queued without blocking and returns the newest frame;
small kernel buffers on both ends (SOCKET_BUFFER_BYTES) bound what a stalled subscriber finds.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RtdecodeError

PROTOCOL_VERSION = 1
TOPIC = b"frame"
HEARTBEAT_TOPIC = b"heartbeat"  # not a prefix of b"frame" (nor it of this): frame-only subscribers never get it
DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"
# SO_SNDBUF of the PUB socket / SO_RCVBUF of FrameSubscriber (Linux doubles it): what the kernel may
# hold for a subscriber that stopped reading, beside the high-water marks (which count messages).
# Left to the OS, loopback TCP grows these to megabytes: ~240 stale 64x64 frames after a stall.
SOCKET_BUFFER_BYTES = 64 * 1024  # the default of ServeConfig.sndbuf too
STATES = ("streaming", "stream_lost", "idle", "stopping")  # a heartbeat's `state`


class MalformedFrameError(RtdecodeError, ValueError):
    """A message on the frame socket is not an rtdecode frame (parts, header or payload)."""


def _versioned_json(b: bytes, what: str, kind: str) -> dict:
    """A JSON message part with a schema version 'v' this client can read (frame header, heartbeat)."""
    d = json.loads(b)
    if not isinstance(d, dict) or "v" not in d:
        raise ValueError(f"{what} is not {kind} (no schema version 'v')")
    if d["v"] > PROTOCOL_VERSION:
        raise ValueError(f"{what} schema {d['v']} is newer than this client ({PROTOCOL_VERSION})")
    return d


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
    session: str | None = None  # added within v1: absent in headers of older servers
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        d = {"v": self.v, "seq": self.seq, "model_id": self.model_id, "ref_time": self.ref_time,
             "newest_ts": self.newest_ts, "stages": self.stages, "shape": list(self.shape),
             "dtype": self.dtype, "flags": self.flags, "skipped": self.skipped, "stimulus": self.stimulus,
             "session": self.session}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, b: bytes) -> FrameHeader:
        d = _versioned_json(b, "frame header", "an rtdecode header")
        return cls(seq=int(d["seq"]), model_id=str(d["model_id"]), ref_time=float(d["ref_time"]),
                   newest_ts=float(d["newest_ts"]), shape=tuple(d["shape"]), dtype=str(d["dtype"]),
                   stages=dict(d.get("stages", {})), flags=list(d.get("flags", [])),
                   skipped=int(d.get("skipped", 0)), stimulus=d.get("stimulus"), session=d.get("session"),
                   v=int(d["v"]))


@dataclass
class Heartbeat:
    """The service's state, published every `interval_s` and at once when it changes (topic b"heartbeat").

    state       one of STATES: streaming (a frame went out within the last interval), stream_lost
                (the LSL outlet vanished; the service is re-resolving it), idle (connected, no
                frame within the last interval: no samples, or no onset in event mode), stopping
                (sent once when the service shuts down; `reason` says why)
    session     id of this service run; frames carry it too. A new id = the server restarted
                (and `seq` restarted at 0)
    started     the run's start, Unix time (time.time()), for people
    time        the server's monotonic clock now (pylsl.local_clock() on Linux)
    interval_s  heartbeat interval: no heartbeat within a few intervals = the server is gone
    last_seq    seq of the newest published frame (null before the first)
    newest_ts   LSL timestamp of the newest sample pulled (null before the first)
    state_s     seconds in the current state
    """

    state: str
    session: str
    started: float
    time: float
    interval_s: float
    last_seq: int | None = None
    newest_ts: float | None = None
    state_s: float = 0.0
    model_id: str = ""
    stream: str = ""
    reason: str | None = None
    v: int = PROTOCOL_VERSION

    def to_bytes(self) -> bytes:
        d = {"v": self.v, "state": self.state, "session": self.session, "started": self.started,
             "time": self.time, "interval_s": self.interval_s, "last_seq": self.last_seq,
             "newest_ts": None if self.newest_ts is None or not math.isfinite(self.newest_ts) else self.newest_ts,
             "state_s": self.state_s, "model_id": self.model_id, "stream": self.stream, "reason": self.reason}
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, b: bytes) -> Heartbeat:
        d = _versioned_json(b, "heartbeat", "an rtdecode heartbeat")
        return cls(state=str(d["state"]), session=str(d["session"]), started=float(d["started"]),
                   time=float(d["time"]), interval_s=float(d["interval_s"]), last_seq=d.get("last_seq"),
                   newest_ts=d.get("newest_ts"), state_s=float(d.get("state_s", 0.0)),
                   model_id=str(d.get("model_id", "")), stream=str(d.get("stream", "")),
                   reason=d.get("reason"), v=int(d["v"]))


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
    """ZeroMQ SUB client for rtdecode frames: `with FrameSubscriber(addr) as s: f = s.recv(timeout=1)`.

    `recv` returns the next frame (every frame, for recorders and tests); `recv_newest` the newest
    one queued, passing over the rest (the recipe for displays: after any stall the next call
    returns a current frame, see docs/protocol.md). With `heartbeats` (default) it also subscribes
    to the service's heartbeats and takes them in passing: `heartbeat` is the newest, `state()`
    what it means. `rcvbuf` bounds what the kernel holds for this socket (SOCKET_BUFFER_BYTES;
    0 = the OS default, which grows to megabytes).
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, rcvhwm: int = 100, rcvbuf: int = SOCKET_BUFFER_BYTES,
                 heartbeats: bool = True, context: Any = None):
        import zmq

        self._zmq = zmq
        self._ctx = context or zmq.Context.instance()
        self.sock = self._ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if rcvbuf:
            self.sock.setsockopt(zmq.RCVBUF, int(rcvbuf))  # before connect: it sizes the TCP window
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
        if heartbeats:
            self.sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        self.sock.connect(address)
        self.address = address
        self._poller = zmq.Poller()  # one poller for all recv(timeout) calls (Socket.poll builds one per call)
        self._poller.register(self.sock, zmq.POLLIN)
        self.heartbeat: Heartbeat | None = None  # the newest heartbeat received
        self.heartbeat_received: float | None = None  # its receipt, time.monotonic()
        self.heartbeats = 0  # heartbeats received
        self.discarded = 0  # frames recv_newest passed over for a newer (or younger) one
        self._error: MalformedFrameError | None = None  # met while draining; raised by the next call

    def _take(self, flags: int = 0) -> ReceivedFrame | None:
        """Read one message: a frame, or None for a heartbeat (stored). zmq.Again when none is queued."""
        parts = self.sock.recv_multipart(flags=flags, copy=True)
        received = time.monotonic()
        if len(parts) == 2 and parts[0] == HEARTBEAT_TOPIC:
            try:
                self.heartbeat = Heartbeat.from_bytes(parts[1])
            except (ValueError, KeyError, TypeError) as e:
                raise MalformedFrameError(f"malformed heartbeat on {self.address}: {type(e).__name__}: {e}") from e
            self.heartbeat_received = received
            self.heartbeats += 1
            return None
        if len(parts) != 3 or parts[0] != TOPIC:
            raise MalformedFrameError(f"unexpected message with {len(parts)} parts on {self.address}; "
                                      "expected [topic, header, payload]")
        try:
            header = FrameHeader.from_bytes(parts[1])
            image = decode_payload(header, parts[2])
        except (ValueError, KeyError, TypeError) as e:  # JSON, missing keys, wrong types, payload size
            raise MalformedFrameError(f"malformed frame on {self.address}: {type(e).__name__}: {e}") from e
        return ReceivedFrame(header, image, received)

    def _wait(self, deadline: float | None) -> bool:
        """Poll until a message is queued or `deadline` (monotonic; None = forever) passed."""
        ms = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
        return bool(self._poller.poll(ms))

    def _raise_pending(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def recv(self, timeout: float | None = None) -> ReceivedFrame | None:
        """Next frame, or None after `timeout` seconds (None = wait forever).

        A message that is not an rtdecode frame (or heartbeat) raises MalformedFrameError (it is
        consumed: the next call reads the next message).
        """
        self._raise_pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._wait(deadline):
                return None
            f = self._take()
            if f is not None:
                return f

    def recv_newest(self, timeout: float | None = None, *, max_age_s: float | None = None) -> ReceivedFrame | None:
        """The newest frame: wait up to `timeout` s for a message, drain all that are queued without
        blocking, return the newest frame (None when none came). Frames passed over: `discarded`.

        `max_age_s`: frames whose age at receipt (latency_s: this machine's monotonic clock minus
        header.newest_ts, so the server runs here) exceeds it are passed over too, and the wait for
        a younger one goes on until `timeout`. A malformed message met while draining is raised by
        the next call, after the newest good frame was returned.
        """
        self._raise_pending()
        deadline = None if timeout is None else time.monotonic() + timeout
        newest: ReceivedFrame | None = None
        while True:
            if not self._wait(deadline):
                return None
            while True:
                try:
                    f = self._take(self._zmq.NOBLOCK)
                except self._zmq.Again:
                    break
                except MalformedFrameError as e:
                    if newest is None:
                        raise
                    self._error = e
                    return newest
                if f is None:
                    continue
                if max_age_s is not None and f.latency_s > max_age_s:
                    self.discarded += 1
                    continue
                if newest is not None:
                    self.discarded += 1
                newest = f
            if newest is not None:
                return newest
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def state(self, now: float | None = None, missed: int = 3) -> str:
        """The server's state as its heartbeats tell: a STATES name; 'dead' when none came within
        `missed` heartbeat intervals; 'unknown' before the first (or from a server without them)."""
        hb = self.heartbeat
        if hb is None or self.heartbeat_received is None:
            return "unknown"
        now = time.monotonic() if now is None else now
        if now - self.heartbeat_received > missed * hb.interval_s:
            return "dead"
        return hb.state

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> FrameSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
