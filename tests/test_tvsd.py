"""rtdecode.sessions.tvsd (and rtdecode.training.data) on tiny files that follow the TVSD layout exactly (MATLAB v7.3 = HDF5, transposed)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from rtdecode.errors import SessionError
from rtdecode.layout import tvsd_monkey_n
from rtdecode.sessions.images import image_to_array
from rtdecode.sessions.recording import parse_marker
from rtdecode.sessions.tvsd import TVSDFolder, read_cellstr, tvsd_recording
from rtdecode.training.data import load_decoding_data

N_TRAIN, N_TEST, TEST_REPS = 10, 3, 2


def _matlab_header(fh) -> None:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    fh.seek(0)
    fh.write(text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def write_mat73(path: Path, **variables) -> None:
    """Write variables like MATLAB's save -v7.3: axes reversed, MATLAB_class attrs, cellstr as refs."""
    classes = {np.dtype("float64"): "double", np.dtype("float32"): "single", np.dtype("int64"): "int64",
               np.dtype("uint16"): "char"}
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = None
        for name, value in variables.items():
            if isinstance(value, list):  # MATLAB cell array {N x 1} of char row vectors
                refs = refs or f.create_group("#refs#")
                out = np.empty((1, len(value)), dtype=h5py.ref_dtype)
                for i, s in enumerate(value):
                    chars = np.array([[ord(c) for c in s]], dtype=np.uint16)  # MATLAB [1, L]
                    d = refs.create_dataset(f"{name}_{i}", data=chars.T)  # h5py (L, 1)
                    d.attrs["MATLAB_class"] = np.bytes_("char")
                    d.attrs["MATLAB_int_decode"] = np.int32(2)
                    out[0, i] = d.ref
                ds = f.create_dataset(name, data=out)
                ds.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                a = np.asarray(value)
                a = a.reshape(1, -1).T if a.ndim == 1 else a  # MATLAB has no 1-D arrays: [n] -> [n, 1]
                ds = f.create_dataset(name, data=a.T)
                ds.attrs["MATLAB_class"] = np.bytes_(classes[a.dtype])
    with open(path, "r+b") as fh:
        _matlab_header(fh)


def write_mat5(path: Path, **variables) -> None:
    """A MATLAB v5 .mat file as MATLAB's save(..., '-v7') writes it: string lists become cell arrays."""
    from scipy.io import savemat

    out = {}
    for k, v in variables.items():
        if isinstance(v, list):
            cell = np.empty((1, len(v)), dtype=object)
            cell[0, :] = v
            v = cell
        out[k] = v
    savemat(str(path), out, format="5")


