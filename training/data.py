"""Decoding datasets: onset-locked window maps and their stimuli, split by image, normalised.

`load_decoding_data(source)` reads an rtdecode session (.h5), an NWB file (.nwb, the `nwb` extra; see
rtdecode.sessions.nwb) or a TVSD folder and returns a
`DecodingData`: inputs x [N, M, E] (the decoder's maps, z-scored with statistics fitted on the
training split only) and targets y [N, 3, H, W] in [0, 1].

The maps come from `rtdecode.windows.WindowAssembler` - the code serving runs - with the stimulus
onset as the reference sample, so a model sees the same windows in training and in serving.
Splits are by image (no image in two splits; seeded); when the session says which source each
image was cut from (/image_groups, e.g. crops of one photograph), by source: no source in two
splits, so a test crop never shares a photograph with a training crop. Every presentation of a training image is
one training sample; validation and test maps are averaged over the repetitions of each image.
For TVSD the dataset's own test images (100 images x 30 repetitions) form the test split and the
validation images are drawn from its training images.

numpy + Pillow + h5py only (no torch), so evaluation and the ridge baseline run without torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.errors import ConfigError, SessionError
from rtdecode.layout import ElectrodeLayout, check_channels
from rtdecode.progress import progress_bar
from rtdecode.sessions.images import resize_images
from rtdecode.sessions.tvsd import SAMPLING_RATE_HZ as TVSD_RATE_HZ
from rtdecode.sessions.tvsd import TVSDFolder
from rtdecode.windows import Normaliser, WindowAssembler, WindowPlan, make_plan, map_mask

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class DecodingData:
    """Train / val / test maps and images for one recording, with the training normaliser."""

    layout: ElectrodeLayout
    plan: WindowPlan
    mask: np.ndarray  # bool [M, E]
    normaliser: Normaliser  # fitted on the training split only
    train_x: np.ndarray  # float32 [N, M, E], normalised
    train_y: np.ndarray  # float32 [N, 3, H, W] in [0, 1]
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_ids: np.ndarray  # int64 image index per sample
    val_ids: np.ndarray
    test_ids: np.ndarray
    rf_true: np.ndarray | None  # [E, 2] ground-truth RF centres (virtual macaque), else None
    rf_known: np.ndarray | None  # [E, 2] the layout's known RF centres (NaN unknown), else None
    source: str
    info: dict[str, Any] = field(default_factory=dict)
    rf_sigma_true: np.ndarray | None = None  # [E] ground-truth RF widths (virtual macaque), else None

    @property
    def n_maps(self) -> int:
        return self.plan.n_maps

    @property
    def n_electrodes(self) -> int:
        return self.layout.n_electrodes

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the targets."""
        return int(self.train_y.shape[2]), int(self.train_y.shape[3])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, image ids) of 'train', 'val' or 'test'."""
        if name not in ("train", "val", "test"):
            raise ConfigError(f"split {name!r} is unknown; expected 'train', 'val' or 'test'")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y"), getattr(self, f"{name}_ids")

    def contract(self, model_id: str, training_config: dict[str, Any] | None = None):
        """The DecoderContract a model trained on this data is served with."""
        from rtdecode.contract import DecoderContract

        h, w = self.image_size
        return DecoderContract(self.layout, self.plan, self.normaliser.mean, self.normaliser.std, h, w,
                               model_id, dict(training_config or {}))


@dataclass
class TrialMaps:
    """Raw (not normalised) onset-locked maps of every usable trial of a source."""

    layout: ElectrodeLayout
    plan: WindowPlan
    maps: np.ndarray  # float32 [N, M, E]
    image_ids: np.ndarray  # int64 [N] image shown in each trial
    trial_ids: np.ndarray  # int64 [N] trial number in the source (for messages)
    load_images: Callable[[np.ndarray, int], np.ndarray]  # (ids, size) -> float32 [K, 3, size, size]
    rf_true: np.ndarray | None  # [C, 2] per stream channel, or None
    test_image_ids: np.ndarray | None  # a source's fixed test images (TVSD), or None
    source: str
    rf_sigma_true: np.ndarray | None = None  # [C] per stream channel, or None
    image_groups: np.ndarray | None = None  # int64 [K] source of each image; splits keep sources disjoint


# ---- public entry point -------------------------------------------------------------------
def load_decoding_data(source: str | Path, *, windows: str | WindowPlan = "spatiotemporal", image_size: int = 64,
                       split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                       things_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                       layout: ElectrodeLayout | None = None, monkey: str = "N",
                       progress: bool = True, nwb: dict[str, str | None] | None = None) -> DecodingData:
    """Read a session .h5, an NWB file or a TVSD folder into normalised, image-split decoding data.

    windows: a WindowPlan preset ('spatiotemporal' or 'spatial') or a WindowPlan.
    layout: overrides the source's layout (must have as many channels as the data).
    monkey: TVSD only, 'N' or 'F'. things_dir: TVSD only, the local THINGS image folder.
    cache_dir: keep the assembled maps there (npz keyed by file, mtime and window plan).
    nwb: NWB only, which objects to read: {"series": ..., "intervals": ..., "images": ...} (None = pick).
    """
    src = Path(source)
    if not src.exists():
        raise SessionError(f"data source {src} does not exist; expected an rtdecode session .h5, an NWB file "
                           f"or a TVSD folder")
    if image_size < 8:
        raise ConfigError(f"image_size must be >= 8 pixels, got {image_size}")
    fractions = _check_split(split)
    if src.is_dir():

        trials = load_tvsd_trials(src, windows=windows, things_dir=things_dir, monkey=monkey, layout=layout,
                                  cache_dir=cache_dir, progress=progress)
    elif src.suffix.lower() == ".nwb":
        trials = load_nwb_trials(src, windows=windows, layout=layout, cache_dir=cache_dir, progress=progress,
                                 **(nwb or {}))
    else:
        trials = load_session_trials(src, windows=windows, layout=layout, cache_dir=cache_dir, progress=progress)
    return build_decoding_data(trials, image_size=image_size, split=fractions, seed=seed)


def load_session_trials(path: str | Path, *, windows: str | WindowPlan = "spatiotemporal",
                        layout: ElectrodeLayout | None = None, cache_dir: str | Path | None = None,
                        progress: bool = True) -> TrialMaps:
    """Onset-locked maps of every trial of an rtdecode session file."""
    from rtdecode.sessions.session_file import open_session

    path = Path(path)
    session = open_session(path, need_images=True)
    try:
        lay = session.layout if layout is None else layout
        check_channels(lay, session.n_channels, f"{path}:/mua")
        plan = windows if isinstance(windows, WindowPlan) else make_plan(windows, lay, session.sampling_rate_hz)
        images = session.images
        if images is None:  # open_session(need_images=True) already refuses this
            raise SessionError(f"{path}: no /images; training needs the stimuli")
        img_idx = session.image_index
        bad = np.flatnonzero((img_idx < 0) | (img_idx >= images.shape[0]))
        if bad.size:
            raise SessionError(f"{path}: trial {int(bad[0])} shows image {int(img_idx[bad[0]])} but /images "
                               f"holds {images.shape[0]} images (0..{images.shape[0] - 1})")
        onsets = session.onset
        fits = onsets + plan.span <= session.n_samples
        if not fits.all():
            log.warning("%s: %d trial(s) end less than %d samples before the recording ends; skipped",
                        path, int((~fits).sum()), plan.span)
        trial_ids = np.flatnonzero(fits).astype(np.int64)
        if trial_ids.size == 0:
            raise SessionError(f"{path}: no trial has the {plan.span} samples after its onset that the windows need")
        key = _cache_key(path, plan, lay, extra="session")
        maps = _cached(cache_dir, key)
        if maps is None or maps.shape[0] != trial_ids.size:
            maps = assemble_onset_maps(session.mua, onsets[trial_ids], plan, lay, progress=progress,
                                       desc=f"windows {path.name}")
            _store(cache_dir, key, maps)
        check_finite_maps(maps, trial_ids, lay, str(path))
        gt = session.ground_truth.get("rf_centres")
        rf_true = None
        if gt is not None and np.shape(gt) == (lay.n_channels, 2):
            rf_true = np.asarray(gt, dtype=np.float64)
        gs = session.ground_truth.get("rf_sigmas")
        rf_sigma = np.asarray(gs, dtype=np.float64) if gs is not None and np.shape(gs) == (lay.n_channels,) else None
        groups = session.image_groups

        def load_images(ids: np.ndarray, size: int) -> np.ndarray:
            return resize_images(images[np.asarray(ids, dtype=np.int64)], size)

        return TrialMaps(lay, plan, maps, img_idx[trial_ids].astype(np.int64), trial_ids, load_images,
                         rf_true, None, str(path), rf_sigma, groups)
    finally:
        session.close()


def load_nwb_trials(path: str | Path, *, windows: str | WindowPlan = "spatiotemporal",
                    layout: ElectrodeLayout | None = None, cache_dir: str | Path | None = None,
                    progress: bool = True, series: str | None = None, intervals: str | None = None,
                    images: str | None = None) -> TrialMaps:
    """Onset-locked maps of every trial of an NWB file (rtdecode.sessions.nwb says what is read)."""
    from rtdecode.sessions.nwb import open_nwb

    path = Path(path)
    s = open_nwb(path, series=series, intervals=intervals, images=images, layout=layout,
                 need_images=True, need_onsets=True)
    lay = s.layout
    plan = windows if isinstance(windows, WindowPlan) else make_plan(windows, lay, s.sampling_rate_hz)
    fits = s.onset + plan.span <= s.n_samples
    if not fits.all():
        log.warning("%s: %d trial(s) end less than %d samples before the recording ends; skipped",
                    path, int((~fits).sum()), plan.span)
    keep = np.flatnonzero(fits)
    if keep.size == 0:
        raise SessionError(f"{path}: {s.intervals_path}: no trial has the {plan.span} samples after its onset "
                           f"that the windows need")
    trial_ids = s.trial_ids[keep]
    key = _cache_key(path, plan, lay, extra=f"nwb:{s.series_path}:{s.intervals_path}")
    maps = _cached(cache_dir, key)
    if maps is None or maps.shape[0] != keep.size:
        with s.mua_reader() as mua:
            maps = assemble_onset_maps(mua, s.onset[keep], plan, lay, progress=progress, desc=f"windows {path.name}")
        _store(cache_dir, key, maps)
    check_finite_maps(maps, trial_ids, lay, f"{path}: {s.series_path}")
    pictures = s.images or []

    def load_images(ids: np.ndarray, size: int) -> np.ndarray:
        return resize_images([pictures[int(k)] for k in ids], size)

    return TrialMaps(lay, plan, maps, s.image_index[keep].astype(np.int64), trial_ids.astype(np.int64),
                     load_images, None, None, str(path))


def build_decoding_data(trials: TrialMaps, *, image_size: int = 64,
                        split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0) -> DecodingData:
    """Split by image, fit the normaliser on training trials, average val/test per image, load images."""
    fractions = _check_split(split)
    train_img, val_img, test_img = split_images(trials.image_ids, fractions, seed, fixed_test=trials.test_image_ids,
                                                source=trials.source, groups=trials.image_groups)
    layout, plan = trials.layout, trials.plan
    mask = map_mask(plan, layout)
    in_train = np.isin(trials.image_ids, train_img)
    train_x = np.ascontiguousarray(trials.maps[in_train], dtype=np.float32)
    train_ids = trials.image_ids[in_train]
    normaliser = Normaliser.fit(train_x, mask)
    normaliser(train_x)
    val_x = average_by_image(trials.maps, trials.image_ids, val_img)
    test_x = average_by_image(trials.maps, trials.image_ids, test_img)
    normaliser(val_x)
    normaliser(test_x)

    needed = np.unique(np.concatenate([train_img, val_img, test_img]))
    pics = trials.load_images(needed, image_size)
    row = {int(k): i for i, k in enumerate(needed)}

    def targets(ids: np.ndarray) -> np.ndarray:
        return pics[[row[int(k)] for k in ids]] if len(ids) else np.zeros((0, 3, image_size, image_size), np.float32)

    used = layout.used_channels
    rf_true = None if trials.rf_true is None else trials.rf_true[used].astype(np.float64)
    rf_known = None if layout.rf_centres is None else np.asarray(layout.rf_centres, np.float64)[used]
    rf_sigma = None if trials.rf_sigma_true is None else trials.rf_sigma_true[used].astype(np.float64)
    info = {"n_trials": int(trials.maps.shape[0]), "n_images": int(needed.size),
            "split_images": [int(train_img.size), int(val_img.size), int(test_img.size)],
            "seed": int(seed), "image_size": int(image_size), "windows": plan.preset,
            "split_by": "image" if trials.image_groups is None or trials.test_image_ids is not None else "source"}
    log.info("decoding data from %s: %d train samples (%d images), %d val images, %d test images, maps %s",
             trials.source, train_x.shape[0], train_img.size, val_img.size, test_img.size, mask.shape)
    return DecodingData(layout, plan, mask, normaliser,
                        train_x, targets(train_ids), val_x, targets(val_img), test_x, targets(test_img),
                        train_ids.astype(np.int64), val_img.astype(np.int64), test_img.astype(np.int64),
                        rf_true, rf_known, trials.source, info, rf_sigma)


# ---- pieces ----------------------------------------------------------------------------------
def assemble_onset_maps(mua: Any, onsets: np.ndarray, plan: WindowPlan, layout: ElectrodeLayout, *,
                        chunk_samples: int = 200_000, progress: bool = True, desc: str = "windows") -> np.ndarray:
    """Maps [N, M, E] for reference samples `onsets` of mua [T, C] (array or h5py dataset).

    Reads the recording in chunks (plus the window span) so a long session never sits in memory.
    """
    assembler = WindowAssembler(plan, layout)
    onsets = np.asarray(onsets, dtype=np.int64)
    out = np.empty((onsets.size, *assembler.shape), dtype=np.float32)
    if onsets.size == 0:
        return out
    order = np.argsort(onsets, kind="stable")
    sorted_on = onsets[order]
    n_total = int(mua.shape[0])
    bar = progress_bar(int(onsets.size), desc, enabled=progress, unit="trial")
    i = 0
    while i < sorted_on.size:
        start = int(sorted_on[i])
        j = int(np.searchsorted(sorted_on, start + chunk_samples, side="left"))
        j = max(j, i + 1)
        stop = min(n_total, int(sorted_on[j - 1]) + plan.span)
        block = np.asarray(mua[start:stop], dtype=np.float32)
        out[order[i:j]] = assembler.assemble_many(block, sorted_on[i:j] - start)
        bar.update(j - i)
        i = j
    bar.close()
    return out


def check_finite_maps(maps: np.ndarray, trial_ids: np.ndarray, layout: ElectrodeLayout, source: str) -> None:
    """SessionError naming the first trial and stream channel whose windows hold NaN/Inf."""
    finite = np.isfinite(maps)
    if finite.all():
        return
    n, _, e = np.argwhere(~finite)[0]
    bad_trials = int((~finite).any(axis=(1, 2)).sum())
    channel = int(layout.used_channels[int(e)])
    raise SessionError(f"{source}: MUA windows hold NaN/Inf in trial {int(trial_ids[int(n)])}, channel {channel} "
                       f"({bad_trials} trial(s) affected); clean or exclude that channel (layout "
                       f"excluded_channels) before training")


def split_images(image_ids: np.ndarray, split: tuple[float, float, float], seed: int, *,
                 fixed_test: np.ndarray | None = None, source: str = "data",
                 groups: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Seeded split of the distinct images into (train, val, test) id arrays; no image in two splits.

    With `fixed_test` (a dataset's own test images), those are the test split and the val images
    are drawn from the rest in proportion split[1] : split[0]. With `groups` (the source of image
    k is groups[k]) whole sources are split instead: no source in two splits, each split's share
    of images as close to its fraction as whole sources allow.
    """
    f_train, f_val, f_test = split = _check_split(split)
    uniq = np.unique(np.asarray(image_ids, dtype=np.int64))
    rng = np.random.default_rng(seed)
    if groups is not None and fixed_test is None:
        test, val, train = _split_groups(uniq, np.asarray(groups, dtype=np.int64), (f_test, f_val), rng, source)
    elif fixed_test is not None:
        test = np.intersect1d(uniq, np.asarray(fixed_test, dtype=np.int64))
        rest = rng.permutation(np.setdiff1d(uniq, test))
        n_val = int(round(rest.size * f_val / max(f_train + f_val, 1e-12)))
        val, train = rest[:n_val], rest[n_val:]
    else:
        perm = rng.permutation(uniq)
        n_test = int(round(uniq.size * f_test))
        n_val = int(round(uniq.size * f_val))
        test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    need = {"train": (train, f_train, 2), "val": (val, f_val, 1), "test": (test, f_test, 1)}
    by = "" if groups is None or fixed_test is not None else \
        f" from {np.unique(np.asarray(groups)[uniq]).size} sources (split by source)"
    for name, (ids, frac, least) in need.items():
        if frac > 0 and ids.size < least:
            raise SessionError(f"{source}: too few images for the split {tuple(split)}: {uniq.size} distinct images"
                               f"{by} leave {ids.size} for {name} (needs at least {least}); record more images or "
                               "change the split")
    return np.sort(train), np.sort(val), np.sort(test)


