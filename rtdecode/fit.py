"""Input fit: does the stream look like the data the model was trained on? (numpy only, no torch)

A decoder fed by another animal, a scaled or dead input decodes silently: plausible images at
chance accuracy. The input-fit statistics catch that from the normalised windows alone.

Statistic (chosen on held-out data, see docs/serving.md "Input fit" and
benchmarks/results/input-fit/): per area a, the window's values x_a (the area's maps,
concatenated; D_a numbers) are scored under a low-rank Gaussian (probabilistic PCA) of the
training windows: mean mu, top-k principal directions W with variances lam, and one residual
variance s2 for the rest:

    score_a(x) = ( sum_i z_i^2 / lam_i  +  (|x - mu|^2 - |z|^2) / s2 ) / D_a,   z = W^T (x - mu)

i.e. a negative log-likelihood per dimension, ~1 on data like the training data. Another monkey
(same layout, other receptive fields) puts its stimulus-driven variance outside the training
subspace (into the residual): score > 1; a flat (dead) area scores far below or above; a
scaled input scales the score. Per-channel means and variances alone barely move for another
monkey after normalisation; the subspace is what gives it away.

Scores are averaged over a *block* of windows sampled one per `stride` samples of stream
(default 50 ms, `block` 40 windows = 2 s of stream), so the block's spread does not depend on
the serve stride. The range accepted per area is the held-out blocks' [min, max] widened on a
log scale by `margin` x their spread (a ratio) on each side. Everything is stored in the model under `rtdecode.input_fit`
(INPUT_FIT_VERSION), computed at export time or added later with `rtdecode fit-stats`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

INPUT_FIT_KEY = "rtdecode.input_fit"
INPUT_FIT_VERSION = 1
MISFIT_FLAG = "input_misfit"  # frame header flag while the latest block is out of range


@dataclass
class AreaFit:
    """Low-rank Gaussian of one area's training windows and the held-out range of its block score."""

    name: str
    index: np.ndarray  # int64 [D]: positions in the flattened window x.reshape(-1) (M * E)
    mean: np.ndarray  # float32 [D]
    basis: np.ndarray  # float32 [D, k], orthonormal columns
    var: np.ndarray  # float32 [k] variance along each column
    resid_var: float  # variance per dimension outside the basis
    lo: float = -math.inf  # accepted block-score range
    hi: float = math.inf
    heldout: dict[str, float] = field(default_factory=dict)  # min / median / max of held-out block scores

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int64)
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.basis = np.ascontiguousarray(self.basis, dtype=np.float32)
        self.var = np.asarray(self.var, dtype=np.float32)
        d, k = self.basis.shape
        if self.index.shape != (d,) or self.mean.shape != (d,) or self.var.shape != (k,):
            raise ModelError(f"input-fit area {self.name}: index {self.index.shape}, mean {self.mean.shape}, "
                             f"basis {self.basis.shape}, var {self.var.shape} do not agree")
        if not (np.all(self.var > 0) and self.resid_var > 0):
            raise ModelError(f"input-fit area {self.name}: variances must be > 0")
        self._inv_var = (1.0 / self.var).astype(np.float32)
        self._diff = np.empty(d, dtype=np.float32)
        self._z = np.empty(k, dtype=np.float32)
        self._zz = np.empty(k, dtype=np.float32)

    @property
    def dims(self) -> int:
        return int(self.basis.shape[0])

    def score(self, flat: np.ndarray) -> float:
        """Score of one window (flattened [M * E], normalised); no allocation."""
        d, z = self._diff, self._z
        np.take(flat, self.index, out=d)
        np.subtract(d, self.mean, out=d)
        total = float(np.dot(d, d))
        np.dot(d, self.basis, out=z)
        zz = np.multiply(z, z, out=self._zz)
        inside = float(np.dot(zz, self._inv_var))
        resid = max(total - float(zz.sum()), 0.0)
        return (inside + resid / self.resid_var) / d.size

    def scores(self, windows: np.ndarray) -> np.ndarray:
        """Scores of many windows [N, M, E] (or [N, M * E]) at once (offline)."""
        x = np.asarray(windows, dtype=np.float32).reshape(len(windows), -1)[:, self.index] - self.mean
        z = x @ self.basis
        resid = np.maximum((x * x).sum(1) - (z * z).sum(1), 0.0)
        return ((z * z) @ self._inv_var + resid / self.resid_var) / self.dims


