"""Reconstruction metrics: pixel correlation, SSIM, n-way identification, RF recovery (numpy only).

Images are float [N, 3, H, W] in [0, 1] (the decoder's output layout).

- pixel correlation: per image, Pearson r between the flattened reconstruction and original
  (all channels and pixels together); reported as the mean over images.
- SSIM: Wang et al. (2004) with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data
  range 1, computed on each RGB channel separately over the valid region and averaged over
  channels and positions (the skimage `channel_axis` convention). Images smaller than the window
  use the largest odd window that fits.
- n-way identification: a reconstruction is identified when it correlates better with its own
  original than with each of n-1 other originals drawn at random (seeded); the accuracy is the
  mean over images and draws. Chance is 1/n.
- RF recovery: distance between learned and true RF centres (image-normalised), in pixels of the
  decoded image and as % of its width; median per area.

Metrics that cannot saturate (issue 10: on easy stimuli 2-/5-way identification sit at 1.0):
- whole-set identification: the rank of each reconstruction's own original among *all* originals
  of the set by correlation (1 = best; ties share the mid-rank); top-1 = fraction ranked first
  (a tie counts 1/(1 + ties), its expected value under random tie-breaking). Chance top-1 is 1/N,
  chance mean rank (N + 1) / 2.
- gains over a floor: per-image metric(decoder) - metric(floor decoder, e.g. the mean training
  image), so the bootstrap interval of the gain is paired.
- bootstrap 95 % intervals: percentile bootstrap over test images (seeded; the same resamples for
  every decoder given the same seed and image count, so intervals of differences are paired). A
  resample keeps each image's rank as computed against the full set.
- oracle ceiling: the original blurred with a Gaussian at the RF scale (`gaussian_blur`,
  sigma from `rf_scale_sigma_px`: the median V1 RF sigma in pixels), the best a decoder limited
  to that resolution could show.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError


def _as_batch(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ConfigError(f"{name} must be images [N, C, H, W], got shape {a.shape}")
    return a


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_batch(pred, "reconstructions"), _as_batch(target, "originals")
    if p.shape != t.shape:
        raise ConfigError(f"reconstructions {p.shape} and originals {t.shape} must have the same shape")
    return p, t


def _zscore_rows(a: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1)
    a = a - a.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, np.inf)


def pixel_correlation(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-image Pearson r over all pixels and channels -> [N] (0 for a constant image)."""
    p, t = _pair(pred, target)
    return np.sum(_zscore_rows(p) * _zscore_rows(t), axis=1)


