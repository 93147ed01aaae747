"""Time windows: which samples and electrodes feed each input map of the decoder.

Shared by training (offline, onset-locked) and serving (online, sliding), so the windows a
model was trained on and the windows it is served are the same by construction.

A *map* is one input channel of the decoder: an electrode group (an area, or one array) read
over one time window [start, start + length) ms after the reference time, averaged over time.
The decoder input for one reference time is `x[M, E]` (maps x used electrodes): x[m, e] is
electrode e's mean over map m's window when e belongs to map m's group, else 0.

Presets (MonkeySee, Le et al. 2024):
- "spatiotemporal": 3 areas x 5 windows of 27 ms shifted by 26 ms; V1 from 0 ms, V4 from
  33 ms, IT from 66 ms (15 maps when all three areas are present).
- "spatial": one long window per area (133 ms; V1 0-133, V4 33-166, IT 66-199), one map per
  array (7 V1 + 4 V4 + 4 IT = 15 maps for TVSD monkey N).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .layout import ElectrodeLayout

AREA_OFFSET_MS = {"V1": 0.0, "V4": 33.0, "IT": 66.0}
MAX_RUNS = 8  # WindowAssembler: used channels in at most this many runs are copied as slices


@dataclass(frozen=True)
class MapSpec:
    """One decoder input map: electrode group x time window (ms after the reference time)."""

    name: str
    group: str  # "area:V1" or "array:3"
    start_ms: float
    length_ms: float

    def group_kind_and_key(self) -> tuple[str, str]:
        kind, _, key = self.group.partition(":")
        if kind not in ("area", "array") or not key:
            raise ConfigError(f"map {self.name!r}: group {self.group!r} must be 'area:<V1|V4|IT>' or 'array:<id>'")
        return kind, key


@dataclass(frozen=True)
class WindowPlan:
    """The ordered maps of a decoder and the sampling rate that turns ms into samples."""

    maps: tuple[MapSpec, ...]
    sampling_rate_hz: float
    preset: str = "custom"

    def __post_init__(self) -> None:
        if not self.maps:
            raise ConfigError("a window plan needs at least one map")
        if not self.sampling_rate_hz > 0:
            raise ConfigError(f"sampling_rate_hz must be > 0, got {self.sampling_rate_hz}")
        for m in self.maps:
            m.group_kind_and_key()
            if m.start_ms < 0 or m.length_ms <= 0:
                raise ConfigError(f"map {m.name!r}: start_ms must be >= 0 and length_ms > 0")
            if self.samples(m)[1] <= self.samples(m)[0]:
                raise ConfigError(f"map {m.name!r}: window shorter than one sample at {self.sampling_rate_hz} Hz")

    @property
    def n_maps(self) -> int:
        return len(self.maps)

    def samples(self, m: MapSpec) -> tuple[int, int]:
        """[first, stop) sample offsets of a map's window from the reference sample."""
        fs = self.sampling_rate_hz / 1000.0
        s0 = int(round(m.start_ms * fs))
        s1 = int(round((m.start_ms + m.length_ms) * fs))
        return s0, s1

    @property
    def span(self) -> int:
        """Samples needed from the reference sample on (inclusive of it) to fill every map."""
        return max(self.samples(m)[1] for m in self.maps)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, "sampling_rate_hz": self.sampling_rate_hz,
                "maps": [asdict(m) for m in self.maps]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowPlan:
        try:
            maps = tuple(MapSpec(str(m["name"]), str(m["group"]), float(m["start_ms"]), float(m["length_ms"]))
                         for m in d["maps"])
            return cls(maps, float(d["sampling_rate_hz"]), str(d.get("preset", "custom")))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"window plan is missing {e}; expected maps[name, group, start_ms, length_ms] "
                              "and sampling_rate_hz") from e


def spatiotemporal_plan(layout: ElectrodeLayout, sampling_rate_hz: float = 1000.0, *,
                        n_windows: int = 5, length_ms: float = 27.0, shift_ms: float = 26.0) -> WindowPlan:
    """The paper's 3 areas x 5 windows of 27 ms shifted by 26 ms (areas absent from the layout skipped)."""
    maps = tuple(
        MapSpec(f"{area}_w{k}", f"area:{area}", AREA_OFFSET_MS[area] + k * shift_ms, length_ms)
        for area in layout.areas_present() for k in range(n_windows)
    )
    return WindowPlan(maps, sampling_rate_hz, "spatiotemporal")


