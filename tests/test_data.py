"""training.data: onset-locked maps from a real session file, split by image, normalised on train."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.errors import ConfigError, LayoutError, SessionError
from rtdecode.layout import ElectrodeLayout
from rtdecode.sessions.session_file import SessionWriter
from rtdecode.training.data import load_decoding_data, split_images
from rtdecode.windows import WindowAssembler, make_plan


def small_layout(n_per: int = 8, rf: np.ndarray | None = None) -> ElectrodeLayout:
    d = {"name": "tiny", "n_channels": 3 * n_per,
         "arrays": [{"id": 1, "area": "V1", "channels": [[0, n_per - 1]]},
                    {"id": 2, "area": "V4", "channels": [[n_per, 2 * n_per - 1]]},
                    {"id": 3, "area": "IT", "channels": [[2 * n_per, 3 * n_per - 1]]}],
         "excluded_channels": [3]}
    lay = ElectrodeLayout.from_dict(d)
    return lay if rf is None else lay.with_rf(rf)


def write_session(path, rng, *, n_images=20, reps=2, size=16, trial_len=300, layout=None,
                  nan_at=None, image_index=None, n_stored_images=None, groups=None):
    """A real session: MUA = per-channel linear read-out of the image shown, plus noise."""
    layout = layout or small_layout()
    c = layout.n_channels
    images = rng.integers(0, 256, size=(n_stored_images or n_images, size, size, 3), dtype=np.uint8)
    order = np.tile(np.arange(n_images), reps) if image_index is None else np.asarray(image_index)
    weights = rng.normal(size=(size * size * 3, c)).astype(np.float32) / 50
    onsets = 50 + np.arange(order.size) * trial_len
    t_total = int(onsets[-1] + trial_len + 10)
    mua = rng.normal(scale=0.05, size=(t_total, c)).astype(np.float32)
    for on, k in zip(onsets, order, strict=True):
        resp = (images[k % images.shape[0]].reshape(-1).astype(np.float32) / 255) @ weights
        mua[on + 20:on + 220] += resp
    if nan_at is not None:
        mua[onsets[nan_at[0]] + 45, nan_at[1]] = np.nan  # inside the first V4 window [33, 60) ms
    gt = rng.uniform(size=(c, 2))
    with SessionWriter(path, layout, 1000.0) as w:
        w.append(mua, np.arange(t_total) / 1000.0)
        w.set_markers(onsets, onsets + 200, order)
        w.set_images(images, groups=groups)
        w.set_ground_truth(rf_centres=gt, rf_sigmas=np.full(c, 0.05), latency_ms=np.full(c, 40.0))
    return {"mua": mua, "onsets": onsets, "order": order, "images": images, "gt": gt, "layout": layout}


def test_maps_match_window_assembler_and_split_is_by_image(tmp_path, rng):
    s = write_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=12, seed=3, progress=False)
    lay = s["layout"]
    assert d.train_x.shape[1:] == (15, lay.n_electrodes) and d.train_x.dtype == np.float32
    assert d.train_y.shape[1:] == (3, 12, 12) and d.train_y.dtype == np.float32
    assert 0.0 <= d.train_y.min() and d.train_y.max() <= 1.0
    # no image in two splits; 20 images at 0.8/0.1/0.1 -> 16/2/2; every presentation of a train image
    assert not set(d.train_ids) & set(d.val_ids) and not set(d.train_ids) & set(d.test_ids)
    assert not set(d.val_ids) & set(d.test_ids)
    assert len(set(d.train_ids)) == 16 and len(d.val_ids) == 2 and len(d.test_ids) == 2
    assert d.train_x.shape[0] == 32
    # the same code serving runs: assemble, then the fitted normaliser
    plan = make_plan("spatiotemporal", lay, 1000.0)
    asm = WindowAssembler(plan, lay)
    raw = asm.assemble_many(s["mua"], s["onsets"])
    train_trials = np.flatnonzero(np.isin(s["order"], d.train_ids))
    expect = d.normaliser(raw[train_trials].copy())
    np.testing.assert_allclose(d.train_x, expect, atol=1e-4)
    # normaliser fitted on train only: train maps have mean 0 / std 1 where the mask is on
    assert np.abs(d.train_x.mean(axis=0)[d.mask]).max() < 1e-4
    assert np.abs(d.train_x.std(axis=0)[d.mask] - 1).max() < 1e-3
    assert np.all(d.train_x[:, ~d.mask] == 0)
    # val/test averaged over repetitions
    k = int(d.test_ids[0])
    trials = np.flatnonzero(s["order"] == k)
    expect_test = d.normaliser(raw[trials].mean(axis=0, keepdims=True).copy())
    np.testing.assert_allclose(d.test_x[0:1], expect_test, atol=1e-4)
    # targets are the resized stimuli
    from rtdecode.sessions.images import image_to_array
    np.testing.assert_allclose(d.test_y[0], image_to_array(s["images"][k], 12), atol=1e-6)
    # ground truth and known RFs per decoder electrode
    np.testing.assert_allclose(d.rf_true, s["gt"][lay.used_channels])
    assert d.rf_known is None


def test_split_is_seeded(tmp_path, rng):
    write_session(tmp_path / "s.h5", rng)
    a = load_decoding_data(tmp_path / "s.h5", image_size=8, seed=1, progress=False)
    b = load_decoding_data(tmp_path / "s.h5", image_size=8, seed=1, progress=False)
    c = load_decoding_data(tmp_path / "s.h5", image_size=8, seed=2, progress=False)
    assert np.array_equal(a.test_ids, b.test_ids) and np.array_equal(a.train_x, b.train_x)
    assert not (np.array_equal(a.test_ids, c.test_ids) and np.array_equal(a.val_ids, c.val_ids))


def test_spatial_windows_and_known_rfs(tmp_path, rng):
    rf = rng.uniform(size=(24, 2))
    rf[5] = np.nan
    write_session(tmp_path / "s.h5", rng, layout=small_layout(rf=rf))
    d = load_decoding_data(tmp_path / "s.h5", windows="spatial", image_size=8, progress=False)
    assert d.train_x.shape[1] == 3  # one map per array
    np.testing.assert_allclose(d.rf_known, rf[d.layout.used_channels])
    contract = d.contract("test-model")
    assert contract.input_shape == (3, 23) and contract.frame_shape == (3, 8, 8)


def test_cache_reused(tmp_path, rng):
    write_session(tmp_path / "s.h5", rng)
    a = load_decoding_data(tmp_path / "s.h5", image_size=8, cache_dir=tmp_path / "cache", progress=False)
    files = list((tmp_path / "cache").glob("maps-*.npz"))
    assert len(files) == 1
    b = load_decoding_data(tmp_path / "s.h5", image_size=8, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    c = load_decoding_data(tmp_path / "s.h5", windows="spatial", image_size=8, cache_dir=tmp_path / "cache",
                           progress=False)
    assert c.train_x.shape[1] == 3 and len(list((tmp_path / "cache").glob("maps-*.npz"))) == 2


def test_nan_names_trial_and_channel(tmp_path, rng):
    write_session(tmp_path / "s.h5", rng, nan_at=(7, 10))
    with pytest.raises(SessionError, match=r"trial 7, channel 10"):
        load_decoding_data(tmp_path / "s.h5", image_size=8, progress=False)


def test_layout_channel_mismatch(tmp_path, rng):
    write_session(tmp_path / "s.h5", rng)
    with pytest.raises(LayoutError, match="24 channels but the layout 'tiny' has 16"):
        load_decoding_data(tmp_path / "s.h5", layout=ElectrodeLayout.from_dict(
            {"name": "tiny", "n_channels": 16, "arrays": [{"id": 1, "area": "V1", "channels": [[0, 15]]}]}),
            progress=False)


def test_marker_pointing_at_missing_image(tmp_path, rng):
    order = np.r_[np.arange(10), 12]
    write_session(tmp_path / "s.h5", rng, n_images=10, image_index=order, n_stored_images=10)
    with pytest.raises(SessionError, match="image 12"):
        load_decoding_data(tmp_path / "s.h5", image_size=8, progress=False)


def test_too_few_images(tmp_path, rng):
    write_session(tmp_path / "s.h5", rng, n_images=3, reps=2)
    with pytest.raises(SessionError, match="too few images"):
        load_decoding_data(tmp_path / "s.h5", image_size=8, split=(0.8, 0.1, 0.1), progress=False)


def test_bad_split_and_source():
    with pytest.raises(ConfigError, match="sum to 1"):
        split_images(np.arange(10), (0.5, 0.1, 0.1), 0)
    with pytest.raises(SessionError, match="does not exist"):
        load_decoding_data("/nonexistent/x.h5")


def test_fixed_test_split():
    ids = np.repeat(np.arange(30), 2)
    train, val, test = split_images(ids, (0.8, 0.1, 0.1), 0, fixed_test=np.array([25, 26, 27, 28, 29]))
    assert list(test) == [25, 26, 27, 28, 29]
    assert len(val) == round(25 * 0.1 / 0.9) and not set(val) & set(test)
    assert len(train) + len(val) == 25


def test_group_split_keeps_sources_disjoint_and_near_the_fractions():
    ids = np.repeat(np.arange(60), 2)
    groups = np.arange(60) // 5  # 12 sources of 5 images each
    for seed in range(5):
        train, val, test = split_images(ids, (0.8, 0.1, 0.1), seed, groups=groups)
        g_train, g_val, g_test = (set(groups[s].tolist()) for s in (train, val, test))
        assert not g_train & g_val and not g_train & g_test and not g_val & g_test
        assert len(val) == len(test) == 5  # one whole source each: 5 images, the closest to 6
        assert len(train) + len(val) + len(test) == 60
    # one big source cannot be split: too few sources leave nothing for a split
    with pytest.raises(SessionError, match=r"from 2 sources \(split by source\)"):
        split_images(ids, (0.8, 0.1, 0.1), 0, groups=np.arange(60) // 30)


def test_session_image_groups_drive_the_split(tmp_path, rng):
    groups = np.arange(40) // 4  # 10 sources
    write_session(tmp_path / "s.h5", rng, n_images=40, reps=1, groups=groups)
    d = load_decoding_data(tmp_path / "s.h5", image_size=8, split=(0.6, 0.2, 0.2), seed=0, progress=False)
    assert d.info["split_by"] == "source"
    g = [set(groups[ids].tolist()) for ids in (d.train_ids, d.val_ids, d.test_ids)]
    assert not g[0] & g[1] and not g[0] & g[2] and not g[1] & g[2]
    assert len(d.test_ids) == len(d.val_ids) == 8
    np.testing.assert_allclose(d.rf_sigma_true, 0.05)  # ground-truth RF widths per decoder electrode
    plain = tmp_path / "p.h5"
    write_session(plain, rng, n_images=40, reps=1)
    assert load_decoding_data(plain, image_size=8, progress=False).info["split_by"] == "image"
