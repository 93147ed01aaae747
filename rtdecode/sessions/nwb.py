"""NWB (Neurodata Without Borders) files as sessions: MUA, channel layout, stimulus onsets, images.

`open_nwb(path)` reads what rtdecode needs from an NWB 2.x file (via pynwb, the optional `nwb`
extra) into an `NWBSession`; `nwb_recording(path)` turns it into a `Recording` for playback and
`rtdecode.training.data.load_nwb_trials` into training trials. What is read, and how it is chosen:

  MUA       an ElectricalSeries or TimeSeries with 2-D data [time, channels] under /acquisition or
            /processing/<module>. `series` picks it by name ("MUA") or path
            ("processing/ecephys/MUA"); without it the only 2-D series is used, else the one named
            "MUA"; several candidates and none named so is an error listing them. `conversion`,
            `offset` (and an ElectricalSeries' `channel_conversion`) are applied. Timing comes from
            `rate` (+ `starting_time`) or from `timestamps` (rate = 1 / median interval).
  layout    `layout` when given; else an ElectricalSeries' electrode table rows, in the series'
            channel order: area from the row's `location` (or its group's), which must name V1, V4
            or IT; array = the electrode group (numbered 1.. in order of first appearance); optional
            columns `usable` (bool) or `bad` (bool) and `rf_x`, `rf_y` (image-normalised RF centre).
            A plain TimeSeries of 1024 channels without a layout is read as TVSD monkey N.
  onsets    a TimeIntervals table (`trials`, `epochs` or any other under /intervals or a processing
            module) with an image column: `image_index` (int, index into the images), `image`,
            `image_id` or `stimulus` (int, or str = an image's name). start_time is the onset,
            stop_time the offset. `intervals` picks the table by name; without it the only table
            with an image column is used (`trials` when several have one).
  images    a stimulus template (/stimulus/templates): an `Images` container (RGB/RGBA/grayscale
            images, indexed by `order_of_images` when present, else by name in natural order) or an
            ImageSeries/OpticalSeries with data [K, H, W(, 3)] or `external_file` paths (relative to
            the NWB file). `images` picks it by name; optional for playback, needed for training.

Every error names the file, the NWB object and what was expected. pynwb is imported only here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, LayoutError, SessionError
from ..layout import AREAS, ElectrodeLayout, load_layout, tvsd_monkey_n
from .recording import Block, Recording, offset_marker, onset_marker

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image_index", "image", "image_id", "stimulus")
PREFERRED_SERIES = "MUA"
PREFERRED_INTERVALS = "trials"
CHUNK = 1000


def import_pynwb():
    """pynwb, or a ConfigError saying which extra installs it."""
    try:
        import pynwb
    except ImportError as e:
        raise ConfigError("reading and writing NWB files needs pynwb: pip install 'rtdecode[nwb]' "
                          f"({type(e).__name__}: {e})") from e
    return pynwb


@dataclass
class NWBSession:
    """What rtdecode reads from an NWB file; MUA stays on disk (read through `mua_reader`)."""

    path: Path
    series_path: str  # "acquisition/MUA" or "processing/<module>/<name>"
    data_path: str  # the HDF5 dataset of the series' data
    layout: ElectrodeLayout
    sampling_rate_hz: float
    n_samples: int
    timestamps: np.ndarray | None  # float64 [T] when the series has explicit timestamps
    starting_time: float
    scale: np.ndarray | float  # conversion (x channel_conversion) applied to the raw data
    offset: float
    onset: np.ndarray  # int64 [N] sample of each stimulus onset
    offset_sample: np.ndarray  # int64 [N]
    image_index: np.ndarray  # int64 [N]
    trial_ids: np.ndarray  # int64 [N] row of the intervals table
    intervals_path: str | None
    images: list[np.ndarray] | None  # uint8 [H, W, 3] each, in index order
    image_names: list[str] | None = None
    images_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_channels(self) -> int:
        return self.layout.n_channels

    @property
    def n_trials(self) -> int:
        return int(self.onset.size)

    def image_array(self) -> np.ndarray | None:
        """uint8 [K, H, W, 3] when every image has one size, else None."""
        if not self.images:
            return None
        if len({im.shape for im in self.images}) != 1:
            return None
        return np.stack(self.images)

    def mua_reader(self) -> MUAReader:
        """An open, sliceable [T, C] float32 view of the MUA (close it, or use it as a context)."""
        return MUAReader(self)


class MUAReader:
    """Slices of the series' data as float32 with NWB's conversion/offset applied; h5py underneath."""

    def __init__(self, session: NWBSession):
        import h5py

        self._f = h5py.File(session.path, "r")
        self._ds = self._f[session.data_path]
        self._scale = session.scale
        self._offset = session.offset
        self.shape = (session.n_samples, session.n_channels)

    def __getitem__(self, key: Any) -> np.ndarray:
        x = np.asarray(self._ds[key], dtype=np.float32)
        if not (np.isscalar(self._scale) and self._scale == 1.0):
            x = x * np.asarray(self._scale, dtype=np.float32)
        if self._offset:
            x = x + np.float32(self._offset)
        return x

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> MUAReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- opening ----------------------------------------------------------------------------------
def open_nwb(path: str | Path, *, series: str | None = None, intervals: str | None = None,
             images: str | None = None, layout: str | Path | ElectrodeLayout | None = None,
             need_images: bool = False, need_onsets: bool = False) -> NWBSession:
    """Read an NWB file's MUA series, layout, onsets and stimulus images (see the module docstring)."""
    pynwb = import_pynwb()
    path = Path(path)
    if not path.exists():
        raise SessionError(f"NWB file {path} does not exist")
    try:
        io = pynwb.NWBHDF5IO(str(path), "r")
    except Exception as e:  # h5py OSError, hdmf errors: not an NWB file
        raise SessionError(f"{path}: not a readable NWB file ({type(e).__name__}: {e})") from e
    try:
        try:
            nwb = io.read()
        except Exception as e:
            raise SessionError(f"{path}: not a readable NWB file ({type(e).__name__}: {e})") from e
        spath, ts_obj = _pick_series(path, nwb, series)
        data = ts_obj.data
        where = f"{path}: {spath}"
        shape = tuple(getattr(data, "shape", np.shape(data)))
        if len(shape) != 2:
            raise SessionError(f"{where}: data has shape {list(shape)}; expected [time, channels]")
        if shape[0] == 0 or shape[1] == 0:
            raise SessionError(f"{where}: data has shape {list(shape)}; expected samples and channels")
        dtype = np.dtype(getattr(data, "dtype", np.asarray(data[:1]).dtype))
        if dtype.kind not in "iuf":
            raise SessionError(f"{where}: data is {dtype}; expected numbers")
        data_path = getattr(data, "name", None)
        if not isinstance(data_path, str):
            raise SessionError(f"{where}: data is not an HDF5 dataset inside the file (external link?)")
        n, c = int(shape[0]), int(shape[1])
        fs, timestamps, t0 = _timing(where, ts_obj, n)
        scale: np.ndarray | float = float(ts_obj.conversion if ts_obj.conversion is not None else 1.0)
        cc = getattr(ts_obj, "channel_conversion", None)
        if cc is not None:
            cc = np.asarray(cc[:], dtype=np.float64)
            if cc.shape != (c,):
                raise SessionError(f"{where}: channel_conversion has shape {list(cc.shape)}; expected [{c}]")
            scale = cc * scale
        offset = float(getattr(ts_obj, "offset", 0.0) or 0.0)
        lay = _layout(path, spath, ts_obj, nwb, c, layout)

        img_list, img_names, ipath = _images(path, nwb, images)
        if need_images and img_list is None:
            raise SessionError(f"{path}: no stimulus images in /stimulus/templates (expected an Images container "
                               f"or an ImageSeries); training and evaluation need the stimuli")
        tpath, table = _pick_intervals(path, nwb, intervals)
        notes: list[str] = []
        empty = np.zeros(0, dtype=np.int64)
        onset, off, img_idx, rows = empty, empty, empty, empty
        if table is None:
            if need_onsets:
                raise SessionError(f"{path}: no TimeIntervals table with an image column "
                                   f"({', '.join(IMAGE_COLUMNS)}); tables: {_list_intervals(nwb) or 'none'}")
        else:
            onset, off, img_idx, rows = _events(path, tpath, table, fs, timestamps, t0, n, img_names,
                                                None if img_list is None else len(img_list), notes)
        return NWBSession(path, spath, data_path, lay, fs, n, timestamps, t0, scale, offset, onset, off, img_idx,
                          rows, tpath, img_list, img_names, ipath, notes)
    finally:
        io.close()


