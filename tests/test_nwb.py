"""NWB input: real NWB files written here with pynwb, read back as playback Recordings and training data."""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

pynwb = pytest.importorskip("pynwb", reason="the NWB tests need pynwb: pip install 'rtdecode[nwb]'")

from pynwb import NWBHDF5IO, NWBFile, TimeSeries  # noqa: E402
from pynwb.base import ImageReferences, Images  # noqa: E402
from pynwb.ecephys import ElectricalSeries  # noqa: E402
from pynwb.image import ImageSeries, RGBImage  # noqa: E402

from rtdecode.errors import LayoutError, SessionError  # noqa: E402
from rtdecode.layout import ElectrodeLayout  # noqa: E402
from rtdecode.sessions import open_recording  # noqa: E402
from rtdecode.sessions.nwb import nwb_recording, open_nwb  # noqa: E402
from rtdecode.sessions.recording import parse_marker  # noqa: E402
from rtdecode.sessions.session_file import SessionWriter  # noqa: E402
from rtdecode.sinks.nwb_export import read_contract_metadata  # noqa: E402

FS = 1000.0
AREAS = ["V1"] * 8 + ["V4"] * 8 + ["IT"] * 8  # three arrays of 8 electrodes


def layout24() -> ElectrodeLayout:
    return ElectrodeLayout.from_dict({"name": "tiny", "n_channels": 24, "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 7]]}, {"id": 2, "area": "V4", "channels": [[8, 15]]},
        {"id": 3, "area": "IT", "channels": [[16, 23]]}], "excluded_channels": [3]})


def make_data(rng, *, n_images=20, reps=2, size=16, trial_len=300):
    """MUA = per-channel linear read-out of the image shown, plus noise (as tests/test_data.py)."""
    c = len(AREAS)
    images = rng.integers(0, 256, size=(n_images, size, size, 3), dtype=np.uint8)
    order = np.tile(np.arange(n_images), reps)
    weights = rng.normal(size=(size * size * 3, c)).astype(np.float32) / 50
    onsets = 50 + np.arange(order.size) * trial_len
    t_total = int(onsets[-1] + trial_len + 10)
    mua = rng.normal(scale=0.05, size=(t_total, c)).astype(np.float32)
    for on, k in zip(onsets, order, strict=True):
        mua[on + 20:on + 220] += (images[k].reshape(-1).astype(np.float32) / 255) @ weights
    return {"mua": mua, "onsets": onsets, "order": order, "images": images}


def new_nwbfile() -> NWBFile:
    return NWBFile(session_description="rtdecode test session", identifier=str(uuid.uuid4()),
                   session_start_time=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))


def add_electrodes(nwb: NWBFile, areas=AREAS, *, bad=(3,), location_in_group=False):
    """One electrode group (a Utah array) per run of equal areas; returns the table region of all rows."""
    dev = nwb.create_device(name="utah-arrays", description="Utah arrays")
    nwb.add_electrode_column("bad", "electrode not used")
    group, n_groups = None, 0
    for i, area in enumerate(areas):
        if group is None or group.location != area:
            n_groups += 1
            group = nwb.create_electrode_group(name=f"array{n_groups}", description="Utah array",
                                               location=area, device=dev)
        nwb.add_electrode(group=group, location="unknown" if location_in_group else f"{area} (left)",
                          bad=i in bad)
    return nwb.create_electrode_table_region(list(range(len(areas))), "all electrodes")


def add_trials(nwb: NWBFile, onsets, order, *, fs=FS, t0=0.0, column="image_index", values=None):
    nwb.add_trial_column(column, "which stimulus image the trial showed")
    vals = order if values is None else values
    for on, k in zip(onsets, vals, strict=True):
        nwb.add_trial(start_time=t0 + on / fs, stop_time=t0 + (on + 200) / fs, **{column: k})


def add_images(nwb: NWBFile, images, *, name="stimuli", reverse_storage=True):
    """An Images container; stored in reverse name order with order_of_images fixing the index."""
    imgs = [RGBImage(name=f"img{k}", data=im) for k, im in enumerate(images)]
    stored = imgs[::-1] if reverse_storage else imgs
    nwb.add_stimulus_template(Images(name=name, images=stored, description="stimuli",
                                     order_of_images=ImageReferences(name="order_of_images", data=imgs)))