def spatial_plan(layout: ElectrodeLayout, sampling_rate_hz: float = 1000.0, *,
                 length_ms: float = 133.0) -> WindowPlan:
    """The paper's spatial model: one map per used array over its area's long window."""
    maps = tuple(
        MapSpec(f"array{a}", f"array:{a}", AREA_OFFSET_MS[layout.area_of_array(a)], length_ms)
        for a in layout.arrays_present()
    )
    return WindowPlan(maps, sampling_rate_hz, "spatial")


PLAN_PRESETS = {"spatiotemporal": spatiotemporal_plan, "spatial": spatial_plan}


def make_plan(preset: str, layout: ElectrodeLayout, sampling_rate_hz: float = 1000.0) -> WindowPlan:
    if preset not in PLAN_PRESETS:
        raise ConfigError(f"window preset {preset!r} is unknown; expected one of {sorted(PLAN_PRESETS)}")
    return PLAN_PRESETS[preset](layout, sampling_rate_hz)


def map_mask(plan: WindowPlan, layout: ElectrodeLayout) -> np.ndarray:
    """bool [M, E]: which decoder electrodes feed each map."""
    areas = layout.electrode_areas()
    arrays = layout.electrode_arrays()
    mask = np.zeros((plan.n_maps, layout.n_electrodes), dtype=bool)
    for i, m in enumerate(plan.maps):
        kind, key = m.group_kind_and_key()
        mask[i] = (areas == key) if kind == "area" else (arrays == int(key))
        if not mask[i].any():
            raise ConfigError(f"map {m.name!r}: no electrode of the layout {layout.name!r} is in {m.group}")
    return mask