def nwb_recording(path: str | Path, *, series: str | None = None, intervals: str | None = None,
                  images: str | None = None, layout: str | Path | ElectrodeLayout | None = None,
                  chunk: int = CHUNK) -> Recording:
    """NWB file -> Recording: the MUA series read `chunk` samples at a time, onset/offset markers."""
    s = open_nwb(path, series=series, intervals=intervals, images=images, layout=layout)
    events = []
    for on, off, img, trial in zip(s.onset.tolist(), s.offset_sample.tolist(), s.image_index.tolist(),
                                   s.trial_ids.tolist(), strict=True):
        events.append((on, 1, onset_marker(img, trial)))
        if off != on:
            events.append((off, 0, offset_marker(img, trial)))
    events.sort(key=lambda e: (e[0], e[1]))

    def make_blocks():
        with s.mua_reader() as mua:
            k = 0
            for start in range(0, s.n_samples, chunk):
                stop = min(s.n_samples, start + chunk)
                block_markers = []
                while k < len(events) and events[k][0] < stop:
                    block_markers.append((events[k][0] - start, events[k][2]))
                    k += 1
                yield Block(mua[start:stop], block_markers)

    name = s.series_path.rsplit("/", 1)[-1]
    rec = Recording(f"{s.path.stem}:{name}", s.layout, s.sampling_rate_hz, make_blocks, n_samples=s.n_samples,
                    images=s.image_array())
    if s.timestamps is not None:
        rec.timestamps = s.timestamps  # type: ignore[attr-defined]
    return rec