def write(path: Path, nwb: NWBFile) -> Path:
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)
    return path


def write_nwb(path: Path, d: dict, *, series_name="MUA", in_processing=False, timestamps=False, t0=0.0,
              images=True, trials=True, conversion=1.0) -> Path:
    """A full NWB session of `d` (make_data): ElectricalSeries + electrodes, trials, stimulus images."""
    nwb = new_nwbfile()
    region = add_electrodes(nwb)
    raw = d["mua"] / np.float32(conversion)
    timing = ({"timestamps": t0 + np.arange(raw.shape[0]) / FS} if timestamps
              else {"rate": FS, "starting_time": t0})
    es = ElectricalSeries(name=series_name, data=raw, electrodes=region, conversion=conversion,
                          description="multi-unit activity", **timing)
    if in_processing:
        nwb.create_processing_module("ecephys", "processed MUA").add(es)
    else:
        nwb.add_acquisition(es)
    if trials:
        add_trials(nwb, d["onsets"], d["order"], t0=t0)
    if images:
        add_images(nwb, d["images"])
    return write(path, nwb)


def write_session(path: Path, d: dict) -> Path:
    with SessionWriter(path, layout24(), FS) as w:
        w.append(d["mua"], np.arange(d["mua"].shape[0]) / FS)
        w.set_markers(d["onsets"], d["onsets"] + 200, d["order"])
        w.set_images(d["images"])
    return path


# ---- reading ----------------------------------------------------------------------------------
def test_reader_takes_layout_from_electrodes_onsets_from_trials_images_in_order(tmp_path, rng):
    d = make_data(rng, n_images=5, reps=2)
    s = open_nwb(write_nwb(tmp_path / "a.nwb", d))
    assert s.series_path == "acquisition/MUA" and s.sampling_rate_hz == FS
    assert s.n_samples == d["mua"].shape[0] and s.intervals_path == "intervals/trials"
    assert s.layout.areas == tuple(AREAS)
    np.testing.assert_array_equal(s.layout.arrays, np.repeat([1, 2, 3], 8))
    assert s.layout.usable.tolist() == [i != 3 for i in range(24)]
    np.testing.assert_array_equal(s.onset, d["onsets"])
    np.testing.assert_array_equal(s.offset_sample, d["onsets"] + 200)
    np.testing.assert_array_equal(s.image_index, d["order"])
    # order_of_images, not storage order, defines the index
    np.testing.assert_array_equal(s.image_array(), d["images"])
    assert s.image_names == [f"img{k}" for k in range(5)]


def test_recording_blocks_and_markers_equal_the_session_file(tmp_path, rng):
    """The same data as an rtdecode session and as NWB play the same samples and the same markers."""
    d = make_data(rng, n_images=4, reps=2)
    nwb_rec = open_recording(write_nwb(tmp_path / "a.nwb", d, conversion=0.5))
    h5_rec = open_recording(write_session(tmp_path / "a.h5", d))
    a, b = list(nwb_rec.blocks()), list(h5_rec.blocks())
    np.testing.assert_allclose(np.concatenate([x.mua for x in a]), np.concatenate([x.mua for x in b]), rtol=1e-6)
    assert [x.markers for x in a] == [x.markers for x in b]
    first = parse_marker(a[0].markers[0][1])
    assert first == {"event": "onset", "image": 0, "trial": 0}
    assert nwb_rec.images.shape == (4, 16, 16, 3)
    assert nwb_rec.layout.areas == h5_rec.layout.areas