@dataclass
class FitStats:
    """Per-area low-rank models plus how blocks are formed; stored under INPUT_FIT_KEY."""

    areas: list[AreaFit]
    stride: int  # samples between the windows a block samples
    block: int  # windows per block
    margin: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)  # how and from what they were computed

    def to_json(self) -> str:
        return json.dumps({
            "version": INPUT_FIT_VERSION, "statistic": "ppca-nll-per-dim", "stride_samples": self.stride,
            "block_windows": self.block, "margin": self.margin, "info": self.info,
            "areas": [{"name": a.name, "dims": a.dims, "k": int(a.basis.shape[1]), "index": _b64(a.index, "<i4"),
                       "mean": _b64(a.mean), "basis": _b64(a.basis), "var": _b64(a.var),
                       "resid_var": a.resid_var, "range": [a.lo, a.hi], "heldout": a.heldout}
                      for a in self.areas]}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, n_inputs: int | None = None, *, source: str = "model") -> FitStats:
        try:
            d = json.loads(text)
            version = int(d["version"])
            if version > INPUT_FIT_VERSION:
                raise ModelError(f"{INPUT_FIT_KEY} version {version} is newer than this rtdecode "
                                 f"understands ({INPUT_FIT_VERSION})", path=source)
            areas = []
            for a in d["areas"]:
                dims, k = int(a["dims"]), int(a["k"])
                index = _unb64(a["index"], (dims,), "<i4").astype(np.int64)
                if n_inputs is not None and (index.min() < 0 or index.max() >= n_inputs):
                    raise ValueError(f"area {a['name']}: index beyond the {n_inputs} decoder inputs")
                areas.append(AreaFit(str(a["name"]), index, _unb64(a["mean"], (dims,)),
                                     _unb64(a["basis"], (dims, k)), _unb64(a["var"], (k,)),
                                     float(a["resid_var"]), float(a["range"][0]), float(a["range"][1]),
                                     dict(a.get("heldout", {}))))
            return cls(areas, int(d["stride_samples"]), int(d["block_windows"]), float(d.get("margin", 1.0)),
                       dict(d.get("info", {})))
        except ModelError:
            raise
        except (KeyError, ValueError, TypeError) as e:
            raise ModelError(f"malformed {INPUT_FIT_KEY} metadata ({type(e).__name__}: {e})", path=source) from e

    def summary(self) -> dict[str, Any]:
        """What `rtdecode inspect` shows: block size, components and accepted range per area."""
        return {"version": INPUT_FIT_VERSION, "stride_samples": self.stride, "block_windows": self.block,
                "areas": {a.name: {"dims": a.dims, "k": int(a.basis.shape[1]), "range": [round(a.lo, 4), round(a.hi, 4)],
                                   "heldout": a.heldout} for a in self.areas}, "info": self.info}

    def block_scores(self, windows: np.ndarray) -> np.ndarray:
        """[n_blocks, A] block scores of consecutive sampled windows [N, M, E] (offline)."""
        per = np.stack([a.scores(windows) for a in self.areas], axis=1)
        n = len(per) // self.block
        return per[:n * self.block].reshape(n, self.block, -1).mean(1)


def area_indices(contract: Any) -> dict[str, np.ndarray]:
    """Flat positions (in x.reshape(-1)) of each area's inputs: its electrodes in the maps they feed."""
    mask = contract.mask
    areas = contract.layout.electrode_areas()
    out = {}
    for area in contract.layout.areas_present():
        sel = mask & (areas == area)[None, :]
        if sel.any():
            out[area] = np.flatnonzero(sel.reshape(-1))
    return out


def fit_area(name: str, index: np.ndarray, windows: np.ndarray, k: int) -> AreaFit:
    """Probabilistic PCA (k components + residual variance) of one area's values in windows [N, M, E]."""
    x = np.asarray(windows, dtype=np.float32).reshape(len(windows), -1)[:, index].astype(np.float64)
    n, d = x.shape
    k = int(min(k, d - 1, n - 1))
    if k < 1:
        raise ConfigError(f"input fit: area {name} needs more windows ({n}) and inputs ({d}) than 1")
    mean = x.mean(0)
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ev = s * s / max(n - 1, 1)
    total = float(ev.sum())
    var = np.maximum(ev[:k], 1e-6)
    resid = max((total - float(ev[:k].sum())) / (d - k), 1e-6)
    return AreaFit(name, index, mean, vt[:k].T, var, resid)


