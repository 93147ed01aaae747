"""rtdecode.sim.stimuli: naturalistic scenes, crops of sample photographs, stimulus kinds in sessions."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from rtdecode.errors import ConfigError
from rtdecode.sim import VirtualMacaque
from rtdecode.sim.stimuli import (
    PHOTO_SOURCES,
    STIMULUS_KINDS,
    make_stimuli,
    naturalistic,
    naturalistic_layers,
    photo_crops,
    photo_sources,
)


def _radial_slope(images: np.ndarray) -> float:
    """Slope of the log-log radially averaged amplitude spectrum of the luminance."""
    lum = images.astype(float).mean(-1)
    size = lum.shape[-1]
    amp = np.abs(np.fft.fftshift(np.fft.fft2(lum - lum.mean(axis=(1, 2), keepdims=True)), axes=(1, 2))).mean(0)
    yy, xx = np.indices(amp.shape) - size // 2
    r = np.hypot(yy, xx).astype(int)
    f = np.arange(2, size // 2 - 4)
    radial = np.array([amp[r == k].mean() for k in f])
    return float(np.polyfit(np.log(f), np.log(radial), 1)[0])


def _orientation_energy(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """Gradient energy per edge orientation bin (0..pi), normalised to its largest bin."""
    lum = images.astype(float).mean(-1)
    gy, gx = np.gradient(lum, axis=(1, 2))
    angle = np.mod(np.arctan2(gy, gx), np.pi)
    h = np.histogram(angle, bins=bins, range=(0, np.pi), weights=gx ** 2 + gy ** 2)[0]
    return h / h.max()


# ---- naturalistic -----------------------------------------------------------------------------
def test_naturalistic_is_seeded_per_image_and_generates_in_batches():
    x = naturalistic(6, 32, seed=3)
    assert x.dtype == np.uint8 and x.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(x[:2], naturalistic(2, 32, seed=3))
    np.testing.assert_array_equal(x[4:], naturalistic(2, 32, seed=3, start=4))
    assert not np.array_equal(x[:2], naturalistic(2, 32, seed=4))
    assert x.std() > 25 and len({im.tobytes() for im in x}) == 6  # not flat, all different
    with pytest.raises(ConfigError, match=">= 0"):
        naturalistic(2, 32, seed=-1)


def test_naturalistic_has_a_1_over_f_amplitude_spectrum():
    slope = _radial_slope(naturalistic(40, 64, seed=5))
    assert -1.6 < slope < -0.6, slope


def test_naturalistic_edges_come_at_every_orientation():
    energy = _orientation_energy(naturalistic(40, 64, seed=6))
    assert energy.min() > 0.5, energy  # no orientation bin holds less than half of the largest


def test_naturalistic_objects_occlude_each_other():
    partial, total = 0, 0
    for i in range(15):
        layers = naturalistic_layers(7, i, 32)
        full, visible = layers["full_area"], layers["visible_area"]
        assert np.all(visible <= full)
        assert np.array_equal(np.bincount(layers["labels"][layers["labels"] >= 0], minlength=full.size), visible)
        seen = full > 0
        partial += int(np.sum((visible[seen] > 0) & (visible[seen] < full[seen])))
        total += int(seen.sum())
        assert (layers["labels"] >= 0).any() and (layers["labels"] < 0).any()  # objects and background
    assert partial >= 0.1 * total, (partial, total)


def test_make_stimuli_kinds():
    for kind in ("dead-leaves", "naturalistic"):
        s = make_stimuli(kind, 3, 16, seed=1, start=2)
        assert s.images.shape == (3, 16, 16, 3) and s.groups is None
    with pytest.raises(ConfigError, match="unknown; expected one of dead-leaves, naturalistic, photos"):
        make_stimuli("clouds", 2)
    # the CLI keeps its own copy of the kinds (it imports no numpy to build its parser)
    from rtdecode.commands import simulate

    assert simulate.STIMULUS_KINDS == STIMULUS_KINDS
    with pytest.raises(ConfigError, match="stimulus kind 'clouds' is unknown"):
        VirtualMacaque(image_size=16, stimuli="clouds")


def test_simulate_cli_records_stimulus_kind_and_image_seed(tmp_path):
    from rtdecode.cli import main
    from rtdecode.sessions.session_file import open_session

    out = tmp_path / "nat.h5"
    assert main(["simulate", "--out", str(out), "--n-images", "3", "--image-size", "16", "--seed", "2",
                 "--stimuli", "naturalistic", "--image-seed", "9", "--layout", "monkey-F"]) == 0
    with open_session(out) as s:
        sim = json.loads(s.attrs["simulator"])
        assert sim["stimuli"] == "naturalistic" and sim["image_seed"] == 9
        np.testing.assert_array_equal(s.images, naturalistic(3, 16, seed=9))
        assert s.image_groups is None


# ---- photos (scikit-image is an optional extra) -----------------------------------------------
def test_photos_need_scikit_image(monkeypatch):
    photo_sources.cache_clear()
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if it were not installed
    try:
        with pytest.raises(ConfigError, match=r"pip install rtdecode\[eval\]"):
            photo_crops(2, 16)
    finally:
        photo_sources.cache_clear()


def test_photo_crops_are_seeded_and_tagged_with_their_source():
    pytest.importorskip("skimage", reason="scikit-image is the optional 'eval' extra")
    x, g = photo_crops(30, 32, seed=1)
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8
    assert g.dtype == np.int64 and g.min() >= 0 and g.max() < len(PHOTO_SOURCES)
    assert len(set(g.tolist())) >= 8  # drawn from many photographs
    x2, g2 = photo_crops(10, 32, seed=1, start=20)
    np.testing.assert_array_equal(x[20:], x2)
    np.testing.assert_array_equal(g[20:], g2)
    assert not np.array_equal(x[:5], photo_crops(5, 32, seed=2)[0])
    assert -1.8 < _radial_slope(photo_crops(30, 64, seed=3)[0]) < -0.6  # photographs are about 1/f too
    s = make_stimuli("photos", 4, 16, seed=1)
    assert s.names[0] == f"{PHOTO_SOURCES[int(s.groups[0])]}#0" and s.group_names == list(PHOTO_SOURCES)


def test_photos_session_keeps_source_photographs_out_of_two_splits(tmp_path):
    pytest.importorskip("skimage", reason="scikit-image is the optional 'eval' extra")
    from rtdecode.sessions.session_file import open_session
    from rtdecode.training.data import load_decoding_data

    vm = VirtualMacaque(image_size=16, seed=1, stimuli="photos")
    vm.simulate_session(tmp_path / "p.h5", n_images=60, on_ms=60, off_ms=140, progress=False)
    with open_session(tmp_path / "p.h5") as s:
        groups = s.image_groups
        assert groups.shape == (60,) and json.loads(s.attrs["simulator"])["stimuli"] == "photos"
    d = load_decoding_data(tmp_path / "p.h5", image_size=16, split=(0.6, 0.2, 0.2), seed=0, progress=False)
    assert d.info["split_by"] == "source"
    sources = [set(groups[ids].tolist()) for ids in (d.train_ids, d.val_ids, d.test_ids)]
    assert all(sources) and not sources[0] & sources[1] and not sources[0] & sources[2]
    assert not sources[1] & sources[2]
