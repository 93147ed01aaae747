"""rtdecode.playback over real LSL on loopback: samples, timestamps, markers, speed, loop, readers."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest

from rtdecode.errors import ConfigError, SessionError
from rtdecode.layout import ElectrodeLayout
from rtdecode.playback import play
from rtdecode.sessions import open_recording, session_recording
from rtdecode.sessions.recording import Block, Recording, parse_marker
from rtdecode.sessions.session_file import SessionWriter

pytestmark = pytest.mark.lsl

FS = 1000.0
C = 16


def small_layout() -> ElectrodeLayout:
    return ElectrodeLayout.from_dict({"name": "test-16", "n_channels": C, "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 7]]},
        {"id": 2, "area": "V4", "channels": [[8, 11]]},
        {"id": 3, "area": "IT", "channels": [[12, 15]]}]})


def make_recording(n: int, markers: dict[int, str] | None = None, block: int = 137) -> tuple[Recording, np.ndarray]:
    """Channel 0 holds the sample index, so any loss or reordering shows."""
    data = np.random.default_rng(7).standard_normal((n, C)).astype(np.float32)
    data[:, 0] = np.arange(n, dtype=np.float32)
    markers = markers or {}

    def blocks():
        for s in range(0, n, block):
            e = min(n, s + block)
            yield Block(data[s:e], [(i - s, t) for i, t in sorted(markers.items()) if s <= i < e])

    return Recording("synthetic", small_layout(), FS, blocks, n_samples=n), data


class Player:
    """play() in a thread with unique stream names; the test process is the consumer."""

    def __init__(self, rec: Recording, **kw):
        tag = uuid.uuid4().hex[:10]
        self.name, self.marker_name = f"MUA-{tag}", f"MK-{tag}"
        self.stats = None
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        kw.setdefault("wait_for_consumer", 10.0)
        kw.setdefault("progress", False)

        def target():
            try:
                self.stats = play(rec, stream_name=self.name, marker_stream=self.marker_name,
                                  source_id=f"src-{tag}", stop_event=self.stop_event, **kw)
            except BaseException as e:  # surfaced in join()
                self.error = e

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 20.0):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop_event.set()
            self.thread.join(5)
            raise AssertionError("player did not finish in time")
        if self.error is not None:
            raise self.error
        return self.stats


def resolve(pylsl, name: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pylsl.resolve_byprop("name", name, 1, 0.5)
        if found:
            return found[0]
    raise AssertionError(f"stream {name!r} not found within {timeout} s")


def receive(player: Player, n_expected: int | None, *, timeout: float = 20.0, markers: bool = True):
    """Connect marker inlet first, then the MUA inlet (the player waits for it), pull until done."""
    from rtdecode.lslconfig import lsl

    pylsl = lsl()
    m_inlet = None
    if markers:
        m_inlet = pylsl.StreamInlet(resolve(pylsl, player.marker_name))
        m_inlet.open_stream(5)
    info = resolve(pylsl, player.name)
    inlet = pylsl.StreamInlet(info, max_buflen=60)
    inlet.open_stream(5)
    xs, ts, mks, mts = [], [], [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        x, t = inlet.pull_chunk(timeout=0.05)
        if t:
            xs.append(np.asarray(x, dtype=np.float32))
            ts.extend(t)
        if m_inlet is not None:
            m, mt = m_inlet.pull_chunk(timeout=0.0)
            mks.extend(s[0] for s in m)
            mts.extend(mt)
        done = not player.thread.is_alive()
        if n_expected is not None and len(ts) >= n_expected:
            break
        if done and not t:
            break
    if m_inlet is not None:  # markers pushed last may still be in flight
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            m, mt = m_inlet.pull_chunk(timeout=0.05)
            mks.extend(s[0] for s in m)
            mts.extend(mt)
            if not m and not player.thread.is_alive():
                break
    x = np.concatenate(xs) if xs else np.zeros((0, C), np.float32)
    return x, np.asarray(ts), mks, np.asarray(mts), info


def test_play_delivers_every_sample_with_recorded_timing_and_markers():
    markers = {0: "first", 50: '{"event": "onset", "image": 3, "trial": 0}', 250: "late", 399: "last"}
    rec, data = make_recording(400, markers)
    p = Player(rec)
    x, ts, mks, mts, info = receive(p, 400)
    stats = p.join()
    assert stats.stopped_by == "end" and stats.consumer_found is True
    assert stats.samples == 400 and stats.markers == 4 and stats.passes == 1
    np.testing.assert_array_equal(x, data)
    assert np.all(np.diff(ts) > 0)
    dts = np.diff(ts)
    np.testing.assert_allclose(dts, 1.0 / FS, rtol=1e-6)
    rate = (len(ts) - 1) / (ts[-1] - ts[0])
    assert abs(rate - FS) / FS < 0.01
    assert mks == [markers[i] for i in sorted(markers)]
    np.testing.assert_allclose(mts, ts[sorted(markers)], atol=1e-9)
    assert parse_marker(mks[1]) == {"event": "onset", "image": 3, "trial": 0}
    # the stream's description names channels, areas and arrays
    assert info.channel_count() == C and info.nominal_srate() == FS
    assert info.channel_format() == 1  # cf_float32


def test_stream_description_carries_labels_areas_and_layout():
    from rtdecode.lslconfig import lsl

    pylsl = lsl()
    rec, _ = make_recording(200)
    p = Player(rec)
    inlet = pylsl.StreamInlet(resolve(pylsl, p.name))
    full = inlet.info(5)
    ch = full.desc().child("channels").child("channel")
    labels, areas = [], []
    while not ch.empty():
        labels.append(ch.child_value("label"))
        areas.append(ch.child_value("area"))
        ch = ch.next_sibling()
    assert len(labels) == C and labels[0] == "A01-01-V1" and labels[8] == "A02-01-V4"
    assert areas == list(small_layout().areas)
    lay = ElectrodeLayout.from_json(full.desc().child("rtdecode").child_value("layout"))
    assert lay.n_channels == C and lay.areas == small_layout().areas
    inlet.open_stream(5)
    p.join()


def test_speed_two_halves_timestamp_spacing():
    rec, data = make_recording(300)
    p = Player(rec, speed=2.0)
    x, ts, _, _, _ = receive(p, 300, markers=False)
    stats = p.join()
    np.testing.assert_array_equal(x, data)
    np.testing.assert_allclose(np.diff(ts), 0.5 / FS, rtol=1e-6)
    assert stats.speed == 2.0


def test_loop_repeats_with_chunks_and_duration_stops():
    rec, data = make_recording(100, {10: "m"})
    # 0.35 s of wall time at 1 kHz -> 350 samples = 3.5 passes; 5-sample chunks (explicit ts lists)
    p = Player(rec, loop=True, duration=0.35, chunk_ms=5)
    x, ts, mks, mts, _ = receive(p, 350)
    stats = p.join()
    assert stats.stopped_by == "duration" and stats.samples == 350 and stats.passes == 3
    assert x.shape == (350, C)
    for k in range(3):
        np.testing.assert_array_equal(x[100 * k:100 * (k + 1)], data)
    np.testing.assert_array_equal(x[300:], data[:50])
    np.testing.assert_allclose(np.diff(ts), 1.0 / FS, rtol=1e-6)  # time keeps going across passes
    assert mks == ["m"] * 4
    np.testing.assert_allclose(mts, ts[[10, 110, 210, 310]], atol=1e-9)


def test_stop_event_ends_an_endless_recording():
    rec, _ = make_recording(100)
    p = Player(rec, loop=True)
    x, ts, _, _, _ = receive(p, 150, markers=False)
    p.stop_event.set()
    stats = p.join(5)
    assert stats.stopped_by == "stop_event" and stats.samples >= 150


def test_bad_arguments_are_refused_before_any_stream_opens():
    rec, _ = make_recording(10)
    with pytest.raises(ConfigError, match="speed"):
        play(rec, speed=0)
    with pytest.raises(ConfigError, match="duration"):
        play(rec, duration=-1)


def write_session(path, n=2500, onsets=(500, 1300), images=(1, 0)):
    lay = small_layout()
    mua = np.random.default_rng(3).standard_normal((n, C)).astype(np.float32)
    with SessionWriter(path, lay, FS) as w:
        for s in range(0, n, 700):
            w.append(mua[s:s + 700], np.arange(s, min(n, s + 700)) / FS)
        w.set_markers(np.array(onsets), np.array(onsets) + 200, np.array(images))
        w.set_images(np.zeros((2, 8, 8, 3), np.uint8))
    return mua


def test_session_reader_reads_chunks_and_markers(tmp_path):
    path = tmp_path / "s.h5"
    mua = write_session(path)
    rec = session_recording(path, chunk=1000)
    assert rec.n_samples == 2500 and rec.sampling_rate_hz == FS and rec.images.shape == (2, 8, 8, 3)
    blocks = list(rec.blocks())
    assert [b.mua.shape[0] for b in blocks] == [1000, 1000, 500]
    np.testing.assert_array_equal(np.concatenate([b.mua for b in blocks]), mua)
    events = [(k * 1000 + i, parse_marker(t)) for k, b in enumerate(blocks) for i, t in b.markers]
    assert events == [(500, {"event": "onset", "image": 1, "trial": 0}),
                      (700, {"event": "offset", "image": 1, "trial": 0}),
                      (1300, {"event": "onset", "image": 0, "trial": 1}),
                      (1500, {"event": "offset", "image": 0, "trial": 1})]
    # a second pass starts over (used by --loop)
    assert sum(b.mua.shape[0] for b in rec.blocks()) == 2500
    assert open_recording(path).n_samples == 2500


def test_open_recording_errors_name_the_path(tmp_path):
    with pytest.raises(SessionError, match="does not exist"):
        open_recording(tmp_path / "nope.h5")
    bad = tmp_path / "x.txt"
    bad.write_text("hi")
    with pytest.raises(SessionError, match="unknown file type"):
        open_recording(bad)


def test_session_file_plays_over_lsl(tmp_path):
    path = tmp_path / "s.h5"
    mua = write_session(path, n=600, onsets=(100, 300))
    rec = open_recording(path)
    p = Player(rec, speed=4.0)
    x, ts, mks, mts, _ = receive(p, 600)
    p.join()
    np.testing.assert_array_equal(x, mua)
    onsets = [(i, parse_marker(m)) for i, m in zip(np.searchsorted(ts, mts), mks, strict=True)]
    assert onsets[0] == (100, {"event": "onset", "image": 1, "trial": 0})
    assert onsets[2] == (300, {"event": "onset", "image": 0, "trial": 1})


def test_a_stalled_reader_is_counted_late_and_caught_up_without_drift():
    data = np.random.default_rng(2).standard_normal((300, C)).astype(np.float32)
    data[:, 0] = np.arange(300)

    def blocks():
        for k in range(3):
            if k == 2:
                time.sleep(0.15)  # a slow disk: the player falls 150 samples behind
            yield Block(data[100 * k:100 * (k + 1)])

    p = Player(Recording("stalling", small_layout(), FS, blocks, n_samples=300))
    x, ts, _, _, _ = receive(p, 300, markers=False)
    stats = p.join()
    np.testing.assert_array_equal(x, data)
    np.testing.assert_allclose(np.diff(ts), 1.0 / FS, rtol=1e-6)  # timestamps keep the recorded timing
    assert stats.late_pushes >= 1 and stats.max_late_s >= 0.1
    assert stats.chunks < 300  # the samples that fell due during the stall went out in one push


def test_progress_line_reports_elapsed_total_and_rate(caplog):
    import logging

    from rtdecode.playback.player import PlaybackStats, _Progress

    rec, _ = make_recording(20000)
    prog = _Progress(True, rec, FS, 2.0, None, False)  # not a terminal under pytest: log lines
    stats = PlaybackStats("MUA", "src", FS, 2.0, samples=20000, late_pushes=3)
    with caplog.at_level(logging.INFO, logger="rtdecode.playback.player"):
        prog.update(stats, 5.0)  # before the first interval (10 s): quiet
        prog.update(stats, 10.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["playback synthetic: 10/10 s, 2000 samples/s, 0 markers, 3 late"]


def test_nwb_without_pynwb_names_the_extra(tmp_path):
    """Where pynwb is not installed, an .nwb file is refused with the extra that brings it."""
    import subprocess
    import sys

    (tmp_path / "x.nwb").write_bytes(b"")
    code = ("import sys; sys.modules['pynwb'] = None\n"
            "from rtdecode.sessions import open_recording\n"
            "try:\n    open_recording(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.nwb")], capture_output=True, text=True,
                         timeout=60).stdout
    assert out.startswith("ConfigError") and "pip install 'rtdecode[nwb]'" in out
