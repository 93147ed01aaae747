"""Reader for the THINGS Ventral Stream Spiking Dataset (TVSD, Papale et al.), one monkey's folder.

Files (MATLAB v7.3 = HDF5; h5py returns arrays with MATLAB's axis order reversed; the small ones -
RFs, image list, mapping - may also be MATLAB v5 files, read with scipy.io.loadmat):
  THINGS_MUA_trials.mat   ALLMUA  MATLAB [1024, trial, 300]  -> h5py (300, trial, 1024)
                          ALLMAT  MATLAB [trial, 7] (or [7, trial]): trial_idx, train_idx, test_idx,
                                  rep, count, correct, day (1-based MATLAB indices; 0 = not that kind)
                          tb      time base, -100..199 ms (onset = bin 100)
  THINGS_RFs.mat          all_centrex, all_centrey: RF centres in pixels of the 500-px stimulus
                          frame centred at 0 (x right, y up as in visual-field plots), NaN unknown
  1024chns_mapping_*.mat  optional: a 1024-long permutation (1-based) putting channels in layout
                          order: layout channel k = recorded channel mapping[k]
  _logs/things_imgs.mat   train_imgs, test_imgs: cell arrays of THINGS image paths
  THINGS_normMUA.mat      optional, not needed here (the raw trials are windowed instead)

All per-channel arrays (ALLMUA, RFs) are taken to be in the recording's channel order; the
mapping file, when present, reorders all of them alike. Image paths are resolved against the
user's THINGS folder (`things_dir`) by their trailing path components, then by file name.

Image ids: training image i (train_idx = i + 1) is id i; test image j is id n_train_images + j.
The reference sample of each trial is its onset, bin 100 of 300, as in the stream.
MUA is used as recorded (no per-day z-scoring as in THINGS_normMUA): the decoder's normaliser,
fitted on the training trials, is the one serving applies to the live stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, SessionError
from ..layout import ElectrodeLayout, check_channels, tvsd_monkey_f, tvsd_monkey_n
from ..progress import progress_bar
from ..windows import WindowAssembler, WindowPlan
from .images import image_to_array
from .recording import Block, Recording, onset_marker

log = logging.getLogger(__name__)

N_ELECTRODES = 1024
N_BINS = 300
ONSET_BIN = 100
SAMPLING_RATE_HZ = 1000.0
RF_FRAME_PX = 500.0
MUA_FILE = "THINGS_MUA_trials.mat"
RF_FILE = "THINGS_RFs.mat"
IMAGES_FILE = "things_imgs.mat"
ALLMAT_COLUMNS = ("trial_idx", "train_idx", "test_idx", "rep", "count", "correct", "day")


# ---- MATLAB v7.3 reading -------------------------------------------------------------------
def _open_mat(path: Path):
    import h5py

    if not path.exists():
        raise SessionError(f"TVSD file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise SessionError(f"{path} is not a MATLAB v7.3 (HDF5) file ({e}); re-save it in MATLAB with "
                           "save(..., '-v7.3')") from e


def _dataset(f: Any, name: str, path: Path) -> Any:
    if name not in f:
        have = sorted(k for k in f.keys() if not k.startswith("#"))
        raise SessionError(f"{path}: no array {name!r} (the file holds {have})")
    return f[name]


def is_v73(path: Path) -> bool:
    """True for a MATLAB v7.3 (HDF5) file, False for an older (v5) .mat file."""
    import h5py

    if not path.exists():
        raise SessionError(f"TVSD file {path} does not exist")
    return bool(h5py.is_hdf5(path))


def load_v5(path: Path) -> dict[str, Any]:
    """The variables of a MATLAB v5 .mat file (scipy.io.loadmat; scipy comes with the train extra)."""
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise SessionError(f"{path} is a MATLAB v5 file; reading it needs scipy (pip install 'rtdecode[train]'), "
                           "or re-save it in MATLAB with save(..., '-v7.3')") from e
    try:
        return {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    except Exception as e:
        raise SessionError(f"{path} is neither a MATLAB v7.3 (HDF5) nor a readable MATLAB v5 file ({e})") from e


def _v5_var(d: dict[str, Any], name: str, path: Path) -> Any:
    if name not in d:
        raise SessionError(f"{path}: no array {name!r} (the file holds {sorted(d)})")
    return d[name]


def read_matrix(path: Path, name: str) -> np.ndarray:
    """A numeric MATLAB array, in MATLAB's axis order (h5py's order reversed; v5 files as they are)."""
    if not is_v73(path):
        return np.asarray(_v5_var(load_v5(path), name, path))
    with _open_mat(path) as f:
        ds = _dataset(f, name, path)
        return np.asarray(ds[()]).T


def read_cellstr(path: Path, name: str) -> list[str]:
    """A MATLAB cell array of strings (or a char matrix) as a list, in MATLAB's linear order."""
    import h5py

    if not is_v73(path):
        return _v5_cellstr(_v5_var(load_v5(path), name, path), path, name)
    with _open_mat(path) as f:
        ds = _dataset(f, name, path)
        if ds.dtype == h5py.ref_dtype or ds.dtype.kind == "O":
            return [_char(f[ref], path, name) for ref in np.asarray(ds[()]).ravel()]
        if ds.attrs.get("MATLAB_class", b"") in (b"char", "char") or ds.dtype.kind in "ui":
            rows = np.asarray(ds[()]).T  # MATLAB [rows, length]
            rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
            return ["".join(map(chr, r)).rstrip(" \x00") for r in rows]
        raise SessionError(f"{path}: {name!r} is neither a cell array of strings nor a char matrix "
                           f"(dtype {ds.dtype})")


