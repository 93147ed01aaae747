"""Optional Prometheus text endpoint for a running service: GET /metrics on 127.0.0.1:<port>.

Reads the service's `rtdecode.telemetry.Telemetry` (counters and constant-memory latency
histograms) from a daemon thread of the standard library's http.server; nothing is pushed, no
extra package is needed, and the serve loop is never blocked (reads may be a frame behind).
Latencies are exported as Prometheus summaries (quantiles 0.5/0.9/0.99 read from the
histograms, plus _sum and _count) in seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES = (0.5, 0.9, 0.99)
LOOPBACK = ("127.0.0.1", "localhost", "::1")

_STREAM_COUNTERS = (
    ("samples", "samples pulled from the LSL stream"),
    ("chunks", "chunks pulled from the LSL stream"),
    ("gaps", "timestamp gaps detected in the stream"),
    ("missing_samples", "samples estimated missing from gaps"),
    ("out_of_order", "out-of-order timestamps"),
    ("duplicates", "duplicated timestamps"),
    ("nan_samples", "samples holding NaN or Inf"),
    ("reconnects", "reconnections after the outlet was lost"),
    ("markers", "marker events received"),
)


def _num(v: Any) -> str:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if not v.is_integer() else str(int(v)) if abs(v) < 1e15 else repr(v)


def _esc(label: str) -> str:
    return str(label).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(telemetry, *, now: Callable[[], float] = time.monotonic,
                   labels: dict[str, str] | None = None) -> str:
    """The Prometheus text exposition (format 0.0.4) of a Telemetry object."""
    base = ",".join(f'{k}="{_esc(v)}"' for k, v in (labels or {}).items())

    def lab(extra: str = "") -> str:
        inner = ",".join(x for x in (base, extra) if x)
        return "{" + inner + "}" if inner else ""

    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for suffix_labels, value in samples:
            out.append(f"{name}{suffix_labels} {_num(value)}")

    t = now()
    uptime = t - float(getattr(telemetry, "started", t))
    metric("rtdecode_uptime_seconds", "gauge", "seconds since the service started", [(lab(), uptime)])
    metric("rtdecode_frames_total", "counter", "frames published", [(lab(), telemetry.frames)])
    skipped = dict(getattr(telemetry, "skipped", {}) or {})
    metric("rtdecode_skipped_windows_total", "counter", "windows not decoded, by reason",
           [(lab(f'reason="{_esc(r)}"'), n) for r, n in sorted(skipped.items())] or [(lab('reason="none"'), 0)])
    metric("rtdecode_publish_dropped_total", "counter", "frames the ZeroMQ PUB socket refused (slow subscribers)",
           [(lab(), getattr(telemetry, "publish_dropped", 0))])
    for attr, help_ in _STREAM_COUNTERS:
        if hasattr(telemetry, attr):
            metric(f"rtdecode_stream_{attr}_total", "counter", help_, [(lab(), getattr(telemetry, attr))])
    newest = float(getattr(telemetry, "newest_ts", math.nan))
    metric("rtdecode_newest_sample_age_seconds", "gauge",
           "age of the newest sample pulled (LSL clock; NaN before the first sample)",
           [(lab(), t - newest if math.isfinite(newest) else math.nan)])
    fit = getattr(telemetry, "input_fit", None)
    if fit and fit.get("state") != "off":
        metric("rtdecode_input_fit_score", "gauge", "input-fit score of the latest block per area "
               "(~1 on data like the training data; see docs/serving.md)",
               [(lab(f'area="{_esc(a)}"'), v) for a, v in sorted(fit.get("score", {}).items())]
               or [(lab('area="none"'), math.nan)])
        metric("rtdecode_input_misfit", "gauge", "1 while the latest block is outside the held-out range",
               [(lab(), 1 if fit.get("state") == "misfit" else 0)])
    stage_samples: list[tuple[str, float]] = []
    for stage, h in getattr(telemetry, "stages", {}).items():
        st = f'stage="{_esc(stage)}"'
        for q in QUANTILES:
            value = h.percentile(q * 100.0) if h.count else math.nan
            stage_samples.append((lab(f'{st},quantile="{q}"'), value))
    sums = [(lab(f'stage="{_esc(s)}"'), h.total) for s, h in getattr(telemetry, "stages", {}).items()]
    counts = [(lab(f'stage="{_esc(s)}"'), h.count) for s, h in getattr(telemetry, "stages", {}).items()]
    out.append("# HELP rtdecode_stage_latency_seconds per-stage latency of published frames "
               "(end_to_end = newest sample's LSL timestamp -> published)")
    out.append("# TYPE rtdecode_stage_latency_seconds summary")
    out += [f"rtdecode_stage_latency_seconds{lbl} {_num(v)}" for lbl, v in stage_samples]
    out += [f"rtdecode_stage_latency_seconds_sum{lbl} {_num(v)}" for lbl, v in sums]
    out += [f"rtdecode_stage_latency_seconds_count{lbl} {_num(v)}" for lbl, v in counts]
    return "\n".join(out) + "\n"


class PrometheusExporter:
    """Serves `render_metrics(telemetry)` at http://host:port/metrics from a daemon thread.

    `PrometheusExporter(service.telemetry, port=9464).start()`; port 0 picks a free port (see
    `.port`). Binding beyond loopback must be asked for with allow_remote=True.
    """

    def __init__(self, telemetry, *, port: int = 0, host: str = "127.0.0.1", allow_remote: bool = False,
                 labels: dict[str, str] | None = None):
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"prometheus port must be an integer in 0..65535, got {port!r}")
        if host not in LOOPBACK and not allow_remote:
            raise ConfigError(f"prometheus host {host!r} is not loopback; pass allow_remote=True to expose "
                              "metrics beyond this machine")
        self.telemetry = telemetry
        self.host = host
        self.labels = dict(labels or {})
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> PrometheusExporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is served")
                    return
                try:
                    body = render_metrics(exporter.telemetry, labels=exporter.labels).encode()
                except Exception as e:  # never let a read race kill the endpoint
                    log.warning("prometheus: rendering metrics failed: %s", e)
                    self.send_error(500, "metrics unavailable")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("prometheus: " + fmt, *args)

        try:
            self._server = ThreadingHTTPServer((self.host, self._requested_port), Handler)
        except OSError as e:
            raise ConfigError(f"prometheus endpoint cannot bind {self.host}:{self._requested_port} ({e}); "
                              "choose another --prometheus-port") from e
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="rtdecode-prometheus", daemon=True)
        self._thread.start()
        log.info("prometheus metrics at %s", self.url)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def __enter__(self) -> PrometheusExporter:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()
