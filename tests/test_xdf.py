"""XDF playback input: real XDF files written here by a tiny writer, read back through pyxdf."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest

from rtdecode.errors import LayoutError, SessionError
from rtdecode.layout import ElectrodeLayout
from rtdecode.sessions import open_recording, xdf_recording
from rtdecode.sessions.recording import onset_marker, parse_marker

FS = 1000.0


# ---- a minimal XDF 1.0 writer (https://github.com/sccn/xdf/wiki/Specifications) ----------------
def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + struct.pack("<B", n)
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


class XdfWriter:
    def __init__(self, path: Path):
        self.f = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.f.write(b"XDF:")
        self.f.write(_chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>'))

    def stream_header(self, sid: int, name: str, type_: str, n_ch: int, srate: float, fmt: str,
                      desc_xml: str = "") -> None:
        xml = (f'<?xml version="1.0"?><info><name>{name}</name><type>{type_}</type>'
               f"<channel_count>{n_ch}</channel_count><nominal_srate>{srate}</nominal_srate>"
               f"<channel_format>{fmt}</channel_format><source_id>{name}-src</source_id>"
               f"<created_at>50.0</created_at><desc>{desc_xml}</desc></info>")
        self.f.write(_chunk(2, struct.pack("<I", sid) + xml.encode()))

    def numeric_samples(self, sid: int, ts: np.ndarray, x: np.ndarray, stamp_every: int = 1) -> None:
        body = bytearray(struct.pack("<I", sid) + _varlen(len(ts)))
        for k, (t, row) in enumerate(zip(ts, x, strict=True)):
            if k % stamp_every == 0:
                body += b"\x08" + struct.pack("<d", float(t))
            else:
                body += b"\x00"  # time stamp deduced from the previous one + 1/srate
            body += np.asarray(row, dtype="<f4").tobytes()
        self.f.write(_chunk(3, bytes(body)))

    def string_samples(self, sid: int, ts: list[float], values: list[str]) -> None:
        body = bytearray(struct.pack("<I", sid) + _varlen(len(ts)))
        for t, v in zip(ts, values, strict=True):
            b = v.encode()
            body += b"\x08" + struct.pack("<d", t) + _varlen(len(b)) + b
        self.f.write(_chunk(3, bytes(body)))

    def clock_offset(self, sid: int, collection_time: float, offset: float) -> None:
        self.f.write(_chunk(4, struct.pack("<Idd", sid, collection_time, offset)))

    def footer(self, sid: int, first: float, last: float, count: int) -> None:
        xml = (f'<?xml version="1.0"?><info><first_timestamp>{first}</first_timestamp>'
               f"<last_timestamp>{last}</last_timestamp><sample_count>{count}</sample_count></info>")
        self.f.write(_chunk(6, struct.pack("<I", sid) + xml.encode()))

    def close(self) -> None:
        self.f.close()


def small_layout() -> ElectrodeLayout:
    return ElectrodeLayout.from_dict({"name": "xdf-8", "n_channels": 8, "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 5]]}, {"id": 2, "area": "IT", "channels": [6, 7]}]})


def write_rig_file(path: Path, *, n=600, n_ch=8, layout_in_desc=False, with_markers=True) -> np.ndarray:
    """MUA recorded on a host whose clock is 5 s behind the recorder; markers on one 2 s behind."""
    x = np.random.default_rng(1).standard_normal((n, n_ch)).astype(np.float32)
    ts = 100.0 + np.arange(n) / FS
    w = XdfWriter(path)
    desc = ""
    if layout_in_desc:
        desc = f"<rtdecode><layout>{escape(small_layout().to_json())}</layout></rtdecode>"
    w.stream_header(1, "MUA", "MUA", n_ch, FS, "float32", desc)
    if with_markers:
        w.stream_header(2, "MUA-markers", "Markers", 1, 0, "string")
    for t in (99.5, 100.0, 100.5):
        w.clock_offset(1, t, 5.0)
        if with_markers:
            w.clock_offset(2, t - 2.0, 2.0)
    half = n // 2
    w.numeric_samples(1, ts[:half], x[:half], stamp_every=10)
    if with_markers:
        # local 103.25 + 2 s offset = 105.25 on the recorder's clock = MUA sample 250
        w.string_samples(2, [103.25, 103.4], [onset_marker(4, 0), "free text"])
    w.numeric_samples(1, ts[half:], x[half:], stamp_every=10)
    w.footer(1, ts[0], ts[-1], n)
    if with_markers:
        w.footer(2, 103.25, 103.4, 2)
    w.close()
    return x


def test_xdf_mua_and_markers_with_clock_offsets(tmp_path):
    path = tmp_path / "rig.xdf"
    x = write_rig_file(path)
    rec = xdf_recording(path, layout=small_layout())
    assert rec.sampling_rate_hz == FS and rec.n_samples == 600 and rec.layout.name == "xdf-8"
    blocks = list(rec.blocks())
    np.testing.assert_array_equal(np.concatenate([b.mua for b in blocks]), x)
    assert blocks[0].mua.dtype == np.float32
    # clock offsets applied: the MUA stream now starts at 105 s on the recorder's clock
    np.testing.assert_allclose(rec.timestamps[0], 105.0, atol=1e-6)
    np.testing.assert_allclose(np.diff(rec.timestamps), 1 / FS, rtol=1e-6)
    markers = [(i, m) for b in blocks for i, m in b.markers]
    assert markers[0][0] == 250 and parse_marker(markers[0][1]) == {"event": "onset", "image": 4, "trial": 0}
    assert markers[1] == (400, "free text")


def test_xdf_layout_from_stream_description_and_by_name(tmp_path):
    path = tmp_path / "desc.xdf"
    write_rig_file(path, layout_in_desc=True)
    rec = open_recording(path, stream="MUA", markers="Markers")
    assert rec.layout.name == "xdf-8" and rec.layout.areas == small_layout().areas


def test_xdf_layout_is_required_for_unknown_channel_counts(tmp_path):
    path = tmp_path / "nolayout.xdf"
    write_rig_file(path)
    with pytest.raises(SessionError, match="--layout"):
        xdf_recording(path)
    with pytest.raises(LayoutError, match="1024 channels"):
        xdf_recording(path, layout="monkey-N")


def test_xdf_1024_channels_default_to_monkey_n(tmp_path):
    path = tmp_path / "n.xdf"
    write_rig_file(path, n=20, n_ch=1024, with_markers=False)
    rec = xdf_recording(path)
    assert rec.layout.name == "tvsd-monkey-N" and rec.n_samples == 20


def test_xdf_without_usable_stream_lists_the_streams(tmp_path):
    path = tmp_path / "markers_only.xdf"
    w = XdfWriter(path)
    w.stream_header(7, "Events", "Markers", 1, 0, "string")
    w.string_samples(7, [1.0], ["hello"])
    w.stream_header(8, "EyeTracker", "Gaze", 2, 500.0, "float32")  # a header but no samples
    w.close()
    with pytest.raises(SessionError) as e:
        xdf_recording(path)
    msg = str(e.value)
    assert "no usable MUA stream" in msg and "'Events'" in msg and "'EyeTracker'" in msg
    path2 = tmp_path / "rig.xdf"
    write_rig_file(path2)
    with pytest.raises(SessionError, match="named or typed 'EEG'.*'MUA'"):
        xdf_recording(path2, stream="EEG", layout=small_layout())


def test_not_an_xdf_file(tmp_path):
    path = tmp_path / "junk.xdf"
    path.write_bytes(b"hello world")
    with pytest.raises(SessionError, match="not a readable XDF"):
        xdf_recording(path)


@pytest.mark.lsl
def test_playback_command_plays_an_xdf_file(tmp_path, capsys):
    from rtdecode.cli import main

    path = tmp_path / "rig.xdf"
    write_rig_file(path, layout_in_desc=True)
    layout_file = tmp_path / "layout.json"
    layout_file.write_text(json.dumps(small_layout().to_dict()))
    rc = main(["playback", str(path), "--speed", "20", "--no-progress", "--layout", str(layout_file),
               "--stream-name", f"MUA-xdf-{tmp_path.name}", "--marker-stream", ""])
    assert rc == 0
    out = capsys.readouterr().out
    assert "played 600 samples" in out and "stopped by end" in out