def _v5_cellstr(a: Any, path: Path, name: str) -> list[str]:
    a = np.asarray(a)
    if a.dtype.kind == "U":  # a char matrix: one string per row
        return [str(r).rstrip(" \x00") for r in a.ravel()]
    if a.dtype.kind != "O":
        raise SessionError(f"{path}: {name!r} is neither a cell array of strings nor a char matrix (dtype {a.dtype})")
    out = []
    for cell in a.ravel(order="F"):  # MATLAB's linear order is column-major
        c = np.asarray(cell)
        if c.size == 0:
            out.append("")
        elif c.dtype.kind == "U":
            out.append("".join(str(x) for x in c.ravel()).rstrip("\x00"))
        else:
            raise SessionError(f"{path}: an entry of {name!r} is not a MATLAB char array (dtype {c.dtype})")
    return out


def _char(ds: Any, path: Path, name: str) -> str:
    if ds.attrs.get("MATLAB_empty", 0):
        return ""
    arr = np.asarray(ds[()])
    if arr.dtype.kind not in "ui":
        raise SessionError(f"{path}: an entry of {name!r} is not a MATLAB char array (dtype {arr.dtype})")
    return "".join(map(chr, arr.T.ravel())).rstrip("\x00")


def find_file(folder: Path, pattern: str) -> Path | None:
    """The shallowest file under `folder` matching a glob pattern, or None."""
    hits = sorted(folder.rglob(pattern), key=lambda p: (len(p.relative_to(folder).parts), str(p)))
    return hits[0] if hits else None


def monkey_folder(folder: str | Path, monkey: str) -> Path:
    """The folder holding one monkey's files: `folder` itself, or its monkeyN / monkeyF sub-folder."""
    folder = Path(folder)
    if monkey not in ("N", "F"):
        raise ConfigError(f"TVSD monkey must be 'N' or 'F', got {monkey!r}")
    if not folder.is_dir():
        raise SessionError(f"TVSD folder {folder} does not exist or is not a folder")
    for sub in (f"monkey{monkey}", f"monkey_{monkey}", f"Monkey{monkey}"):
        if (folder / sub).is_dir():
            return folder / sub
    return folder


