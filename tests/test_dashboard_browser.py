"""`rtdecode dashboard --connect ADDR` as a real child process, fed by a real ZeroMQ publisher, looked
at through real HTTP (always) and a real headless browser (Debian's chromium driven by playwright,
where present; `make test` installs it).

The browser test checks what a person sees: the page loads and says no frame came yet; the frame
image updates (its pixels carry the seq they were published with); the latency plot draws; a
malformed message and a stopped publisher show as errors. RTDECODE_DASHBOARD_SCREENSHOT=path.png
also saves the screenshot it takes (docs/dashboard.png is made that way).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from rtdecode.protocol import TOPIC, FrameHeader

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Publisher:
    """A real PUB socket on 127.0.0.1 sending 48x64 frames whose pixel (0, 0) carries the seq (R + 256 G)."""

    def __init__(self):
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.address = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.seq = 0
        self.sending = threading.Event()
        self.malformed = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()  # zmq sockets are not thread-safe: one sender at a time
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def frame(seq: int) -> np.ndarray:
        yy, xx = np.mgrid[0:48, 0:64]
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 2] = (xx * 4).astype(np.uint8)  # a blue ramp
        img[((xx - 8 - seq % 48) ** 2 + (yy - 24) ** 2) < 80] = 255  # a disc moving right
        img[0, 0] = (seq % 256, seq // 256 % 256, 7)
        return img

    def _run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                if self.sending.is_set():
                    t = time.monotonic()
                    h = FrameHeader(seq=self.seq, model_id="browser-test", ref_time=t - 0.05,
                                    newest_ts=t - 0.002 * (1 + self.seq % 5), shape=(48, 64, 3))
                    self.sock.send_multipart((TOPIC, h.to_bytes(), self.frame(self.seq)))
                    self.seq += 1
                if self.malformed.is_set():
                    self.sock.send_multipart((TOPIC, b'{"v": 1, "seq": "not a number"}', b"\x00" * 5))
            self.done.wait(0.02)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close(0)
        self.ctx.term()


class DashboardProcess:
    """`python -m rtdecode dashboard --connect ADDR --port 0` as a child; `.url` from its first line."""

    def __init__(self, address: str, *extra: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtdecode", "dashboard", "--connect", address, "--port", "0", "--duration", "120",
             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        self.lines = lines
        try:
            first = lines.get(timeout=60)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"rtdecode dashboard printed nothing: {self.proc.stderr.read()}") from None
        assert first.startswith("dashboard at http://127.0.0.1:"), first
        self.url = first.split()[2]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats.json", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> tuple[int, str, str]:
        """SIGTERM (a clean stop), then its exit code, the rest of stdout and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        rest = []
        while True:
            try:
                rest.append(self.lines.get(timeout=2))
            except queue.Empty:
                break
        return rc, "".join(rest), self.proc.stderr.read()


def _until(pred, what: str, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture
def publisher():
    pub = Publisher()
    yield pub
    pub.close()


@pytest.mark.timeout(120)
def test_dashboard_command_serves_a_running_publisher(publisher):
    """No browser needed: the sub-command subscribes, serves /stats.json, and stops cleanly on SIGTERM."""
    dash = DashboardProcess(publisher.address, "--stale-s", "1")
    try:
        stats = dash.stats()
        assert stats["frames"] == 0 and stats["status"] == f"no frame received yet from {publisher.address}"
        publisher.sending.set()
        stats = _until(lambda: (s := dash.stats())["frames"] >= 5 and s, "frames at the dashboard")
        assert stats["status"] == "" and stats["latency_ms"]["median"] > 0 and stats["last_seq"] >= 4
        publisher.sending.clear()
        stats = _until(lambda: (s := dash.stats())["status"].startswith("no frame for") and s, "the stale status")
        assert f"from {publisher.address} (the last: seq {stats['last_seq']})" in stats["status"]
    finally:
        rc, out, err = dash.stop()
    assert rc == 0, err
    assert "dashboard: " in out and " frames, 0 malformed, latency median" in out


def test_dashboard_command_refuses_a_taken_port(publisher):
    import socket

    from rtdecode.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "--connect", publisher.address, "--port", str(port), "--duration", "1"]) == 1
    assert main(["dashboard", "--port", "70000"]) == 1
    assert main(["dashboard", "--stale-s", "0"]) == 1