# ---- the MUA series ---------------------------------------------------------------------------
def _series_candidates(nwb: Any) -> list[tuple[str, Any]]:
    from pynwb.base import TimeSeries
    from pynwb.image import ImageSeries, IndexSeries

    out = []
    for name, obj in nwb.acquisition.items():
        if isinstance(obj, TimeSeries) and not isinstance(obj, (ImageSeries, IndexSeries)):
            out.append((f"acquisition/{name}", obj))
    for mname, module in nwb.processing.items():
        for name, obj in module.data_interfaces.items():
            if isinstance(obj, TimeSeries) and not isinstance(obj, (ImageSeries, IndexSeries)):
                out.append((f"processing/{mname}/{name}", obj))
            elif hasattr(obj, "electrical_series"):  # LFP / FilteredEphys containers
                for sname, s in obj.electrical_series.items():
                    out.append((f"processing/{mname}/{name}/{sname}", s))
    return out


def _describe_series(spath: str, obj: Any) -> str:
    shape = list(getattr(obj.data, "shape", np.shape(obj.data)))
    return f"{spath} ({type(obj).__name__}, data {shape})"


def _pick_series(path: Path, nwb: Any, query: str | None) -> tuple[str, Any]:
    cands = _series_candidates(nwb)
    listing = "; ".join(_describe_series(p, o) for p, o in cands) or "no TimeSeries at all"
    if query:
        q = query.strip("/")
        hits = [(p, o) for p, o in cands if p == q or p.rsplit("/", 1)[-1] == q]
        if not hits:
            raise SessionError(f"{path}: no MUA series named {query!r}; the file holds: {listing}")
        if len(hits) > 1:
            raise SessionError(f"{path}: several series are named {query!r}: "
                               f"{'; '.join(_describe_series(p, o) for p, o in hits)}; give its full path")
        return hits[0]
    two_d = [(p, o) for p, o in cands if len(getattr(o.data, "shape", np.shape(o.data))) == 2]
    if len(two_d) == 1:
        return two_d[0]
    if not two_d:
        raise SessionError(f"{path}: no MUA series (an ElectricalSeries or TimeSeries with data [time, channels] "
                           f"under acquisition or processing); the file holds: {listing}")
    named = [(p, o) for p, o in two_d if p.rsplit("/", 1)[-1] == PREFERRED_SERIES]
    if len(named) == 1:
        return named[0]
    raise SessionError(f"{path}: several series could be the MUA: "
                       f"{'; '.join(_describe_series(p, o) for p, o in two_d)}; choose one by name or path "
                       f"(--nwb-series)")


