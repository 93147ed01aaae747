"""rtdecode.metrics: whole-set identification, ranks, bootstrap intervals, gains, oracle blur."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.errors import ConfigError
from rtdecode.metrics import (
    bootstrap_ci,
    gaussian_blur,
    identification_ranks,
    mean_ci,
    paired_difference,
    per_image_scores,
    pixel_correlation,
    rank_summary,
    rf_scale_sigma_px,
    top1_identification,
)


def test_identity_decoder_ranks_every_original_first(rng):
    x = rng.uniform(size=(30, 3, 8, 8))
    rank, top1 = identification_ranks(x, x)
    np.testing.assert_array_equal(rank, 1.0)
    np.testing.assert_array_equal(top1, 1.0)
    assert top1_identification(x, x) == 1.0
    s = rank_summary(rank)
    assert s["median"] == 1.0 and s["top5"] == 1.0 and s["chance_mean"] == 15.5


def test_shuffled_decoder_sits_at_chance(rng):
    n = 200
    x = rng.uniform(size=(n, 3, 6, 6))
    perm = rng.permutation(n)
    perm = np.where(perm == np.arange(n), np.roll(perm, 1), perm)  # no image left in place
    rank, top1 = identification_ranks(x[perm], x)
    # each own original is a random one of the n: mean rank ~ (n + 1) / 2, top-1 ~ 1/n
    assert abs(rank.mean() - (n + 1) / 2) < 0.1 * n
    assert top1.mean() < 0.03
    assert rank.min() >= 1 and rank.max() <= n


def test_constant_reconstruction_ties_with_every_original_at_exact_chance(rng):
    x = rng.uniform(size=(10, 3, 6, 6))
    flat = np.full_like(x, 0.5)
    rank, top1 = identification_ranks(flat, x)
    np.testing.assert_allclose(rank, 5.5)  # (N + 1) / 2
    np.testing.assert_allclose(top1, 0.1)  # 1 / N


def test_rank_counts_the_originals_that_correlate_better(rng):
    x = rng.uniform(size=(5, 3, 6, 6))
    pred = x.copy()
    pred[0] = 0.7 * x[3] + 0.3 * x[0]  # reconstruction 0 looks more like original 3 than its own
    rank, top1 = identification_ranks(pred, x)
    assert rank[0] == 2.0 and top1[0] == 0.0
    np.testing.assert_array_equal(rank[1:], 1.0)


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_images(rng):
    small = rng.normal(0.3, 0.2, size=40)
    large = rng.normal(0.3, 0.2, size=4000)
    lo_s, hi_s = bootstrap_ci(small, seed=1)
    lo_l, hi_l = bootstrap_ci(large, seed=1)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert lo_l < 0.3 < hi_l
    # standard error ~ sd / sqrt(n): the interval is ~ 2 * 1.96 * 0.2 / sqrt(n) wide
    assert (hi_s - lo_s) == pytest.approx(2 * 1.96 * 0.2 / np.sqrt(40), rel=0.35)
    assert (hi_l - lo_l) < 0.2 * (hi_s - lo_s)
    assert bootstrap_ci(small, seed=1) == (lo_s, hi_s)  # seeded
    assert bootstrap_ci(np.full(7, 0.25)) == (0.25, 0.25)  # no spread, no interval
    with pytest.raises(ConfigError, match="per-image values"):
        bootstrap_ci(np.zeros((2, 3)))


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_intervals_hide(rng):
    base = rng.uniform(0.2, 0.8, size=100)  # image difficulty varies a lot
    better = base + 0.01 + rng.normal(0, 0.002, size=100)  # always a little better
    a, b = mean_ci(better), mean_ci(base)
    assert a["lo"] < b["hi"]  # the unpaired intervals overlap
    d = paired_difference(better, base)
    assert d["lo"] > 0.009 and d["hi"] < 0.011
    assert d["mean"] == pytest.approx(np.mean(better - base))
    with pytest.raises(ConfigError, match="same images"):
        paired_difference(better, base[:-1])


def test_gain_over_mean_image_floor_is_zero_for_the_floor_itself(rng):
    x = rng.uniform(size=(12, 3, 16, 16))
    floor = np.broadcast_to(x.mean(axis=0), x.shape)
    fs = per_image_scores(floor, x)
    assert set(fs) == {"pixel_corr", "ssim", "rank", "top1"}
    g = paired_difference(fs["ssim"], fs["ssim"])
    assert g == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    assert paired_difference(per_image_scores(x, x)["pixel_corr"], fs["pixel_corr"])["lo"] > 0


def test_gaussian_blur_keeps_the_mean_smooths_and_matches_a_point_spread():
    img = np.zeros((1, 1, 41, 41))
    img[0, 0, 20, 20] = 1.0
    out = gaussian_blur(img, 2.0)
    assert out.sum() == pytest.approx(1.0, abs=1e-9)  # far from the border nothing is lost
    # the point spread is the 2-D Gaussian: its variance along x is sigma^2
    prof = out[0, 0].sum(axis=0)
    xs = np.arange(41) - 20
    assert np.sum(prof * xs ** 2) == pytest.approx(4.0, rel=0.02)
    np.testing.assert_allclose(out[0, 0], out[0, 0].T, atol=1e-12)  # isotropic
    flat = np.full((2, 3, 9, 7), 0.3)
    np.testing.assert_allclose(gaussian_blur(flat, 5.0), 0.3)  # reflected borders keep a flat image flat
    np.testing.assert_array_equal(gaussian_blur(flat, 0.0), flat)
    with pytest.raises(ConfigError, match="blur sigma"):
        gaussian_blur(flat, -1.0)


def test_oracle_blur_scores_between_the_original_and_noise(rng):
    x = gaussian_blur(rng.uniform(size=(6, 3, 32, 32)), 1.0)
    r = [pixel_correlation(gaussian_blur(x, s), x).mean() for s in (0.5, 2.0, 6.0)]
    assert 1.0 > r[0] > r[1] > r[2] > 0


def test_rf_scale_sigma_is_the_median_of_the_area_in_pixels():
    sig = np.array([0.03, 0.05, np.nan, 0.04, 0.2, 0.3])
    areas = ["V1", "V1", "V1", "V1", "IT", "IT"]
    assert rf_scale_sigma_px(sig, areas, 64) == pytest.approx(0.04 * 64)
    assert rf_scale_sigma_px(sig, areas, 64, area="IT") == pytest.approx(0.25 * 64)
    assert rf_scale_sigma_px(sig, areas, 64, area="V4") is None
