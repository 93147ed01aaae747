"""Electrode layouts: which stream channel belongs to which Utah array and visual area.

A layout maps every channel of the MUA stream (in stream order) to an array and an area
(V1, V4 or IT), marks channels that are not used (broken arrays, unreliable electrodes) and may
carry known receptive-field (RF) centres.

RF coordinates are image-normalised: x to the right, y downwards, (0, 0) the top-left corner
and (1, 1) the bottom-right corner of the decoded image; NaN where unknown.

Built-in presets follow TVSD (Papale et al.): monkey N (arrays 1-8 V1 with array 6 broken,
9-12 V4, 13-16 IT) and monkey F (V1 1-512, IT 513-832, V4 833-1024). A rig's own layout comes
from a small JSON (or YAML, if PyYAML is installed) file, see `ElectrodeLayout.from_dict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LayoutError

AREAS = ("V1", "V4", "IT")


@dataclass(frozen=True, eq=False)
class ElectrodeLayout:
    """Channel -> array -> area map of a recording, in stream channel order."""

    name: str
    arrays: np.ndarray  # int [C] array id per channel
    areas: tuple[str, ...]  # area per channel
    usable: np.ndarray  # bool [C]; False for broken arrays / excluded electrodes
    rf_centres: np.ndarray | None = None  # float [C, 2] (x, y) image-normalised, NaN unknown
    rf_sigmas: np.ndarray | None = None  # float [C] image-normalised, NaN unknown
    broken_arrays: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.areas)
        if n == 0:
            raise LayoutError(f"layout {self.name!r} has no channels")
        arrays = np.asarray(self.arrays)
        usable = np.asarray(self.usable)
        if arrays.shape != (n,):
            raise LayoutError(f"layout {self.name!r}: {arrays.shape[0]} array ids for {n} channels")
        if usable.shape != (n,) or usable.dtype != bool:
            raise LayoutError(f"layout {self.name!r}: 'usable' must be {n} booleans")
        bad = sorted({a for a in self.areas if a not in AREAS})
        if bad:
            raise LayoutError(f"layout {self.name!r}: unknown area(s) {bad}; expected one of {AREAS}")
        if self.rf_centres is not None and np.shape(self.rf_centres) != (n, 2):
            raise LayoutError(
                f"layout {self.name!r}: rf_centres must have shape ({n}, 2), got {np.shape(self.rf_centres)}"
            )
        if self.rf_sigmas is not None and np.shape(self.rf_sigmas) != (n,):
            raise LayoutError(
                f"layout {self.name!r}: rf_sigmas must have shape ({n},), got {np.shape(self.rf_sigmas)}"
            )
        if not usable.any():
            raise LayoutError(f"layout {self.name!r}: no usable channel")

    # ---- queries -------------------------------------------------------------------------
    @property
    def n_channels(self) -> int:
        """Channels in the stream (used or not)."""
        return len(self.areas)

    @property
    def used_channels(self) -> np.ndarray:
        """Stream indices of the channels the decoder reads (its electrode axis, in order)."""
        return np.flatnonzero(self.usable)

    @property
    def n_electrodes(self) -> int:
        """Electrodes the decoder reads (= len(used_channels))."""
        return int(self.usable.sum())

    def electrode_areas(self) -> np.ndarray:
        """Area name per decoder electrode (used channels only)."""
        return np.asarray(self.areas, dtype=object)[self.used_channels]

    def electrode_arrays(self) -> np.ndarray:
        """Array id per decoder electrode (used channels only)."""
        return np.asarray(self.arrays)[self.used_channels]

    def areas_present(self) -> tuple[str, ...]:
        """Areas with at least one used electrode, in V1, V4, IT order."""
        present = set(self.electrode_areas())
        return tuple(a for a in AREAS if a in present)

    def arrays_present(self) -> tuple[int, ...]:
        """Array ids with at least one used electrode, in stream order of first appearance."""
        seen: list[int] = []
        for a in self.electrode_arrays():
            if int(a) not in seen:
                seen.append(int(a))
        return tuple(seen)

    def area_of_array(self, array_id: int) -> str:
        idx = np.flatnonzero(np.asarray(self.arrays) == array_id)
        if idx.size == 0:
            raise LayoutError(f"layout {self.name!r} has no array {array_id}")
        return self.areas[int(idx[0])]

    def with_rf(self, centres: np.ndarray, sigmas: np.ndarray | None = None) -> ElectrodeLayout:
        """A copy with RF centres (and widths) set, e.g. from TVSD's THINGS_RFs.mat."""
        return ElectrodeLayout(
            self.name, self.arrays, self.areas, self.usable,
            np.asarray(centres, dtype=np.float64),
            None if sigmas is None else np.asarray(sigmas, dtype=np.float64),
            self.broken_arrays,
        )

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Compact form: arrays with their channel lists, plus per-channel extras."""
        arrays_out = []
        arr = np.asarray(self.arrays)
        for a in dict.fromkeys(int(x) for x in arr):
            ch = np.flatnonzero(arr == a)
            arrays_out.append({
                "id": a,
                "area": self.areas[int(ch[0])],
                "channels": _compress(ch),
                "broken": a in self.broken_arrays,
            })
        excluded = [int(c) for c in np.flatnonzero(~self.usable)
                    if int(arr[c]) not in self.broken_arrays]
        d: dict[str, Any] = {"name": self.name, "n_channels": self.n_channels,
                             "arrays": arrays_out, "excluded_channels": excluded}
        if self.rf_centres is not None:
            d["rf_centres"] = [[_num(x), _num(y)] for x, y in np.asarray(self.rf_centres)]
        if self.rf_sigmas is not None:
            d["rf_sigmas"] = [_num(s) for s in np.asarray(self.rf_sigmas)]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "layout") -> ElectrodeLayout:
        """Build and validate a layout from its dict form.

        {"name": "rig-a", "n_channels": 128,
         "arrays": [{"id": 1, "area": "V1", "channels": [[0, 63]]},      # inclusive ranges
                    {"id": 2, "area": "V4", "channels": [64, 65, 66, ...], "broken": false}],
         "excluded_channels": [5, 17],                                   # optional
         "rf_centres": [[x, y], ...], "rf_sigmas": [s, ...]}             # optional, per channel
        """
        if not isinstance(d, dict):
            raise LayoutError(f"{source}: expected a mapping, got {type(d).__name__}")
        known = {"name", "n_channels", "arrays", "excluded_channels", "rf_centres", "rf_sigmas"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise LayoutError(f"{source}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        if "arrays" not in d or not d["arrays"]:
            raise LayoutError(f"{source}: 'arrays' is missing or empty")
        entries = []
        for i, a in enumerate(d["arrays"]):
            for key in ("id", "area", "channels"):
                if key not in a:
                    raise LayoutError(f"{source}: arrays[{i}] has no {key!r}")
            if a["area"] not in AREAS:
                raise LayoutError(f"{source}: arrays[{i}] area {a['area']!r} is not one of {AREAS}")
            entries.append((int(a["id"]), a["area"], _expand(a["channels"], f"{source}: arrays[{i}]"),
                            bool(a.get("broken", False))))
        n = int(d.get("n_channels", 1 + max(int(c.max()) for _, _, c, _ in entries)))
        arrays = np.full(n, -1, dtype=np.int64)
        areas: list[str | None] = [None] * n
        usable = np.ones(n, dtype=bool)
        broken = []
        for aid, area, ch, is_broken in entries:
            if ch.min() < 0 or ch.max() >= n:
                raise LayoutError(f"{source}: array {aid} names channel {int(ch.max())} but n_channels is {n}")
            clash = ch[arrays[ch] != -1]
            if clash.size:
                raise LayoutError(f"{source}: channel {int(clash[0])} belongs to two arrays")
            arrays[ch] = aid
            for c in ch:
                areas[int(c)] = area
            if is_broken:
                usable[ch] = False
                broken.append(aid)
        missing = np.flatnonzero(arrays == -1)
        if missing.size:
            raise LayoutError(
                f"{source}: channel(s) {missing[:5].tolist()}{'...' if missing.size > 5 else ''} "
                f"belong to no array; every one of the {n} stream channels needs one"
            )
        for c in d.get("excluded_channels", []):
            if not 0 <= int(c) < n:
                raise LayoutError(f"{source}: excluded channel {c} is outside 0..{n - 1}")
            usable[int(c)] = False
        rf = d.get("rf_centres")
        rfc = None if rf is None else np.array([[_float(v) for v in p] for p in rf], dtype=np.float64)
        rs = d.get("rf_sigmas")
        rfs = None if rs is None else np.array([_float(v) for v in rs], dtype=np.float64)
        return cls(str(d.get("name", source)), arrays, tuple(areas), usable, rfc, rfs,  # type: ignore[arg-type]
                   tuple(broken))

    @classmethod
    def from_json(cls, text: str, *, source: str = "layout") -> ElectrodeLayout:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise LayoutError(f"{source}: not valid JSON ({e})") from e
        return cls.from_dict(d, source=source)

    @classmethod
    def from_file(cls, path: str | Path) -> ElectrodeLayout:
        """Load a rig layout from .json, or .yaml/.yml when PyYAML is installed."""
        path = Path(path)
        if not path.exists():
            raise LayoutError(f"layout file {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as e:
                raise LayoutError(f"{path}: YAML layouts need PyYAML (pip install pyyaml), or use JSON") from e
            return cls.from_dict(yaml.safe_load(text), source=str(path))
        return cls.from_json(text, source=str(path))


def tvsd_monkey_n() -> ElectrodeLayout:
    """TVSD monkey N: arrays 1-8 V1 (array 6 broken), 9-12 V4, 13-16 IT; 64 channels each."""
    return _tvsd("tvsd-monkey-N", {**{a: "V1" for a in range(1, 9)}, **{a: "V4" for a in range(9, 13)},
                                   **{a: "IT" for a in range(13, 17)}}, broken=(6,))


def tvsd_monkey_f() -> ElectrodeLayout:
    """TVSD monkey F: V1 channels 1-512 (arrays 1-8), IT 513-832 (9-13), V4 833-1024 (14-16)."""
    return _tvsd("tvsd-monkey-F", {**{a: "V1" for a in range(1, 9)}, **{a: "IT" for a in range(9, 14)},
                                   **{a: "V4" for a in range(14, 17)}}, broken=())


PRESETS = {"monkey-N": tvsd_monkey_n, "monkey-F": tvsd_monkey_f}


def load_layout(spec: str | Path) -> ElectrodeLayout:
    """A preset name (monkey-N, monkey-F) or a path to a JSON/YAML layout file."""
    if str(spec) in PRESETS:
        return PRESETS[str(spec)]()
    p = Path(spec)
    if p.suffix.lower() in (".json", ".yaml", ".yml") or p.exists():
        return ElectrodeLayout.from_file(p)
    raise LayoutError(f"layout {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a file")


def _tvsd(name: str, area_of: dict[int, str], broken: tuple[int, ...]) -> ElectrodeLayout:
    arrays = np.repeat(np.arange(1, 17), 64)
    areas = tuple(area_of[int(a)] for a in arrays)
    usable = ~np.isin(arrays, broken)
    return ElectrodeLayout(name, arrays, areas, usable, None, None, broken)


def _expand(spec: Any, where: str) -> np.ndarray:
    """Channel list from ints and inclusive [lo, hi] ranges."""
    out: list[int] = []
    if not isinstance(spec, list) or not spec:
        raise LayoutError(f"{where}: 'channels' must be a non-empty list of indices or [lo, hi] ranges")
    for item in spec:
        if isinstance(item, list):
            if len(item) != 2 or item[0] > item[1]:
                raise LayoutError(f"{where}: channel range {item} must be [lo, hi] with lo <= hi")
            out.extend(range(int(item[0]), int(item[1]) + 1))
        else:
            out.append(int(item))
    ch = np.asarray(out, dtype=np.int64)
    if np.unique(ch).size != ch.size:
        raise LayoutError(f"{where}: a channel is listed twice")
    return ch


def _compress(ch: np.ndarray) -> list:
    """Inclusive ranges for runs of consecutive channels."""
    out: list = []
    start = prev = int(ch[0])
    for c in map(int, ch[1:]):
        if c == prev + 1:
            prev = c
            continue
        out.append([start, prev] if prev > start else start)
        start = prev = c
    out.append([start, prev] if prev > start else start)
    return out


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def check_channels(layout: ElectrodeLayout, n_channels: int, where: str) -> None:
    """LayoutError naming `where` when a recording's channel count differs from the layout's."""
    if layout.n_channels != n_channels:
        raise LayoutError(f"{where} has {n_channels} channels but the layout {layout.name!r} has "
                          f"{layout.n_channels}; pass a layout that matches the recording")