def test_timestamps_processing_module_and_offset_start(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    path = write_nwb(tmp_path / "p.nwb", d, in_processing=True, timestamps=True, t0=12.5)
    s = open_nwb(path)
    assert s.series_path == "processing/ecephys/MUA"
    assert s.sampling_rate_hz == pytest.approx(FS) and s.timestamps[0] == pytest.approx(12.5)
    np.testing.assert_array_equal(s.onset, d["onsets"])
    rec = nwb_recording(path, series="processing/ecephys/MUA")
    assert rec.n_samples == d["mua"].shape[0]


def test_ambiguous_series_are_listed_and_chosen_by_name(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    nwb = new_nwbfile()
    region = add_electrodes(nwb)
    nwb.add_acquisition(ElectricalSeries(name="raw", data=d["mua"], electrodes=region, rate=FS))
    nwb.add_acquisition(ElectricalSeries(name="lfp", data=d["mua"][:, :8], electrodes=nwb.create_electrode_table_region(
        list(range(8)), "V1"), rate=FS))
    nwb.add_acquisition(TimeSeries(name="eye", data=np.zeros(100), unit="deg", rate=FS))
    path = write(tmp_path / "amb.nwb", nwb)
    with pytest.raises(SessionError) as e:
        open_nwb(path)
    msg = str(e.value)
    assert str(path) in msg and "acquisition/raw (ElectricalSeries, data [" in msg and "acquisition/lfp" in msg
    assert "--nwb-series" in msg
    assert open_nwb(path, series="raw").n_channels == 24
    assert open_nwb(path, series="lfp").layout.areas == ("V1",) * 8
    with pytest.raises(SessionError, match="no MUA series named 'spikes'.*acquisition/eye"):
        open_nwb(path, series="spikes")
    with pytest.raises(SessionError, match=r"acquisition/eye: data has shape \[100\]; expected \[time, channels\]"):
        open_nwb(path, series="eye")


def test_channel_order_follows_the_series_electrode_region(tmp_path, rng):
    """Columns of the series map to electrode rows through its region, not the table's order."""
    d = make_data(rng, n_images=3, reps=1)
    nwb = new_nwbfile()
    add_electrodes(nwb)
    order = list(range(16, 24)) + list(range(8))  # IT electrodes first, then V1; no V4
    region = nwb.create_electrode_table_region(order, "IT then V1")
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"][:, :16], electrodes=region, rate=FS))
    lay = open_nwb(write(tmp_path / "r.nwb", nwb)).layout
    assert lay.areas == ("IT",) * 8 + ("V1",) * 8
    assert lay.arrays.tolist() == [1] * 8 + [2] * 8  # groups numbered in the series' order
    assert lay.usable.tolist() == [True] * 11 + [False] + [True] * 4  # the bad row 3 is channel 11


def test_a_series_named_mua_wins_among_several(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    nwb = new_nwbfile()
    region = add_electrodes(nwb)
    nwb.add_acquisition(ElectricalSeries(name="raw", data=d["mua"] * 2, electrodes=region, rate=FS))
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"], electrodes=region, rate=FS))
    s = open_nwb(write(tmp_path / "m.nwb", nwb))
    assert s.series_path == "acquisition/MUA"


def test_plain_timeseries_needs_a_layout_unless_1024_channels(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="MUA", data=d["mua"], unit="a.u.", rate=FS))
    add_trials(nwb, d["onsets"], d["order"])
    path = write(tmp_path / "ts.nwb", nwb)
    with pytest.raises(SessionError, match="24 channels and no electrode table.*--layout"):
        open_nwb(path)
    assert open_nwb(path, layout=layout24()).layout.name == "tiny"
    with pytest.raises(LayoutError, match="layout 'tvsd-monkey-N' has 1024 channels but the series has 24"):
        open_nwb(path, layout="monkey-N")
    nwb = new_nwbfile()
    nwb.add_acquisition(TimeSeries(name="MUA", data=np.zeros((50, 1024), np.float32), unit="a.u.", rate=FS))
    assert open_nwb(write(tmp_path / "n.nwb", nwb)).layout.name == "tvsd-monkey-N"


def test_area_from_group_location_and_unknown_area_is_named(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    nwb = new_nwbfile()
    region = add_electrodes(nwb, location_in_group=True)
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"], electrodes=region, rate=FS))
    assert open_nwb(write(tmp_path / "g.nwb", nwb)).layout.areas == tuple(AREAS)
    nwb = new_nwbfile()
    region = add_electrodes(nwb, areas=["V1"] * 4 + ["MT"] * 2)
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=np.zeros((10, 6), np.float32), electrodes=region, rate=FS))
    path = write(tmp_path / "mt.nwb", nwb)
    with pytest.raises(SessionError) as e:
        open_nwb(path)
    assert str(path) in str(e.value) and "acquisition/MUA.electrodes: electrode row 4 (channel 4)" in str(e.value)
    assert "'MT (left)'" in str(e.value) and "V1" in str(e.value)


def test_intervals_choice_string_image_names_and_bad_columns(tmp_path, rng):
    from pynwb.epoch import TimeIntervals

    d = make_data(rng, n_images=3, reps=2)
    nwb = new_nwbfile()
    region = add_electrodes(nwb)
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"], electrodes=region, rate=FS))
    add_images(nwb, d["images"])
    # trials name images by their name; a second table indexes them
    add_trials(nwb, d["onsets"], d["order"], column="image", values=[f"img{k}" for k in d["order"]])
    flashes = TimeIntervals(name="flashes", description="flashes")
    flashes.add_column("image_index", "image")
    for on in d["onsets"]:
        flashes.add_interval(start_time=(on + 100) / FS, stop_time=(on + 150) / FS, image_index=2)
    nwb.add_time_intervals(flashes)
    path = write(tmp_path / "iv.nwb", nwb)
    s = open_nwb(path)  # two tables with an image column: trials wins
    assert s.intervals_path == "intervals/trials"
    np.testing.assert_array_equal(s.image_index, d["order"])
    s = open_nwb(path, intervals="flashes")
    np.testing.assert_array_equal(s.onset, d["onsets"] + 100)
    assert set(s.image_index.tolist()) == {2}
    with pytest.raises(SessionError, match="no intervals table named 'epochs'.*intervals/trials"):
        open_nwb(path, intervals="epochs")


def test_malformed_trials_name_file_table_row_and_expectation(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    for column, values, expect in (
        ("image_index", [0, 7, 1], r"intervals/trials: row 1 shows image 7 but the stimulus images are 3 \(0..2\)"),
        ("image_index", [0, -1, 1], r"intervals/trials: row 1 column 'image_index' is -1; expected an image index >= 0"),
        ("image", ["img0", "cat", "img1"], r"intervals/trials: row 1 column 'image' names image 'cat'"),
    ):
        nwb = new_nwbfile()
        region = add_electrodes(nwb)
        nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"], electrodes=region, rate=FS))
        add_images(nwb, d["images"])
        add_trials(nwb, d["onsets"], d["order"], column=column, values=values)
        path = write(tmp_path / f"bad-{column}-{values[1]}.nwb", nwb)
        with pytest.raises(SessionError, match=expect) as e:
            open_nwb(path)
        assert str(path) in str(e.value)


def test_onsets_outside_the_series_are_skipped_with_a_note(tmp_path, rng):
    d = make_data(rng, n_images=3, reps=1)
    d2 = dict(d, onsets=np.append(d["onsets"], d["mua"].shape[0] + 5000), order=np.append(d["order"], 0))
    s = open_nwb(write_nwb(tmp_path / "o.nwb", d2))
    np.testing.assert_array_equal(s.onset, d["onsets"])
    assert s.trial_ids.tolist() == [0, 1, 2] and "1 of 4 onsets lie outside the series" in s.notes[0]


def test_image_series_and_external_files_as_stimuli(tmp_path, rng):
    from PIL import Image

    d = make_data(rng, n_images=3, reps=1)
    nwb = new_nwbfile()
    region = add_electrodes(nwb)
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"], electrodes=region, rate=FS))
    nwb.add_stimulus_template(ImageSeries(name="pictures", data=d["images"], unit="n.a.", rate=1.0))
    add_trials(nwb, d["onsets"], d["order"])
    np.testing.assert_array_equal(open_nwb(write(tmp_path / "is.nwb", nwb)).image_array(), d["images"])
    names = []
    for k, im in enumerate(d["images"]):
        Image.fromarray(im).save(tmp_path / f"pic{k}.png")
        names.append(f"pic{k}.png")
    nwb = new_nwbfile()
    region = add_electrodes(nwb)
    nwb.add_acquisition(ElectricalSeries(name="MUA", data=d["mua"], electrodes=region, rate=FS))
    nwb.add_stimulus_template(ImageSeries(name="files", external_file=names, format="external",
                                          starting_frame=[0, 0, 0], unit="n.a.", rate=1.0,
                                          num_samples=3))
    add_trials(nwb, d["onsets"], d["order"])
    path = write(tmp_path / "ext.nwb", nwb)
    np.testing.assert_array_equal(open_nwb(path).image_array(), d["images"])
    (tmp_path / "pic1.png").unlink()
    with pytest.raises(SessionError, match=r"stimulus/templates/files: external_file 'pic1.png'"):
        open_nwb(path)


def test_not_an_nwb_file_and_missing_file(tmp_path):
    bad = tmp_path / "x.nwb"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(SessionError, match=f"{bad}: not a readable NWB file"):
        open_recording(bad)
    with pytest.raises(SessionError, match="does not exist"):
        open_nwb(tmp_path / "none.nwb")


# ---- training -------------------------------------------------------------------------------
def test_training_data_from_nwb_equals_the_session_file(tmp_path, rng):
    from rtdecode.training.data import load_decoding_data

    d = make_data(rng)
    a = load_decoding_data(write_nwb(tmp_path / "t.nwb", d), image_size=12, seed=3, progress=False,
                           layout=layout24())
    b = load_decoding_data(write_session(tmp_path / "t.h5", d), image_size=12, seed=3, progress=False)
    for name in ("train", "val", "test"):
        xa, ya, ia = a.split(name)
        xb, yb, ib = b.split(name)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(xa, xb, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(ya, yb)
    # the electrode table alone gives the same layout (areas, arrays, the bad electrode)
    c = load_decoding_data(tmp_path / "t.nwb", image_size=12, seed=3, progress=False)
    np.testing.assert_allclose(c.train_x, b.train_x, rtol=1e-5, atol=1e-5)


def test_training_needs_images_and_onsets(tmp_path, rng):
    from rtdecode.training.data import load_decoding_data

    d = make_data(rng, n_images=4, reps=1)
    with pytest.raises(SessionError, match="no stimulus images in /stimulus/templates"):
        load_decoding_data(write_nwb(tmp_path / "noimg.nwb", d, images=False), progress=False)
    with pytest.raises(SessionError, match="no TimeIntervals table with an image column"):
        load_decoding_data(write_nwb(tmp_path / "notr.nwb", d, trials=False), progress=False)


def test_cli_evaluate_reads_the_nwb_file_it_is_given(tmp_path, rng):
    """A ridge decoder fitted on NWB data, scored by `rtdecode evaluate --data X.nwb` (no torch needed)."""
    from rtdecode.cli import main
    from rtdecode.onnx_io import save_model
    from rtdecode.training.data import load_decoding_data
    from rtdecode.training.ridge import RidgeDecoder

    data = make_data(rng)
    path = write_nwb(tmp_path / "e.nwb", data)
    write_session(tmp_path / "e.h5", data)
    d = load_decoding_data(path, image_size=16, seed=0, progress=False)
    r = RidgeDecoder.fit(d.train_x, d.train_y, d.mask, val_x=d.val_x, val_y=d.val_y)
    save_model(r.to_onnx(d.contract("ridge")), tmp_path / "m.onnx")
    assert main(["evaluate", "--model", str(tmp_path / "m.onnx"), "--data", str(path), "--nwb-intervals", "trials",
                 "--nwb-series", "MUA", "--out", str(tmp_path / "ev"), "--ridge-windows", "spatiotemporal",
                 "--bootstrap", "50", "--no-progress"]) == 0
    assert main(["evaluate", "--model", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "e.h5"),
                 "--out", str(tmp_path / "ev-h5"), "--ridge-windows", "spatiotemporal",
                 "--bootstrap", "50", "--no-progress"]) == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    ref = json.loads((tmp_path / "ev-h5" / "report.json").read_text())
    assert rep["metrics"]["model"]["n_images"] == 2  # 20 images, a tenth for test
    for role in ("model", "floor", "ridge_spatiotemporal"):  # the same data as a session file scores the same
        assert rep["metrics"][role]["pixel_corr"] == pytest.approx(ref["metrics"][role]["pixel_corr"], abs=1e-5)
    assert main(["evaluate", "--model", str(tmp_path / "m.onnx"), "--data", str(path), "--nwb-series", "LFP",
                 "--out", str(tmp_path / "ev2"), "--no-progress"]) == 1


@pytest.mark.slow
def test_cli_train_on_an_nwb_file(tmp_path, rng):
    pytest.importorskip("torch", reason="training needs the train extra (torch)")
    from rtdecode.cli import main

    path = write_nwb(tmp_path / "t.nwb", make_data(rng, size=32))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preset": "fast", "image_size": 32, "widths": [8, 16, 32], "disc_widths": [8, 16],
                               "num_threads": 1}))
    assert main(["train", "--data", str(path), "--config", str(cfg), "--max-steps", "2", "--batch-size", "4",
                 "--out", str(tmp_path / "run"), "--no-progress", "--nwb-images", "stimuli"]) == 0
    assert (tmp_path / "run" / "best.pt").exists()