# ---- the dataset ---------------------------------------------------------------------------
class TVSDFolder:
    """One monkey's TVSD files: trials table, channel mapping, RFs, image paths; MUA read lazily."""

    def __init__(self, folder: str | Path, *, monkey: str = "N", layout: ElectrodeLayout | None = None,
                 only_correct: bool = True, rf_y_up: bool = True):
        self.folder = monkey_folder(folder, monkey)
        self.monkey = monkey
        mua = find_file(self.folder, MUA_FILE)
        if mua is None:
            raise SessionError(f"{self.folder}: no {MUA_FILE} (the TVSD trial MUA file) in this folder or below")
        self.mua_path = mua
        with _open_mat(mua) as f:
            ds = _dataset(f, "ALLMUA", mua)
            if ds.ndim != 3 or ds.shape[0] != N_BINS or ds.shape[2] != N_ELECTRODES:
                matlab = list(ds.shape[::-1])
                raise SessionError(f"{mua}: ALLMUA has MATLAB shape {matlab}; expected [{N_ELECTRODES} electrodes, "
                                   f"trials, {N_BINS} time bins] (h5py: ({N_BINS}, trials, {N_ELECTRODES}))")
            self.n_trials = int(ds.shape[1])
            self.onset_bin = ONSET_BIN
            if "tb" in f:
                tb = np.asarray(f["tb"][()]).ravel()
                if tb.size != N_BINS:
                    raise SessionError(f"{mua}: tb has {tb.size} bins but ALLMUA has {N_BINS}")
                zero = np.flatnonzero(np.isclose(tb, 0.0))
                if zero.size:
                    self.onset_bin = int(zero[0])
        self.table = self._read_table()
        self.perm = self._read_mapping()
        self.layout = layout if layout is not None else (tvsd_monkey_n() if monkey == "N" else tvsd_monkey_f())
        check_channels(self.layout, N_ELECTRODES, f"{mua}:ALLMUA")
        rf = self._read_rfs(rf_y_up)
        if rf is not None:
            self.layout = self.layout.with_rf(rf, self.layout.rf_sigmas)
        train_idx = self.table["train_idx"]
        test_idx = self.table["test_idx"]
        keep = (train_idx > 0) | (test_idx > 0)
        if only_correct:
            keep &= self.table["correct"] > 0
        self.trials = np.flatnonzero(keep).astype(np.int64)
        if self.trials.size == 0:
            raise SessionError(f"{mua}: ALLMAT marks no usable trial (train_idx or test_idx > 0"
                               f"{', correct' if only_correct else ''})")
        self.n_train_images = int(max(train_idx.max(), 0))
        self._paths: tuple[list[str], list[str]] | None = None
        imgs = find_file(self.folder, IMAGES_FILE)
        if imgs is None and (self.folder.parent / "_logs" / IMAGES_FILE).exists():
            imgs = self.folder.parent / "_logs" / IMAGES_FILE
        self.images_path = imgs
        if imgs is not None:
            train_paths, _ = self.image_paths()
            self.n_train_images = max(self.n_train_images, len(train_paths))
        self.image_ids = np.where(train_idx > 0, train_idx - 1, self.n_train_images + test_idx - 1).astype(np.int64)

    # -- tables
    def _read_table(self) -> dict[str, np.ndarray]:
        m = read_matrix(self.mua_path, "ALLMAT")
        n = self.n_trials
        if m.ndim == 2 and m.shape == (n, len(ALLMAT_COLUMNS)):
            pass
        elif m.ndim == 2 and m.shape == (len(ALLMAT_COLUMNS), n):
            m = m.T
        else:
            raise SessionError(f"{self.mua_path}: ALLMAT has MATLAB shape {list(m.shape)}; expected "
                               f"[{n} trials, {len(ALLMAT_COLUMNS)}] with columns {', '.join(ALLMAT_COLUMNS)}")
        m = np.nan_to_num(m.astype(np.float64), nan=0.0).astype(np.int64)
        return {name: m[:, i] for i, name in enumerate(ALLMAT_COLUMNS)}

    def _read_mapping(self) -> np.ndarray | None:
        path = find_file(self.folder, "1024chns_mapping_*.mat")
        if path is None:
            log.info("%s: no 1024chns_mapping_*.mat; channels taken to be in layout order already", self.folder)
            return None
        if is_v73(path):
            with _open_mat(path) as f:
                arrays = {k: f[k] for k in f.keys() if not k.startswith("#")}
                names = list(arrays)
                cands = [k for k, v in arrays.items() if getattr(v, "size", 0) == N_ELECTRODES and v.dtype.kind in "uif"]
                name = "mapping" if "mapping" in cands else (cands[0] if cands else "")
                perm = np.asarray(arrays[name][()]).ravel().astype(np.int64) if cands else None
        else:
            arrays = {k: np.asarray(v) for k, v in load_v5(path).items()}
            names = list(arrays)
            cands = [k for k, v in arrays.items() if v.size == N_ELECTRODES and v.dtype.kind in "uif"]
            name = "mapping" if "mapping" in cands else (cands[0] if cands else "")
            perm = arrays[name].ravel().astype(np.int64) if cands else None
        if perm is None:
            raise SessionError(f"{path}: no 1024-element channel mapping array (the file holds {names})")
        if perm.min() == 1:
            perm = perm - 1
        if not np.array_equal(np.sort(perm), np.arange(N_ELECTRODES)):
            raise SessionError(f"{path}: {name!r} is not a permutation of channels 1..{N_ELECTRODES}")
        return perm

    def _read_rfs(self, y_up: bool) -> np.ndarray | None:
        path = find_file(self.folder, RF_FILE)
        if path is None:
            log.info("%s: no %s; the layout carries no known RF centres", self.folder, RF_FILE)
            return None
        xs = read_matrix(path, "all_centrex").astype(np.float64).ravel()
        ys = read_matrix(path, "all_centrey").astype(np.float64).ravel()
        for name, a in (("all_centrex", xs), ("all_centrey", ys)):
            if a.size != N_ELECTRODES:
                raise SessionError(f"{path}: {name} has {a.size} values; expected one per electrode ({N_ELECTRODES})")
        if self.perm is not None:
            xs, ys = xs[self.perm], ys[self.perm]
        x = xs / RF_FRAME_PX + 0.5
        y = (0.5 - ys / RF_FRAME_PX) if y_up else (ys / RF_FRAME_PX + 0.5)
        return np.stack([x, y], axis=1)

    # -- images
    def image_paths(self) -> tuple[list[str], list[str]]:
        """(train image paths, test image paths) as written in _logs/things_imgs.mat."""
        if self.images_path is None:
            raise SessionError(f"{self.folder}: no _logs/{IMAGES_FILE}; the stimulus list is needed to know "
                               "which THINGS image each trial showed")
        if self._paths is None:
            self._paths = (read_cellstr(self.images_path, "train_imgs"), read_cellstr(self.images_path, "test_imgs"))
        return self._paths

    def image_path_of(self, image_id: int) -> str:
        train, test = self.image_paths()
        k = int(image_id)
        return train[k] if k < len(train) else test[k - len(train)]

    def test_image_ids(self) -> np.ndarray:
        return np.unique(self.image_ids[self.trials][self.table["test_idx"][self.trials] > 0])

    def load_images(self, ids: np.ndarray, size: int, things_dir: str | Path | None,
                    progress: bool = True) -> np.ndarray:
        """float32 [K, 3, size, size] for image ids, read from the user's THINGS folder."""
        from PIL import Image

        files = resolve_images([self.image_path_of(k) for k in ids], things_dir, source=str(self.images_path))
        out = np.empty((len(files), 3, size, size), dtype=np.float32)
        bar = progress_bar(len(files), "THINGS images", enabled=progress, unit="img")
        for i, p in enumerate(files):
            with Image.open(p) as im:
                out[i] = image_to_array(im, size)
            bar.update(1)
        bar.close()
        return out

    # -- MUA
    def iter_trial_blocks(self, trials: np.ndarray, chunk: int = 64) -> Iterator[tuple[int, np.ndarray]]:
        """(trial, float32 [300, 1024] in layout channel order) for the given trials, in order."""
        import h5py

        trials = np.asarray(trials, dtype=np.int64)
        with h5py.File(self.mua_path, "r") as f:
            ds = f["ALLMUA"]
            i = 0
            while i < trials.size:
                t0 = int(trials[i])
                j = int(np.searchsorted(trials, t0 + chunk, side="left")) if _sorted(trials) else i + 1
                j = max(j, i + 1)
                t1 = int(trials[j - 1]) + 1
                block = np.asarray(ds[:, t0:t1, :], dtype=np.float32)  # (300, n, 1024)
                if self.perm is not None:
                    block = block[:, :, self.perm]
                for t in trials[i:j]:
                    yield int(t), block[:, int(t) - t0, :]
                i = j

    def assemble_maps(self, plan: WindowPlan, progress: bool = True) -> np.ndarray:
        """Onset-locked maps [N, M, E] of the kept trials (the same WindowAssembler serving uses)."""
        assembler = WindowAssembler(plan, self.layout)
        if self.onset_bin + plan.span > N_BINS:
            raise ConfigError(f"the window plan needs {plan.span} samples after the onset but TVSD trials hold "
                              f"{N_BINS - self.onset_bin}")
        out = np.empty((self.trials.size, *assembler.shape), dtype=np.float32)
        bar = progress_bar(int(self.trials.size), f"windows {self.mua_path.name}", enabled=progress,
                           unit="trial")
        for n, (_, block) in enumerate(self.iter_trial_blocks(self.trials)):
            assembler.assemble(block[self.onset_bin:], out[n])
            bar.update(1)
        bar.close()
        return out


