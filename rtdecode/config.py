"""`ServeConfig`: every setting of `rtdecode serve`, validated when built.

Sources, in increasing priority: the defaults below, a config file (`--config FILE`, TOML or
JSON, flat keys named like the fields), command-line flags. Unknown keys are rejected with
their name; each value is checked and a bad one is reported with the key and what was
expected. See docs/serving.md for the meaning of each key.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .protocol import DEFAULT_ADDRESS, SOCKET_BUFFER_BYTES

MODES = ("sliding", "event")
FRAME_DTYPES = ("uint8", "float32")
BAD_SAMPLE_POLICIES = ("skip", "flag")
LSL_SCOPES = ("machine", "network")
INLET_MODES = ("thread", "loop")
CATCH_UP_POLICIES = ("fresh", "newest")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one decoding service (immutable; use `override` to derive a new one)."""

    stream: str = "MUA"  # LSL stream name or type to read
    resolve_timeout_s: float = 10.0  # give up finding the stream after this long
    model: str | None = None  # rtdecode ONNX decoder (required to run)
    engine: str = "onnxruntime"  # engine registry name, or "auto"
    threads: int | None = None  # engine intra-op threads (None: engine default)
    # engine-specific options, e.g. {"engine_path": "m.engine", "fp16": true, "cache_dir": "trt-cache",
    # "device_id": 0, "cuda_graph": true} (see docs/gpu.md); passed to the engine's factory as keywords
    engine_options: dict[str, Any] = field(default_factory=dict)
    stride_ms: float = 16.0  # one frame per stride of new data (16 ms ~ 60 Hz; >= 1 sample)
    mode: str = "sliding"  # sliding: newest complete window; event: one frame per onset marker
    marker_stream: str | None = None  # LSL string stream with onset markers (event mode)
    address: str = DEFAULT_ADDRESS  # ZeroMQ PUB address; binds to loopback unless told otherwise
    sndhwm: int = 4  # PUB high-water mark: a slow subscriber loses frames, never stalls us
    sndbuf: int = SOCKET_BUFFER_BYTES  # PUB kernel send buffer, bytes (0: the OS's, megabytes of stale frames per stalled subscriber)
    frame_dtype: str = "uint8"  # payload: uint8 0..255 or float32 0..1
    buffer_s: float = 2.0  # ring buffer length (>= the model's window span)
    on_bad_samples: str = "skip"  # windows with NaN/Inf or spanning a gap: skip, or flag and decode
    max_lag_ms: float | None = None  # skip windows whose newest sample is older than this (None: off)
    reconnect: bool = True  # re-resolve a vanished outlet; False: stop when it is lost
    reconnect_timeout_s: float = 30.0  # stop when the outlet stays away this long
    reconnect_backoff_s: float = 0.1  # first wait between re-resolve attempts (doubles)
    reconnect_backoff_max_s: float = 2.0  # longest wait between attempts
    lsl_scope: str = "machine"  # LSL discovery: this machine only, or the network
    # where LSL is pulled: "thread" (an inlet thread wakes the serve loop) or "loop" (the serve
    # loop pulls itself, blocking in liblsl while it waits: no thread hand-off; docs/serving.md)
    inlet: str = "thread"
    # inlet "loop" only: spin (poll liblsl without blocking) for the sample that completes the due
    # window instead of sleeping until it comes: less latency, one core busy for up to a sample
    # interval per frame (docs/serving.md)
    busy_poll: bool = False
    # when a decode ends with the next window already due (decoding takes longer than a stride):
    # "fresh" decodes the window ending at the next sample if the newest one has waited longer
    # than a third of the usual interval between arrivals (fresher frames, docs/serving.md);
    # "newest" decodes the newest window at once, however long its last sample waited
    catch_up: str = "fresh"
    pin_cpu: int | None = None  # pin the serve loop (and ONNX Runtime's run with 1 thread) to this CPU (None: off)
    record: str | None = None  # directory for rtdecode.sinks.recorder.FrameRecorder (None: off)
    status_interval_s: float = 5.0  # one status line every this many seconds (0: off)
    heartbeat_interval_s: float = 1.0  # heartbeat (state, session) on the PUB socket this often (0: off)
    prometheus_port: int | None = None  # serve Prometheus metrics at http://127.0.0.1:PORT/metrics (None: off)
    duration_s: float | None = None  # stop after this long (None: until stopped)
    max_frames: int | None = None  # stop after this many frames (None: until stopped)

    def __post_init__(self) -> None:
        self.validate()

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        _check_str(self, "stream", nonempty=True)
        _check_num(self, "resolve_timeout_s", lo=0.0, lo_open=True)
        if self.model is not None:
            _check_str(self, "model", nonempty=True)
        _check_str(self, "engine", nonempty=True)
        if self.threads is not None:
            _check_int(self, "threads", lo=1)
        if not isinstance(self.engine_options, dict) or not all(
                isinstance(k, str) and k.isidentifier() for k in self.engine_options):
            raise ConfigError(f"engine_options must be a table of option names to values, got {self.engine_options!r}")
        _check_num(self, "stride_ms", lo=0.0, lo_open=True)
        _check_choice(self, "mode", MODES)
        if self.marker_stream is not None:
            _check_str(self, "marker_stream", nonempty=True)
        if self.mode == "event" and not self.marker_stream:
            raise ConfigError("mode 'event' needs marker_stream (the LSL string stream with onset markers)")
        _check_str(self, "address", nonempty=True)
        if not self.address.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(f"address {self.address!r} must start with tcp://, ipc:// or inproc://")
        _check_int(self, "sndhwm", lo=1)
        _check_int(self, "sndbuf", lo=0)
        _check_choice(self, "frame_dtype", FRAME_DTYPES)
        _check_num(self, "buffer_s", lo=0.0, lo_open=True)
        _check_choice(self, "on_bad_samples", BAD_SAMPLE_POLICIES)
        if self.max_lag_ms is not None:
            _check_num(self, "max_lag_ms", lo=0.0, lo_open=True)
        if not isinstance(self.reconnect, bool):
            raise ConfigError(f"reconnect must be true or false, got {self.reconnect!r}")
        _check_num(self, "reconnect_timeout_s", lo=0.0)
        _check_num(self, "reconnect_backoff_s", lo=0.0, lo_open=True)
        _check_num(self, "reconnect_backoff_max_s", lo=self.reconnect_backoff_s)
        _check_choice(self, "lsl_scope", LSL_SCOPES)
        _check_choice(self, "inlet", INLET_MODES)
        _check_choice(self, "catch_up", CATCH_UP_POLICIES)
        if not isinstance(self.busy_poll, bool):
            raise ConfigError(f"busy_poll must be true or false, got {self.busy_poll!r}")
        if self.busy_poll and self.inlet != "loop":
            raise ConfigError("busy_poll needs inlet 'loop' (the serve loop pulls LSL itself); with an inlet "
                              "thread a spinning loop would hold the GIL the thread needs")
        if self.pin_cpu is not None:
            _check_int(self, "pin_cpu", lo=0)
        if self.record is not None:
            _check_str(self, "record", nonempty=True)
        _check_num(self, "status_interval_s", lo=0.0)
        _check_num(self, "heartbeat_interval_s", lo=0.0)
        if self.prometheus_port is not None:
            _check_int(self, "prometheus_port", lo=0)
            if self.prometheus_port > 65535:
                raise ConfigError(f"prometheus_port must be <= 65535, got {self.prometheus_port}")
        if self.duration_s is not None:
            _check_num(self, "duration_s", lo=0.0, lo_open=True)
        if self.max_frames is not None:
            _check_int(self, "max_frames", lo=1)

    @property
    def binds_beyond_loopback(self) -> bool:
        """True when the PUB address is a TCP address on something other than loopback."""
        if not self.address.startswith("tcp://"):
            return False
        host = self.address[len("tcp://"):].rsplit(":", 1)[0]
        return host not in LOOPBACK_HOSTS

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "config") -> ServeConfig:
        return cls().override(d, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> ServeConfig:
        """Read a TOML (.toml) or JSON (.json) file of flat keys; a [serve] table is accepted too."""
        return cls.from_dict(read_config_file(path), source=str(path))

    def override(self, values: dict[str, Any], *, source: str = "config") -> ServeConfig:
        """A copy with `values` applied (unknown keys rejected by name, values validated)."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a table of settings, got {type(values).__name__}")
        known = set(self.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"expected some of {', '.join(sorted(known))}")
        try:
            return replace(self, **values)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError as e:  # Python 3.10
                raise ConfigError(f"{path}: reading TOML needs Python >= 3.11; use a .json config") from e
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .toml or .json")
    except (json.JSONDecodeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: cannot parse ({e})") from e
    if isinstance(data, dict) and set(data) == {"serve"} and isinstance(data["serve"], dict):
        data = data["serve"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    return data


def _check_str(c: ServeConfig, key: str, *, nonempty: bool = False) -> None:
    v = getattr(c, key)
    if not isinstance(v, str) or (nonempty and not v.strip()):
        raise ConfigError(f"{key} must be a non-empty string, got {v!r}")


def _check_choice(c: ServeConfig, key: str, choices: tuple[str, ...]) -> None:
    v = getattr(c, key)
    if v not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {v!r}")


def _check_int(c: ServeConfig, key: str, *, lo: int) -> None:
    v = getattr(c, key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key} must be an integer, got {v!r}")
    if v < lo:
        raise ConfigError(f"{key} must be >= {lo}, got {v}")


def _check_num(c: ServeConfig, key: str, *, lo: float, lo_open: bool = False) -> None:
    v = getattr(c, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{key} must be a finite number, got {v!r}")
    if v < lo or (lo_open and v == lo):
        raise ConfigError(f"{key} must be {'>' if lo_open else '>='} {lo}, got {v}")