def _timing(where: str, ts_obj: Any, n: int) -> tuple[float, np.ndarray | None, float]:
    """(sampling rate, timestamps or None, starting time)."""
    rate = getattr(ts_obj, "rate", None)
    if rate is not None:
        if not float(rate) > 0:
            raise SessionError(f"{where}: rate is {rate}; expected > 0 Hz")
        return float(rate), None, float(ts_obj.starting_time or 0.0)
    ts = getattr(ts_obj, "timestamps", None)
    if ts is None:
        raise SessionError(f"{where}: has neither rate nor timestamps")
    ts = np.asarray(ts[:], dtype=np.float64)
    if ts.shape != (n,):
        raise SessionError(f"{where}: {ts.shape[0] if ts.ndim else 0} timestamps for {n} samples; expected one "
                           f"per sample")
    if n < 2:
        raise SessionError(f"{where}: one sample and no rate; expected a regular series")
    d = np.diff(ts)
    if not np.all(np.isfinite(ts)) or np.any(d <= 0):
        bad = int(np.flatnonzero(~(d > 0))[0]) + 1 if np.any(~(d > 0)) else 0
        raise SessionError(f"{where}: timestamps are not finite and increasing (sample {bad}); "
                           f"expected increasing seconds")
    step = float(np.median(d))
    gaps = int(np.count_nonzero(d > 1.5 * step))
    if gaps:
        log.warning("%s: %d gap(s) in the timestamps; played at the median rate %.2f Hz", where, gaps, 1 / step)
    return 1.0 / step, ts, float(ts[0])


# ---- layout -----------------------------------------------------------------------------------
_AREA_RE = re.compile(r"(?<![A-Za-z0-9])(V1|V4|IT)(?![A-Za-z0-9])", re.IGNORECASE)


def _area_of(text: str) -> str | None:
    found = {m.upper() for m in _AREA_RE.findall(str(text))}
    return found.pop() if len(found) == 1 else None


def _layout(path: Path, spath: str, ts_obj: Any, nwb: Any, n_channels: int,
            layout: str | Path | ElectrodeLayout | None) -> ElectrodeLayout:
    where = f"{path}: {spath}"
    if isinstance(layout, ElectrodeLayout):
        lay = layout
    elif layout is not None:
        lay = load_layout(layout)
    else:
        region = getattr(ts_obj, "electrodes", None)
        if region is not None:
            lay = _layout_from_electrodes(path, spath, region, n_channels)
        elif n_channels == 1024:
            log.info("%s: 1024 channels and no electrode table: using TVSD monkey N", where)
            lay = tvsd_monkey_n()
        else:
            raise SessionError(f"{where}: {n_channels} channels and no electrode table (a plain TimeSeries); "
                               f"give a layout with --layout (monkey-N, monkey-F or a JSON file)")
    if lay.n_channels != n_channels:
        raise LayoutError(f"{where}: layout {lay.name!r} has {lay.n_channels} channels but the series has "
                          f"{n_channels}")
    return lay


