"""A tiny local web dashboard: the newest published frame and a latency plot, on 127.0.0.1.

A subscriber thread keeps the newest frame and the last `history` latencies (newest sample ->
receipt); a standard-library HTTP server serves
  /              an HTML page that refreshes the two images
  /frame.png     the newest frame (404 until one arrived)
  /latency.png   latency over the last frames (matplotlib, Agg)
  /stats.json    frames received, last seq, latency percentiles (ms)
It binds to 127.0.0.1 unless told otherwise; port 0 picks a free port (see `.url`).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from ..protocol import DEFAULT_ADDRESS

log = logging.getLogger(__name__)

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtdecode</title></head>
<body style="background:#111;color:#ddd;font-family:sans-serif">
<h3>rtdecode: newest frame and latency</h3>
<img id="f" src="/frame.png" style="image-rendering:pixelated;width:384px">
<img id="l" src="/latency.png" style="width:480px"><pre id="s"></pre>
<script>
setInterval(() => {
  const t = Date.now();
  document.getElementById('f').src = '/frame.png?' + t;
  document.getElementById('l').src = '/latency.png?' + t;
  fetch('/stats.json').then(r => r.json()).then(j => {
    document.getElementById('s').textContent = JSON.stringify(j, null, 1); });
}, 500);
</script></body></html>"""


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class Dashboard:
    """Subscribe to `address` and serve the newest frame and latency at `url` until `close()`."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, host: str = "127.0.0.1", port: int = 0,
                 history: int = 1000):
        from ..protocol import FrameSubscriber

        self._sub = FrameSubscriber(address)
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._seq: int | None = None
        self._lat_ms: deque[float] = deque(maxlen=int(history))
        self.frames = 0
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, int(port)), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._threads = [threading.Thread(target=self._receive, name="dashboard-sub", daemon=True),
                         threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                          name="dashboard-http", daemon=True)]
        for t in self._threads:
            t.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            f = self._sub.recv(timeout=0.1)
            if f is None:
                continue
            img = f.image if f.image.dtype == np.uint8 else (np.clip(f.image, 0, 1) * 255 + 0.5).astype(np.uint8)
            with self._lock:
                self._frame, self._seq = img, f.header.seq
                self._lat_ms.append(f.latency_s * 1e3)
                self.frames += 1

    def stats(self) -> dict:
        with self._lock:
            lat = np.asarray(self._lat_ms)
            out = {"frames": self.frames, "last_seq": self._seq}
        if lat.size:
            out["latency_ms"] = {"n": int(lat.size), "median": float(np.median(lat)),
                                 "p95": float(np.percentile(lat, 95)), "max": float(lat.max())}
        return out

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
        ax.set_ylabel("newest sample -> receipt (ms)")
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
                    self._send(200, "text/html; charset=utf-8", PAGE.encode())
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
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(5)
        self._sub.close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