CHROMIUM = _chromium()
try:
    import playwright.sync_api  # noqa: F401

    PLAYWRIGHT = None
except ImportError as e:
    PLAYWRIGHT = str(e)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (`make test` installs Debian's "
                                              "where apt-get and root are available)")
@pytest.mark.skipif(PLAYWRIGHT is not None, reason=f"playwright is not installed ({PLAYWRIGHT}); it is in the "
                                                   "dev extra")
def test_dashboard_page_in_a_headless_browser(publisher, tmp_path):
    from playwright.sync_api import sync_playwright

    dash = DashboardProcess(publisher.address, "--stale-s", "1.5")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 960, "height": 760})
            try:
                page = ctx.new_page()
                page.set_default_timeout(30_000)
                page.goto(dash.url + "/")
                assert page.title() == "rtdecode"
                # the page loads; no frame yet: said in red, and no image behind the frame slot
                page.wait_for_function("document.getElementById('e').textContent.includes('no frame received yet')")
                assert publisher.address in page.text_content("#e")
                assert page.evaluate("document.getElementById('f').naturalWidth") == 0

                publisher.sending.set()
                # the frame image updates: read its pixels back; pixel (0, 0) says which seq it shows
                read_seq = """() => { const img = document.getElementById('f');
                    if (!img.complete || img.naturalWidth === 0) return null;
                    const c = document.createElement('canvas');
                    c.width = img.naturalWidth; c.height = img.naturalHeight;
                    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                    const d = g.getImageData(0, 0, c.width, c.height).data;
                    return {w: c.width, h: c.height, seq: d[0] + 256 * d[1], tag: d[2],
                            disc: Array.from(d.filter((v, i) => i % 4 === 0)).filter(v => v === 255).length}; }"""
                first = _until(lambda: page.evaluate(read_seq), "the first frame in the browser")
                assert (first["w"], first["h"], first["tag"]) == (64, 48, 7) and first["disc"] > 20
                later = _until(lambda: (r := page.evaluate(read_seq)) and r["seq"] >= first["seq"] + 10 and r,
                               "a newer frame in the browser")
                assert later["seq"] <= publisher.seq
                # status cleared, latency plot drawn, stats shown
                page.wait_for_function("document.getElementById('e').textContent === ''")
                page.wait_for_function("document.getElementById('l').naturalWidth > 300")
                page.wait_for_function("document.getElementById('s').textContent.includes('latency_ms')")
                shot = page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
                assert shot[:8] == b"\x89PNG\r\n\x1a\n"
                if os.environ.get("RTDECODE_DASHBOARD_SCREENSHOT"):
                    shutil.copyfile(tmp_path / "dashboard.png", os.environ["RTDECODE_DASHBOARD_SCREENSHOT"])

                # malformed messages: counted and shown, frames still shown
                publisher.malformed.set()
                page.wait_for_function("document.getElementById('e').textContent.includes('malformed message')")
                assert "ValueError" in page.text_content("#e")
                publisher.malformed.clear()
                # the publisher stops: the page says for how long no frame came
                publisher.sending.clear()
                page.wait_for_function("document.getElementById('e').textContent.includes('no frame for')")
                last = _until(lambda: page.evaluate(read_seq), "the last frame after the stop")  # null mid-reload
                assert last["seq"] == publisher.seq - 1  # the last frame stays up
            finally:
                ctx.close()
    finally:
        rc, out, err = dash.stop()
    assert rc == 0, err
    summary = re.search(r"dashboard: (\d+) frames, (\d+) malformed", out)
    assert summary and int(summary[1]) >= later["seq"] - first["seq"] and int(summary[2]) >= 1, out