def sliding_windows(mua: Any, contract: Any, stride: int, start: int = 0, stop: int | None = None,
                    chunk: int = 100_000) -> np.ndarray:
    """Normalised windows [N, M, E] at reference samples start, start + stride, ... of mua [T, C]."""
    asm, norm = contract.assembler(), contract.normaliser()
    stop = int(mua.shape[0]) if stop is None else int(stop)
    refs = np.arange(int(start), stop - asm.span + 1, int(stride), dtype=np.int64)
    out = np.empty((refs.size, *asm.shape), dtype=np.float32)
    for i in range(0, refs.size, max(1, chunk // stride)):
        part = refs[i:i + max(1, chunk // stride)]
        lo, hi = int(part[0]), int(part[-1]) + asm.span
        out[i:i + part.size] = asm.assemble_many(np.asarray(mua[lo:hi], dtype=np.float32), part - lo)
    norm(out)
    return out


def compute_fit_stats(mua: Any, contract: Any, *, k: int = 16, stride_ms: float = 50.0, block: int = 40,
                      segment_s: float = 20.0, heldout_fraction: float = 0.25, margin: float = 1.0,
                      skip_s: float = 0.5, max_s: float | None = 300.0, seed: int = 0,
                      info: dict[str, Any] | None = None) -> FitStats:
    """Fit the statistics on a recording of the animal, mua [T, C] (array or h5py dataset).

    Sliding windows one per `stride_ms`; the recording is cut into contiguous segments of
    `segment_s`, a seeded `heldout_fraction` of them held out: the rest fit the per-area models,
    the held-out blocks set each area's accepted range ([min, max] of their block scores,
    widened by `margin` x log(max / min), at least 0.05, on a log scale on each side).
    """
    fs = contract.plan.sampling_rate_hz
    stride = max(1, int(round(stride_ms * fs / 1000.0)))
    first = int(round(skip_s * fs))
    stop = None if max_s is None else min(int(mua.shape[0]), first + int(round(max_s * fs)))
    x = sliding_windows(mua, contract, stride, start=first, stop=stop)
    per_seg = max(block, int(round(segment_s * fs / stride)) // block * block)
    n_seg = len(x) // per_seg
    if n_seg < 2:
        need = 2 * per_seg * stride / fs + skip_s + contract.plan.span / fs
        raise ConfigError(f"input fit needs at least {need:.0f} s of recording (two {per_seg * stride / fs:g}-s "
                          f"segments); got {int(mua.shape[0]) / fs:.1f} s")
    rng = np.random.default_rng(seed)
    n_held = min(n_seg - 1, max(1, int(round(n_seg * heldout_fraction))))
    held = np.zeros(n_seg, dtype=bool)
    held[rng.choice(n_seg, n_held, replace=False)] = True
    segs = x[:n_seg * per_seg].reshape(n_seg, per_seg, *x.shape[1:])
    fit_x = segs[~held].reshape(-1, *x.shape[1:])
    held_x = segs[held].reshape(-1, *x.shape[1:])
    areas = [fit_area(name, idx, fit_x, k) for name, idx in area_indices(contract).items()]
    stats = FitStats(areas, stride, block, margin,
                     {"windows_fit": int(len(fit_x)), "windows_heldout": int(len(held_x)), "k": int(k),
                      "segment_s": segment_s, "sampling_rate_hz": fs, **(info or {})})
    calibrate(stats, held_x)
    return stats


def calibrate(stats: FitStats, heldout: np.ndarray) -> None:
    """Set each area's accepted range from held-out sampled windows [N, M, E] (consecutive)."""
    b = stats.block_scores(heldout)
    if len(b) < 2:
        raise ConfigError(f"input fit: {len(heldout)} held-out windows make fewer than 2 blocks of {stats.block}")
    for j, a in enumerate(stats.areas):
        lb = np.log(np.maximum(b[:, j], 1e-12))  # the score is positive and skewed: widen by ratios
        pad = stats.margin * max(float(lb.max() - lb.min()), 0.05)
        a.lo, a.hi = float(np.exp(lb.min() - pad)), float(np.exp(lb.max() + pad))
        a.heldout = {"blocks": int(len(b)), "min": float(b[:, j].min()), "median": float(np.median(b[:, j])),
                     "max": float(b[:, j].max())}


def read_fit_stats(meta: dict[str, str], n_inputs: int, *, source: str = "model") -> FitStats | None:
    """The model's input-fit statistics, or None when it has none (older models)."""
    text = meta.get(INPUT_FIT_KEY)
    return None if text is None else FitStats.from_json(text, n_inputs, source=source)


class FitMonitor:
    """Runtime side: samples the served windows, scores them in blocks, flags blocks out of range.

    `observe(ref, x)` is called once per decoded window (absolute reference sample, the
    normalised window [M, E]); it scores the first window at or after each point of a grid of
    one per `stride` samples (one numpy projection per area, tens of microseconds, every ~50 ms of stream),
    so the per-frame cost is a comparison. After `block` scored windows the block's mean score
    per area is compared with its range: `misfit` is True until a block falls back in range.
    The state goes to `telemetry.input_fit` (status line, snapshot, Prometheus).
    """

    def __init__(self, stats: FitStats, telemetry: Any = None):
        self.stats = stats
        self.telemetry = telemetry
        self.misfit = False
        self.blocks = 0
        self.misfit_blocks = 0
        self.latest: dict[str, float] = {}
        self._sums = np.zeros(len(stats.areas))
        self._n = 0
        self._next = -(1 << 62)
        self._publish("warming up")

    def observe(self, ref: int, x: np.ndarray) -> None:
        if ref < self._next:
            return
        stride = self.stats.stride  # on a grid of one window per stride on average, whatever the serve stride
        self._next = self._next + stride if ref - self._next < stride else ref + stride
        flat = x.reshape(-1)
        for j, a in enumerate(self.stats.areas):
            self._sums[j] += a.score(flat)
        self._n += 1
        if self._n >= self.stats.block:
            self._close_block()

    def _close_block(self) -> None:
        means = self._sums / self._n
        self._sums[:] = 0.0
        self._n = 0
        self.blocks += 1
        self.latest = {a.name: float(v) for a, v in zip(self.stats.areas, means, strict=True)}
        out = [a for a, v in zip(self.stats.areas, means, strict=True) if not (a.lo <= v <= a.hi)]
        was = self.misfit
        self.misfit = bool(out)
        if out:
            self.misfit_blocks += 1
        if self.misfit and not was:
            log.warning("input does not fit the model's training data: fit score %s outside the held-out range %s "
                        "(another animal, array or scaling? frames are flagged %r)",
                        ", ".join(f"{a.name} {self.latest[a.name]:.2f}" for a in out),
                        ", ".join(f"{a.name} [{a.lo:.2f}, {a.hi:.2f}]" for a in out), MISFIT_FLAG)
        elif was and not self.misfit:
            log.warning("input fits the model's training data again: fit score %s", self.score_text())
        self._publish("misfit" if self.misfit else "ok")

    def score_text(self) -> str:
        return " ".join(f"{k} {v:.2f}" for k, v in self.latest.items()) or "-"

    def _publish(self, state: str) -> None:
        if self.telemetry is not None:
            self.telemetry.input_fit = {
                "state": state, "score": dict(self.latest), "blocks": self.blocks, "misfit_blocks": self.misfit_blocks,
                "range": {a.name: [a.lo, a.hi] for a in self.stats.areas}}


def _b64(a: np.ndarray, dtype: str = "<f4") -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _unb64(s: str, shape: tuple[int, ...], dtype: str = "<f4") -> np.ndarray:
    a = np.frombuffer(base64.b64decode(s), dtype=dtype)
    if a.size != int(np.prod(shape)):
        raise ValueError(f"array of {a.size} values does not fit shape {list(shape)}")
    return a.reshape(shape).copy()


def monitor_for(contract: Any, telemetry: Any, mode: str, announce: Any = None) -> FitMonitor | None:
    """The service's monitor, or None (said once) when the model has no statistics or mode is event."""
    say = announce or (lambda text: log.info("%s", text))
    stats = getattr(contract, "fit_stats", None)
    why = None
    if stats is None:
        why = (f"the model has no {INPUT_FIT_KEY} statistics (older model; add them with "
               "`rtdecode fit-stats MODEL --data SESSION`)")
    elif mode != "sliding":
        why = f"its statistics are of sliding windows; mode is {mode!r}"
    if why is not None:
        say(f"input fit: not monitored: {why}")
        if telemetry is not None:
            telemetry.input_fit = {"state": "off", "reason": why}
        return None
    say(f"input fit: monitored, one {stats.block}-window block per {stats.block * stats.stride} samples of stream; "
        "accepted scores " + ", ".join(f"{a.name} [{a.lo:.2f}, {a.hi:.2f}]" for a in stats.areas))
    return FitMonitor(stats, telemetry)
