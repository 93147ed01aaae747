"""Phosphene rendering: positions from the cortical map, brightness, size vs eccentricity, backends."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time

import numpy as np
import pytest

from rtdecode.display.phosphene import (
    PhospheneRenderer,
    cortical_magnification,
    cortical_map_positions,
    write_side_by_side,
)
from rtdecode.errors import ConfigError


@pytest.fixture(scope="module")
def renderer() -> PhospheneRenderer:
    return PhospheneRenderer(n_phosphenes=1024, size=(256, 256), seed=0)


def test_output_shape_dtype_and_grey(renderer, rng):
    img = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    out = renderer.render(img)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    stim = renderer.stimulation(img)
    assert stim.shape == (1024,) and stim.dtype == np.float32
    assert 0.0 <= stim.min() and stim.max() <= 1.0
    # float input in [0, 1] gives the same stimulation as its uint8 version
    np.testing.assert_allclose(renderer.stimulation(img.astype(np.float32) / 255.0), stim, atol=1e-5)
    wide = PhospheneRenderer(n_phosphenes=64, size=(60, 100))
    assert wide.render(img).shape == (60, 100, 3)


def test_black_input_gives_black_output(renderer):
    assert renderer.render(np.zeros((128, 128, 3), np.uint8)).max() == 0
    assert renderer.render(np.zeros((64, 64), np.float32)).max() == 0


def test_blobs_appear_at_mapped_positions(renderer):
    h, w = renderer.size
    rng = np.random.default_rng(7)
    for i in rng.choice(renderer.n_phosphenes, size=12, replace=False):
        b = np.zeros(renderer.n_phosphenes, np.float32)
        b[i] = 1.0
        out = renderer.draw(b)[..., 0].astype(np.float64)
        assert out.max() > 100
        ys, xs = np.mgrid[0:h, 0:w]
        cx = (out * (xs + 0.5)).sum() / out.sum()
        cy = (out * (ys + 0.5)).sum() / out.sum()
        px, py = renderer.positions[i] * [w, h]
        edge = min(px, py, w - px, h - py) > 3 * renderer.sigma_px[i]  # clipped blobs shift their centroid
        tol = 0.6 if edge else 3 * renderer.sigma_px[i]
        assert abs(cx - px) < tol and abs(cy - py) < tol, (i, cx, cy, px, py)


def test_a_bright_patch_lights_only_nearby_phosphenes(renderer):
    img = np.zeros((128, 128, 3), np.uint8)
    img[16:56, 80:120] = 255  # top-right region
    out = renderer.render(img)[..., 0].astype(np.float64)
    quad = out[:128, 128:].sum()
    assert quad > 0.95 * out.sum()
    lit = renderer.stimulation(img) > renderer.threshold
    x, y = renderer.positions[lit].T
    assert np.all((x > 0.55) & (y < 0.5))


def test_brighter_input_gives_brighter_phosphenes(renderer):
    levels = [0, 20, 60, 100, 140, 180, 220, 255]
    means = [renderer.render(np.full((64, 64, 3), v, np.uint8)).mean() for v in levels]
    assert means[0] == 0 and means[1] == 0  # below threshold (0.1): nothing
    assert all(a < b for a, b in zip(means[1:6], means[2:7], strict=True))  # rising between threshold and saturation
    assert means[-1] == pytest.approx(means[-2], rel=1e-6)  # saturated (> 0.8)
    stim = renderer.stimulation(np.full((64, 64, 3), 128, np.uint8))
    np.testing.assert_allclose(stim, 128 / 255, atol=1e-4)
    b = renderer.brightness(np.array([0.0, 0.1, 0.45, 0.8, 1.0], np.float32), out=np.empty(5, np.float32))
    np.testing.assert_allclose(b, [0, 0, 0.5, 1, 1], atol=1e-6)


def test_size_grows_with_eccentricity(renderer):
    order = np.argsort(renderer.eccentricity_deg)
    sig = renderer.sigma_deg[order]
    assert np.all(np.diff(sig) >= 0) and sig[-1] > 5 * sig[0]
    np.testing.assert_allclose(renderer.sigma_deg, 0.5 / cortical_magnification(renderer.eccentricity_deg))

    def blob_width(i):
        b = np.zeros(renderer.n_phosphenes, np.float32)
        b[i] = 1.0
        return (renderer.draw(b)[..., 0] > 64).sum()

    centre, periphery = order[5], order[-5]
    assert blob_width(periphery) > 4 * blob_width(centre)


def test_cortical_map_is_dense_at_the_fovea():
    deg = cortical_map_positions(1024, 16.0, seed=3)
    assert deg.shape == (1024, 2)
    ecc = np.hypot(*deg.T)
    assert ecc.max() <= 8.0 + 1e-9
    inner = (ecc < 2).sum() / (np.pi * 2**2)
    outer = ((ecc > 6) & (ecc < 8)).sum() / (np.pi * (8**2 - 6**2))
    assert inner > 5 * outer
    assert abs((deg[:, 0] > 0).mean() - 0.5) < 0.1  # both hemifields (both hemispheres)
    np.testing.assert_array_equal(deg, cortical_map_positions(1024, 16.0, seed=3))
    assert not np.array_equal(deg, cortical_map_positions(1024, 16.0, seed=4))


def test_positions_from_layout_rf_centres():
    from rtdecode.layout import ElectrodeLayout

    rf = np.array([[0.25, 0.25], [0.75, 0.5], [np.nan, np.nan], [0.5, 0.9]])
    layout = ElectrodeLayout(name="t", arrays=np.array([1, 1, 2, 2]), areas=("V1",) * 4,
                             usable=np.array([True, True, True, False]), rf_centres=rf)
    r = PhospheneRenderer.from_layout(layout, size=(64, 64))
    assert r.n_phosphenes == 2 and list(r.channels) == [0, 1]
    out = r.draw(np.ones(2, np.float32))[..., 0]
    assert out[15:17, 15:17].max() > 120 and out[31:33, 47:49].max() > 120 and out[57, 32] == 0
    with pytest.raises(ConfigError, match="within"):
        PhospheneRenderer(positions=np.array([[0.5, 1.5]]))
    with pytest.raises(ConfigError, match="backend"):
        PhospheneRenderer(backend="nope")
    with pytest.raises(ConfigError, match="threshold"):
        PhospheneRenderer(threshold=0.9, saturation=0.5)
    with pytest.raises(ConfigError, match="image must be"):
        r.render(np.zeros((4, 4, 5), np.uint8))


def test_side_by_side_gif_from_published_frames(tmp_path):
    """Frames from a real ZeroMQ publisher -> [frame | phosphenes] GIF and PNG."""
    import zmq
    from PIL import Image

    from rtdecode.protocol import TOPIC, FrameHeader, FrameSubscriber

    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def publish():
        seq = 0
        yy, xx = np.mgrid[0:64, 0:64]
        while not stop.is_set():
            img = np.zeros((64, 64, 3), np.uint8)
            img[((xx - 8 - seq % 48) ** 2 + (yy - 32) ** 2) < 100] = 255  # a moving bright disc
            t = time.monotonic()
            h = FrameHeader(seq=seq, model_id="m", ref_time=t, newest_ts=t, shape=(64, 64, 3))
            sock.send_multipart((TOPIC, h.to_bytes(), img))
            seq += 1
            stop.wait(0.005)

    th = threading.Thread(target=publish, daemon=True)
    th.start()
    frames = []
    try:
        with FrameSubscriber(f"tcp://127.0.0.1:{port}") as sub:
            deadline = time.monotonic() + 20
            while len(frames) < 8 and time.monotonic() < deadline:
                f = sub.recv(timeout=0.5)
                if f is not None:
                    frames.append(f.image)
    finally:
        stop.set()
        th.join(5)
        sock.close(0)
    assert len(frames) == 8
    r = PhospheneRenderer(n_phosphenes=256, size=(96, 96))
    gif = write_side_by_side(r, frames, tmp_path / "side.gif")
    with Image.open(gif) as im:
        assert im.n_frames == 8 and im.size == (2 * 96 + 4, 96)
    png = write_side_by_side(r, frames[:1], tmp_path / "side.png")
    panel = np.asarray(Image.open(png))
    assert panel.shape == (96, 196, 3)
    assert panel[:, :96].max() == 255 and panel[:, 100:].max() > 0  # the disc and its phosphenes


DYNAPHOS_DEPS = ("dynaphos", "torch", "yaml", "scipy", "cv2", "matplotlib")
_missing = [m for m in DYNAPHOS_DEPS if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(_missing), reason=f"dynaphos backend needs {', '.join(_missing)} (not installed)")
def test_dynaphos_backend_renders():
    r = PhospheneRenderer(n_phosphenes=256, size=(64, 64), backend="dynaphos", seed=1)
    assert r.render(np.zeros((32, 32, 3), np.uint8)).max() == 0
    grey = r.render(np.full((32, 32, 3), 128, np.uint8)).astype(np.float64).mean()
    white = r.render(np.full((32, 32, 3), 255, np.uint8))
    assert white.shape == (64, 64, 3) and white.dtype == np.uint8
    assert white.astype(np.float64).mean() > grey > 0
    p = r.dynaphos_params()
    assert p["run"]["resolution"] == [64, 64] and p["cortex_model"]["k"] == 17.3
    with pytest.raises(ConfigError, match="unknown dynaphos params section"):
        r.dynaphos_params({"nope": {}})


def test_dynaphos_backend_names_a_missing_dependency(monkeypatch):
    monkeypatch.setitem(sys.modules, "dynaphos", None)  # makes `import dynaphos` raise ImportError
    with pytest.raises(ConfigError, match=r"'dynaphos'.*pip install dynaphos"):
        PhospheneRenderer(n_phosphenes=16, size=(32, 32), backend="dynaphos")