def _layout_from_electrodes(path: Path, spath: str, region: Any, n_channels: int) -> ElectrodeLayout:
    """Channel order from the series' electrode region; areas from location; arrays from groups."""
    where = f"{path}: {spath}.electrodes"
    rows = np.asarray(region.data[:], dtype=np.int64)
    if rows.shape != (n_channels,):
        raise SessionError(f"{where}: {rows.size} electrode rows for {n_channels} channels; expected one per channel")
    table = region.table
    cols = set(table.colnames)
    n_rows = len(table)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise SessionError(f"{where}: names electrode row {int(rows.max())} but the electrodes table has "
                           f"{n_rows} rows")
    locations = [str(x) for x in table["location"][:]] if "location" in cols else [""] * n_rows
    groups = table["group"][:] if "group" in cols else [None] * n_rows
    group_names = [getattr(g, "name", None) or "" for g in groups]
    group_locs = [str(getattr(g, "location", "") or "") for g in groups]
    areas, arrays = [], []
    array_ids: dict[str, int] = {}
    for ch, r in enumerate(rows.tolist()):
        area = _area_of(locations[r]) or _area_of(group_locs[r])
        if area is None:
            raise SessionError(f"{where}: electrode row {r} (channel {ch}) has location {locations[r]!r} "
                               f"(group {group_names[r]!r}: {group_locs[r]!r}); expected one of {AREAS}, "
                               f"or give a layout with --layout")
        areas.append(area)
        arrays.append(array_ids.setdefault(group_names[r] or f"area-{area}", len(array_ids) + 1))
    usable = np.ones(n_channels, dtype=bool)
    if "usable" in cols:
        usable = np.asarray(table["usable"][:], dtype=bool)[rows]
    elif "bad" in cols:
        usable = ~np.asarray(table["bad"][:], dtype=bool)[rows]
    rf = None
    if "rf_x" in cols and "rf_y" in cols:
        rf = np.stack([np.asarray(table["rf_x"][:], dtype=np.float64)[rows],
                       np.asarray(table["rf_y"][:], dtype=np.float64)[rows]], axis=1)
    try:
        return ElectrodeLayout(f"{path.stem}:electrodes", np.asarray(arrays, dtype=np.int64), tuple(areas),
                               usable, rf)
    except LayoutError as e:
        raise SessionError(f"{where}: {e}") from e


# ---- onsets -----------------------------------------------------------------------------------
def _interval_candidates(nwb: Any) -> list[tuple[str, Any]]:
    from pynwb.epoch import TimeIntervals

    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for label, t in (("trials", nwb.trials), ("epochs", nwb.epochs)):
        if t is not None:
            out.append((f"intervals/{label}", t))
            seen.add(id(t))
    for name, t in (nwb.intervals or {}).items():
        if id(t) not in seen:
            out.append((f"intervals/{name}", t))
            seen.add(id(t))
    for mname, module in nwb.processing.items():
        for name, obj in module.data_interfaces.items():
            if isinstance(obj, TimeIntervals) and id(obj) not in seen:
                out.append((f"processing/{mname}/{name}", obj))
    return out


def _image_column(table: Any) -> str | None:
    cols = set(table.colnames)
    return next((c for c in IMAGE_COLUMNS if c in cols), None)


def _list_intervals(nwb: Any) -> str:
    return "; ".join(f"{p} (columns {list(t.colnames)})" for p, t in _interval_candidates(nwb))