def _split_groups(uniq: np.ndarray, groups: np.ndarray, fractions: tuple[float, float], rng: np.random.Generator,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test, val, train) image ids made of whole groups: groups in seeded order fill test, then val."""
    if uniq.size and (uniq.max() >= groups.size or uniq.min() < 0):
        raise SessionError(f"{source}: image {int(uniq.max())} has no source group ({groups.size} groups given)")
    g = groups[uniq]
    order = rng.permutation(np.unique(g))
    counts = {int(k): int(np.sum(g == k)) for k in order}
    parts: list[list[int]] = [[], []]
    pos = 0
    for part, frac in enumerate(fractions):
        target = frac * uniq.size
        taken = 0
        # whole groups while they bring the split closer to its share (at least one when frac > 0)
        while pos < order.size - 1 and frac > 0 and (not parts[part] or abs(taken + counts[int(order[pos])] - target)
                                                      < abs(taken - target)):
            parts[part].append(int(order[pos]))
            taken += counts[int(order[pos])]
            pos += 1
    test = uniq[np.isin(g, parts[0])]
    val = uniq[np.isin(g, parts[1])]
    train = uniq[~np.isin(g, parts[0] + parts[1])]
    log.info("%s: split by source: %d/%d/%d sources (%d/%d/%d images) in train/val/test", source,
             order.size - len(parts[0]) - len(parts[1]), len(parts[1]), len(parts[0]), train.size, val.size, test.size)
    return test, val, train


def average_by_image(maps: np.ndarray, image_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Mean map over the presentations of each image in `ids` -> float32 [len(ids), M, E]."""
    out = np.zeros((len(ids), *maps.shape[1:]), dtype=np.float64)
    pos = {int(k): i for i, k in enumerate(ids)}
    counts = np.zeros(len(ids), dtype=np.int64)
    for n, k in enumerate(np.asarray(image_ids)):
        i = pos.get(int(k))
        if i is not None:
            out[i] += maps[n]
            counts[i] += 1
    if (counts == 0).any():
        raise SessionError(f"image {int(ids[int(np.argmin(counts))])} has no trial")
    return (out / counts[:, None, None]).astype(np.float32)


