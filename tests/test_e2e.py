"""End to end: a recorded session pushed over real LSL, decoded by DecoderService, received over
real ZeroMQ, equals decoding the same windows offline from the file."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from rtdecode.config import ServeConfig
from rtdecode.protocol import FrameSubscriber
from rtdecode.rig import Pusher, ServiceThread, unique, wait_until
from rtdecode.sessions.recording import onset_marker
from rtdecode.sessions.session_file import SessionWriter, open_session
from rtdecode.testing import make_layout, make_model

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(120)]

FS = 1000.0
C = 64


def _write_session(path, rng, n: int = 2500):
    """Synthetic session: smooth MUA with stimulus-locked bumps; onsets every 300 ms from 600 ms."""
    layout = make_layout(C)
    t = np.arange(n)
    mua = (rng.normal(0, 0.3, size=(n, C)) + np.sin(t[:, None] / 37.0 + np.arange(C) / 5.0)).astype(np.float32)
    onsets = np.arange(600, n - 300, 300)
    images = rng.integers(0, 255, size=(4, 8, 8, 3), dtype=np.uint8)
    image_idx = np.arange(len(onsets)) % 4
    for o in onsets:
        mua[o + 40:o + 140] += 1.5
    with SessionWriter(path, layout, FS, description="e2e test") as w:
        w.append(mua[: n // 2], t[: n // 2] / FS)
        w.append(mua[n // 2:], t[n // 2:] / FS)
        w.set_markers(onsets, onsets + 200, image_idx)
        w.set_images(images)
    return path


def _offline(model_path, contract, mua, refs):
    maps = contract.assembler().assemble_many(mua, np.asarray(refs))
    contract.normaliser()(maps)
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"mua": maps})[0]  # [N, 3, H, W]


@pytest.mark.parametrize("chunk,inlet", [(1, "thread"), (5, "thread"), (1, "loop")])
def test_sliding_frames_equal_offline_decoding(tmp_path, rng, chunk, inlet):
    """One-sample chunks: windows assembled map by map as they arrive; 5: mostly in one go.
    inlet "loop": the serve loop pulls LSL itself (no inlet thread), with the same frames."""
    sess = open_session(_write_session(tmp_path / "s.h5", rng))
    mua = np.asarray(sess.mua)
    ts = sess.timestamps
    model, contract = make_model(tmp_path / "m.onnx", C, seed=3)
    with Pusher(tmp_path, mua, ts, chunk=chunk, lead_s=0.3) as p:
        cfg = ServeConfig(stream=p.name, model=str(model), address="tcp://127.0.0.1:*", frame_dtype="float32",
                          stride_ms=16, status_interval_s=0, inlet=inlet)
        with ServiceThread(cfg) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                base = p.base()
                got = []
                wait_until(lambda: ((f := sub.recv(0.05)) is not None and got.append(f))
                           or (got and got[-1].header.ref_time > base + ts[-300]), 40, interval=0, what="frames")
            summary = svc.join()
    assert len(got) >= 50 and summary.frames >= len(got)
    if chunk == 1:
        assert svc.service.preassembled > summary.frames // 2
    if inlet == "loop":
        assert svc.service.source._thread is None  # nothing pulled in another thread
    refs = []
    for f in got:
        k = int(np.argmin(np.abs(ts + base - f.header.ref_time)))
        assert abs(ts[k] + base - f.header.ref_time) < 2e-4  # clock sync on one machine: ~us
        assert abs(ts[k + contract.plan.span - 1] + base - f.header.newest_ts) < 2e-4
        refs.append(k)
    want = _offline(model, contract, mua, refs)
    for f, w in zip(got, want, strict=True):
        assert f.header.dtype == "float32" and f.header.model_id == contract.model_id
        np.testing.assert_allclose(f.image, np.moveaxis(w, 0, -1), atol=1e-5, rtol=0)
    assert np.ptp([f.image.mean() for f in got]) > 0  # the frames do differ over time


def test_event_locked_one_frame_per_onset(tmp_path, rng):
    sess = open_session(_write_session(tmp_path / "s.h5", rng))
    mua = np.asarray(sess.mua)
    ts = sess.timestamps
    model, contract = make_model(tmp_path / "m.onnx", C, seed=4)
    markers = [(int(o), onset_marker(int(i), k)) for k, (o, i) in enumerate(zip(sess.onset, sess.image_index,
                                                                                 strict=True))]
    mname = unique("markers")
    with Pusher(tmp_path, mua, ts, chunk=5, markers=markers, marker_name=mname, lead_s=0.3) as p:
        cfg = ServeConfig(stream=p.name, model=str(model), address="tcp://127.0.0.1:*", frame_dtype="float32",
                          mode="event", marker_stream=mname, status_interval_s=0)
        with ServiceThread(cfg) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                base = p.base()
                got = []
                wait_until(lambda: ((f := sub.recv(0.05)) is not None and got.append(f))
                           or len(got) >= len(markers), 40, interval=0, what="one frame per onset")
                extra = sub.recv(0.3)
            summary = svc.join()
    assert extra is None and summary.frames == len(markers)
    refs = [int(np.argmin(np.abs(ts + base - f.header.ref_time))) for f in got]
    assert refs == sess.onset.tolist()
    assert [f.header.stimulus for f in got] == sess.image_index.tolist()
    want = _offline(model, contract, mua, refs)
    for f, w in zip(got, want, strict=True):
        np.testing.assert_allclose(f.image, np.moveaxis(w, 0, -1), atol=1e-5, rtol=0)