def _pick_intervals(path: Path, nwb: Any, query: str | None) -> tuple[str | None, Any]:
    cands = _interval_candidates(nwb)
    if query:
        q = query.strip("/")
        hits = [(p, t) for p, t in cands if p == q or p.rsplit("/", 1)[-1] == q]
        if not hits:
            raise SessionError(f"{path}: no intervals table named {query!r}; tables: {_list_intervals(nwb) or 'none'}")
        if len(hits) > 1:
            raise SessionError(f"{path}: several intervals tables are named {query!r}: "
                               f"{', '.join(p for p, _ in hits)}; give its full path")
        tp, t = hits[0]
        if _image_column(t) is None:
            raise SessionError(f"{path}: {tp} has columns {list(t.colnames)}; expected an image column "
                               f"({', '.join(IMAGE_COLUMNS)}) saying which image each interval shows")
        return hits[0]
    usable = [(p, t) for p, t in cands if _image_column(t) is not None]
    if len(usable) == 1:
        return usable[0]
    if not usable:
        if cands:
            log.warning("%s: no intervals table has an image column (%s); no stimulus onsets. Tables: %s",
                        path, ", ".join(IMAGE_COLUMNS), _list_intervals(nwb))
        return None, None
    named = [(p, t) for p, t in usable if p.rsplit("/", 1)[-1] == PREFERRED_INTERVALS]
    if len(named) == 1:
        return named[0]
    raise SessionError(f"{path}: several intervals tables name images: {', '.join(p for p, _ in usable)}; "
                       f"choose one (--nwb-intervals)")