@pytest.mark.lsl
@pytest.mark.timeout(120)
def test_cli_playback_streams_an_nwb_file_over_lsl_with_markers(tmp_path, rng):
    """`rtdecode playback X.nwb` in a child process; this process is the LSL consumer."""
    import os
    import subprocess
    import sys
    import time

    from rtdecode.lslconfig import lsl
    from rtdecode.rig import unique

    d = make_data(rng, n_images=3, reps=1, trial_len=200)
    path = write_nwb(tmp_path / "p.nwb", d)
    name = unique("nwb-mua")
    proc = subprocess.Popen([sys.executable, "-m", "rtdecode", "playback", str(path), "--stream-name", name,
                             "--marker-stream", name + "-markers", "--speed", "4", "--wait-for-consumer", "30",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        pylsl = lsl()
        found = {}
        deadline = time.monotonic() + 30
        while len(found) < 2 and time.monotonic() < deadline:
            for info in pylsl.resolve_streams(0.5):
                if info.name() in (name, name + "-markers"):
                    found[info.name()] = info
        assert len(found) == 2, "playback streams not found"
        m_inlet = pylsl.StreamInlet(found[name + "-markers"])
        m_inlet.open_stream(5)
        inlet = pylsl.StreamInlet(found[name], max_buflen=60)
        inlet.open_stream(5)
        assert inlet.info().desc().child("channels").child("channel").child_value("area") == "V1"
        xs, ts, mks, mts = [], [], [], []
        n = d["mua"].shape[0]
        deadline = time.monotonic() + 60
        while sum(len(x) for x in xs) < n and time.monotonic() < deadline:
            x, t = inlet.pull_chunk(timeout=0.1)
            if t:
                xs.append(np.asarray(x, np.float32))
                ts.extend(t)
        end = time.monotonic() + 2
        while len(mks) < 2 * d["onsets"].size and time.monotonic() < end:
            m, mt = m_inlet.pull_chunk(timeout=0.1)
            mks.extend(v[0] for v in m)
            mts.extend(mt)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()[-2000:]
    np.testing.assert_array_equal(np.concatenate(xs), d["mua"])
    at = np.searchsorted(np.asarray(ts), np.asarray(mts))
    onsets = [(int(i), parse_marker(m)) for i, m in zip(at, mks, strict=True) if parse_marker(m)["event"] == "onset"]
    assert onsets == [(int(on), {"event": "onset", "image": int(k), "trial": t})
                      for t, (on, k) in enumerate(zip(d["onsets"], d["order"], strict=True))]


# ---- frames -> NWB --------------------------------------------------------------------------
def record_frames(directory: Path, model_id: str, n: int = 30, shape=(8, 8, 3), *, meta=None, dtype=np.uint8,
                  extra_shape_frames: int = 0, jitter: bool = True):
    """A real frame recording (FrameRecorder, several chunks); frame k is reproducible from k."""
    from rtdecode.protocol import FrameHeader
    from rtdecode.sinks.recorder import FrameRecorder

    t0 = 5000.0  # an LSL clock reading
    frames, heads = [], []
    with FrameRecorder(directory, chunk_frames=7, source="test", meta=meta) as r:
        for k in range(n + extra_shape_frames):
            shp = shape if k < n else (4, 4, 3)
            img = np.random.default_rng(k).integers(0, 256, size=shp, dtype=np.uint8)
            if dtype == np.float32:
                img = (img / 255).astype(np.float32)
            ref = t0 + k * 0.05 + (1e-4 * ((k * 7) % 5) if jitter else 0.0)
            h = FrameHeader(seq=k, model_id=model_id, ref_time=ref, newest_ts=t0 + k * 0.05 + 0.2,
                            shape=shp, dtype=np.dtype(dtype).name, stages={"inferred": t0 + k * 0.05 + 0.203},
                            stimulus=k % 3 if k % 2 else None)
            r.write(h, img, received=t0 + k * 0.05 + 0.2 + 0.001 * (1 + k % 4))
            frames.append(img)
            heads.append(h)
    return frames, heads


def read_back(path: Path) -> dict:
    with NWBHDF5IO(str(path), "r") as io:
        f = io.read()
        mod = f.processing["decoding"]
        fr, lat = mod["decoded_frames"], mod["latency"]
        out = {"frames": np.asarray(fr.data[()]), "ts": np.asarray(fr.get_timestamps()),
               "latency": np.asarray(lat.data[()]), "latency_ts": np.asarray(lat.get_timestamps()),
               "info": mod["frame_info"].to_dataframe(), "description": fr.description,
               "module": mod.description, "regular": fr.timestamps is None, "subject": f.subject}
    contract = read_contract_metadata(path)
    if contract is not None:
        out["contract"] = contract
    return out


def test_export_nwb_round_trips_frames_timestamps_latency_and_contract(tmp_path):
    from rtdecode.cli import main as cli_main
    from rtdecode.contract import DecoderContract
    from rtdecode.testing import make_model

    model, contract = make_model(tmp_path / "m.onnx", 16)
    frames, heads = record_frames(tmp_path / "rec", contract.model_id)
    out = tmp_path / "out.nwb"
    assert cli_main(["frames", str(tmp_path / "rec"), "--export-nwb", str(out), "--model", str(model)]) == 0
    got = read_back(out)
    np.testing.assert_array_equal(got["frames"], np.stack(frames))
    np.testing.assert_array_equal(got["ts"], [h.ref_time for h in heads])
    np.testing.assert_array_equal(got["latency_ts"], got["ts"])
    np.testing.assert_allclose(got["latency"], [0.001 * (1 + k % 4) for k in range(30)], atol=1e-9)
    info = got["info"]
    assert info["seq"].tolist() == list(range(30))
    assert info["stimulus"].tolist() == [k % 3 if k % 2 else -1 for k in range(30)]
    np.testing.assert_array_equal(info["stage_inferred"], [h.stages["inferred"] for h in heads])
    np.testing.assert_array_equal(info["ref_time"], [h.ref_time for h in heads])
    assert set(info["model_id"]) == {contract.model_id} and not got["regular"]
    assert contract.model_id in got["description"] and contract.model_id in got["module"]
    back = DecoderContract.from_metadata(got["contract"], source="nwb")
    assert back.to_metadata() == contract.to_metadata()
    # a slice, a step
    out2 = tmp_path / "slice.nwb"
    assert cli_main(["frames", str(tmp_path / "rec"), "--export-nwb", str(out2), "--model", str(model),
                     "--start", "3", "--stop", "20", "--step", "4"]) == 0
    got = read_back(out2)
    np.testing.assert_array_equal(got["frames"], np.stack(frames[3:20:4]))
    assert got["info"]["seq"].tolist() == [3, 7, 11, 15, 19]


def test_export_nwb_takes_the_contract_from_the_manifest_or_writes_the_id_only(tmp_path, capsys):
    from rtdecode.sinks.nwb_export import export_nwb
    from rtdecode.sinks.recorder import open_recording_dir
    from rtdecode.testing import make_model

    _, contract = make_model(tmp_path / "m.onnx", 16)
    record_frames(tmp_path / "served", contract.model_id, n=5, dtype=np.float32,
                  meta={"model_id": contract.model_id, "contract": contract.to_metadata()})
    r = export_nwb(open_recording_dir(tmp_path / "served"), tmp_path / "a.nwb", progress=False)
    assert r["contract"] and r["frames"] == 5
    got = read_back(tmp_path / "a.nwb")
    assert got["contract"] == contract.to_metadata() and got["frames"].dtype == np.float32
    record_frames(tmp_path / "bare", "some-model", n=5)
    r = export_nwb(open_recording_dir(tmp_path / "bare"), tmp_path / "b.nwb", progress=False)
    assert not r["contract"] and "--model" in r["notes"][0]
    got = read_back(tmp_path / "b.nwb")
    assert "contract" not in got and "some-model" in got["description"]


def test_export_nwb_refuses_a_wrong_model_mixed_shapes_and_an_existing_file(tmp_path):
    from rtdecode.errors import ConfigError
    from rtdecode.sinks.nwb_export import export_nwb
    from rtdecode.sinks.recorder import open_recording_dir
    from rtdecode.testing import make_model

    model, _ = make_model(tmp_path / "m.onnx", 16)
    record_frames(tmp_path / "rec", "another-model", n=10, extra_shape_frames=3)
    rec = open_recording_dir(tmp_path / "rec")
    with pytest.raises(ConfigError, match="is model 'test-lin-16' but the frames in .* were decoded by another-model"):
        export_nwb(rec, tmp_path / "x.nwb", model=model, stop=10, progress=False)
    with pytest.raises(SessionError, match=r"several shapes \[4, 4, 3\] uint8, \[8, 8, 3\] uint8; .*--start/--stop"):
        export_nwb(rec, tmp_path / "x.nwb", progress=False)
    assert export_nwb(rec, tmp_path / "x.nwb", stop=10, progress=False)["frames"] == 10
    with pytest.raises(ConfigError, match="already exists"):
        export_nwb(rec, tmp_path / "x.nwb", stop=10, progress=False)
    with pytest.raises(ConfigError, match="ending in .nwb"):
        export_nwb(rec, tmp_path / "x.h5", progress=False)


def inspector_problems(path: Path) -> list:
    nwbinspector = pytest.importorskip("nwbinspector", reason="the NWB best-practice check needs nwbinspector "
                                                               "(the dev extra)")
    from nwbinspector import Importance

    msgs = list(nwbinspector.inspect_nwbfile(nwbfile_path=str(path)))
    return [m for m in msgs if m.importance in (Importance.ERROR, Importance.PYNWB_VALIDATION, Importance.CRITICAL,
                                                 Importance.BEST_PRACTICE_VIOLATION)]


def test_nwbinspector_finds_no_errors_in_what_rtdecode_writes(tmp_path):
    from rtdecode.sinks.nwb_export import export_nwb, subject_fields
    from rtdecode.sinks.recorder import open_recording_dir
    from rtdecode.testing import make_model

    model, contract = make_model(tmp_path / "m.onnx", 16)
    record_frames(tmp_path / "rec", contract.model_id, n=12, jitter=False)
    rec = open_recording_dir(tmp_path / "rec")
    subject = subject_fields(["subject_id=N", "species=Macaca mulatta", "sex=M", "age=P7Y"])
    r = export_nwb(rec, tmp_path / "out.nwb", model=model, progress=False, subject=subject)
    assert r["notes"] == []
    problems = inspector_problems(tmp_path / "out.nwb")
    assert not problems, "\n".join(f"{m.importance.name} {m.check_function_name} {m.location}: {m.message}"
                                   for m in problems)
    got = read_back(tmp_path / "out.nwb")  # evenly spaced frames are stored as a rate
    assert got["regular"] and got["subject"].subject_id == "N"
    np.testing.assert_allclose(got["ts"], rec.columns()["ref_time"], rtol=0, atol=1e-9)
    # without a subject the inspector's one complaint is the missing subject, and the export says so
    r = export_nwb(rec, tmp_path / "nosubject.nwb", model=model, progress=False)
    assert "no subject" in r["notes"][0]
    assert [m.check_function_name for m in inspector_problems(tmp_path / "nosubject.nwb")] == ["check_subject_exists"]


def test_subject_fields_from_pairs_and_from_the_raw_nwb(tmp_path, rng):
    from rtdecode.errors import ConfigError
    from rtdecode.sinks.nwb_export import subject_fields

    nwb = new_nwbfile()
    nwb.subject = pynwb.file.Subject(subject_id="F", species="Macaca mulatta", sex="F", age="P9Y")
    raw = write(tmp_path / "raw.nwb", nwb)
    assert subject_fields(["age=P10Y"], raw) == {"subject_id": "F", "species": "Macaca mulatta", "sex": "F",
                                                 "age": "P10Y"}
    with pytest.raises(ConfigError, match="KEY=VALUE with KEY one of subject_id"):
        subject_fields(["colour=brown"])
    with pytest.raises(ConfigError, match="the file has no subject"):
        subject_fields(None, write(tmp_path / "nosub.nwb", new_nwbfile()))