def correlation_matrix(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """C[i, j] = Pearson r between reconstruction i and original j -> [N, N]."""
    p, t = _pair(pred, target)
    return _zscore_rows(p) @ _zscore_rows(t).T


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return w / w.sum()


def _filter_valid(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of [..., H, W] with the 1-D window w along both image axes."""
    k = w.size
    h, wd = a.shape[-2], a.shape[-1]
    rows = sum(w[i] * a[..., i:h - k + 1 + i, :] for i in range(k))
    return sum(w[i] * rows[..., :, i:wd - k + 1 + i] for i in range(k))


def ssim(pred: np.ndarray, target: np.ndarray, *, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Per-image mean SSIM over RGB channels and valid window positions -> [N]."""
    p, t = _pair(pred, target)
    size = min(win_size, *(s - (1 - s % 2) for s in p.shape[-2:]))
    if size < 3:
        raise ConfigError(f"images of {p.shape[-2]}x{p.shape[-1]} pixels are too small for SSIM (need >= 3x3)")
    w = gaussian_window(size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_p, mu_t = _filter_valid(p, w), _filter_valid(t, w)
    var_p = _filter_valid(p * p, w) - mu_p ** 2
    var_t = _filter_valid(t * t, w) - mu_t ** 2
    cov = _filter_valid(p * t, w) - mu_p * mu_t
    s = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (var_p + var_t + c2))
    return s.reshape(s.shape[0], -1).mean(axis=1)


def identification_accuracy(pred: np.ndarray, target: np.ndarray, n_way: int = 2, *, repeats: int = 100,
                            seed: int = 0) -> float:
    """Mean fraction of (image, draw) pairs where r(own original) beats r(each of n-1 random others)."""
    c = correlation_matrix(pred, target)
    n = c.shape[0]
    if n_way < 2:
        raise ConfigError(f"n_way must be >= 2, got {n_way}")
    if n < n_way:
        raise ConfigError(f"{n_way}-way identification needs at least {n_way} images, got {n}")
    rng = np.random.default_rng(seed)
    own = np.diag(c)
    wins = 0
    for i in range(n):
        others = np.delete(np.arange(n), i)
        # repeats draws of n-1 distinct others: argsort of random keys gives a random subset per row
        picks = others[np.argsort(rng.random((repeats, others.size)), axis=1)[:, :n_way - 1]]
        wins += int(np.sum(np.all(c[i, picks] < own[i], axis=1)))
    return wins / (n * repeats)


def rf_recovery(learned: np.ndarray, true: np.ndarray, areas: np.ndarray | list[str],
                image_width_px: int) -> dict[str, Any]:
    """Median centre error per area (and 'all') in pixels and % of image width; NaN centres skipped."""
    learned = np.asarray(learned, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    areas = np.asarray(areas, dtype=object)
    if learned.shape != true.shape or learned.ndim != 2 or learned.shape[1] != 2:
        raise ConfigError(f"RF centres must both be [E, 2]; got learned {learned.shape} and true {true.shape}")
    if areas.shape != (learned.shape[0],):
        raise ConfigError(f"need one area per electrode ({learned.shape[0]}), got {areas.shape}")
    err = np.linalg.norm(learned - true, axis=1)  # image-normalised (fraction of width)
    ok = np.isfinite(err)
    out: dict[str, Any] = {}
    for name in [*dict.fromkeys(areas.tolist()), "all"]:
        sel = ok & ((areas == name) if name != "all" else True)
        if not sel.any():
            continue
        med = float(np.median(err[sel]))
        out[name] = {"median_px": med * image_width_px, "median_pct_width": 100.0 * med,
                     "n_electrodes": int(sel.sum())}
    return out


def summarise(pred: np.ndarray, target: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """The standard table row: mean pixel correlation, mean SSIM, 2-way and 5-way identification."""
    n = _as_batch(pred, "reconstructions").shape[0]
    out = {"pixel_corr": float(np.mean(pixel_correlation(pred, target))),
           "ssim": float(np.mean(ssim(pred, target))), "n_images": int(n)}
    for k in (2, 5):
        out[f"id_{k}way"] = identification_accuracy(pred, target, k, seed=seed) if n >= k else float("nan")
    return out


# ---- metrics that cannot saturate ---------------------------------------------------------------
def identification_ranks(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each reconstruction's own original among all originals -> (rank [N], top1 [N]).

    rank = 1 + (originals correlating better) + (ties) / 2; top1 = 1 / (1 + ties) when no original
    correlates better, else 0. A constant reconstruction ties with every original: mean rank and
    top-1 are then exactly at chance ((N + 1) / 2 and 1 / N).
    """
    c = correlation_matrix(pred, target)
    n = c.shape[0]
    own = np.diag(c)[:, None]
    off = ~np.eye(n, dtype=bool)
    greater = np.sum((c > own) & off, axis=1)
    ties = np.sum((c == own) & off, axis=1)
    rank = 1.0 + greater + 0.5 * ties
    top1 = np.where(greater == 0, 1.0 / (1.0 + ties), 0.0)
    return rank, top1


def top1_identification(pred: np.ndarray, target: np.ndarray) -> float:
    """Fraction of reconstructions whose own original correlates best among the whole set (chance 1/N)."""
    return float(np.mean(identification_ranks(pred, target)[1]))


def rank_summary(rank: np.ndarray) -> dict[str, float]:
    """The rank distribution in a few numbers, with the chance level for the same set size."""
    rank = np.asarray(rank, dtype=np.float64)
    n = rank.size
    if n == 0:
        raise ConfigError("rank_summary needs at least one rank")
    q = np.percentile(rank, [10, 25, 50, 75, 90])
    return {"mean": float(rank.mean()), "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p90": float(q[4]), "top5": float(np.mean(rank <= 5.0)),
            "chance_mean": (n + 1) / 2.0, "set_size": int(n)}


def per_image_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """pixel_corr, ssim, rank and top1 of every image -> dict of float arrays [N]."""
    rank, top1 = identification_ranks(pred, target)
    return {"pixel_corr": pixel_correlation(pred, target), "ssim": ssim(pred, target), "rank": rank, "top1": top1}


def bootstrap_ci(values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of per-image values [N] (resampling images, seeded)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ConfigError(f"bootstrap_ci needs per-image values [N] with N >= 1, got shape {v.shape}")
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must lie in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    idx = np.random.default_rng([int(seed), 0xB007, v.size]).integers(0, v.size, size=(int(n_boot), v.size))
    means = v[idx].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """{'mean', 'lo', 'hi'}: the mean of per-image values with its bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(v, n_boot=n_boot, level=level, seed=seed)
    return {"mean": float(v.mean()), "lo": lo, "hi": hi}


def paired_difference(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the same images with its paired bootstrap interval (e.g. a gain over a floor)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired scores must cover the same images, got shapes {a.shape} and {b.shape}")
    return mean_ci(a - b, n_boot=n_boot, level=level, seed=seed)


def gaussian_blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Images [N, C, H, W] blurred by an isotropic Gaussian of sigma_px pixels (reflected borders)."""
    a = _as_batch(images, "images")
    sigma = float(sigma_px)
    if not np.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"blur sigma must be a finite number of pixels >= 0, got {sigma_px}")
    if sigma == 0:
        return a.copy()
    radius = max(1, int(np.ceil(4.0 * sigma)))
    w = gaussian_window(2 * radius + 1, sigma)
    h, wd = a.shape[-2:]
    pad_y, pad_x = min(radius, h - 1), min(radius, wd - 1)  # numpy's reflect needs pad < size
    out = a
    for axis, pad in ((-2, pad_y), (-1, pad_x)):
        if pad == 0:
            continue
        widths = [(0, 0)] * out.ndim
        widths[axis] = (pad, pad)
        p = np.pad(out, widths, mode="reflect")
        k = gaussian_window(2 * pad + 1, sigma) if pad < radius else w
        n = out.shape[axis]
        out = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(k.size))
    return out


def rf_scale_sigma_px(sigmas: np.ndarray, areas: np.ndarray | list[str], image_width_px: int,
                      area: str = "V1") -> float | None:
    """Median RF sigma (image-normalised widths) of one area's electrodes, in pixels; None if none is known."""
    s = np.asarray(sigmas, dtype=np.float64)
    a = np.asarray(areas, dtype=object)
    if s.shape != a.shape:
        raise ConfigError(f"need one area per RF sigma, got {s.shape} sigmas and {a.shape} areas")
    sel = (a == area) & np.isfinite(s) & (s > 0)
    if not sel.any():
        return None
    return float(np.median(s[sel]) * image_width_px)


def interval_summary(scores: dict[str, np.ndarray], *, floor: dict[str, np.ndarray] | None = None,
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Means with bootstrap intervals of per_image_scores, the rank distribution, and gains over a floor.

    -> {'pixel_corr', 'ssim', 'top1' (means), 'ci': {metric: [lo, hi]}, 'rank': rank_summary,
        'gain_over_floor': {metric: {'mean', 'lo', 'hi'}} (only with floor)}.
    """
    out: dict[str, Any] = {"ci": {}}
    for key in ("pixel_corr", "ssim", "top1"):
        m = mean_ci(scores[key], n_boot=n_boot, level=level, seed=seed)
        out[key] = m["mean"]
        out["ci"][key] = [m["lo"], m["hi"]]
    out["rank"] = rank_summary(scores["rank"])
    if floor is not None:
        out["gain_over_floor"] = {key: paired_difference(scores[key], floor[key], n_boot=n_boot, level=level,
                                                         seed=seed) for key in ("pixel_corr", "ssim")}
    return out
