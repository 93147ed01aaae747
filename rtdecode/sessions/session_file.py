"""The recorded-session format (HDF5): what `rtdecode simulate` writes and training/playback read.

Layout of a session file (format "rtdecode-session", version 1):
  /                   attrs: format, format_version, sampling_rate_hz, description, seed (optional)
  /mua                float32 [T, C] MUA in stream channel order, time-major (chunked by 1000 samples)
  /timestamps         float64 [T]    seconds on the session clock (first sample at 0.0 for simulated
                                     sessions; LSL timestamps for recorded ones)
  /layout             attrs: json = ElectrodeLayout.to_json()
  /markers/onset      int64  [N]     sample index of each stimulus onset
  /markers/offset     int64  [N]     sample index of each stimulus offset
  /markers/image      int64  [N]     index into /images of the image shown
  /images             uint8  [K, H, W, 3] RGB stimuli (attrs: names = JSON list of file names, optional)
  /image_groups       optional int64 [K]: the source each image was cut from (e.g. the photograph of a
                      crop; attrs: names = JSON list of group names). Splits keep groups disjoint.
  /ground_truth/      optional, simulated sessions only: rf_centres float [C, 2] (image-normalised),
                      rf_sigmas float [C], latency_ms float [C]

The writer appends MUA in chunks so long sessions never sit in memory at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SessionError
from ..layout import ElectrodeLayout

FORMAT = "rtdecode-session"
FORMAT_VERSION = 1


class SessionWriter:
    """Append-only writer: create, append MUA chunks, add markers/images, close."""

    def __init__(self, path: str | Path, layout: ElectrodeLayout, sampling_rate_hz: float, *,
                 description: str = "", attrs: dict[str, Any] | None = None):
        import h5py

        self.path = Path(path)
        self.layout = layout
        self.fs = float(sampling_rate_hz)
        self._f = h5py.File(self.path, "w")
        self._f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                              "sampling_rate_hz": self.fs, "description": description})
        for k, v in (attrs or {}).items():
            self._f.attrs[k] = v
        c = layout.n_channels
        self._mua = self._f.create_dataset("mua", (0, c), maxshape=(None, c), dtype="f4",
                                           chunks=(max(1, min(1000, (1 << 20) // (4 * c))), c))
        self._ts = self._f.create_dataset("timestamps", (0,), maxshape=(None,), dtype="f8", chunks=(4096,))
        self._f.create_group("layout").attrs["json"] = layout.to_json()
        self.n_samples = 0

    def append(self, mua: np.ndarray, timestamps: np.ndarray) -> None:
        mua = np.asarray(mua, dtype=np.float32)
        if mua.ndim != 2 or mua.shape[1] != self.layout.n_channels:
            raise SessionError(f"MUA chunk must be [samples, {self.layout.n_channels}], got {mua.shape}")
        if len(timestamps) != len(mua):
            raise SessionError(f"{len(timestamps)} timestamps for {len(mua)} samples")
        n = self.n_samples + len(mua)
        self._mua.resize(n, axis=0)
        self._ts.resize(n, axis=0)
        self._mua[self.n_samples:n] = mua
        self._ts[self.n_samples:n] = timestamps
        self.n_samples = n

    def set_markers(self, onset: np.ndarray, offset: np.ndarray, image: np.ndarray) -> None:
        g = self._f.require_group("markers")
        for name, arr in (("onset", onset), ("offset", offset), ("image", image)):
            g.create_dataset(name, data=np.asarray(arr, dtype=np.int64))

    def set_images(self, images: np.ndarray, names: list[str] | None = None, groups: np.ndarray | None = None,
                   group_names: list[str] | None = None) -> None:
        """/images (and /image_groups: the source of each image, when images share sources)."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise SessionError(f"images must be uint8 [K, H, W, 3], got {images.dtype} {images.shape}")
        ds = self._f.create_dataset("images", data=images, compression="gzip", compression_opts=4)
        if names is not None:
            ds.attrs["names"] = json.dumps(list(names))
        if groups is not None:
            groups = np.asarray(groups, dtype=np.int64)
            if groups.shape != (images.shape[0],):
                raise SessionError(f"need one group per image ({images.shape[0]}), got shape {groups.shape}")
            g = self._f.create_dataset("image_groups", data=groups)
            if group_names is not None:
                g.attrs["names"] = json.dumps(list(group_names))

    def set_ground_truth(self, **arrays: np.ndarray) -> None:
        g = self._f.require_group("ground_truth")
        for name, arr in arrays.items():
            g.create_dataset(name, data=np.asarray(arr))

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Session:
    """A recorded session opened for reading. `mua` stays on disk (h5py dataset) until sliced."""

    path: Path
    layout: ElectrodeLayout
    sampling_rate_hz: float
    mua: Any  # h5py.Dataset float32 [T, C]
    timestamps: np.ndarray  # float64 [T]
    onset: np.ndarray  # int64 [N]
    offset: np.ndarray  # int64 [N]
    image_index: np.ndarray  # int64 [N]
    images: np.ndarray | None  # uint8 [K, H, W, 3]
    ground_truth: dict[str, np.ndarray]
    attrs: dict[str, Any]
    _file: Any = None
    image_groups: np.ndarray | None = None  # int64 [K]: source of each image (see /image_groups)

    @property
    def n_samples(self) -> int:
        return int(self.mua.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.mua.shape[1])

    @property
    def n_trials(self) -> int:
        return int(self.onset.shape[0])

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_finite(self, chunk: int = 10000) -> None:
        """Raise SessionError naming the first sample/channel holding NaN or Inf."""
        for s in range(0, self.n_samples, chunk):
            block = np.asarray(self.mua[s:s + chunk])
            bad = ~np.isfinite(block)
            if bad.any():
                t, c = np.argwhere(bad)[0]
                raise SessionError(f"{self.path}: MUA holds NaN/Inf at sample {s + int(t)}, channel {int(c)}")


