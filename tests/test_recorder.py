"""Crash-safe frame recording: a real ZeroMQ publisher -> `rtdecode record` in a child process.

The child is SIGKILLed mid-stream: every chunk it announced as written (and every frame in it)
must read back pixel-exact, and the directory must still list and export.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rtdecode.cli import main as cli_main
from rtdecode.errors import ConfigError
from rtdecode.protocol import FrameHeader
from rtdecode.sinks.publisher import FramePublisher
from rtdecode.sinks.recorder import FrameRecorder, open_recording_dir

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (24, 32, 3)


def expected_frame(seq: int, shape=SHAPE) -> np.ndarray:
    """The image the test publisher sends for `seq` (reproducible from seq alone)."""
    return np.random.default_rng(seq).integers(0, 256, size=shape, dtype=np.uint8)


def make_header(seq: int, shape=SHAPE, dtype: str = "uint8") -> FrameHeader:
    t = time.monotonic()
    return FrameHeader(seq=seq, model_id="test-model", ref_time=t - 0.197, newest_ts=t, shape=shape, dtype=dtype,
                       stages={"pulled": t + 1e-4, "inferred": t + 5e-3, "published": t + 6e-3})


class TestPublisher:
    """Publishes deterministic frames from a FramePublisher in a thread until stopped."""

    __test__ = False

    def __init__(self, period_s: float = 0.003):
        self.period = period_s
        self.sent = 0
        self._pub = FramePublisher("tcp://127.0.0.1:*", sndhwm=1000)
        self.address = self._pub.endpoint
        self._send = self._pub.publish
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        nxt = time.monotonic()
        while not self._stop.is_set():
            self._send(make_header(seq), expected_frame(seq))
            seq += 1
            self.sent = seq
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pub.sock.close(0)


class RecordChild:
    """`python -m rtdecode record --json` in a child process, its JSON lines read by a thread."""

    def __init__(self, address: str, out: Path, *extra: str):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtdecode", "record", "--address", address, "--out", str(out), "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self.events: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.events.put(json.loads(line))
        self.events.put(None)  # EOF

    def wait_for(self, pred, deadline_s: float, seen: list) -> dict:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if ev is None:
                raise AssertionError(f"record child ended early (rc={self.proc.wait()}): {self.proc.stderr.read()}")
            seen.append(ev)
            if pred(ev):
                return ev
        raise AssertionError(f"timed out; events so far: {seen[-5:]}")

    def drain(self, seen: list) -> None:
        """After the child has exited: every line it printed before dying."""
        self._reader.join(10)
        while True:
            ev = self.events.get_nowait() if not self.events.empty() else None
            if ev is None:
                break
            seen.append(ev)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def check_pixel_exact(rec) -> np.ndarray:
    seqs = []
    for h, img in rec.iter_frames():
        np.testing.assert_array_equal(img, expected_frame(h["seq"]), err_msg=f"frame seq {h['seq']}")
        seqs.append(h["seq"])
    seqs = np.asarray(seqs)
    np.testing.assert_array_equal(seqs, rec.columns()["seq"])
    assert np.all(np.diff(seqs) > 0), "frames out of order or duplicated"
    return seqs


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigkill_mid_stream_keeps_every_flushed_frame(tmp_path):
    pub = TestPublisher()
    out = tmp_path / "rec"
    child = RecordChild(pub.address, out, "--chunk-frames", "15", "--chunk-seconds", "0.2")
    seen: list = []
    try:
        child.wait_for(lambda e: e["event"] == "ready", 30, seen)
        child.wait_for(lambda e: e["event"] == "chunk" and e["index"] >= 5, 30, seen)
        # a random moment within the next chunk, so the kill may land inside a chunk write
        time.sleep(float(np.random.default_rng().uniform(0.0, 0.06)))
        child.proc.send_signal(signal.SIGKILL)
        child.proc.wait(10)
        assert child.proc.returncode == -signal.SIGKILL
        child.drain(seen)
    finally:
        child.kill()
        pub.close()
    announced = [e for e in seen if e.get("event") == "chunk"]
    assert not any(e.get("event") == "done" for e in seen), "the child was supposed to die, not finish"
    assert len(announced) >= 6

    rec = open_recording_dir(out)
    assert rec.bad_chunks == []
    by_file = {c.path.name: c for c in rec.chunks}
    for e in announced:  # every chunk the recorder reported as written is there, complete
        c = by_file[e["file"]]
        assert (c.n_frames, c.first_seq, c.last_seq) == (e["frames"], e["first_seq"], e["last_seq"])
    assert rec.n_frames >= sum(e["frames"] for e in announced)
    seqs = check_pixel_exact(rec)
    for e in announced:
        assert e["first_seq"] in seqs and e["last_seq"] in seqs
    assert pub.sent > seqs[-1]

    # still listable and exportable after the crash
    assert cli_main(["frames", str(out), "--list", "--json"]) == 0
    gif = tmp_path / "out.gif"
    assert cli_main(["frames", str(out), "--export", str(gif), "--step", "3"]) == 0
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == len(range(0, rec.n_frames, 3))
        assert im.size == (SHAPE[1], SHAPE[0])
    png_dir = tmp_path / "pngs"
    assert cli_main(["frames", str(out), "--export", str(png_dir), "--stop", "5"]) == 0
    pngs = sorted(png_dir.glob("frame-*.png"))
    assert [int(p.stem.split("-")[1]) for p in pngs] == list(seqs[:5])
    with Image.open(pngs[0]) as im:
        np.testing.assert_array_equal(np.asarray(im), expected_frame(int(seqs[0])))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_clean_stop_writes_everything_received(tmp_path):
    pub = TestPublisher()
    out = tmp_path / "rec"
    child = RecordChild(pub.address, out, "--chunk-frames", "50", "--chunk-seconds", "5")
    seen: list = []
    try:
        child.wait_for(lambda e: e["event"] == "ready", 30, seen)
        child.wait_for(lambda e: e["event"] == "chunk", 30, seen)  # some frames are flowing
        child.proc.send_signal(signal.SIGTERM)  # the last chunk is partial: must still be written
        done = child.wait_for(lambda e: e["event"] == "done", 30, seen)
        assert child.proc.wait(10) == 0
    finally:
        child.kill()
        pub.close()
    assert done["dropped"] == 0
    assert done["written"] == done["received"] > 50
    rec = open_recording_dir(out)
    assert rec.n_frames == done["written"]
    assert rec.temp_files == []
    seqs = check_pixel_exact(rec)
    assert np.all(np.diff(seqs) == 1), "a clean recording of a loss-free local stream has no seq gaps"
    lat = rec.latency_stats()
    assert lat["receipt"]["n"] == rec.n_frames and lat["receipt"]["median_ms"] >= 0
    assert lat["seq_gaps"] == 0


def test_recorder_never_blocks_and_counts_drops(tmp_path):
    """A stalled writer fills the queue: write() keeps returning and counts what it drops."""
    gate = threading.Event()
    first_chunk = threading.Event()

    def on_chunk(info):
        first_chunk.set()
        gate.wait(30)  # stall the writer thread

    rec = FrameRecorder(tmp_path / "r", chunk_frames=1, queue_size=4, on_chunk=on_chunk)
    rec.write(make_header(0), expected_frame(0))
    assert first_chunk.wait(10)
    for seq in range(1, 21):  # writer stalled: 4 fit in the queue, the rest are dropped
        rec.write(make_header(seq), expected_frame(seq))
    assert rec.dropped == 16 and rec.received == 21
    gate.set()
    rec.close()
    assert rec.written == 5
    r = open_recording_dir(tmp_path / "r")
    assert list(r.columns()["seq"]) == [0, 1, 2, 3, 4]
    check_pixel_exact(r)


def test_chunks_split_on_shape_change_and_copy_input(tmp_path):
    rec = FrameRecorder(tmp_path / "r", chunk_frames=100, chunk_seconds=30)
    buf = np.empty(SHAPE, np.uint8)
    for seq in range(3):  # the caller reuses its buffer: the recorder must have copied it
        buf[:] = expected_frame(seq)
        rec.write(make_header(seq), buf)
    small = (8, 8, 3)
    f32 = np.random.default_rng(5).random(small, dtype=np.float32)
    rec.write(make_header(3, small, "float32"), f32)
    rec.write_telemetry({"kind": "test", "value": 42})
    rec.close()
    r = open_recording_dir(tmp_path / "r")
    assert [c.n_frames for c in r.chunks] == [3, 1]
    assert r.chunks[1].shape == small and r.chunks[1].dtype == "float32"
    for seq in range(3):
        np.testing.assert_array_equal(r.frame(seq), expected_frame(seq))
    np.testing.assert_array_equal(r.frame(3), f32)
    assert any(t.get("value") == 42 for t in r.telemetry())
    assert r.headers()[3]["dtype"] == "float32"


def test_reader_ignores_incomplete_temp_chunk_and_refuses_reuse(tmp_path):
    d = tmp_path / "r"
    with FrameRecorder(d, chunk_frames=5) as rec:
        for seq in range(10):
            rec.write(make_header(seq), expected_frame(seq))
    # what a writer killed inside h5py leaves behind: a half-written temp file
    good = (d / "chunk-000001.h5").read_bytes()
    (d / ".chunk-000002.h5.tmp").write_bytes(good[: len(good) // 3])
    r = open_recording_dir(d)
    assert r.n_frames == 10 and r.temp_files == [".chunk-000002.h5.tmp"]
    check_pixel_exact(r)
    # a chunk file that is not a valid HDF5 file is reported, not fatal
    (d / "chunk-000007.h5").write_bytes(b"not hdf5")
    r = open_recording_dir(d)
    assert r.n_frames == 10 and [n for n, _ in r.bad_chunks] == ["chunk-000007.h5"]
    with pytest.raises(ConfigError, match="already holds"):
        FrameRecorder(d)
    with pytest.raises(ConfigError, match="chunk_frames"):
        FrameRecorder(tmp_path / "x", chunk_frames=0)


def test_a_failed_writer_surfaces_in_write_and_close(tmp_path, caplog):
    """The writer thread's error (its directory is gone) is stored with context, logged once,
    raised by the next write() and by close() - never lost inside the thread."""
    import logging
    import shutil

    from rtdecode.errors import SessionError
    from rtdecode.rig import wait_until

    d = tmp_path / "r"
    rec = FrameRecorder(d, chunk_frames=1)
    shutil.rmtree(d)  # the disk under the recording went away
    with caplog.at_level(logging.ERROR):
        rec.write(make_header(0), expected_frame(0))
        wait_until(lambda: rec.failure is not None, 10, what="the writer thread to fail")
        f = rec.failure
        assert f.thread == "rtdecode-recorder" and f.doing.startswith("writing chunk 0 (1 frames)")
        assert isinstance(rec.error, OSError)
        with pytest.raises(OSError) as info:
            rec.write(make_header(1), expected_frame(1))
        assert info.value is rec.error
        with pytest.raises(SessionError, match="recording to .* failed: thread 'rtdecode-recorder' failed "
                                               "while writing chunk 0"):
            rec.close()
    assert rec.received == 1 and rec.written == 0
    logged = [r for r in caplog.records if "rtdecode-recorder" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