# ---- cache ---------------------------------------------------------------------------------
def _cache_key(path: Path, plan: WindowPlan, layout: ElectrodeLayout, extra: str = "") -> str:
    files = sorted(path.rglob("*.mat")) if path.is_dir() else [path]
    stamp = [(str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files]
    blob = json.dumps({"v": CACHE_VERSION, "files": stamp, "plan": plan.to_dict(),
                       "layout": layout.to_dict(), "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _cached(cache_dir: str | Path | None, key: str) -> np.ndarray | None:
    if cache_dir is None:
        return None
    p = Path(cache_dir) / f"maps-{key}.npz"
    if not p.exists():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            maps = np.asarray(z["maps"], dtype=np.float32)
    except (OSError, KeyError, ValueError) as e:
        log.warning("ignoring unreadable map cache %s (%s)", p, e)
        return None
    log.info("window maps from cache %s", p)
    return maps


def _store(cache_dir: str | Path | None, key: str, maps: np.ndarray, **extra: np.ndarray) -> None:
    if cache_dir is None:
        return
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".maps-{key}.{os.getpid()}.npz"
    np.savez(tmp, maps=maps, **extra)
    tmp.replace(d / f"maps-{key}.npz")


def _check_split(split: Any) -> tuple[float, float, float]:
    try:
        a, b, c = (float(v) for v in split)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"split must be three fractions (train, val, test), got {split!r}") from e
    if min(a, b, c) < 0 or a <= 0 or abs(a + b + c - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be >= 0 with train > 0 and sum to 1, got {(a, b, c)}")
    return a, b, c


# ---- TVSD trials (the folder reader is rtdecode.sessions.tvsd) -------------------------------
def load_tvsd_trials(folder: str | Path, *, windows: str | WindowPlan = "spatiotemporal",
                     things_dir: str | Path | None = None, monkey: str = "N",
                     layout: ElectrodeLayout | None = None, cache_dir: str | Path | None = None,
                     only_correct: bool = True, progress: bool = True) -> TrialMaps:
    """Onset-locked maps of every usable TVSD trial, with the dataset's own test images as test split."""
    tv = TVSDFolder(folder, monkey=monkey, layout=layout, only_correct=only_correct)
    plan = windows if isinstance(windows, WindowPlan) else make_plan(windows, tv.layout, TVSD_RATE_HZ)
    tv.image_paths()  # fail early when the stimulus list is missing
    key = _cache_key(tv.folder, plan, tv.layout, extra=f"tvsd:{monkey}:{only_correct}")
    maps = _cached(cache_dir, key)
    if maps is None or maps.shape[0] != tv.trials.size:
        maps = tv.assemble_maps(plan, progress=progress)
        _store(cache_dir, key, maps)
    check_finite_maps(maps, tv.trials, tv.layout, str(tv.mua_path))

    def load_images(ids: np.ndarray, size: int) -> np.ndarray:
        return tv.load_images(ids, size, things_dir, progress=progress)

    return TrialMaps(tv.layout, plan, maps, tv.image_ids[tv.trials], tv.trials, load_images, None,
                     tv.test_image_ids(), str(tv.folder))