def open_session(path: str | Path, *, need_images: bool = True) -> Session:
    """Open and validate a session file; errors name the file and what is wrong."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise SessionError(f"session file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SessionError(f"{path} is not an HDF5 file ({e})") from e
    try:
        if f.attrs.get("format") != FORMAT:
            raise SessionError(f"{path} is not an rtdecode session (attribute format={f.attrs.get('format')!r}, "
                               f"expected {FORMAT!r}); for TVSD files use the tvsd dataset, for XDF use playback")
        for name in ("mua", "timestamps", "layout", "markers/onset", "markers/image"):
            if name not in f:
                raise SessionError(f"{path}: missing /{name}")
        layout = ElectrodeLayout.from_json(f["layout"].attrs["json"], source=f"{path}:/layout")
        mua = f["mua"]
        if mua.ndim != 2 or mua.shape[1] != layout.n_channels:
            raise SessionError(f"{path}: /mua has {mua.shape[1] if mua.ndim == 2 else mua.shape} channels but its "
                               f"layout {layout.name!r} has {layout.n_channels}")
        ts = np.asarray(f["timestamps"])
        if ts.shape[0] != mua.shape[0]:
            raise SessionError(f"{path}: {ts.shape[0]} timestamps for {mua.shape[0]} MUA samples")
        onset = np.asarray(f["markers/onset"], dtype=np.int64)
        offset = np.asarray(f["markers/offset"], dtype=np.int64) if "markers/offset" in f else onset.copy()
        image_index = np.asarray(f["markers/image"], dtype=np.int64)
        if onset.shape != image_index.shape:
            raise SessionError(f"{path}: {onset.size} onsets but {image_index.size} image indices")
        if onset.size and (onset.min() < 0 or onset.max() >= mua.shape[0]):
            raise SessionError(f"{path}: a stimulus onset lies outside the {mua.shape[0]} recorded samples")
        images = None
        if "images" in f:
            images = np.asarray(f["images"])
            if images.size and image_index.size and image_index.max() >= images.shape[0]:
                raise SessionError(f"{path}: markers name image {int(image_index.max())} but only "
                                   f"{images.shape[0]} images are stored")
        elif need_images:
            raise SessionError(f"{path}: no /images; training and evaluation need the stimuli")
        gt = {k: np.asarray(v) for k, v in f["ground_truth"].items()} if "ground_truth" in f else {}
        groups = None
        if "image_groups" in f:
            groups = np.asarray(f["image_groups"], dtype=np.int64)
            if images is not None and groups.shape != (images.shape[0],):
                raise SessionError(f"{path}: /image_groups has shape {groups.shape} but /images holds "
                                   f"{images.shape[0]} images (one group per image expected)")
        return Session(path, layout, float(f.attrs["sampling_rate_hz"]), mua, ts, onset, offset, image_index,
                       images, gt, dict(f.attrs), f, image_groups=groups)
    except Exception:
        f.close()
        raise
