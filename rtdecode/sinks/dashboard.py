"""A tiny local web dashboard: the newest published frame and a latency plot, on 127.0.0.1.

Frames come from a subscriber thread (`Dashboard(address)`), or from the service in the same
process (`Dashboard(None)` handed to DecoderService as a Sink). The dashboard keeps the newest
frame and the last `history` latencies (newest sample -> receipt); a standard-library HTTP
server serves
  /              an HTML page that refreshes the two images and shows the status
  /frame.png     the newest frame (404 until one arrived)
  /latency.png   latency over the last frames (matplotlib, Agg)
  /stats.json    frames received, last seq, latency percentiles (ms), malformed messages, the
                 last error, the receiver's failure, the service's telemetry (when fed one), the
                 server's state from its heartbeat (`server_state`, `heartbeat`) and the frames
                 passed over for newer ones
The receiver keeps only the newest frame (FrameSubscriber.recv_newest, docs/protocol.md), so
after any stall the page shows the present; the page says when the server is not streaming.
It binds to 127.0.0.1 unless told otherwise (a host beyond loopback needs allow_remote=True, as
for the Prometheus endpoint); port 0 picks a free port (see `.url`).

Errors: no frame yet, or none for `stale_s` seconds, is shown as the status (the publisher is not
running, or not sending). A malformed message is counted, shown as `last_error`, and the receiver
carries on. A failure of the receiver thread follows rtdecode.threads: stored with context, logged once,
shown as `receiver_failed` (the page keeps serving the last frame, marked stale by the error);
`raise_if_failed()` raises it, and so does close() under RTDECODE_RAISE_IN_THREADS.
"""

from __future__ import annotations

import html
import io
import json
import logging
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..protocol import DEFAULT_ADDRESS, FrameHeader, MalformedFrameError, to_uint8
from ..threads import ThreadFailure, ThreadGuard, raise_in_threads
from .prometheus import LOOPBACK