def _events(path: Path, tpath: str, table: Any, fs: float, timestamps: np.ndarray | None, t0: float,
            n: int, img_names: list[str] | None, n_images: int | None, notes: list[str]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Onset/offset samples, image index and table row of each interval inside the series."""
    where = f"{path}: {tpath}"
    col = _image_column(table)
    start = np.asarray(table["start_time"][:], dtype=np.float64)
    stop = np.asarray(table["stop_time"][:], dtype=np.float64) if "stop_time" in table.colnames else start.copy()
    raw = [v.item() if isinstance(v, np.generic) else v for v in table[col][:]]
    if len(raw) != start.size:
        raise SessionError(f"{where}: column {col!r} has {len(raw)} rows for {start.size} intervals")
    img = np.empty(start.size, dtype=np.int64)
    for i, v in enumerate(raw):
        if isinstance(v, (bytes, str)):
            name = v.decode() if isinstance(v, bytes) else v
            if img_names is None or name not in img_names:
                raise SessionError(f"{where}: row {i} column {col!r} names image {name!r}, which is not among the "
                                   f"stimulus images{'' if img_names is None else f' ({len(img_names)} named)'}; "
                                   f"expected an image index or name")
            img[i] = img_names.index(name)
        else:
            try:
                f = float(v)
            except (TypeError, ValueError) as e:
                raise SessionError(f"{where}: row {i} column {col!r} is {v!r}; expected an image index") from e
            if not f.is_integer() or f < 0:
                raise SessionError(f"{where}: row {i} column {col!r} is {v!r}; expected an image index >= 0")
            img[i] = int(f)
    if n_images is not None and img.size and img.max() >= n_images:
        bad = int(np.argmax(img >= n_images))
        raise SessionError(f"{where}: row {bad} shows image {int(img[bad])} but the stimulus images are "
                           f"{n_images} (0..{n_images - 1})")
    if not np.all(np.isfinite(start)):
        bad = int(np.flatnonzero(~np.isfinite(start))[0])
        raise SessionError(f"{where}: row {bad} start_time is {start[bad]}; expected seconds")
    stop = np.where(np.isfinite(stop), stop, start)
    on = _to_samples(start, fs, timestamps, t0)
    off = _to_samples(stop, fs, timestamps, t0)
    inside = (on >= 0) & (on < n)
    if not inside.all():
        msg = (f"{where}: {int((~inside).sum())} of {start.size} onsets lie outside the series "
               f"({t0:.3f}..{t0 + (n - 1) / fs:.3f} s); skipped")
        log.warning(msg)
        notes.append(msg)
    rows = np.flatnonzero(inside).astype(np.int64)
    off = np.clip(np.maximum(off, on), 0, n - 1)
    order = np.argsort(on[rows], kind="stable")
    rows = rows[order]
    return on[rows], off[rows], img[rows], rows


def _to_samples(t: np.ndarray, fs: float, timestamps: np.ndarray | None, t0: float) -> np.ndarray:
    if timestamps is None:
        return np.round((t - t0) * fs).astype(np.int64)
    i = np.clip(np.searchsorted(timestamps, t), 1, timestamps.size - 1)
    left = timestamps[i - 1]
    i = np.where(t - left <= timestamps[i] - t, i - 1, i)
    out = i.astype(np.int64)
    step = 1.0 / fs
    out[(t < timestamps[0] - step) | (t > timestamps[-1] + step)] = -1
    return out


# ---- images -----------------------------------------------------------------------------------
def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _image_candidates(nwb: Any) -> list[tuple[str, Any]]:
    from pynwb.base import Images
    from pynwb.image import ImageSeries

    return [(f"stimulus/templates/{name}", obj) for name, obj in nwb.stimulus_template.items()
            if isinstance(obj, (Images, ImageSeries))]


def _images(path: Path, nwb: Any, query: str | None) -> tuple[list[np.ndarray] | None, list[str] | None, str | None]:
    cands = _image_candidates(nwb)
    listing = ", ".join(f"{p} ({type(o).__name__})" for p, o in cands) or "none"
    if query:
        hits = [(p, o) for p, o in cands if p == query.strip("/") or p.rsplit("/", 1)[-1] == query]
        if not hits:
            raise SessionError(f"{path}: no stimulus template named {query!r}; templates: {listing}")
        ipath, obj = hits[0]
    elif not cands:
        return None, None, None
    elif len(cands) > 1:
        raise SessionError(f"{path}: several stimulus templates: {listing}; choose one (--nwb-images)")
    else:
        ipath, obj = cands[0]
    from pynwb.base import Images

    where = f"{path}: {ipath}"
    if isinstance(obj, Images):
        if obj.order_of_images is not None:
            ordered = list(obj.order_of_images.data[:])
        else:
            ordered = [obj.images[k] for k in sorted(obj.images, key=_natural)]
        if not ordered:
            raise SessionError(f"{where}: holds no images")
        return ([_rgb(f"{where}/{im.name}", np.asarray(im.data[()])) for im in ordered],
                [im.name for im in ordered], ipath)
    # ImageSeries / OpticalSeries
    if obj.external_file is not None and len(obj.external_file):
        from PIL import Image

        out, names = [], []
        for fname in [str(x) for x in obj.external_file[:]]:
            p = Path(fname) if Path(fname).is_absolute() else path.parent / fname
            try:
                with Image.open(p) as im:
                    out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (OSError, ValueError) as e:
                raise SessionError(f"{where}: external_file {fname!r} ({p}) is not a readable image "
                                   f"({type(e).__name__}: {e})") from e
            names.append(Path(fname).stem)
        return out, names, ipath
    data = obj.data
    shape = tuple(getattr(data, "shape", np.shape(data)))
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (3, 4)) or shape[0] == 0:
        raise SessionError(f"{where}: data has shape {list(shape)}; expected images [K, H, W] or [K, H, W, 3]")
    arr = np.asarray(data[()])
    return [_rgb(f"{where}[{k}]", arr[k]) for k in range(arr.shape[0])], [str(k) for k in range(arr.shape[0])], ipath


def _rgb(where: str, a: np.ndarray) -> np.ndarray:
    """An NWB image (grayscale [H, W], RGB [H, W, 3], RGBA [H, W, 4]; uint8 or float in [0, 1]) -> uint8 RGB."""
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[:, :, :3]
    else:
        raise SessionError(f"{where}: image has shape {list(a.shape)}; expected [H, W], [H, W, 3] or [H, W, 4]")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise SessionError(f"{where}: float image values span {np.nanmin(a):.3g}..{np.nanmax(a):.3g}; "
                               f"expected [0, 1] (or uint8)")
        return np.round(np.nan_to_num(a) * 255).astype(np.uint8)
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise SessionError(f"{where}: integer image values span {a.min()}..{a.max()}; expected 0..255")
        return a.astype(np.uint8)
    raise SessionError(f"{where}: image is {a.dtype}; expected uint8 or float")