def make_tvsd(root: Path, rng, *, mapping: bool = True, allmat_wide: bool = False, n_electrodes: int = 1024,
              n_bins: int = 300, incorrect: int = 1, drop: tuple[str, ...] = (), missing_image: bool = False,
              v5: bool = False):
    """A tiny monkey-N folder + THINGS folder. MUA[r, trial, t] = r + 1000 * trial + 0.25 * (t >= 100).

    v5: the image list, mapping and RF files as MATLAB v5 files (scipy.io.savemat), the MUA as v7.3.
    """
    small = write_mat5 if v5 else write_mat73
    folder = root / "TVSD" / "monkeyN"
    (folder / "_logs").mkdir(parents=True)
    things = root / "THINGS" / "object_images"
    cats = [f"thing{i}" for i in range(N_TRAIN + N_TEST)]
    pics = {}
    for c in cats:
        (things / c).mkdir(parents=True)
        arr = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)  # not square: centre-cropped
        Image.fromarray(arr).save(things / c / f"{c}_01b.png")
        pics[c] = arr
    train_paths = [f"C:\\Users\\lab\\THINGS\\object_images\\{c}\\{c}_01b.png" for c in cats[:N_TRAIN]]
    test_paths = [f"/mnt/things/object_images/{c}/{c}_01b.png" for c in cats[N_TRAIN:]]
    if missing_image:
        test_paths[-1] = "object_images/nothing/nothing_01b.png"
    small(folder / "_logs" / "things_imgs.mat", train_imgs=train_paths, test_imgs=test_paths)

    rows = [(k + 1, 0, 1) for k in range(N_TRAIN)] + [(0, j + 1, r + 1) for r in range(TEST_REPS)
                                                      for j in range(N_TEST)]
    rows.append((3, 0, 2))  # an incorrect repeat of train image 3 (dropped when only_correct)
    n = len(rows)
    allmat = np.zeros((n, 7), dtype=np.float64)
    for t, (tr, te, rep) in enumerate(rows):
        allmat[t] = (t + 1, tr, te, rep, t % 4 + 1, 1, 1 + t // 10)
    allmat[-1, 5] = 0 if incorrect else 1
    trial = np.arange(n, dtype=np.float32)
    t_axis = (np.arange(n_bins) >= 100).astype(np.float32) * 0.25
    mua = (np.arange(n_electrodes, dtype=np.float32)[:, None, None] + 1000 * trial[None, :, None]
           + t_axis[None, None, :])  # MATLAB order [electrode, trial, time]
    mua_vars = {"ALLMUA": mua, "ALLMAT": allmat.T if allmat_wide else allmat,
                "tb": np.arange(-100, n_bins - 100, dtype=np.float64)}
    for name in drop:
        mua_vars.pop(name)
    write_mat73(folder / "THINGS_MUA_trials.mat", **mua_vars)
    perm = rng.permutation(1024) + 1
    if mapping:
        small(folder / "1024chns_mapping_20220105.mat", mapping=perm.astype(np.float64))
    cx = rng.uniform(-200, 200, size=1024)
    cy = rng.uniform(-200, 200, size=1024)
    cx[7] = np.nan
    small(folder / "THINGS_RFs.mat", all_centrex=cx, all_centrey=cy)
    return {"folder": folder, "things": root / "THINGS", "perm": perm - 1 if mapping else np.arange(1024),
            "cx": cx, "cy": cy, "pics": pics, "cats": cats, "n_trials": n, "rows": rows}


def test_cellstr_reads_matlab_refs(tmp_path):
    write_mat73(tmp_path / "x.mat", names=["a\\b.jpg", "ü/ß.png", ""])
    assert read_cellstr(tmp_path / "x.mat", "names") == ["a\\b.jpg", "ü/ß.png", ""]
    with open(tmp_path / "x.mat", "rb") as fh:
        assert fh.read(10) == b"MATLAB 7.3"


def test_folder_reads_table_mapping_rfs(tmp_path, rng):
    t = make_tvsd(tmp_path, rng)
    tv = TVSDFolder(tmp_path / "TVSD", monkey="N")
    assert tv.folder == t["folder"] and tv.n_trials == t["n_trials"]
    assert tv.trials.size == t["n_trials"] - 1  # the incorrect trial dropped
    assert tv.n_train_images == N_TRAIN
    assert list(tv.image_ids[:3]) == [0, 1, 2] and tv.image_ids[N_TRAIN] == N_TRAIN  # first test image
    assert list(tv.test_image_ids()) == list(range(N_TRAIN, N_TRAIN + N_TEST))
    # RFs: 500-px frame centred at 0, y up -> image-normalised x right, y down; reordered by the mapping
    rf = tv.layout.rf_centres
    k = 11
    r = t["perm"][k]
    assert rf[k, 0] == pytest.approx(t["cx"][r] / 500 + 0.5)
    assert rf[k, 1] == pytest.approx(0.5 - t["cy"][r] / 500)
    assert np.isnan(rf[np.flatnonzero(t["perm"] == 7)[0], 0])
    # MUA comes back in layout order: layout channel k = recorded channel perm[k]
    trial, block = next(tv.iter_trial_blocks(tv.trials[4:5]))
    assert block.shape == (300, 1024)
    np.testing.assert_allclose(block[50], t["perm"] + 1000 * trial)
    np.testing.assert_allclose(block[150], t["perm"] + 1000 * trial + 0.25)


def test_small_files_may_be_matlab_v5(tmp_path, rng):
    """THINGS_RFs.mat, the mapping and _logs/things_imgs.mat saved as MATLAB v5 read as v7.3 ones do."""
    t = make_tvsd(tmp_path, rng, v5=True)
    with open(t["folder"] / "THINGS_RFs.mat", "rb") as fh:
        assert b"MATLAB 5.0" in fh.read(128)
    tv = TVSDFolder(tmp_path / "TVSD", monkey="N")
    np.testing.assert_array_equal(tv.perm, t["perm"])
    rf = tv.layout.rf_centres
    r = t["perm"][11]
    assert rf[11, 0] == pytest.approx(t["cx"][r] / 500 + 0.5)
    assert rf[11, 1] == pytest.approx(0.5 - t["cy"][r] / 500)
    train, test = tv.image_paths()
    assert len(train) == N_TRAIN and train[0] == f"C:\\Users\\lab\\THINGS\\object_images\\{t['cats'][0]}\\{t['cats'][0]}_01b.png"
    assert test[0] == f"/mnt/things/object_images/{t['cats'][N_TRAIN]}/{t['cats'][N_TRAIN]}_01b.png"


def test_v5_file_without_the_array_names_what_it_holds(tmp_path):
    write_mat5(tmp_path / "x.mat", other=np.zeros(3))
    with pytest.raises(SessionError, match="no array 'names'.*other"):
        read_cellstr(tmp_path / "x.mat", "names")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(SessionError, match="neither a MATLAB v7.3"):
        read_cellstr(tmp_path / "junk.mat", "names")


def test_allmat_either_orientation_and_no_mapping(tmp_path, rng):
    t = make_tvsd(tmp_path, rng, mapping=False, allmat_wide=True, incorrect=0)
    tv = TVSDFolder(t["folder"])
    assert tv.trials.size == t["n_trials"] and tv.perm is None
    _, block = next(tv.iter_trial_blocks(tv.trials[:1]))
    np.testing.assert_allclose(block[0], np.arange(1024))


def test_decoding_data_from_tvsd(tmp_path, rng):
    t = make_tvsd(tmp_path, rng)
    d = load_decoding_data(tmp_path / "TVSD", things_dir=t["things"], image_size=8, seed=0, progress=False,
                           cache_dir=tmp_path / "cache")
    lay = tvsd_monkey_n()
    assert d.train_x.shape[1:] == (15, lay.n_electrodes)
    # the dataset's own test images are the test split, averaged over their repetitions
    assert list(d.test_ids) == list(range(N_TRAIN, N_TRAIN + N_TEST))
    assert d.test_x.shape[0] == N_TEST
    assert len(d.val_ids) == 1 and len(set(d.train_ids)) == N_TRAIN - 1
    assert not set(d.val_ids) & set(d.train_ids)
    # image targets come from the THINGS folder (paths resolved from Windows and Unix forms)
    k = int(d.test_ids[0])
    np.testing.assert_allclose(d.test_y[0], image_to_array(t["pics"][t["cats"][k]], 8), atol=1e-6)
    assert d.rf_known is not None and d.rf_known.shape == (lay.n_electrodes, 2) and d.rf_true is None
    assert list((tmp_path / "cache").glob("maps-*.npz"))


def test_recording_lays_trials_end_to_end(tmp_path, rng):
    t = make_tvsd(tmp_path, rng)
    rec = tvsd_recording(t["folder"], things_dir=t["things"], image_size=8)
    assert rec.sampling_rate_hz == 1000.0 and rec.layout.n_channels == 1024
    blocks = list(rec.blocks())
    assert len(blocks) == t["n_trials"] - 1 and rec.n_samples == 300 * len(blocks)
    assert blocks[0].mua.shape == (300, 1024) and blocks[0].mua.dtype == np.float32
    idx, text = blocks[N_TRAIN].markers[0]
    m = parse_marker(text)
    assert idx == 100 and m == {"event": "onset", "image": N_TRAIN, "trial": N_TRAIN}
    assert rec.images.shape == (N_TRAIN + N_TEST, 8, 8, 3) and rec.images.dtype == np.uint8
    assert json.loads(blocks[0].markers[0][1])["image"] == 0
    # second pass starts over (used by --loop)
    np.testing.assert_array_equal(next(iter(rec.blocks())).mua, blocks[0].mua)


def test_missing_file_and_array(tmp_path, rng):
    with pytest.raises(SessionError, match="THINGS_MUA_trials.mat"):
        TVSDFolder(tmp_path)
    make_tvsd(tmp_path, rng, drop=("ALLMUA",))
    with pytest.raises(SessionError, match=r"THINGS_MUA_trials.mat: no array 'ALLMUA'"):
        TVSDFolder(tmp_path / "TVSD")


def test_wrong_shapes(tmp_path, rng):
    make_tvsd(tmp_path / "a", rng, n_electrodes=512)
    with pytest.raises(SessionError, match=r"ALLMUA has MATLAB shape \[512, 17, 300\]; expected \[1024"):
        TVSDFolder(tmp_path / "a" / "TVSD")
    make_tvsd(tmp_path / "b", rng, n_bins=200)
    with pytest.raises(SessionError, match=r"ALLMUA has MATLAB shape \[1024, 17, 200\]"):
        TVSDFolder(tmp_path / "b" / "TVSD")


def test_missing_images(tmp_path, rng):
    t = make_tvsd(tmp_path, rng, missing_image=True)
    with pytest.raises(SessionError, match=r"1 of 13 THINGS images .*nothing_01b.png"):
        load_decoding_data(t["folder"], things_dir=t["things"], image_size=8, progress=False)
    with pytest.raises(SessionError, match="things_dir"):
        load_decoding_data(t["folder"], image_size=8, progress=False)