def _sorted(a: np.ndarray) -> bool:
    return bool(np.all(np.diff(a) > 0))


def resolve_images(paths: list[str], things_dir: str | Path | None, *, source: str = "things_imgs.mat") -> list[Path]:
    """Local files for THINGS image paths: trailing path components under things_dir, then file name."""
    if things_dir is None:
        raise SessionError(f"{source} names THINGS images; pass the folder holding your local copy of the THINGS "
                           "images (things_dir / --things-dir)")
    root = Path(things_dir)
    if not root.is_dir():
        raise SessionError(f"THINGS image folder {root} does not exist")
    by_name: dict[str, Path] | None = None
    out: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        parts = [p for p in raw.replace("\\", "/").split("/") if p and not p.endswith(":")]
        found = None
        for k in range(len(parts), 0, -1):
            cand = root.joinpath(*parts[-k:])
            if cand.is_file():
                found = cand
                break
        if found is None and parts:
            if by_name is None:
                by_name = {p.name: p for p in root.rglob("*") if p.is_file()}
            found = by_name.get(parts[-1])
        if found is None:
            missing.append(raw)
        else:
            out.append(found)
    if missing:
        raise SessionError(f"{len(missing)} of {len(paths)} THINGS images named in {source} are not under {root} "
                           f"(first: {missing[:3]})")
    return out


def tvsd_recording(folder: str | Path, *, monkey: str = "N", layout: ElectrodeLayout | None = None,
                   things_dir: str | Path | None = None, image_size: int = 64,
                   only_correct: bool = True) -> Recording:
    """TVSD trials laid end to end as one 1 kHz stream, with an onset marker at bin 100 of each trial.

    Each block is one trial (300 samples, layout channel order). With things_dir, `images` holds
    every image of the dataset (uint8, image_size square) for viewers; marker image ids index it.
    """
    tv = TVSDFolder(folder, monkey=monkey, layout=layout, only_correct=only_correct)
    images = None
    if things_dir is not None:
        train, test = tv.image_paths()
        ids = np.arange(len(train) + len(test))
        images = (tv.load_images(ids, image_size, things_dir) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)

    def blocks() -> Iterator[Block]:
        for t, block in tv.iter_trial_blocks(tv.trials):
            yield Block(np.ascontiguousarray(block), [(tv.onset_bin, onset_marker(int(tv.image_ids[t]), t))])

    return Recording(f"tvsd-monkey-{monkey}", tv.layout, SAMPLING_RATE_HZ, blocks,
                     n_samples=int(tv.trials.size) * N_BINS, images=images)