log = logging.getLogger(__name__)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtdecode</title></head>
<body style="background:#111;color:#ddd;font-family:sans-serif">
<h3>rtdecode: newest frame and latency</h3>
<p id="e" style="color:#f77">{status}</p>
<img id="f" src="/frame.png" alt="no frame yet" style="image-rendering:pixelated;width:384px">
<img id="l" src="/latency.png" style="width:480px"><pre id="s"></pre>
<script>
setInterval(() => {{
  const t = Date.now();
  document.getElementById('f').src = '/frame.png?' + t;
  document.getElementById('l').src = '/latency.png?' + t;
  fetch('/stats.json').then(r => r.json()).then(j => {{
    document.getElementById('e').textContent = j.status;
    document.getElementById('s').textContent = JSON.stringify(j, null, 1); }});
}}, 500);
</script></body></html>"""


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class Dashboard:
    """Serve the newest frame and latency at `url` until `close()`.

    `address`: subscribe to a publisher there; None: no subscriber, frames come through
    `write` (a Sink, rtdecode.sinks: the service hands it every frame and telemetry snapshot).
    """

    def __init__(self, address: str | None = DEFAULT_ADDRESS, *, host: str = "127.0.0.1", port: int = 0,
                 history: int = 1000, stale_s: float = 2.0, allow_remote: bool = False):
        if host not in LOOPBACK and not allow_remote:  # the same guard as the Prometheus endpoint
            raise ConfigError(f"dashboard host {host!r} is not loopback; pass allow_remote=True to show "
                              "the frames beyond this machine")
        self.address = address
        self.stale_s = float(stale_s)
        self._last_at: float | None = None  # monotonic time of the newest frame
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._seq: int | None = None
        self._lat_ms: deque[float] = deque(maxlen=int(history))
        self._telemetry: dict[str, Any] | None = None
        self.frames = 0
        self.malformed = 0  # messages that were not rtdecode frames (skipped)
        self.last_error: str | None = None  # the latest malformed message, as text
        self._guard = ThreadGuard("dashboard-receiver", doing=f"receiving frames from {address}")
        self._stop = threading.Event()
        self._sub = None
        if address is not None:
            from ..protocol import FrameSubscriber

            self._sub = FrameSubscriber(address, rcvhwm=4)  # the recipe: a few frames queued at most
        self._server = ThreadingHTTPServer((host, int(port)), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._threads = [threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name="dashboard-http", daemon=True)]
        if self._sub is not None:
            self._threads.append(threading.Thread(target=self._receive, name="dashboard-receiver", daemon=True))
        for t in self._threads:
            t.start()

    # ---- thread failure (rtdecode.threads) ---------------------------------------------------
    @property
    def failure(self) -> ThreadFailure | None:
        """The receiver thread's error with its context, or None."""
        return self._guard.failure

    def raise_if_failed(self) -> None:
        self._guard.raise_if_failed()

    # ---- frames in -------------------------------------------------------------------------
    def write(self, header: FrameHeader, image: np.ndarray, received: float | None = None) -> None:
        """Sink: take one frame (copied as uint8). `received`: monotonic arrival time (default: now)."""
        img = to_uint8(image)
        img = img.copy() if img is image else img  # the caller reuses its buffer
        lat_ms = ((time.monotonic() if received is None else received) - header.newest_ts) * 1e3
        with self._lock:
            self._frame, self._seq = img, header.seq
            self._last_at = time.monotonic()
            self._lat_ms.append(lat_ms)
            self.frames += 1

    def write_telemetry(self, record: dict[str, Any]) -> None:
        """Sink: the service's latest telemetry snapshot, shown in /stats.json."""
        with self._lock:
            self._telemetry = dict(record)

    def _receive(self) -> None:
        with self._guard:
            while not self._stop.is_set():
                try:
                    f = self._sub.recv_newest(timeout=0.1)
                except MalformedFrameError as e:  # one bad message: count it, show it, carry on
                    self._skip_malformed(e)
                    continue
                if f is not None:
                    self.write(f.header, f.image, f.received)

    def _skip_malformed(self, error: MalformedFrameError) -> None:
        with self._lock:
            self.malformed += 1
            self.last_error = str(error)
            first = self.malformed == 1
        if first:  # once: a stream of bad messages must not flood the log
            log.warning("dashboard: skipping a malformed message (%s); later ones are only counted", error)

    def stats(self) -> dict:
        with self._lock:
            lat = np.asarray(self._lat_ms)
            out: dict[str, Any] = {"frames": self.frames, "last_seq": self._seq, "malformed": self.malformed,
                                   "last_error": self.last_error}
            telemetry = self._telemetry
        failure = self.failure
        out["receiver_failed"] = None if failure is None else str(failure)
        out["status"] = self.status()
        if self._sub is not None:
            hb = self._sub.heartbeat
            out["server_state"] = self._sub.state()
            out["heartbeat"] = None if hb is None else vars(hb).copy()
            out["passed_over"] = self._sub.discarded
        if lat.size:
            out["latency_ms"] = {"n": int(lat.size), "median": float(np.median(lat)),
                                 "p95": float(np.percentile(lat, 95)), "max": float(lat.max())}
        if telemetry is not None:
            out["telemetry"] = telemetry
        return out

    def status(self) -> str:
        """The error the page shows ('' if none): the receiver's failure, else no frame yet or none
        for `stale_s` seconds, and the latest malformed message."""
        failure = self.failure
        if failure is not None:
            return f"receiver stopped: {failure}"
        parts = []
        src = "" if self.address is None else f" from {self.address}"
        with self._lock:
            if self._last_at is None:
                parts.append(f"no frame received yet{src}")
            elif (age := time.monotonic() - self._last_at) > self.stale_s:
                parts.append(f"no frame for {age:.1f} s{src} (the last: seq {self._seq})")
            if self.last_error is not None:
                parts.append(f"skipped {self.malformed} malformed message(s), the last: {self.last_error}")
        state = "unknown" if self._sub is None else self._sub.state()
        if state in ("stream_lost", "idle", "stopping", "dead"):
            parts.append({"stream_lost": "server: the LSL stream is lost (reconnecting); the frame shown is old",
                          "idle": "server: idle (no new samples or onsets); the frame shown is the last one",
                          "stopping": "server: stopping", "dead": "server: no heartbeat (not running?)"}[state])
        return "; ".join(parts)

    def page(self) -> bytes:
        return PAGE.format(status=html.escape(self.status())).encode()

    def frame_png(self) -> bytes | None:
        with self._lock:
            img = None if self._frame is None else self._frame.copy()
        return None if img is None else _png(img)

    def latency_png(self) -> bytes:
        from matplotlib.figure import Figure  # no pyplot: no global backend, safe in any thread

        with self._lock:
            lat = np.asarray(self._lat_ms)
        fig = Figure(figsize=(6, 2.5), dpi=80)
        ax = fig.add_subplot()
        ax.plot(lat, lw=0.8)
        ax.set_xlabel(f"frame (last {lat.size})")
        ax.set_ylabel("latency (ms)")
        ax.set_title("newest sample -> receipt", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def _handler(self):
        dash = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # quiet: debug log instead of stderr
                log.debug("dashboard: " + fmt, *args)

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", dash.page())
                elif path == "/frame.png":
                    png = dash.frame_png()
                    if png is None:
                        self._send(404, "text/plain", b"no frame received yet")
                    else:
                        self._send(200, "image/png", png)
                elif path == "/latency.png":
                    self._send(200, "image/png", dash.latency_png())
                elif path == "/stats.json":
                    self._send(200, "application/json", json.dumps(dash.stats()).encode())
                else:
                    self._send(404, "text/plain", b"not found")

        return Handler

    def close(self) -> None:
        """Stop serving; under RTDECODE_RAISE_IN_THREADS a failed receiver's error is raised here."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(5)
        if self._sub is not None:
            self._sub.close()
        if raise_in_threads():
            self._guard.raise_if_failed()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
