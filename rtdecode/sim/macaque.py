"""The virtual macaque: seeded, numpy-only simulation of 1 kHz MUA from Utah arrays in V1, V4 and IT.

Model (details and numbers in docs/virtual-macaque.md):
- Every electrode has a Gaussian receptive field (centre in image-normalised coordinates, x right,
  y down; width sigma). The used arrays of each area tile the whole image (one patch per array,
  electrodes on a jittered grid inside it); sigma grows with eccentricity (distance from the image
  centre) and from V1 to V4 to IT.
- Its drive to an image is a deterministic function of the image and the electrode's parameters:
  V1 signed local luminance (ON/OFF cells) plus oriented contrast energy; V4 colour opponency
  (preferred hue on the R-G / B-Y plane) plus texture energy over larger fields; IT coarse global
  features (RF-pooled colour/luminance and a low-spatial-frequency layout projection). Gaussian
  pooling is separable: two matrix products per feature map.
- Time course: per-electrode latency (V1 ~35, V4 ~60, IT ~90 ms), a transient + sustained
  response to the image, an unspecific onset transient, an offset response, per-channel baseline,
  AR(1) smooth noise plus white noise. Channels of broken or excluded electrodes carry baseline
  and noise only.
- A session: 500 ms of baseline, then each image `on_ms` on and `off_ms` off (TVSD: 200/200).

Samples are generated one trial at a time with a random stream keyed by (seed, trial), so a
session file and a live Recording built from the same seed and images hold identical samples.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, SessionError
from ..layout import ElectrodeLayout, tvsd_monkey_n
from ..progress import progress_bar
from ..sessions.recording import Block, Recording, offset_marker, onset_marker
from .stimuli import STIMULUS_KINDS, StimulusSet, conform_images, load_image_folder, make_stimuli

SAMPLING_RATE_HZ = 1000.0  # 1 sample per ms: every time below in ms is also in samples
BASELINE_MS = 500
SIM_VERSION = 1

# Per-area parameters: RF sigma at the image centre and at a corner (fraction of image width),
# latency mean/sd (ms), transient time-to-peak (ms), response gain.
AREA_PARAMS: dict[str, dict[str, float]] = {
    "V1": {"sigma_centre": 0.03, "sigma_corner": 0.06, "lat": 35.0, "lat_sd": 4.0, "tau_peak": 12.0, "gain": 1.0},
    "V4": {"sigma_centre": 0.08, "sigma_corner": 0.15, "lat": 60.0, "lat_sd": 6.0, "tau_peak": 16.0, "gain": 0.8},
    "IT": {"sigma_centre": 0.20, "sigma_corner": 0.40, "lat": 90.0, "lat_sd": 8.0, "tau_peak": 22.0, "gain": 0.7},
}
# Pooling resolution per area as a divisor of the image size (large RFs need few pixels).
POOL_DIVISOR = {"V1": 1, "V4": 2, "IT": 4}
TAU_SUSTAIN_MS = 25.0  # rise of the sustained component
TAU_DECAY_MS = 35.0  # decay of the sustained component after the image goes off
V1_COLOUR_FRACTION = 0.3  # V1 cells that are also colour-opponent
AR_TAU_MS = 25.0  # time constant of the smooth noise
AR_SD = 0.18  # smooth-noise sd (times `noise`)
WHITE_SD = 0.30  # white-noise sd (times `noise`)
# Feature scales calibrated on dead-leaves images (64 px): each pooled feature ~ unit sd.
SCALE = {
    "V1": {"lum": 0.14, "col": 0.125, "energy_mean": 0.044, "energy_sd": 0.03},
    "V4": {"lum": 0.11, "col": 0.095, "energy_mean": 0.07, "energy_sd": 0.026},
    "IT": {"lum": 0.08, "col": 0.07, "glob": 0.14},
}


@dataclass(frozen=True)
class ElectrodeParams:
    """Ground-truth parameters of every channel, in stream channel order."""

    area: np.ndarray  # str [C]
    driven: np.ndarray  # bool [C]: False for broken arrays / excluded electrodes (noise only)
    centre: np.ndarray  # float [C, 2] (x, y) image-normalised
    sigma: np.ndarray  # float [C] image-normalised (fraction of the image width)
    latency_ms: np.ndarray  # float [C]
    tau_peak_ms: np.ndarray  # float [C] transient time-to-peak
    polarity: np.ndarray  # float [C] +1 ON, -1 OFF
    orientation: np.ndarray  # float [C] preferred orientation (rad), V1
    hue: np.ndarray  # float [C] preferred hue angle on the (R-G, B-Y) plane (rad), V4/IT
    weights: np.ndarray  # float [C, 3] mix of the area's features (see _drive)
    layout_vec: np.ndarray  # float [C, 48] IT projection of the coarse 4x4x3 image
    baseline: np.ndarray  # float [C]
    gain: np.ndarray  # float [C] image-specific response amplitude
    onset_gain: np.ndarray  # float [C] unspecific onset transient
    offset_gain: np.ndarray  # float [C] offset response
    sustain: np.ndarray  # float [C] sustained / transient ratio
    ar_coef: np.ndarray  # float [C]


class VirtualMacaque:
    """Seeded simulator of MUA for a sequence of images; see the module docstring for the model.

    noise scales the noise sd (0 = noiseless responses; 1 = default). The layout decides channel
    count, areas, arrays and which channels are usable; its own RF centres are not used.
    stimuli: the kind of procedural images shown when none are given (rtdecode.sim.stimuli.STIMULUS_KINDS).
    """

    def __init__(self, layout: ElectrodeLayout | None = None, image_size: int = 64, seed: int = 0,
                 noise: float = 1.0, stimuli: str = "dead-leaves"):
        self.layout = layout if layout is not None else tvsd_monkey_n()
        if not isinstance(self.layout, ElectrodeLayout):
            raise ConfigError(f"layout must be an ElectrodeLayout, got {type(self.layout).__name__}")
        self.image_size = int(image_size)
        if self.image_size < 8:
            raise ConfigError(f"image_size must be at least 8 pixels, got {image_size}")
        self.seed = int(seed)
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.noise = float(noise)
        if not (np.isfinite(self.noise) and self.noise >= 0):
            raise ConfigError(f"noise must be a finite number >= 0, got {noise}")
        if stimuli not in STIMULUS_KINDS:
            raise ConfigError(f"stimulus kind {stimuli!r} is unknown; expected one of {', '.join(STIMULUS_KINDS)}")
        self.stimuli = stimuli
        self.sampling_rate_hz = SAMPLING_RATE_HZ
        self.params = _make_params(self.layout, self.seed)
        self._pool = {a: _pooling_matrices(self.params, a, self.image_size) for a in AREA_PARAMS}

    # ---- ground truth ----------------------------------------------------------------------
    def ground_truth(self) -> dict[str, np.ndarray]:
        """rf_centres [C, 2], rf_sigmas [C], latency_ms [C] in stream channel order."""
        p = self.params
        return {"rf_centres": p.centre.copy(), "rf_sigmas": p.sigma.copy(), "latency_ms": p.latency_ms.copy()}

    def layout_with_rfs(self, jitter: float = 0.01) -> ElectrodeLayout:
        """The layout carrying the true RF centres plus a little noise (as a lab's RF mapping would);
        NaN for channels that are not usable."""
        rng = np.random.default_rng([self.seed, 0xAF])
        c = self.params.centre + rng.normal(0.0, jitter, self.params.centre.shape)
        s = self.params.sigma * np.exp(rng.normal(0.0, 0.1, self.params.sigma.shape))
        c[~self.layout.usable] = np.nan
        s[~self.layout.usable] = np.nan
        return self.layout.with_rf(np.clip(c, 0.0, 1.0), s)

    # ---- responses -------------------------------------------------------------------------
    def drive(self, images: np.ndarray, batch: int = 64, progress: bool = False) -> np.ndarray:
        """Image-specific drive of every channel, float32 [K, C] (0 for channels not driven)."""
        images = conform_images(images, self.image_size)
        out = np.zeros((images.shape[0], self.layout.n_channels), dtype=np.float32)
        bar = progress_bar(images.shape[0], "responses", enabled=progress and images.shape[0] > 4 * batch,
                           unit="img")
        for s in range(0, images.shape[0], batch):
            out[s:s + batch] = _drive(images[s:s + batch], self.params, self._pool, self.image_size)
            bar.update(min(batch, images.shape[0] - s))
        bar.close()
        return out

    def trial_kernels(self, on_ms: int, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Response templates [length, C] from stimulus onset: image-specific, onset, offset."""
        p = self.params
        t = np.arange(length, dtype=np.float64)[:, None] - p.latency_ms[None, :]
        tp = p.tau_peak_ms[None, :]
        trans = _alpha(t, tp)
        rise = np.where(t > 0, 1.0 - np.exp(-np.maximum(t, 0) / TAU_SUSTAIN_MS), 0.0)
        level_at_off = 1.0 - np.exp(-on_ms / TAU_SUSTAIN_MS)
        decay = level_at_off * np.exp(-np.maximum(t - on_ms, 0) / TAU_DECAY_MS)
        sustained = np.where(t < on_ms, rise, decay)
        # The transient is cut short (and decays) when the image goes off before it is over.
        trans = np.where(t < on_ms, trans,
                         _alpha(np.full_like(t, on_ms), tp) * np.exp(-np.maximum(t - on_ms, 0) / 8.0))
        specific = trans + p.sustain[None, :] * sustained
        onset = trans
        offset = _alpha(t - on_ms, tp)
        return specific.astype(np.float32), onset.astype(np.float32), offset.astype(np.float32)

    # ---- sessions --------------------------------------------------------------------------
    def schedule(self, n_trials: int, on_ms: int = 200, off_ms: int = 200) -> tuple[np.ndarray, np.ndarray, int]:
        """(onset samples [N], offset samples [N], total samples) for n_trials images."""
        on_ms, off_ms = _check_timing(on_ms, off_ms)
        onset = BASELINE_MS + np.arange(n_trials, dtype=np.int64) * (on_ms + off_ms)
        return onset, onset + on_ms, BASELINE_MS + n_trials * (on_ms + off_ms)

    def simulate_session(self, path: str | Path, images: np.ndarray | str | Path | None = None,
                         n_images: int | None = None, on_ms: int = 200, off_ms: int = 200, *,
                         repeats: int = 1, known_rfs: bool = False, image_seed: int | None = None,
                         progress: bool = True, description: str = "") -> dict[str, Any]:
        """Write a recorded-session HDF5 file (rtdecode.sessions.session_file format); returns a summary dict.

        images: uint8 [K, H, W, 3], a folder of PNG/JPEG files, or None for n_images procedural images
        of the simulator's stimulus kind (seeded by image_seed, default the simulator seed; crops of one
        photograph share a source group in /image_groups). Each image is shown `repeats`
        times (one presentation each in order when repeats == 1, else in a seeded random order).
        """
        from ..sessions.session_file import SessionWriter

        t0 = time.perf_counter()
        stim = self._resolve_images(images, n_images, image_seed, progress)
        imgs, names = stim.images, stim.names
        order = self._order(imgs.shape[0], repeats)
        on_ms, off_ms = _check_timing(on_ms, off_ms)
        onset, offset, total = self.schedule(order.size, on_ms, off_ms)
        layout = self.layout_with_rfs() if known_rfs else _strip_rfs(self.layout)
        sim_attrs = {"image_size": self.image_size, "on_ms": on_ms, "off_ms": off_ms, "noise": self.noise,
                     "repeats": int(repeats), "known_rfs": bool(known_rfs), "baseline_ms": BASELINE_MS,
                     "version": SIM_VERSION, "layout": self.layout.name,
                     "stimuli": "given" if images is not None else self.stimuli,
                     "image_seed": None if images is not None else (self.seed if image_seed is None else int(image_seed))}
        desc = description or (f"virtual macaque (seed {self.seed}), {imgs.shape[0]} images, "
                               f"{on_ms} ms on / {off_ms} ms off")
        synth = self._synth(imgs, on_ms, off_ms, progress)
        bar = progress_bar(order.size, "simulate", enabled=progress, unit="trial")
        with SessionWriter(path, layout, self.sampling_rate_hz, description=desc,
                           attrs={"seed": self.seed, "simulator": json.dumps(sim_attrs)}) as w:
            pending: list[np.ndarray] = []
            n_pending = 0
            for i, (mua, _markers) in enumerate(self._blocks(synth, order)):
                pending.append(mua)
                n_pending += mua.shape[0]
                if n_pending >= 8000 or i == order.size:
                    start = w.n_samples
                    chunk = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    w.append(chunk, np.arange(start, start + chunk.shape[0]) / self.sampling_rate_hz)
                    pending, n_pending = [], 0
                if i > 0:
                    bar.update(1)
            bar.close()
            if w.n_samples != total:
                raise SessionError(f"internal: wrote {w.n_samples} samples, expected {total}")
            w.set_markers(onset, offset, order)
            w.set_images(imgs, names, stim.groups, stim.group_names)
            w.set_ground_truth(**self.ground_truth())
        return {"path": str(path), "n_images": int(imgs.shape[0]), "n_trials": int(order.size),
                "n_samples": int(total), "n_channels": self.layout.n_channels, "layout": self.layout.name,
                "seed": self.seed, "seconds": time.perf_counter() - t0}

    def recording(self, images: np.ndarray | str | Path | None = None, n_images: int | None = None, *,
                  endless: bool = False, on_ms: int = 200, off_ms: int = 200, repeats: int = 1,
                  image_seed: int | None = None) -> Recording:
        """A Recording whose blocks (baseline, then one per trial) are generated on the fly.

        Same seed and images => the same samples as simulate_session. endless: after the last
        trial, keep showing the images in fresh seeded random orders, forever.
        """
        imgs = self._resolve_images(images, n_images, image_seed).images
        order = self._order(imgs.shape[0], repeats)
        on_ms, off_ms = _check_timing(on_ms, off_ms)
        total = None if endless else self.schedule(order.size, on_ms, off_ms)[2]
        synth = self._synth(imgs, on_ms, off_ms)  # now, so that playback starts on time

        def make_blocks() -> Iterator[Block]:
            trials = self._endless_order(order, imgs.shape[0]) if endless else order
            for mua, markers in self._blocks(synth, trials):
                yield Block(mua, markers)

        return Recording(f"virtual-macaque-seed{self.seed}", self.layout, self.sampling_rate_hz, make_blocks,
                         total, imgs)

    # ---- internals -------------------------------------------------------------------------
    def _resolve_images(self, images: Any, n_images: int | None, image_seed: int | None,
                        progress: bool = False) -> StimulusSet:
        if images is not None and n_images is not None and not isinstance(images, (str, Path)):
            raise ConfigError("give either images or n_images, not both")
        if isinstance(images, (str, Path)):
            imgs, names = load_image_folder(images, self.image_size, limit=n_images)
            return StimulusSet(imgs, names)
        if images is not None:
            return StimulusSet(conform_images(images, self.image_size))
        n = 100 if n_images is None else int(n_images)
        if n < 1:
            raise ConfigError(f"n_images must be at least 1, got {n_images}")
        seed = self.seed if image_seed is None else int(image_seed)
        parts = []
        bar = progress_bar(n, "images", enabled=progress and n > 200, unit="img")
        for s in range(0, n, 100):
            parts.append(make_stimuli(self.stimuli, min(100, n - s), self.image_size, seed, start=s))
            bar.update(min(100, n - s))
        bar.close()
        return StimulusSet.concat(parts)

    def _order(self, n_images: int, repeats: int) -> np.ndarray:
        if int(repeats) < 1:
            raise ConfigError(f"repeats must be at least 1, got {repeats}")
        if int(repeats) == 1:
            return np.arange(n_images, dtype=np.int64)
        rng = np.random.default_rng([self.seed, 0x0D])
        return rng.permutation(np.tile(np.arange(n_images, dtype=np.int64), int(repeats)))

    def _endless_order(self, first: np.ndarray, n_images: int) -> Iterator[int]:
        yield from (int(k) for k in first)
        epoch = 1
        while True:
            yield from (int(k) for k in np.random.default_rng([self.seed, 0xE0, epoch]).permutation(n_images))
            epoch += 1

    def _synth(self, images: np.ndarray, on_ms: int, off_ms: int, progress: bool = False) -> _TrialSynth:
        """Everything per-image and per-channel that the trial loop needs, computed once."""
        p = self.params
        resp_len = int(on_ms + p.latency_ms.max() + 8 * p.tau_peak_ms.max() + 5 * TAU_DECAY_MS)
        k_spec, k_on, k_off = self.trial_kernels(on_ms, resp_len)
        k_on *= p.onset_gain[None, :].astype(np.float32)
        drive = self.drive(images, progress=progress)  # [K, C]
        amp = (p.gain[None, :] * _softplus(drive)).astype(np.float32)  # image-specific amplitude
        off_amp = (p.offset_gain[None, :] * (0.5 + 0.5 * _softplus(drive))).astype(np.float32)
        amp[:, ~p.driven] = 0.0
        off_amp[:, ~p.driven] = 0.0
        k_on[:, ~p.driven] = 0.0
        return _TrialSynth(self.seed, self.noise, on_ms, off_ms, p.baseline.astype(np.float32),
                           p.ar_coef.astype(np.float32), k_spec, k_on, k_off, amp, off_amp)

    def _blocks(self, synth: _TrialSynth, trials: Sequence[int] | Iterator[int]
                ) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
        """The baseline block, then one block per trial: (mua float32 [n, C], markers)."""
        s = synth
        c = self.layout.n_channels
        trial_len = s.on_ms + s.off_ms
        resp_len = s.k_spec.shape[0]
        sd_u = np.sqrt(12.0)  # sd of U(-0.5, 0.5) is 1 / sqrt(12)
        innov_u = (np.sqrt(1.0 - s.ar_coef.astype(np.float64) ** 2) * AR_SD * s.noise * sd_u).astype(np.float32)
        white = np.float32(WHITE_SD * s.noise)
        state = (np.random.default_rng([s.seed, 0xA4]).standard_normal(c) * AR_SD * s.noise).astype(np.float32)
        pending = np.zeros((resp_len + trial_len, c), dtype=np.float32)  # responses not yet emitted
        tmp = np.empty((resp_len, c), dtype=np.float32)

        def noisy(n: int, key: list[int]) -> np.ndarray:
            nonlocal state
            out = np.empty((n, c), dtype=np.float32)
            if s.noise == 0:
                out[:] = s.baseline
                return out
            # AR(1) innovations are uniform (3x cheaper to draw than Gaussian); the filter sums ~50
            # of them, so the smooth noise is Gaussian to within a few %. The white noise is Gaussian.
            rng = np.random.default_rng(key)
            smooth = rng.random((n, c), dtype=np.float32)
            smooth -= np.float32(0.5)
            smooth *= innov_u
            state = _ar1_inplace(smooth, s.ar_coef, state)
            rng.standard_normal(dtype=np.float32, out=out)
            out *= white
            out += s.baseline
            out += smooth
            return out

        yield noisy(BASELINE_MS, [s.seed, 0xB0]), []
        for i, k in enumerate(trials):
            k = int(k)
            head = pending[:resp_len]
            head += np.multiply(s.k_spec, s.amp[k], out=tmp)
            head += s.k_on
            head += np.multiply(s.k_off, s.off_amp[k], out=tmp)
            block = noisy(trial_len, [s.seed, 0x7A, i])
            block += pending[:trial_len]
            pending[:-trial_len] = pending[trial_len:]  # numpy copies overlapping slices safely
            pending[-trial_len:] = 0.0
            yield block, [(0, onset_marker(k, i)), (s.on_ms, offset_marker(k, i))]


@dataclass(frozen=True)
class _TrialSynth:
    """Precomputed response templates [L, C] and per-image amplitudes [K, C] for one schedule."""

    seed: int
    noise: float
    on_ms: int
    off_ms: int
    baseline: np.ndarray
    ar_coef: np.ndarray
    k_spec: np.ndarray
    k_on: np.ndarray
    k_off: np.ndarray
    amp: np.ndarray
    off_amp: np.ndarray


# ---- parameters ---------------------------------------------------------------------------------
def _make_params(layout: ElectrodeLayout, seed: int) -> ElectrodeParams:
    rng = np.random.default_rng([seed, 0x9A])
    n = layout.n_channels
    areas = np.asarray(layout.areas, dtype=object)
    arrays = np.asarray(layout.arrays)
    usable = np.asarray(layout.usable)
    centre = np.zeros((n, 2))
    for area in AREA_PARAMS:
        in_area = areas == area
        if not in_area.any():
            continue
        ids = list(dict.fromkeys(int(x) for x in arrays[in_area]))
        tiled = [a for a in ids if (usable & (arrays == a)).any()]
        cells = _tile(len(tiled)) if tiled else []
        for a in ids:
            ch = np.flatnonzero(in_area & (arrays == a))
            if a in tiled:
                x0, y0, w, h = cells[tiled.index(a)]
            else:  # an array with no usable electrode: anywhere in the image (it carries no signal)
                x0, y0, w, h = 0.0, 0.0, 1.0, 1.0
            centre[ch] = _grid_in_cell(len(ch), x0, y0, w, h, rng)
    ecc = np.hypot(centre[:, 0] - 0.5, centre[:, 1] - 0.5) / np.sqrt(0.5)  # 0 centre .. 1 corner
    ap = {k: np.array([AREA_PARAMS[a][k] for a in areas]) for k in AREA_PARAMS["V1"]}
    sigma = (ap["sigma_centre"] + (ap["sigma_corner"] - ap["sigma_centre"]) * ecc) * np.exp(rng.normal(0, 0.08, n))
    latency = np.clip(ap["lat"] + ap["lat_sd"] * rng.standard_normal(n), ap["lat"] - 3 * ap["lat_sd"],
                      ap["lat"] + 3 * ap["lat_sd"])
    tau_peak = ap["tau_peak"] * np.exp(rng.normal(0, 0.1, n))
    polarity = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    orientation = rng.uniform(0, np.pi, n)
    hue = rng.uniform(0, 2 * np.pi, n)
    # Feature mix per area (columns, see _drive): V1 (luminance, orientation energy, colour);
    # V4 (colour, texture, luminance); IT (luminance, colour, global layout).
    mix = {"V1": (0.8, 0.3, 0.6), "V4": (0.7, 0.25, 0.35), "IT": (0.45, 0.45, 0.4)}
    weights = np.array([mix[a] for a in areas]) * np.exp(rng.normal(0, 0.15, (n, 3)))
    v1 = areas == "V1"
    weights[v1, 2] *= rng.random(int(v1.sum())) < V1_COLOUR_FRACTION  # colour-opponent ("blob") V1 cells
    layout_vec = rng.standard_normal((n, 48))
    layout_vec /= np.linalg.norm(layout_vec, axis=1, keepdims=True)
    baseline = np.exp(rng.normal(0.0, 0.3, n))
    gain = ap["gain"] * np.exp(rng.normal(0, 0.25, n))
    onset_gain = 0.4 * ap["gain"] * np.exp(rng.normal(0, 0.3, n))
    offset_gain = 0.25 * ap["gain"] * np.exp(rng.normal(0, 0.3, n))
    sustain = rng.uniform(0.4, 0.8, n)
    ar_coef = np.full(n, np.exp(-1.0 / AR_TAU_MS)) * np.exp(rng.normal(0, 0.005, n))
    return ElectrodeParams(areas, usable.copy(), centre, sigma, latency, tau_peak, polarity, orientation, hue,
                           weights, layout_vec, baseline, gain, onset_gain, offset_gain, sustain,
                           np.clip(ar_coef, 0.0, 0.999))


def _tile(n: int) -> list[tuple[float, float, float, float]]:
    """n cells (x0, y0, w, h) that tile the unit square: rows of near-square cells."""
    rows = max(1, int(round(np.sqrt(n))))
    per_row = [n // rows + (1 if r < n % rows else 0) for r in range(rows)]
    cells = []
    for r, cols in enumerate(per_row):
        for c in range(cols):
            cells.append((c / cols, r / rows, 1.0 / cols, 1.0 / rows))
    return cells


def _grid_in_cell(m: int, x0: float, y0: float, w: float, h: float, rng: np.random.Generator) -> np.ndarray:
    """m points on a jittered grid covering a cell; a seeded subset when the grid has spare points."""
    gc = max(1, int(np.ceil(np.sqrt(m * w / h))))
    gr = max(1, int(np.ceil(m / gc)))
    gx, gy = np.meshgrid((np.arange(gc) + 0.5) / gc, (np.arange(gr) + 0.5) / gr)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    if len(pts) > m:
        pts = pts[np.sort(rng.choice(len(pts), m, replace=False))]
    pts = pts + rng.uniform(-0.3, 0.3, pts.shape) / np.array([gc, gr])
    return np.column_stack([x0 + w * np.clip(pts[:, 0], 0, 1), y0 + h * np.clip(pts[:, 1], 0, 1)])


def pool_factor(area: str, size: int) -> int:
    """Integer down-sampling factor of an area's pooling grid (at least 4 pixels across)."""
    f = POOL_DIVISOR[area]
    while f > 1 and size // f < 4:
        f //= 2
    return f


def _pooling_matrices(p: ElectrodeParams, area: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channel indices, Gy [E, h], Gx [E, w]) of the area's driven electrodes at its pooling resolution.

    Each 1-D Gaussian is normalised to sum 1 so the 2-D weight (outer product) sums to 1.
    """
    idx = np.flatnonzero((p.area == area) & p.driven)
    res = size // pool_factor(area, size)
    coords = (np.arange(res) + 0.5) / res
    s = p.sigma[idx, None]
    gx = np.exp(-0.5 * ((coords[None, :] - p.centre[idx, 0:1]) / s) ** 2)
    gy = np.exp(-0.5 * ((coords[None, :] - p.centre[idx, 1:2]) / s) ** 2)
    gx /= gx.sum(axis=1, keepdims=True)
    gy /= gy.sum(axis=1, keepdims=True)
    return idx, gy.astype(np.float32), gx.astype(np.float32)


# ---- drive ---------------------------------------------------------------------------------------
def _features(images: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Feature maps [K, h, w] at full resolution: luminance, colour opponents, gradient energies."""
    x = images.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    gx = np.empty_like(lum)
    gy = np.empty_like(lum)
    gx[:, :, 1:-1] = 0.5 * (lum[:, :, 2:] - lum[:, :, :-2])
    gx[:, :, 0] = lum[:, :, 1] - lum[:, :, 0]
    gx[:, :, -1] = lum[:, :, -1] - lum[:, :, -2]
    gy[:, 1:-1] = 0.5 * (lum[:, 2:] - lum[:, :-2])
    gy[:, 0] = lum[:, 1] - lum[:, 0]
    gy[:, -1] = lum[:, -1] - lum[:, -2]
    k = size / 64.0  # energy of an edge per unit image width, independent of resolution
    return {"lum": lum - 0.5, "rg": r - g, "by": b - 0.5 * (r + g),
            "exx": gx * gx * k, "eyy": gy * gy * k, "exy": gx * gy * k, "rgb": x}


def _downsample(maps: np.ndarray, f: int) -> np.ndarray:
    """Block-average [K, F, h, w] by an integer factor (cropping a remainder)."""
    if f == 1:
        return maps
    k, n, h, w = maps.shape
    h2, w2 = h // f, w // f
    return maps[:, :, :h2 * f, :w2 * f].reshape(k, n, h2, f, w2, f).mean(axis=(3, 5))


def _pool(maps: np.ndarray, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
    """Gaussian-pool maps [K, F, h, w] with separable weights -> [K, F, E]."""
    k, f, h, w = maps.shape
    rows = np.ascontiguousarray(maps.transpose(2, 0, 1, 3)).reshape(h, k * f * w)
    t = (gy @ rows).reshape(-1, k * f, w)  # [E, K*F, w]: pooled over y
    return np.einsum("enw,ew->ne", t, gx).reshape(k, f, -1)


AREA_FEATURES = {"V1": ("lum", "rg", "by", "exx", "eyy", "exy"), "V4": ("lum", "rg", "by", "energy"), "IT": ("lum", "rg", "by")}


def _drive(images: np.ndarray, p: ElectrodeParams, pool: dict[str, tuple], size: int) -> np.ndarray:
    """Image-specific drive [K, C] (dimensionless, ~unit sd over naturalistic images)."""
    feats = _features(images, size)
    feats["energy"] = feats["exx"] + feats["eyy"]
    out = np.zeros((images.shape[0], p.area.size), dtype=np.float32)
    for area, (idx, gy, gx) in pool.items():
        if idx.size == 0:
            continue
        names = AREA_FEATURES[area]
        maps = _downsample(np.stack([feats[n] for n in names], axis=1), pool_factor(area, size))
        pooled = dict(zip(names, np.moveaxis(_pool(maps, gy, gx), 1, 0), strict=True))  # each [K, E]
        sc = SCALE[area]
        w = p.weights[idx].T[:, None, :]  # [3, 1, E]
        lum = p.polarity[idx] * pooled["lum"] / sc["lum"]
        if area == "V1":
            th = p.orientation[idx]
            e_theta = (np.cos(th) ** 2 * pooled["exx"] + np.sin(th) ** 2 * pooled["eyy"]
                       + 2 * np.sin(th) * np.cos(th) * pooled["exy"])
            ori = (np.sqrt(np.maximum(e_theta, 0)) - sc["energy_mean"]) / sc["energy_sd"]
            col = (np.cos(p.hue[idx]) * pooled["rg"] + np.sin(p.hue[idx]) * pooled["by"]) / sc["col"]
            d = w[0] * lum + w[1] * ori + w[2] * col  # w[2] > 0 only for colour-opponent cells
        else:
            col = (np.cos(p.hue[idx]) * pooled["rg"] + np.sin(p.hue[idx]) * pooled["by"]) / sc["col"]
            if area == "V4":
                tex = (np.sqrt(np.maximum(pooled["energy"], 0)) - sc["energy_mean"]) / sc["energy_sd"]
                d = w[0] * col + w[1] * tex + w[2] * lum
            else:  # IT: RF-pooled colour and luminance plus a coarse global layout (4x4 RGB)
                coarse = _downsample(np.moveaxis(feats["rgb"], 3, 1), max(1, size // 4))[:, :, :4, :4]
                glob = (coarse.reshape(coarse.shape[0], -1) - 0.5) @ p.layout_vec[idx].T / sc["glob"]
                d = w[0] * lum + w[1] * col + w[2] * glob
        out[:, idx] = d
    return out


# ---- time course and noise -----------------------------------------------------------------------
def _alpha(t: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Alpha function peaking at 1 when t = tau; 0 for t <= 0."""
    tt = np.maximum(t, 0.0) / tau
    return np.where(t > 0, tt * np.exp(1.0 - tt), 0.0)


def _softplus(x: np.ndarray, beta: float = 1.5) -> np.ndarray:
    """Smooth rectification: firing rates cannot go below baseline by much."""
    return np.logaddexp(0.0, beta * x) / beta


def _ar1_inplace(x: np.ndarray, a: np.ndarray, state: np.ndarray) -> np.ndarray:
    """x[t] = a * x[t-1] + innovation[t] along axis 0, in place; returns the last row (new state)."""
    tmp = np.empty_like(state)
    np.multiply(state, a, out=tmp)
    x[0] += tmp
    for t in range(1, x.shape[0]):
        np.multiply(x[t - 1], a, out=tmp)
        x[t] += tmp
    return x[-1].copy()


def _check_timing(on_ms: Any, off_ms: Any) -> tuple[int, int]:
    on, off = int(on_ms), int(off_ms)
    if on != on_ms or off != off_ms or on < 1 or off < 0:
        raise ConfigError(f"on_ms must be a whole number >= 1 and off_ms >= 0 (ms at 1 kHz), got {on_ms}, {off_ms}")
    return on, off


def _strip_rfs(layout: ElectrodeLayout) -> ElectrodeLayout:
    """The layout without RF information (a lab that has not mapped RFs)."""
    return ElectrodeLayout(layout.name, layout.arrays, layout.areas, layout.usable, None, None,
                           layout.broken_arrays)
