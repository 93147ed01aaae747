"""The viewer: stimulus tracking from markers, panels, and headless output from a real ZeroMQ publisher."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from rtdecode.display.viewer import AnimationWriter, PanelComposer, upscale, view
from rtdecode.errors import ConfigError
from rtdecode.protocol import TOPIC, FrameHeader, FrameSubscriber
from rtdecode.sessions.recording import offset_marker, onset_marker
from rtdecode.sources.markers import StimulusTracker


class Publisher:
    """A real PUB socket on loopback publishing distinct 16x16 frames until stopped."""

    def __init__(self, *, stimulus_every: int = 0, period: float = 0.004):
        import zmq

        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{port}"
        self.stop = threading.Event()
        self.sent = 0
        self.stimulus_every = stimulus_every
        self.period = period
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        from rtdecode.lslconfig import lsl

        clock = lsl().local_clock
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            now = clock()
            stim = (self.sent % 2) if self.stimulus_every else None
            h = FrameHeader(seq=self.sent, model_id="test", ref_time=now - 0.3, newest_ts=now - 0.002,
                            shape=(16, 16, 3), stimulus=stim)
            self.sock.send_multipart([TOPIC, h.to_bytes(), img.tobytes()])
            self.sent += 1
            self.stop.wait(self.period)

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def publisher():
    p = Publisher(stimulus_every=1)
    yield p
    p.close()


def test_stimulus_tracker_follows_onsets_and_offsets():
    t = StimulusTracker()
    t.add(10.0, onset_marker(3, 0))
    t.add(10.2, offset_marker(3, 0))
    t.add(10.4, onset_marker(7, 1))
    t.add(10.3, "not one of ours")
    assert t.at(9.9) is None
    assert t.at(10.0) == 3 and t.at(10.19) == 3
    assert t.at(10.25) is None
    assert t.at(10.5) == 7 and t.at(99.0) == 7
    assert len(t) == 2


def test_panel_has_one_tile_per_view_and_upscales():
    images = np.zeros((2, 8, 8, 3), np.uint8)
    images[1] = 255
    c = PanelComposer(tile=64, images=images)
    recon = np.full((16, 16, 3), 0.5, np.float32)
    panel = c.compose(recon, stimulus=1, latency_ms=3.5, seq=7)
    assert panel.shape == c.shape and panel.dtype == np.uint8
    assert c.n_tiles == 2 and c.shape[1] == 2 * 64 + 3 * c.gap
    y = c.text_h + 32
    assert (panel[y, c.gap + 32] == 255).all()  # the stimulus, upscaled 8 -> 64
    assert (panel[y, 2 * c.gap + 64 + 32] == 128).all()  # the reconstruction
    assert upscale(np.zeros((16, 8, 3), np.uint8), 64).shape == (64, 32, 3)
    with pytest.raises(ConfigError, match="mode"):
        PanelComposer(mode="hologram")


def test_phosphene_mode_adds_a_tile():
    c = PanelComposer(tile=48, mode="phosphene", phosphene_opts={"n_phosphenes": 64})
    panel = c.compose(np.full((16, 16, 3), 200, np.uint8), latency_ms=1.0)
    assert c.n_tiles == 2 and panel.shape == c.shape


def test_headless_view_writes_a_gif_with_the_requested_frames(tmp_path, publisher):
    images = np.stack([np.full((8, 8, 3), 10, np.uint8), np.full((8, 8, 3), 240, np.uint8)])
    composer = PanelComposer(tile=32, images=images)
    sink = AnimationWriter(tmp_path, "gif", fps=25)
    stats = view(publisher.address, sink, composer, frames=12, duration=20)
    assert stats.stopped_by == "frames" and stats.frames == 12 and stats.shown == 12
    assert stats.stimuli_known == 12
    lat = stats.latency_ms()
    assert 0 < lat["p50"] < 1000  # the publisher stamps newest_ts 2 ms before sending
    gif = Image.open(tmp_path / "view.gif")
    assert gif.n_frames == 12
    assert gif.size == (composer.shape[1], composer.shape[0])


def test_headless_png_sequence_and_max_fps(tmp_path, publisher):
    sink = AnimationWriter(tmp_path, "png")
    stats = view(publisher.address, sink, PanelComposer(tile=32), frames=30, duration=20, max_fps=50)
    assert stats.frames == 30
    pngs = sorted(tmp_path.glob("view_*.png"))
    assert len(pngs) == stats.shown and 0 < stats.shown < 30  # 4 ms apart: some are not drawn


def test_stimulus_matched_by_marker_time(tmp_path):
    pub = Publisher()  # headers carry no stimulus
    try:
        tracker = StimulusTracker()
        tracker.add(0.0, onset_marker(1))
        images = np.stack([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)])
        sink = AnimationWriter(tmp_path, "png")
        composer = PanelComposer(tile=32, images=images)
        stats = view(pub.address, sink, composer, frames=3, duration=20, stimulus_at=tracker.at)
        assert stats.stimuli_known == 3
        panel = np.asarray(Image.open(tmp_path / "view_00000.png"))
        assert (panel[composer.text_h + 16, composer.gap + 16] == 255).all()
    finally:
        pub.close()


def test_view_without_frames_stops_on_first_frame_timeout(tmp_path):
    with FrameSubscriber("tcp://127.0.0.1:1") as sub:  # nothing publishes there
        t0 = time.monotonic()
        stats = view("unused", AnimationWriter(tmp_path, "gif"), PanelComposer(tile=32), subscriber=sub,
                     first_frame_timeout=0.3, duration=10)
    assert stats.stopped_by == "no frames" and stats.frames == 0 and stats.output is None
    assert time.monotonic() - t0 < 9


def test_view_command_headless(tmp_path, publisher):
    from rtdecode.cli import main

    rc = main(["view", "--address", publisher.address, "--headless", "--out", str(tmp_path / "o"),
               "--frames", "5", "--tile", "32"])
    assert rc == 0
    assert Image.open(tmp_path / "o" / "view.gif").n_frames == 5


def test_window_without_pygame_says_what_to_do():
    import importlib.util

    if importlib.util.find_spec("pygame") is not None:
        pytest.skip("pygame is installed here")
    from rtdecode.display.viewer import PygameWindow

    with pytest.raises(ConfigError, match="--headless"):
        PygameWindow((10, 10, 3))


def test_bad_format_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="format"):
        AnimationWriter(tmp_path, "avi")


@pytest.mark.lsl
def test_marker_feed_reads_a_live_marker_stream():
    import uuid

    from rtdecode.lslconfig import lsl
    from rtdecode.sources.markers import LslMarkerFeed

    pylsl = lsl()
    name = f"markers-{uuid.uuid4().hex[:8]}"
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "Markers", 1, 0, pylsl.cf_string, name))
    feed = LslMarkerFeed(name, StimulusTracker(), timeout=10)
    try:
        deadline = time.monotonic() + 5
        while not outlet.have_consumers() and time.monotonic() < deadline:
            time.sleep(0.01)
        t = pylsl.local_clock()
        outlet.push_sample([onset_marker(5, 0)], t)
        outlet.push_sample([offset_marker(5, 0)], t + 0.2)
        deadline = time.monotonic() + 5
        while len(feed.onsets()) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert feed.onsets() == [(pytest.approx(t), 5)]
        assert feed.at(t + 0.1) == 5
        deadline = time.monotonic() + 5
        while feed.at(t + 0.3) is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert feed.at(t + 0.3) is None  # the offset arrived too
    finally:
        feed.close()


def test_marker_feed_names_a_missing_stream():
    from rtdecode.sources.markers import LslMarkerFeed

    with pytest.raises(ConfigError, match="not found"):
        LslMarkerFeed("no-such-markers-stream-x", StimulusTracker(), timeout=0.3)


def _marker_outlet(pylsl):
    import uuid

    name = f"markers-{uuid.uuid4().hex[:8]}"
    return name, pylsl.StreamOutlet(pylsl.StreamInfo(name, "Markers", 1, 0, pylsl.cf_string, name))


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_marker_feed_skips_a_malformed_marker_and_carries_on():
    from rtdecode.lslconfig import lsl
    from rtdecode.rig import wait_until
    from rtdecode.sources.markers import LslMarkerFeed

    pylsl = lsl()
    name, outlet = _marker_outlet(pylsl)
    feed = LslMarkerFeed(name, StimulusTracker(), timeout=10)
    try:
        wait_until(outlet.have_consumers, 5, what="the feed to connect")
        t = pylsl.local_clock()
        outlet.push_sample(['{"event": "onset", "image": "seven"}'], t)  # killed the feed's thread before
        outlet.push_sample([onset_marker(3, 1)], t + 0.1)
        wait_until(lambda: feed.onsets(), 5, what="the good onset")
        assert feed.onsets() == [(pytest.approx(t + 0.1), 3)] and feed.malformed == 1
        assert feed.failure is None and feed.at(t + 0.2) == 3
    finally:
        feed.close()


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_marker_feed_failure_surfaces_to_its_reader():
    """The feed's thread fails: the error (thread, what it was doing) is raised by at() and onsets()."""
    from rtdecode.lslconfig import lsl
    from rtdecode.rig import wait_until
    from rtdecode.sources.markers import LslMarkerFeed

    class FullTracker(StimulusTracker):
        def add(self, ts, marker):
            raise RuntimeError("tracker is full")

    pylsl = lsl()
    name, outlet = _marker_outlet(pylsl)
    feed = LslMarkerFeed(name, FullTracker(), timeout=10)
    try:
        wait_until(outlet.have_consumers, 5, what="the feed to connect")
        assert feed.at(pylsl.local_clock()) is None  # no failure yet: a plain answer
        outlet.push_sample([onset_marker(3, 1)], pylsl.local_clock())
        wait_until(lambda: feed.failure is not None, 5, what="the feed's thread to fail")
        assert str(feed.failure) == (f"thread 'marker-feed' failed while reading marker stream {name!r}: "
                                     "RuntimeError: tracker is full")
        with pytest.raises(RuntimeError, match="tracker is full"):
            feed.at(0.0)
        with pytest.raises(RuntimeError, match="tracker is full"):
            feed.onsets()
    finally:
        feed.close()
