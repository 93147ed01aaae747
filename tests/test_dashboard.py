"""The local dashboard: a real ZeroMQ publisher -> Dashboard -> real HTTP requests on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from rtdecode.protocol import TOPIC, FrameHeader
from rtdecode.sinks.dashboard import Dashboard


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


@pytest.mark.timeout(60)
def test_dashboard_serves_newest_frame_and_latency():
    import zmq
    from PIL import Image

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    frame = np.random.default_rng(3).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    with Dashboard(f"tcp://127.0.0.1:{port}") as dash:
        assert dash.url.startswith("http://127.0.0.1:")
        assert _get(dash.url + "/frame.png")[0] == 404  # nothing received yet
        stop = threading.Event()

        def publish():
            seq = 0
            while not stop.is_set():
                t = time.monotonic()
                h = FrameHeader(seq=seq, model_id="m", ref_time=t, newest_ts=t, shape=frame.shape)
                sock.send_multipart((TOPIC, h.to_bytes(), frame))
                seq += 1
                stop.wait(0.005)

        th = threading.Thread(target=publish, daemon=True)
        th.start()
        try:
            deadline = time.monotonic() + 20
            while dash.stats()["frames"] < 5 and time.monotonic() < deadline:
                time.sleep(0.02)
            code, ctype, body = _get(dash.url + "/frame.png")
            assert code == 200 and ctype == "image/png"
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), frame)
            code, ctype, body = _get(dash.url + "/stats.json")
            stats = json.loads(body)
            assert stats["frames"] >= 5 and stats["latency_ms"]["median"] >= 0
            code, ctype, body = _get(dash.url + "/latency.png")
            assert code == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
            code, _, body = _get(dash.url + "/")
            assert code == 200 and b"/frame.png" in body
            assert _get(dash.url + "/nope")[0] == 404
        finally:
            stop.set()
            th.join(5)
            sock.close(0)
