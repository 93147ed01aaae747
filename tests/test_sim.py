"""The virtual macaque: determinism, RF-dependent responses, latencies, RF sizes, files, images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rtdecode.cli import main
from rtdecode.errors import ConfigError, SessionError
from rtdecode.layout import ElectrodeLayout, tvsd_monkey_n
from rtdecode.sessions.recording import parse_marker
from rtdecode.sessions.session_file import open_session
from rtdecode.sim import VirtualMacaque, dead_leaves, load_image_folder

AREAS = ("V1", "V4", "IT")


@pytest.fixture(scope="module")
def vm() -> VirtualMacaque:
    return VirtualMacaque(seed=7, image_size=32)


def _samples(rec) -> tuple[np.ndarray, list[tuple[int, dict]]]:
    """All blocks of a recording, concatenated, and its markers with absolute sample indices."""
    chunks, markers, n = [], [], 0
    for b in rec.blocks():
        chunks.append(b.mua)
        markers += [(n + i, parse_marker(t)) for i, t in b.markers]
        n += b.mua.shape[0]
    return np.concatenate(chunks), markers


def _area_mask(v: VirtualMacaque, area: str) -> np.ndarray:
    return (v.params.area == area) & v.layout.usable


# ---- determinism ------------------------------------------------------------------------------
def test_same_seed_gives_identical_mua_and_other_seed_differs():
    imgs = dead_leaves(3, 32, seed=1)
    a, _ = _samples(VirtualMacaque(seed=3, image_size=32).recording(imgs))
    b, _ = _samples(VirtualMacaque(seed=3, image_size=32).recording(imgs))
    c, _ = _samples(VirtualMacaque(seed=4, image_size=32).recording(imgs))
    assert a.dtype == np.float32 and a.shape == (500 + 3 * 400, 1024)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.1
    assert np.isfinite(a).all()


def test_dead_leaves_seeded_prefix_stable_and_about_1_over_f():
    x = dead_leaves(12, 64, seed=5)
    assert x.dtype == np.uint8 and x.shape == (12, 64, 64, 3)
    np.testing.assert_array_equal(x[:4], dead_leaves(4, 64, seed=5))
    assert not np.array_equal(x[:4], dead_leaves(4, 64, seed=6))
    assert x.std() > 30  # not flat images
    # radially averaged amplitude spectrum falls roughly as 1/f (natural-image statistics)
    lum = x.astype(float).mean(-1)
    amp = np.abs(np.fft.fftshift(np.fft.fft2(lum - lum.mean(axis=(1, 2), keepdims=True)), axes=(1, 2))).mean(0)
    yy, xx = np.indices(amp.shape) - 32
    r = np.hypot(yy, xx).astype(int)
    f = np.arange(2, 28)
    radial = np.array([amp[r == k].mean() for k in f])
    slope = np.polyfit(np.log(f), np.log(radial), 1)[0]
    assert -2.2 < slope < -0.7, slope


# ---- receptive fields ------------------------------------------------------------------------
def test_rf_size_grows_from_v1_to_it_and_with_eccentricity(vm):
    gt = vm.ground_truth()
    assert set(gt) == {"rf_centres", "rf_sigmas", "latency_ms"}
    assert gt["rf_centres"].shape == (1024, 2) and gt["rf_sigmas"].shape == (1024,)
    med = {a: np.median(gt["rf_sigmas"][_area_mask(vm, a)]) for a in AREAS}
    assert 0.03 <= med["V1"] <= 0.06 and 0.08 <= med["V4"] <= 0.15 and 0.2 <= med["IT"] <= 0.4, med
    assert med["V1"] < med["V4"] < med["IT"]
    ecc = np.hypot(*(gt["rf_centres"] - 0.5).T)
    for a in AREAS:
        m = _area_mask(vm, a)
        assert np.corrcoef(ecc[m], gt["rf_sigmas"][m])[0, 1] > 0.6, a


def test_each_area_tiles_the_whole_image(vm):
    """Every point of the image lies within ~1.5 RF widths of a used electrode of every area."""
    gt = vm.ground_truth()
    grid = np.stack(np.meshgrid(np.linspace(0.02, 0.98, 20), np.linspace(0.02, 0.98, 20)), -1).reshape(-1, 2)
    for a in AREAS:
        m = _area_mask(vm, a)
        d = np.linalg.norm(grid[:, None, :] - gt["rf_centres"][m][None], axis=-1) / gt["rf_sigmas"][m][None]
        assert d.min(axis=1).max() < 1.5, a
        # each used array covers its own patch: centres of different arrays barely overlap
        arrays = np.asarray(vm.layout.arrays)[m]
        boxes = [np.ptp(gt["rf_centres"][m][arrays == k], axis=0) for k in np.unique(arrays)]
        assert all(np.prod(b) < 0.6 for b in boxes), a


def test_bright_patch_drives_on_cells_at_its_rf_more_than_far_ones():
    v = VirtualMacaque(seed=2, image_size=32, noise=0.0)
    gt = v.ground_truth()
    v1 = _area_mask(v, "V1")
    v1_on = np.flatnonzero(v1 & (v.params.polarity > 0))
    v1_off = np.flatnonzero(v1 & (v.params.polarity < 0))
    on_cell = v1_on[np.argmin(np.linalg.norm(gt["rf_centres"][v1_on] - [0.3, 0.6], axis=1))]
    off_cell = v1_off[np.argmin(np.linalg.norm(gt["rf_centres"][v1_off] - [0.7, 0.3], axis=1))]
    grey = np.full((32, 32, 3), 110, np.uint8)
    patch = grey.copy()
    yy, xx = (np.indices((32, 32)) + 0.5) / 32
    for cx, cy in gt["rf_centres"][[on_cell, off_cell]]:
        patch[np.hypot(xx - cx, yy - cy) < 0.06] = 255
    mua, _ = _samples(v.recording(np.stack([grey, patch])))
    win = lambda t0: mua[t0 + 40:t0 + 140].mean(0)  # noqa: E731  V1 window after onset
    delta = win(500 + 400) - win(500)  # patch trial minus grey trial
    dist = np.linalg.norm(gt["rf_centres"] - gt["rf_centres"][on_cell], axis=1)
    dist_off = np.linalg.norm(gt["rf_centres"] - gt["rf_centres"][off_cell], axis=1)
    near = v1_on[dist[v1_on] < 0.03]
    far = v1_on[(dist[v1_on] > 0.3) & (dist_off[v1_on] > 0.3)]
    assert near.size >= 1 and far.size >= 30
    assert delta[near].mean() > 0.3
    assert delta[near].mean() > 10 * np.abs(delta[far]).mean()
    assert delta[off_cell] < -0.1  # an OFF cell is suppressed by light in its RF


def test_v4_carries_local_colour():
    """A red vs a green patch changes V4 responses at the patch much more than far away."""
    v = VirtualMacaque(seed=2, image_size=32, noise=0.0)
    gt = v.ground_truth()
    grey = np.full((32, 32, 3), 120, np.uint8)
    red, green = grey.copy(), grey.copy()
    red[4:16, 4:16] = (200, 60, 60)
    green[4:16, 4:16] = (60, 160, 60)  # similar luminance, opposite R-G
    mua, _ = _samples(v.recording(np.stack([red, green])))
    win = lambda t0: mua[t0 + 65:t0 + 165].mean(0)  # noqa: E731
    delta = np.abs(win(900) - win(500))
    v4 = _area_mask(v, "V4")
    dist = np.linalg.norm(gt["rf_centres"] - [0.3, 0.3], axis=1)
    assert delta[v4 & (dist < 0.1)].mean() > 4 * delta[v4 & (dist > 0.5)].mean()


# ---- timing ----------------------------------------------------------------------------------
def test_latency_order_v1_v4_it_measured_from_responses(vm):
    mua, markers = _samples(vm.recording(n_images=12))
    onsets = [i for i, m in markers if m["event"] == "onset"]
    assert onsets == [500 + 400 * k for k in range(12)]
    evoked = np.stack([mua[o - 50:o + 250] for o in onsets]).mean(0)  # [300, C]
    peak = {}
    for a in AREAS:
        trace = evoked[:, _area_mask(vm, a)].mean(1)
        peak[a] = int(np.argmax(trace)) - 50
        assert trace.max() - trace[:50].mean() > 0.3, a  # a visible evoked response
    assert 35 <= peak["V1"] < peak["V4"] < peak["IT"] <= 160, peak
    lat = vm.ground_truth()["latency_ms"]
    means = [lat[_area_mask(vm, a)].mean() for a in AREAS]
    assert 30 < means[0] < 40 and 50 < means[1] < 70 and 80 < means[2] < 100


# ---- files -----------------------------------------------------------------------------------
def test_session_file_opens_and_markers_point_at_the_right_images(tmp_path):
    v = VirtualMacaque(seed=11, image_size=32)
    path = tmp_path / "s.h5"
    info = v.simulate_session(path, n_images=6, repeats=3, on_ms=150, off_ms=150, progress=False)
    assert info["n_trials"] == 18 and info["n_samples"] == 500 + 18 * 300
    with open_session(path) as s:
        s.check_finite()
        assert s.n_channels == 1024 and s.sampling_rate_hz == 1000.0
        assert s.attrs["seed"] == 11 and json.loads(s.attrs["simulator"])["on_ms"] == 150
        np.testing.assert_array_equal(s.images, dead_leaves(6, 32, seed=11))
        np.testing.assert_array_equal(s.onset, 500 + 300 * np.arange(18))
        np.testing.assert_array_equal(s.offset, s.onset + 150)
        assert sorted(s.image_index.tolist()) == sorted(list(range(6)) * 3)
        assert s.image_index.tolist() != sorted(s.image_index.tolist())  # shuffled repeats
        assert s.layout.rf_centres is None and s.layout.name == "tvsd-monkey-N"
        np.testing.assert_allclose(s.ground_truth["rf_centres"], v.ground_truth()["rf_centres"])
        np.testing.assert_allclose(s.ground_truth["latency_ms"], v.ground_truth()["latency_ms"])
        np.testing.assert_allclose(np.diff(s.timestamps), 1e-3)
        mua = np.asarray(s.mua)
        onset, image_index = s.onset, s.image_index
    # Each trial's V1/V4 response identifies the image its marker names.
    amp = v.drive(dead_leaves(6, 32, seed=11))
    used = v.layout.usable & (v.params.area != "IT")
    resp = np.stack([mua[o + 40:o + 140].mean(0) for o in onset])
    resp -= resp.mean(0)
    amp -= amp.mean(0)
    corr = np.corrcoef(resp[:, used], amp[:, used])[:18, 18:]
    np.testing.assert_array_equal(corr.argmax(1), image_index)


def test_recording_blocks_equal_the_file_samples(tmp_path):
    imgs = dead_leaves(4, 32, seed=3)
    v = VirtualMacaque(seed=5, image_size=32)
    v.simulate_session(tmp_path / "s.h5", imgs, progress=False)
    rec = VirtualMacaque(seed=5, image_size=32).recording(imgs)
    mua, markers = _samples(rec)
    assert rec.n_samples == mua.shape[0] and rec.sampling_rate_hz == 1000.0
    np.testing.assert_array_equal(rec.images, imgs)
    with open_session(tmp_path / "s.h5") as s:
        np.testing.assert_array_equal(mua, np.asarray(s.mua))
        assert [i for i, m in markers if m["event"] == "onset"] == s.onset.tolist()
        assert [i for i, m in markers if m["event"] == "offset"] == s.offset.tolist()
        assert [m["image"] for _, m in markers if m["event"] == "onset"] == s.image_index.tolist()
    # blocks() starts over, identically
    again, _ = _samples(rec)
    np.testing.assert_array_equal(again, mua)


def test_endless_recording_keeps_going_and_starts_like_the_finite_one():
    v = VirtualMacaque(seed=5, image_size=32)
    imgs = dead_leaves(2, 32, seed=3)
    finite, _ = _samples(v.recording(imgs))
    rec = v.recording(imgs, endless=True)
    assert rec.n_samples is None
    blocks = rec.blocks()
    got = np.concatenate([next(blocks).mua for _ in range(8)])  # baseline + 7 trials
    np.testing.assert_array_equal(got[:finite.shape[0]], finite)
    assert got.shape[0] == 500 + 7 * 400 and np.isfinite(got).all()


def test_known_rfs_layout_carries_noisy_true_centres(tmp_path):
    v = VirtualMacaque(seed=1, image_size=32)
    v.simulate_session(tmp_path / "k.h5", n_images=2, known_rfs=True, progress=False)
    with open_session(tmp_path / "k.h5") as s:
        rf = s.layout.rf_centres
        true = s.ground_truth["rf_centres"]
    used = v.layout.usable
    err = np.linalg.norm(rf[used] - true[used], axis=1)
    assert 0 < np.median(err) < 0.03
    assert np.isnan(rf[~used]).all()


def test_custom_layout_and_cli(tmp_path, capsys):
    layout = ElectrodeLayout.from_dict({"name": "rig-small", "n_channels": 48, "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 15]]},
        {"id": 2, "area": "V4", "channels": [[16, 31]]},
        {"id": 3, "area": "IT", "channels": [[32, 47]]}]})
    lp = tmp_path / "rig.json"
    lp.write_text(layout.to_json())
    out = tmp_path / "cli.h5"
    rc = main(["simulate", "--out", str(out), "--n-images", "3", "--seed", "4", "--image-size", "24",
               "--layout", str(lp), "--known-rfs", "--on-ms", "100", "--off-ms", "50"])
    assert rc == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out}") and "48 channels" in line and "rig-small" in line
    with open_session(out) as s:
        assert s.n_channels == 48 and s.images.shape == (3, 24, 24, 3)
        assert s.n_samples == 500 + 3 * 150 and np.isfinite(np.asarray(s.mua)).all()
        assert s.layout.rf_centres is not None
    assert main(["simulate", "--n-images", "2"]) == 1  # neither --out nor --live
    assert "--out" in capsys.readouterr().err


# ---- image folders ---------------------------------------------------------------------------
def test_folder_of_pngs_and_jpegs_loads_centre_cropped(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :10] = (0, 0, 255)
    wide[:, 30:] = (0, 0, 255)
    wide[:, 10:30] = (255, 0, 0)  # the centre square is red
    Image.fromarray(wide).save(tmp_path / "b_wide.png")
    Image.fromarray(np.full((50, 50, 3), 200, np.uint8)).save(tmp_path / "a_grey.jpg")
    Image.fromarray(np.full((16, 16), 30, np.uint8)).save(tmp_path / "c_gray_mode.PNG")  # greyscale file
    (tmp_path / "notes.txt").write_text("not an image")
    imgs, names = load_image_folder(tmp_path, size=16)
    assert names == ["a_grey.jpg", "b_wide.png", "c_gray_mode.PNG"]
    assert imgs.shape == (3, 16, 16, 3) and imgs.dtype == np.uint8
    assert np.abs(imgs[0].astype(int) - 200).max() <= 3
    assert imgs[1][..., 0].min() > 240 and imgs[1][..., 2].max() < 15  # only red survived the crop
    assert (imgs[2] == 30).all()
    # a session from the folder stores the images and their names
    v = VirtualMacaque(seed=0, image_size=16)
    v.simulate_session(tmp_path / "f.h5", tmp_path, progress=False)
    import h5py

    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert json.loads(f["images"].attrs["names"]) == names
        np.testing.assert_array_equal(f["images"][()], imgs)


def test_empty_or_missing_folder_and_bad_inputs_raise_clear_errors(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(SessionError, match="holds no images"):
        load_image_folder(tmp_path)
    with pytest.raises(SessionError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SessionError, match="broken.png"):
        load_image_folder(tmp_path)
    v = VirtualMacaque(seed=0, image_size=16)
    with pytest.raises(SessionError, match="uint8"):
        v.recording(np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ConfigError, match="on_ms"):
        v.recording(n_images=1, on_ms=0)
    with pytest.raises(ConfigError, match="noise"):
        VirtualMacaque(noise=-1)


def test_extreme_images_never_give_nan():
    v = VirtualMacaque(tvsd_monkey_n(), seed=9, image_size=16)
    imgs = np.stack([np.zeros((16, 16, 3), np.uint8), np.full((16, 16, 3), 255, np.uint8),
                     (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)])
    mua, _ = _samples(v.recording(imgs))
    assert np.isfinite(mua).all()
    assert np.isfinite(v.drive(imgs)).all()


# ---- live ------------------------------------------------------------------------------------
@pytest.mark.lsl
def test_simulate_live_streams_the_recording_samples_over_lsl():
    """`rtdecode simulate --live` in a child process: the LSL samples are the recording's samples."""
    import os
    import subprocess
    import sys
    import time
    import uuid

    from rtdecode.lslconfig import lsl

    pylsl = lsl()
    name = f"sim-live-{uuid.uuid4().hex[:8]}"
    cmd = [sys.executable, "-m", "rtdecode", "simulate", "--live", "--n-images", "3", "--seed", "3",
           "--image-size", "16", "--endless", "--duration", "20", "--stream-name", name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        found = pylsl.resolve_byprop("name", name, 1, 15.0)
        assert found, f"stream {name} never appeared; stderr: {proc.stderr.read1().decode() if proc.poll() else ''}"
        inlet = pylsl.StreamInlet(found[0], max_buflen=30)
        assert inlet.info().channel_count() == 1024 and inlet.info().nominal_srate() == 1000.0
        got = []
        deadline = time.monotonic() + 15.0
        while sum(len(c) for c in got) < 300 and time.monotonic() < deadline:
            chunk, _ = inlet.pull_chunk(timeout=0.5)
            if chunk:
                got.append(np.asarray(chunk, dtype=np.float32))
        inlet.close_stream()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    received = np.concatenate(got)
    assert received.shape[0] >= 300, "fewer than 300 samples arrived"
    ref_rec = VirtualMacaque(seed=3, image_size=16).recording(n_images=3, endless=True)
    blocks = ref_rec.blocks()
    ref = np.concatenate([next(blocks).mua for _ in range(40)])  # 16.5 s of samples
    start = np.flatnonzero((ref == received[0]).all(axis=1))
    assert start.size == 1, "first received sample is not (uniquely) in the recording"
    n = min(received.shape[0], ref.shape[0] - int(start[0]))
    np.testing.assert_array_equal(received[:n], ref[start[0]:start[0] + n])


@pytest.mark.parametrize("size", [10, 50])
def test_odd_image_sizes_and_monkey_f(size):
    from rtdecode.layout import tvsd_monkey_f

    v = VirtualMacaque(tvsd_monkey_f(), image_size=size, seed=1)
    rec = v.recording(n_images=2)
    assert rec.images.shape == (2, size, size, 3)
    mua, _ = _samples(rec)
    assert mua.shape == (1300, 1024) and np.isfinite(mua).all()
    d = v.drive(rec.images)
    assert d[:, v.layout.usable].std() > 0.2  # every area is driven at this size
