"""`rtdecode serve --prometheus-port`: a real service process exposes its telemetry over HTTP on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from rtdecode.protocol import FrameSubscriber
from rtdecode.rig import Pusher, wait_until
from rtdecode.testing import make_model

pytestmark = pytest.mark.lsl


def test_serve_exposes_prometheus_metrics(tmp_path, rng):
    path, _ = make_model(tmp_path / "m.onnx", 16)
    lines: list[str] = []
    with Pusher(tmp_path, rng.normal(size=(20000, 16)), chunk=4) as p:
        addr = f"ipc://{tmp_path}/frames"
        proc = subprocess.Popen([sys.executable, "-u", "-m", "rtdecode", "serve", "--stream", p.name,
                                 "--model", str(path), "--address", addr, "--status-interval", "0",
                                 "--prometheus-port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
        try:
            with FrameSubscriber(addr) as sub:
                assert sub.recv(timeout=40) is not None
            url = None

            def found_url() -> bool:
                nonlocal url
                line = proc.stdout.readline()
                lines.append(line)
                m = re.search(r"prometheus metrics at (http://127\.0\.0\.1:\d+/metrics)", line)
                url = m.group(1) if m else None
                return url is not None

            wait_until(found_url, 30, what="the metrics URL on stdout")
            body = ""

            def counted_frames() -> bool:  # the counter follows the publish by a few microseconds
                nonlocal body
                body = urllib.request.urlopen(url, timeout=10).read().decode()
                m = re.search(r"^rtdecode_frames_total(\{[^}]*\})? (\d+)", body, re.M)
                return bool(m) and int(m.group(2)) > 0

            wait_until(counted_frames, 20, interval=0.05, what="rtdecode_frames_total > 0")
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, "".join(lines)[-2000:]
    assert "rtdecode_newest_sample_age_seconds" in body, body[:2000]
