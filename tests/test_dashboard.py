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


def _pub():
    import zmq

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    return sock, sock.bind_to_random_port("tcp://127.0.0.1")


def _send_until(sock, parts, pred, what: str, timeout: float = 20.0) -> None:
    """PUB drops messages until the subscription has arrived: resend until the dashboard saw it."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        sock.send_multipart(parts)
        time.sleep(0.02)


@pytest.mark.timeout(60)
def test_a_malformed_message_is_shown_and_the_receiver_carries_on():
    from PIL import Image

    sock, port = _pub()
    frame = np.random.default_rng(4).integers(0, 256, size=(6, 9, 3), dtype=np.uint8)
    try:
        with Dashboard(f"tcp://127.0.0.1:{port}") as dash:
            _send_until(sock, (TOPIC, b'{"v": 1, "seq": "not a number"}', b"\x00" * 5),
                        lambda: dash.stats()["malformed"] >= 1, "the malformed message")
            stats = json.loads(_get(dash.url + "/stats.json")[2])
            assert stats["frames"] == 0 and stats["receiver_failed"] is None
            assert "malformed frame" in stats["last_error"] and "ValueError" in stats["last_error"]
            code, _, page = _get(dash.url + "/")
            assert code == 200 and b"skipped" in page and b"malformed frame" in page
            t = time.monotonic()
            good = FrameHeader(seq=7, model_id="m", ref_time=t, newest_ts=t, shape=frame.shape)
            _send_until(sock, (TOPIC, good.to_bytes(), frame), lambda: dash.stats()["frames"] >= 1, "the good frame")
            code, ctype, body = _get(dash.url + "/frame.png")
            assert code == 200 and ctype == "image/png"
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), frame)
            stats = dash.stats()
            assert stats["last_seq"] == 7 and stats["malformed"] >= 1 and stats["receiver_failed"] is None
    finally:
        sock.close(0)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("raise_env", ["0", "1"])
def test_a_failed_receiver_is_shown_and_the_page_keeps_serving(monkeypatch, raise_env):
    """The receiver thread fails handling a frame: the failure (thread, what it was doing) is on the
    page and in /stats.json, the last frame is still served; close() raises it under the switch."""
    monkeypatch.setenv("RTDECODE_RAISE_IN_THREADS", raise_env)
    sock, port = _pub()
    frame = np.zeros((4, 4, 3), dtype=np.uint8)
    address = f"tcp://127.0.0.1:{port}"
    try:
        dash = Dashboard(address)
        try:
            t = time.monotonic()
            first = FrameHeader(seq=1, model_id="m", ref_time=t, newest_ts=t, shape=frame.shape)
            _send_until(sock, (TOPIC, first.to_bytes(), frame), lambda: dash.frames >= 1, "the first frame")

            def broken_write(header, image, received=None):
                raise RuntimeError("no room for the frame")

            monkeypatch.setattr(dash, "write", broken_write)
            _send_until(sock, (TOPIC, first.to_bytes(), frame), lambda: dash.failure is not None, "the failure")
            stats = json.loads(_get(dash.url + "/stats.json")[2])
            assert stats["receiver_failed"] == (f"thread 'dashboard-receiver' failed while receiving frames from "
                                                f"{address}: RuntimeError: no room for the frame")
            page = _get(dash.url + "/")[2].decode()
            assert "receiver stopped: thread &#x27;dashboard-receiver&#x27; failed" in page
            assert _get(dash.url + "/frame.png")[0] == 200  # the last frame, with the error beside it
            with pytest.raises(RuntimeError, match="no room"):
                dash.raise_if_failed()
        finally:
            if raise_env == "1":
                with pytest.raises(RuntimeError, match="no room"):
                    dash.close()
            else:
                dash.close()
    finally:
        sock.close(0)


def test_dashboard_refuses_a_host_beyond_loopback_unless_asked():
    from rtdecode.errors import ConfigError

    with pytest.raises(ConfigError, match="0.0.0.0.*not loopback.*allow_remote"):
        Dashboard(None, host="0.0.0.0")
    with pytest.raises(ConfigError, match="192.168.1.5"):
        Dashboard(None, host="192.168.1.5")  # refused before any socket is made
