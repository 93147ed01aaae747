"""The pulse2percept backend of the phosphene renderer: real pulse2percept models (optional extra `p2p`,
in the dev set-up), positions and orientation checked against the renderer's own, and the view command."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from rtdecode.display.phosphene import PhospheneRenderer
from rtdecode.errors import ConfigError

needs_p2p = pytest.mark.skipif(importlib.util.find_spec("pulse2percept") is None,
                               reason="pulse2percept is not installed (pip install 'rtdecode[p2p]')")


def _peak_xy(canvas: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted centre (x, y) in pixels of a grey canvas."""
    c = canvas.astype(np.float64)
    ys, xs = np.mgrid[0:c.shape[0], 0:c.shape[1]]
    return float((c * (xs + 0.5)).sum() / c.sum()), float((c * (ys + 0.5)).sum() / c.sum())


@needs_p2p
def test_grid_draws_each_phosphene_where_the_renderer_puts_it():
    from rtdecode.display.phosphene_p2p import Pulse2PerceptDrawer

    r = PhospheneRenderer(n_phosphenes=256, size=(64, 64), seed=2, backend="pulse2percept")
    assert r.n_phosphenes == 256 and r.describe()["pulse2percept"]["implant"] == "grid"
    deg = (r.positions - 0.5) * r.fov_deg
    drawer = Pulse2PerceptDrawer(deg, (64, 64), r.fov_deg, rho_um=300.0)
    out = np.empty((64, 64), np.float32)
    ecc = np.hypot(*deg.T)
    # phosphenes away from the vertical meridian (the map's seam) and the edge, in all four quadrants
    ok = (np.abs(deg[:, 0]) > 1.0) & (ecc < 6.0)
    picks = [i for sx in (-1, 1) for sy in (-1, 1)
             for i in np.flatnonzero(ok & (np.sign(deg[:, 0]) == sx) & (np.sign(deg[:, 1]) == sy))[:2]]
    assert len(picks) == 8
    for i in picks:
        b = np.zeros(256, np.float32)
        b[i] = 1.0
        drawer.draw(b, out)
        assert out.max() > 0.05  # a small foveal blob may fall between grid points
        cx, cy = _peak_xy(out)
        px, py = r.positions[i] * 64  # x right, y down, as the builtin draws it
        assert abs(cx - px) < 2.0 and abs(cy - py) < 2.0, (i, deg[i], (cx, cy), (px, py))


@needs_p2p
def test_grid_renders_frames_like_the_builtin_does():
    r = PhospheneRenderer(n_phosphenes=256, size=(64, 64), seed=0, backend="pulse2percept")
    assert r.render(np.zeros((32, 32, 3), np.uint8)).max() == 0
    img = np.zeros((64, 64, 3), np.uint8)
    img[8:28, 40:60] = 255  # top right
    out = r.render(img)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1])
    g = out[..., 0].astype(np.float64)
    assert g[:32, 32:].sum() > 0.95 * g.sum() > 0
    means = [r.render(np.full((32, 32, 3), v, np.uint8)).mean() for v in (40, 120, 160)]
    assert 0 < means[0] < means[1] < means[2]


@needs_p2p
@pytest.mark.parametrize("implant, n_max", [("cortivis", 96), ("orion", 60), ("icvp", 16)])
def test_pulse2percept_devices_are_the_phosphenes(implant, n_max):
    from rtdecode.display.phosphene_p2p import device_positions

    names, deg = device_positions(implant, 16.0, (2.0, 2.0))
    assert 0 < len(names) == len(deg) <= n_max and (np.abs(deg) < 8).all()
    r = PhospheneRenderer(size=(64, 64), backend="pulse2percept", p2p_implant=implant, p2p_at_deg=(2.0, 2.0))
    assert r.n_phosphenes == len(names)
    np.testing.assert_allclose((r.positions - 0.5) * 16.0, deg)
    white = r.render(np.full((32, 32, 3), 255, np.uint8))[..., 0].astype(np.float64)
    assert white.max() > 100 and r.render(np.zeros((32, 32, 3), np.uint8)).max() == 0
    # the device sits around (2, 2) deg (right, below fixation): its percept is in the lower right
    cx, cy = _peak_xy(white)
    assert cx > 32 and cy > 32
    if implant == "cortivis":  # a Utah array: 96 electrodes within about a degree of where it is placed
        assert len(names) == 96 and np.abs(deg - 2.0).max() < 1.5


@needs_p2p
def test_bad_pulse2percept_settings_are_named():
    with pytest.raises(ConfigError, match="implant must be one of"):
        PhospheneRenderer(n_phosphenes=16, size=(32, 32), backend="pulse2percept", p2p_implant="argus")
    with pytest.raises(ConfigError, match="positions= is for implant 'grid'"):
        PhospheneRenderer(positions=np.array([[0.5, 0.5]]), size=(32, 32), backend="pulse2percept",
                          p2p_implant="icvp")
    with pytest.raises(ConfigError, match="inside the 16.0 deg field of view"):
        PhospheneRenderer(size=(32, 32), backend="pulse2percept", p2p_implant="icvp", p2p_at_deg=(30.0, 0.0))


def test_a_missing_pulse2percept_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pulse2percept", None)  # makes `import pulse2percept` raise ImportError
    with pytest.raises(ConfigError, match=r"pulse2percept.*rtdecode\[p2p\]"):
        PhospheneRenderer(n_phosphenes=16, size=(32, 32), backend="pulse2percept")


@needs_p2p
@pytest.mark.timeout(120)
def test_view_command_with_the_pulse2percept_backend(tmp_path):
    from PIL import Image

    from rtdecode.cli import main
    from tests.test_view import Publisher

    pub = Publisher()
    try:
        rc = main(["view", "--address", pub.address, "--headless", "--out", str(tmp_path / "o"), "--format", "png",
                   "--frames", "3", "--mode", "phosphene", "--backend", "pulse2percept", "--implant", "cortivis",
                   "--tile", "48"])
    finally:
        pub.close()
    assert rc == 0
    pngs = sorted((tmp_path / "o").glob("*.png"))
    assert len(pngs) == 3
    assert np.asarray(Image.open(pngs[0])).shape[1] > 2 * 48  # reconstruction and phosphene tiles
    assert main(["view", "--backend", "pulse2percept", "--headless", "--frames", "1"]) == 1  # needs --mode phosphene
