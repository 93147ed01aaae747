"""A subscriber that stalls gets no stale backlog; heartbeats tell the service's state; sessions.

Real ZeroMQ on 127.0.0.1 (FramePublisher -> FrameSubscriber), and a real DecoderService on a
real LSL outlet for the heartbeat states.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from rtdecode.protocol import (
    HEARTBEAT_TOPIC,
    TOPIC,
    FrameHeader,
    FrameSubscriber,
    Heartbeat,
    MalformedFrameError,
)
from rtdecode.rig import Pusher, ServiceThread, wait_until
from rtdecode.sinks.publisher import FramePublisher, HeaderEncoder
from rtdecode.testing import make_model

FRAME = np.zeros((64, 64, 3), np.uint8)  # 12 KiB, the frames


class Paced:
    """Publishes frames (newest_ts = time.monotonic() when sent) every `stride_s` in a thread."""

    def __init__(self, pub: FramePublisher, stride_s: float = 0.002):
        self.pub, self.stride_s = pub, stride_s
        self.seq = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            h = FrameHeader(seq=self.seq, model_id="m", ref_time=now, newest_ts=now, shape=FRAME.shape)
            self.pub.publish(h, FRAME)
            self.seq += 1
            time.sleep(self.stride_s)

    def __enter__(self) -> Paced:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _stall(sub: FrameSubscriber, paced: Paced, stall_s: float) -> tuple[int, float]:
    """Connect, read one frame, then read nothing for `stall_s` while frames keep coming; returns
    (seq of the first frame published after the stall, the stall's start on the monotonic clock)."""
    assert sub.recv(timeout=20) is not None
    t_stall = time.monotonic()
    time.sleep(stall_s)
    return paced.seq, t_stall


@pytest.mark.timeout(60)
def test_a_stalled_subscriber_finds_a_few_frames_not_seconds_of_them():
    """The issue's case: RCVHWM 4, no reads for a while, then every frame is read. Before the small
    kernel buffers ~240 frames older than the stall's end came first (the TCP buffers hold what the
    high-water marks do not count); now at most the buffers' worth: 128 KiB each side + HWMs."""
    with FramePublisher("tcp://127.0.0.1:*") as pub, Paced(pub) as paced:
        with FrameSubscriber(pub.endpoint, rcvhwm=4) as sub:
            # 3 s at 2 ms: ~18 MB offered, far more than any buffer here holds
            woke_seq, _ = _stall(sub, paced, 3.0)
            stale = 0
            while True:
                f = sub.recv(timeout=20)
                assert f is not None
                if f.header.seq >= woke_seq:
                    break
                stale += 1
    # SNDHWM 4 + RCVHWM 4 + the kernel buffers (64 KiB asked, 128 KiB given each side), with 2x slack
    assert stale <= 4 + 4 + 2 * (4 * 64 * 1024) // FRAME.nbytes + 4, stale


@pytest.mark.timeout(60)
def test_the_keep_newest_recipe_delivers_no_frame_from_before_the_stall():
    """recv_newest with max_age_s after a 3-s stall: every frame still queued is older than the
    stall's end and is passed over; the first frame returned was published after the stall."""
    with FramePublisher("tcp://127.0.0.1:*") as pub, Paced(pub) as paced:
        with FrameSubscriber(pub.endpoint, rcvhwm=4) as sub:
            woke_seq, t_stall = _stall(sub, paced, 3.0)
            f = None
            deadline = time.monotonic() + 20
            while f is None and time.monotonic() < deadline:
                f = sub.recv_newest(timeout=1.0, max_age_s=1.0)
            assert f is not None and f.header.seq >= woke_seq and f.header.newest_ts > t_stall + 2.0
            assert sub.discarded > 0  # the stale ones were there, and passed over
            g = sub.recv_newest(timeout=5.0)  # afterwards: the stream again, newer than before
            assert g is not None and g.header.seq > f.header.seq


@pytest.mark.timeout(60)
def test_recv_newest_passes_over_queued_frames_for_the_newest():
    """Without an age limit: of the frames queued, the newest comes back, the rest are counted."""
    with FramePublisher("tcp://127.0.0.1:*", sndhwm=100) as pub, \
            FrameSubscriber(pub.endpoint, rcvhwm=100, heartbeats=False) as sub:
        h = FrameHeader(seq=0, model_id="m", ref_time=0.0, newest_ts=0.0, shape=FRAME.shape)
        wait_until(lambda: pub.publish(h, FRAME) and sub.recv(timeout=0.05) is not None, 20, interval=0.0,
                   what="the subscriber to connect")
        for seq in range(1, 11):
            h.seq = seq
            pub.publish(h, FRAME)
        wait_until(lambda: sub.sock.poll(0), 10, what="the frames to arrive")
        time.sleep(1.0)  # all ten queued (120 KiB, one loopback hop)
        f = sub.recv_newest(timeout=5)
        assert f.header.seq == 10 and sub.discarded == 9
        assert sub.recv_newest(timeout=0.05) is None


@pytest.mark.timeout(30)
def test_a_malformed_message_met_while_draining_comes_after_the_newest_frame():
    import zmq

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        with FrameSubscriber(f"tcp://127.0.0.1:{port}") as sub:
            h = FrameHeader(seq=0, model_id="m", ref_time=0.0, newest_ts=0.0, shape=FRAME.shape)
            wait_until(lambda: pub.send_multipart((TOPIC, h.to_bytes(), FRAME)) or sub.recv(timeout=0.05), 20,
                       interval=0.0, what="the subscriber to connect")
            h.seq = 1
            pub.send_multipart((TOPIC, h.to_bytes(), FRAME))
            pub.send_multipart((TOPIC, b"{not json", FRAME))
            time.sleep(0.2)
            assert sub.recv_newest(timeout=5).header.seq == 1  # the good frame is not lost
            with pytest.raises(MalformedFrameError, match="malformed frame"):
                sub.recv_newest(timeout=5)  # raised now (met while draining) or when it arrives
    finally:
        pub.close(0)


def test_header_session_field_is_additive_within_v1():
    """A v1 header without `session` (an older server) still parses; the encoder's bytes equal the
    object's; an old client's parser (keys it knows) ignores the new key."""
    enc = HeaderEncoder("m", (4, 4, 3), "uint8", session="abc123")
    stages = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
    raw = enc.encode(7, 0.5, 0.7, stages, ("gap",), 2, 3)
    assert raw == enc.header(7, 0.5, 0.7, stages, ("gap",), 2, 3).to_bytes()
    d = json.loads(raw)
    assert d["v"] == 1 and d["session"] == "abc123"
    assert FrameHeader.from_bytes(raw).session == "abc123"
    del d["session"]
    assert FrameHeader.from_bytes(json.dumps(d).encode()).session is None
    hb = Heartbeat(state="idle", session="abc123", started=1.0, time=2.0, interval_s=1.0, newest_ts=float("nan"))
    back = Heartbeat.from_bytes(hb.to_bytes())
    assert back.state == "idle" and back.newest_ts is None and back.last_seq is None


# ---- the service's heartbeats -------------------------------------------------------------
@pytest.mark.lsl
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_heartbeats_tell_streaming_lost_idle_and_stopping_apart(tmp_path, rng):
    """streaming -> stream_lost (the outlet vanished) -> streaming (it came back) -> idle (it
    pushes nothing more) -> stopping. A frame-only subscriber never sees a heartbeat; the frames
    and the heartbeats carry one session id; a new service run has another."""
    import zmq

    path, _ = make_model(tmp_path / "m.onnx", 16)
    cfg_kw = dict(address="tcp://127.0.0.1:*", resolve_timeout_s=10.0, status_interval_s=0.0, stride_ms=8,
                  heartbeat_interval_s=0.1, reconnect_backoff_s=0.05)
    from rtdecode.config import ServeConfig

    states: list[Heartbeat] = []
    with Pusher(tmp_path, rng.normal(size=(9000, 16)), chunk=4, lose_at=800, lose_for_s=1.5) as p:
        svc = ServiceThread(ServeConfig(stream=p.name, model=str(path), **cfg_kw)).start()
        assert svc.service.publisher.sock.getsockopt(zmq.SNDBUF) == 64 * 1024  # ServeConfig.sndbuf's default
        ctx = zmq.Context.instance()
        hb_sock = ctx.socket(zmq.SUB)  # heartbeats only
        hb_sock.setsockopt(zmq.LINGER, 0)
        hb_sock.setsockopt(zmq.SUBSCRIBE, HEARTBEAT_TOPIC)
        hb_sock.connect(svc.endpoint)
        frames_only = FrameSubscriber(svc.endpoint, heartbeats=False)
        got = []
        try:
            def poll() -> bool:
                while hb_sock.poll(0):
                    topic, body = hb_sock.recv_multipart()
                    states.append(Heartbeat.from_bytes(body))
                f = frames_only.recv(timeout=0.02)  # raises on anything but a frame
                if f is not None:
                    got.append(f)
                return bool(p.state().get("done")) and bool(states) and states[-1].state == "idle" \
                    and states[-1].state_s >= 0.2
            wait_until(poll, 60, interval=0.0, what="streaming, loss, return, then idle")
            svc.join(stop=True, reason="test finished")
            wait_until(lambda: poll() or states[-1].state == "stopping", 10, interval=0.0, what="the stopping beat")
        finally:
            svc.service.stop("test finished")
            svc.thread.join(30)
            frames_only.close()
            hb_sock.close(0)
    seen = [s.state for k, s in enumerate(states) if k == 0 or s.state != states[k - 1].state]
    order = iter(seen)  # these, in this order, among the states seen (idle may come in between)
    assert all(want in order for want in ("streaming", "stream_lost", "streaming", "idle", "stopping")), seen
    assert states[-1].reason == "test finished"
    session = svc.service.session
    assert {s.session for s in states} == {session} and {f.header.session for f in got} == {session}
    lost = [s for s in states if s.state == "stream_lost"]
    assert lost[-1].state_s > 0.3  # it stayed lost a while, reported every interval
    last_seq = max(s.last_seq for s in states if s.last_seq is not None)
    assert last_seq >= max(f.header.seq for f in got)
    assert ServiceThread(ServeConfig(stream="x", model=str(path))).service.session != session


@pytest.mark.timeout(60)
def test_dashboard_and_viewer_show_the_heartbeat_state(tmp_path):
    """Frames, then none while the heartbeat says stream_lost, then no heartbeat at all: the
    dashboard's stats and page say so (lost, then dead), and the viewer draws the change once."""
    from rtdecode.display.viewer import AnimationWriter, PanelComposer, view
    from rtdecode.sinks.dashboard import Dashboard
    from rtdecode.sinks.heartbeat import HeartbeatSender

    small = np.zeros((8, 8, 3), np.uint8)
    with FramePublisher("tcp://127.0.0.1:*") as pub:
        beats = HeartbeatSender(pub, session="s1", interval_s=0.2)  # dead after 0.6 s without one
        stop_frames, stop_all = threading.Event(), threading.Event()

        def run() -> None:
            seq = 0
            while not stop_all.is_set():
                now = time.monotonic()
                if not stop_frames.is_set():
                    pub.publish(FrameHeader(seq=seq, model_id="m", ref_time=now, newest_ts=now, shape=small.shape,
                                            session="s1"), small)
                    seq += 1
                beats.tick(now, seq, lost=stop_frames.is_set())
                time.sleep(0.01)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        dash = Dashboard(pub.endpoint)
        try:
            wait_until(lambda: dash.stats().get("server_state") == "streaming" and dash.frames > 3, 20,
                       what="frames and a streaming heartbeat")
            stop_frames.set()
            wait_until(lambda: dash.stats()["server_state"] == "stream_lost", 20, what="the stream_lost beat")
            assert "stream is lost" in dash.status() and dash.stats()["heartbeat"]["session"] == "s1"
            sub = FrameSubscriber(pub.endpoint)
            stop_frames.clear()
            threading.Timer(1.0, stop_frames.set).start()
            stats = view("unused", AnimationWriter(tmp_path, "png"), PanelComposer(tile=32), subscriber=sub,
                         duration=3.0)
            sub.close()
            assert stats.frames > 0 and "stream_lost" in stats.server_states
            assert stats.server_states.index("streaming") < stats.server_states.index("stream_lost")
            assert stats.shown + 1 == len(list(tmp_path.glob("view_*.png")))  # + the state panel, drawn once
            stop_all.set()
            wait_until(lambda: dash.stats()["server_state"] == "dead", 20, what="no heartbeat: dead")
            assert "no heartbeat" in dash.status()
        finally:
            stop_all.set()
            th.join(5)
            dash.close()
