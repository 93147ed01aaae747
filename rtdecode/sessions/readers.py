"""Turn files into Recordings for playback: rtdecode session files, LabRecorder XDF, TVSD folders.

`open_recording(path, ...)` picks the reader from what the path is:
  *.h5 / *.hdf5      rtdecode session (rtdecode.sessions.session_file format), MUA read in chunks from disk
  *.xdf / *.xdfz     XDF via pyxdf (clock offsets, resets and jitter handled as pyxdf does)
  *.nwb              NWB via pynwb (the `nwb` extra; rtdecode.sessions.nwb.nwb_recording)
  a folder           TVSD (rtdecode.sessions.tvsd.tvsd_recording)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LayoutError, SessionError
from ..layout import ElectrodeLayout, load_layout, tvsd_monkey_n
from .recording import Block, Recording, offset_marker, onset_marker

log = logging.getLogger(__name__)

SESSION_CHUNK = 1000  # samples read from HDF5 at a time (one chunk of the /mua dataset)


def open_recording(path: str | Path, *, layout: str | Path | ElectrodeLayout | None = None,
                   stream: str | None = None, markers: str | None = None, nwb_series: str | None = None,
                   nwb_intervals: str | None = None, nwb_images: str | None = None, **tvsd_opts: Any) -> Recording:
    """A Recording from a session file (.h5), an XDF file (.xdf), an NWB file (.nwb) or a TVSD folder."""
    p = Path(path)
    if not p.exists():
        raise SessionError(f"{p} does not exist; expected a session .h5, an .xdf or .nwb file or a TVSD folder")
    if p.is_dir():
        return tvsd_folder_recording(p, **tvsd_opts)
    suffix = p.suffix.lower()
    if suffix in (".xdf", ".xdfz"):
        return xdf_recording(p, stream=stream, markers=markers, layout=layout)
    if suffix == ".nwb":
        from .nwb import nwb_recording

        return nwb_recording(p, series=nwb_series, intervals=nwb_intervals, images=nwb_images, layout=layout)
    if suffix in (".h5", ".hdf5"):
        return session_recording(p)
    raise SessionError(f"{p}: unknown file type {suffix!r}; expected a session .h5/.hdf5, an .xdf file, "
                       f"an .nwb file or a TVSD folder")


# ---- rtdecode session files -------------------------------------------------------------------
def session_recording(path: str | Path, *, chunk: int = SESSION_CHUNK) -> Recording:
    """Session file -> Recording; MUA is read `chunk` samples at a time, markers as onset/offset JSON."""
    from .session_file import open_session

    path = Path(path)
    with open_session(path, need_images=False) as s:
        layout, fs, n = s.layout, s.sampling_rate_hz, s.n_samples
        events = _session_events(s.onset, s.offset, s.image_index)
        images = None if s.images is None else np.asarray(s.images)

    def make_blocks():
        import h5py

        with h5py.File(path, "r") as f:
            mua = f["mua"]
            k = 0
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                block_markers = []
                while k < len(events) and events[k][0] < stop:
                    block_markers.append((events[k][0] - start, events[k][1]))
                    k += 1
                yield Block(np.asarray(mua[start:stop], dtype=np.float32), block_markers)

    return Recording(path.stem, layout, fs, make_blocks, n_samples=n, images=images)


def _session_events(onset: np.ndarray, offset: np.ndarray, image: np.ndarray) -> list[tuple[int, str]]:
    """(absolute sample, marker text), sorted by sample; onsets before offsets at the same sample."""
    ev = []
    for trial, (on, off, img) in enumerate(zip(onset.tolist(), offset.tolist(), image.tolist(), strict=True)):
        ev.append((int(on), 1, onset_marker(img, trial)))
        if off != on:
            ev.append((int(off), 0, offset_marker(img, trial)))
    ev.sort(key=lambda e: (e[0], e[1]))
    return [(s, t) for s, _, t in ev]


# ---- XDF (LabRecorder) ------------------------------------------------------------------------
def xdf_recording(path: str | Path, *, stream: str | None = None, markers: str | None = None,
                  layout: str | Path | ElectrodeLayout | None = None, chunk: int = SESSION_CHUNK) -> Recording:
    """XDF file -> Recording of its MUA stream, with markers from a string stream.

    `stream` picks the MUA stream by name or type (default: the numeric stream with a regular
    rate and the most channels); `markers` picks the marker stream likewise (default: the first
    string stream). Timestamps are clock-synchronised, reset-handled and dejittered by pyxdf;
    markers are placed at the MUA sample nearest in time. Layout: `layout` (preset, file or
    object), else the one the stream's description carries (rtdecode playback writes it), else
    TVSD monkey N for 1024 channels.
    """
    import pyxdf

    path = Path(path)
    try:
        streams, _header = pyxdf.load_xdf(str(path), synchronize_clocks=True, handle_clock_resets=True,
                                          dejitter_timestamps=True)
    except Exception as e:  # pyxdf raises plain Exceptions of many kinds on bad files
        raise SessionError(f"{path}: not a readable XDF file ({type(e).__name__}: {e})") from e
    described = [_describe(s) for s in streams]
    listing = "; ".join(described) if described else "no streams at all"
    mua_stream = _pick_mua(streams, stream)
    if mua_stream is None:
        what = f"named or typed {stream!r}" if stream else "with numeric samples at a regular rate"
        raise SessionError(f"{path}: no usable MUA stream {what}; the file holds: {listing}")
    info = mua_stream["info"]
    name = _first(info, "name", "?")
    ts = np.asarray(mua_stream["time_stamps"], dtype=np.float64)
    data = np.asarray(mua_stream["time_series"])
    if data.ndim != 2 or data.shape[0] == 0:
        raise SessionError(f"{path}: stream {name!r} holds no samples; the file holds: {listing}")
    fs = float(_first(info, "nominal_srate", 0) or 0)
    if fs <= 0:
        fs = float(info.get("effective_srate") or 0)
        if fs <= 0:
            raise SessionError(f"{path}: stream {name!r} has no regular sampling rate (nominal 0)")
        log.warning("%s: stream %r has an irregular nominal rate; playing at its effective rate %.2f Hz",
                    path, name, fs)
    if _first(info, "channel_format", "") == "double64":
        log.info("%s: stream %r is double precision; converted to float32", path, name)
    mua = np.ascontiguousarray(data, dtype=np.float32)
    lay = _xdf_layout(path, info, mua.shape[1], layout)

    marker_events: list[tuple[int, str]] = []
    m_stream = _pick_markers(streams, markers)
    if markers and m_stream is None:
        raise SessionError(f"{path}: no string marker stream named or typed {markers!r}; the file holds: {listing}")
    if m_stream is not None:
        m_ts = np.asarray(m_stream["time_stamps"], dtype=np.float64)
        for t, sample in zip(m_ts.tolist(), m_stream["time_series"], strict=False):
            idx = _nearest(ts, t)
            if idx is None:
                continue
            marker_events.append((idx, str(sample[0])))
        marker_events.sort(key=lambda e: e[0])
    gaps = int(np.count_nonzero(np.diff(ts) > 1.5 / fs)) if ts.size > 1 else 0
    if gaps:
        log.warning("%s: stream %r has %d gap(s) in its timestamps; playback is paced at the nominal %.0f Hz",
                    path, name, gaps, fs)
    n = mua.shape[0]

    def make_blocks():
        k = 0
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            block_markers = []
            while k < len(marker_events) and marker_events[k][0] < stop:
                block_markers.append((marker_events[k][0] - start, marker_events[k][1]))
                k += 1
            yield Block(mua[start:stop], block_markers)

    rec = Recording(f"{path.stem}:{name}", lay, fs, make_blocks, n_samples=n)
    rec.timestamps = ts  # type: ignore[attr-defined]  # the synchronised XDF clock, for callers that want it
    return rec


def _first(info: dict, key: str, default: Any = None) -> Any:
    v = info.get(key)
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


def _describe(s: dict) -> str:
    info = s["info"]
    n = len(s.get("time_stamps", []))
    return (f"{_first(info, 'name', '?')!r} (type {_first(info, 'type', '?')!r}, "
            f"{_first(info, 'channel_count', '?')} ch, {_first(info, 'channel_format', '?')}, "
            f"{_first(info, 'nominal_srate', '?')} Hz, {n} samples)")


def _is_numeric(s: dict) -> bool:
    return _first(s["info"], "channel_format", "string") != "string"


def _pick_mua(streams: list[dict], query: str | None) -> dict | None:
    cands = [s for s in streams if _is_numeric(s) and len(s.get("time_stamps", [])) > 0]
    if query:
        cands = [s for s in cands if query in (_first(s["info"], "name"), _first(s["info"], "type"))]
    else:
        cands = [s for s in cands if float(_first(s["info"], "nominal_srate", 0) or 0) > 0]
    if not cands:
        return None
    return max(cands, key=lambda s: int(_first(s["info"], "channel_count", 0) or 0))


def _pick_markers(streams: list[dict], query: str | None) -> dict | None:
    cands = [s for s in streams if not _is_numeric(s)]
    if query:
        cands = [s for s in cands if query in (_first(s["info"], "name"), _first(s["info"], "type"))]
    return cands[0] if cands else None


def _nearest(ts: np.ndarray, t: float) -> int | None:
    """Index of the sample nearest in time to t; None when t lies outside the stream (+- 1 sample)."""
    if ts.size == 0:
        return None
    step = float(np.median(np.diff(ts))) if ts.size > 1 else 0.0
    if t < ts[0] - step or t > ts[-1] + step:
        return None
    i = int(np.searchsorted(ts, t))
    if i == ts.size:
        return ts.size - 1
    if i > 0 and t - ts[i - 1] <= ts[i] - t:
        return i - 1
    return i


def _xdf_layout(path: Path, info: dict, n_channels: int,
                layout: str | Path | ElectrodeLayout | None) -> ElectrodeLayout:
    if isinstance(layout, ElectrodeLayout):
        lay = layout
    elif layout is not None:
        lay = load_layout(layout)
    else:
        lay = _layout_from_desc(path, info)
        if lay is None:
            if n_channels == 1024:
                lay = tvsd_monkey_n()
                log.info("%s: 1024 channels and no layout given: using TVSD monkey N", path)
            else:
                raise SessionError(f"{path}: the MUA stream has {n_channels} channels and carries no layout; "
                                   f"give one with --layout (monkey-N, monkey-F or a JSON file)")
    if lay.n_channels != n_channels:
        raise LayoutError(f"{path}: layout {lay.name!r} has {lay.n_channels} channels but the MUA stream "
                          f"has {n_channels}")
    return lay


def _layout_from_desc(path: Path, info: dict) -> ElectrodeLayout | None:
    """The layout rtdecode playback writes into <desc><rtdecode><layout>, when present."""
    try:
        desc = info["desc"][0]
        text = desc["rtdecode"][0]["layout"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return None
    return ElectrodeLayout.from_json(text, source=f"{path}: stream description")


# ---- TVSD -------------------------------------------------------------------------------------
def tvsd_folder_recording(folder: Path, **opts: Any) -> Recording:
    """TVSD trials laid end to end (rtdecode.sessions.tvsd.tvsd_recording)."""
    try:
        from .tvsd import tvsd_recording
    except ImportError as e:
        raise SessionError(f"{folder} is a folder, read as a TVSD dataset; that needs the training package "
                           f"(install rtdecode from a source checkout with `pip install -e .[train]`): {e}") from e
    return tvsd_recording(folder, **opts)