class WindowAssembler:
    """Turns a block of raw samples [span, C] (reference sample first) into decoder maps [M, E].

    Allocation-free per call: scratch buffers are made once. Not thread-safe (one per thread).

    Per map, the time sum runs only over the channel range its group spans (an area is a third
    to a half of the channels), into one [M, C] scratch; then the used channels times the
    precomputed [M, E] scale (mask / window length) fill `out` in one multiply per run of
    consecutive used channels (or a gather and one multiply). Two numpy calls fewer per map than
    sum -> take -> scale per map, and the same float32 operations in the same order, so the same
    values for finite samples. A NaN/Inf sample reaches the maps whose channel range holds its
    channel (masked entries included), not every map; after normalisation and the service's
    NaN -> 0 the maps are the same.
    """

    def __init__(self, plan: WindowPlan, layout: ElectrodeLayout):
        self.plan = plan
        self.layout = layout
        self.mask = map_mask(plan, layout)
        self._fmask = self.mask.astype(np.float32)
        self._bounds = [plan.samples(m) for m in plan.maps]
        self._inv_len = np.array([1.0 / (s1 - s0) for s0, s1 in self._bounds], dtype=np.float32)
        self._used = np.asarray(layout.used_channels, dtype=np.intp)
        # mask / length per map, as float32 like the per-map product it replaces
        self._scale = np.stack([self._fmask[i] * self._inv_len[i] for i in range(plan.n_maps)]).astype(np.float32)
        # channel range [c0, c1) holding every used channel of each map's group
        self._cols: list[tuple[int, int]] = []
        for i in range(plan.n_maps):
            ch = self._used[self.mask[i]]
            self._cols.append((int(ch.min()), int(ch.max()) + 1))
        # scratch [M, C]: sums outside a map's channel range stay 0 (they are never written)
        self._sum = np.zeros((plan.n_maps, layout.n_channels), dtype=np.float32)
        self._rows = [(s0, s1, c0, c1, self._sum[i, c0:c1])
                      for i, ((s0, s1), (c0, c1)) in enumerate(zip(self._bounds, self._cols, strict=True))]
        # used channels as runs of consecutive channels: (channel start, electrode start, length)
        brk = np.flatnonzero(np.diff(self._used) != 1) + 1
        starts = np.r_[0, brk]
        stops = np.r_[brk, self._used.size]
        self._runs = [(int(self._used[a]), int(a), int(b - a)) for a, b in zip(starts, stops, strict=True)]
        # maps in the order their windows complete (for assemble_ready)
        self.ready_order = tuple(sorted(range(plan.n_maps), key=lambda i: (self._bounds[i][1], i)))
        self.ready_stops = tuple(self._bounds[i][1] for i in self.ready_order)

    @property
    def span(self) -> int:
        return self.plan.span

    @property
    def shape(self) -> tuple[int, int]:
        return self.plan.n_maps, self.layout.n_electrodes

    def assemble(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """block: float32 [>= span, C] starting at the reference sample; returns/fills out [M, E]."""
        if block.ndim != 2 or block.shape[1] != self.layout.n_channels:
            raise ConfigError(f"window block must be [samples, {self.layout.n_channels}] channels, got {block.shape}")
        if block.shape[0] < self.span:
            raise ConfigError(f"window block has {block.shape[0]} samples; this plan needs {self.span}")
        if out is None:
            out = np.empty(self.shape, dtype=np.float32)
        reduce = np.add.reduce
        for s0, s1, c0, c1, dest in self._rows:
            reduce(block[s0:s1, c0:c1], axis=0, out=dest)
        if len(self._runs) <= MAX_RUNS:  # a few slices beat one gather
            for c0, e0, n in self._runs:
                np.multiply(self._sum[:, c0:c0 + n], self._scale[:, e0:e0 + n], out=out[:, e0:e0 + n])
        else:
            np.take(self._sum, self._used, axis=1, out=out)
            np.multiply(out, self._scale, out=out)
        return out

    def assemble_ready(self, block: np.ndarray, out: np.ndarray, done: int = 0, available: int | None = None) -> int:
        """Incremental assembly: fill the maps whose windows lie within the first `available` rows.

        Maps are taken in `ready_order` (by window end); the first `done` of them are already
        in `out` and are not touched. Returns the new `done` (== n_maps when `out` is complete).
        Each map gets exactly the values `assemble` gives it, so a window assembled in several
        calls as its samples arrive equals one assembled at once. block: float32 [>= available, C]
        starting at the reference sample; available defaults to block's length.
        """
        if block.ndim != 2 or block.shape[1] != self.layout.n_channels:
            raise ConfigError(f"window block must be [samples, {self.layout.n_channels}] channels, got {block.shape}")
        avail = block.shape[0] if available is None else min(int(available), block.shape[0])
        n = len(self.ready_order)
        reduce = np.add.reduce
        few = len(self._runs) <= MAX_RUNS
        while done < n and self.ready_stops[done] <= avail:
            i = self.ready_order[done]
            s0, s1, c0, c1, dest = self._rows[i]
            reduce(block[s0:s1, c0:c1], axis=0, out=dest)
            row, scale, summed = out[i], self._scale[i], self._sum[i]
            if few:
                for r0, e0, k in self._runs:
                    np.multiply(summed[r0:r0 + k], scale[e0:e0 + k], out=row[e0:e0 + k])
            else:
                np.take(summed, self._used, out=row)
                np.multiply(row, scale, out=row)
            done += 1
        return done

    def assemble_many(self, mua: np.ndarray, ref_samples: np.ndarray) -> np.ndarray:
        """Offline: maps for each reference sample index of a recording mua [T, C] -> [N, M, E]."""
        out = np.empty((len(ref_samples),) + self.shape, dtype=np.float32)
        for j, t in enumerate(np.asarray(ref_samples, dtype=np.int64)):
            if t < 0 or t + self.span > mua.shape[0]:
                raise ConfigError(f"reference sample {t} needs samples up to {t + self.span}, recording has {mua.shape[0]}")
            self.assemble(np.asarray(mua[t:t + self.span], dtype=np.float32), out[j])
        return out


class Normaliser:
    """Per-map, per-electrode z-scoring with statistics stored in the model; masked entries stay 0.

    Applied in place: x = (x - mean) * (mask / std). Statistics are computed on training maps.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, mask: np.ndarray):
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        if mean.shape != mask.shape or std.shape != mask.shape:
            raise ConfigError(f"normalisation statistics must have shape {mask.shape}, got {mean.shape} and {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ConfigError("normalisation statistics must be finite with std > 0")
        self.mean = mean
        self.std = std
        self._scale = (mask.astype(np.float32) / std).astype(np.float32)

    @classmethod
    def fit(cls, maps: np.ndarray, mask: np.ndarray, min_std: float = 1e-6) -> Normaliser:
        """Statistics from training maps [N, M, E]."""
        mean = maps.mean(axis=0)
        std = np.maximum(maps.std(axis=0), min_std)
        mean[~mask] = 0.0
        std[~mask] = 1.0
        return cls(mean, std, mask)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalise [..., M, E] in place and return it."""
        np.subtract(x, self.mean, out=x)
        np.multiply(x, self._scale, out=x)
        return x
