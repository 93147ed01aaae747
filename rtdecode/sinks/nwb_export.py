"""A frame recording (`rtdecode record`, `serve --record`) archived as an NWB file beside the raw data.

`export_nwb(rec, out)` writes (pynwb, the optional `nwb` extra):

  processing/decoding/decoded_frames    ImageSeries [N, H, W, 3] (uint8 or float32 as recorded),
                                        timestamps = each frame's `ref_time`: the LSL clock
                                        (pylsl.local_clock) of the reference sample it was decoded
                                        for, the time base of the raw LSL/XDF data it came from
                                        (evenly spaced frames: starting_time + rate instead, as
                                        nwbinspector asks; frame_info.ref_time keeps every value)
  processing/decoding/latency           TimeSeries [N] seconds, newest sample -> receipt by the
                                        recorder (valid when it ran on the serving machine),
                                        timestamps linked to decoded_frames
  processing/decoding/frame_info        DynamicTable, one row per frame: the frame header as
                                        published (seq, skipped, stimulus (-1 none), ref_time,
                                        newest_ts, model_id, flags, header_version, stage_<name>
                                        times) and the recorder's receipt time
  scratch/decoder_contract              the decoder's rtdecode.* ONNX metadata as JSON (from
                                        DecoderContract.to_metadata; from_metadata reads it back),
                                        when known. Scratch, because NWB core has no type for a
                                        model's metadata and nwbinspector refuses JSON in tables
  general/subject                       when given (KEY=VALUE fields, or copied from the raw NWB)
The model id is in the processing module's and the ImageSeries' descriptions too. The contract
comes from `model` (the .onnx, checked against the frames' model id) or from the recording's
manifest (`serve --record` stores it); without either only the model id is written.
Frames are streamed chunk by chunk (hdmf DataChunkIterator, gzip), so no recording sits in memory.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, SessionError

log = logging.getLogger(__name__)

MODULE = "decoding"
SUBJECT_KEYS = ("subject_id", "species", "sex", "age", "date_of_birth", "description", "genotype", "strain",
                "weight")


def export_nwb(rec: Any, out: str | Path, *, model: str | Path | None = None, start: int = 0,
               stop: int | None = None, step: int = 1, progress: bool = True,
               overwrite: bool = False, subject: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write frames start:stop:step of `rec` (sinks.recorder.open_recording_dir) to the NWB file `out`.

    `subject`: pynwb Subject fields (subject_fields() builds them). Returns {"path", "frames",
    "model_id", "contract": bool, "notes": [...]}.
    """
    from ..sessions.nwb import import_pynwb

    pynwb = import_pynwb()
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from hdmf.common import DynamicTable, VectorData
    from hdmf.data_utils import DataChunkIterator
    from pynwb.file import Subject
    from pynwb.image import ImageSeries

    from .. import __version__
    from ..progress import progress_bar

    out = Path(out)
    if out.suffix.lower() != ".nwb":
        raise ConfigError(f"--export-nwb {out}: expected a file name ending in .nwb")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose a new file name (nothing is overwritten)")
    if step < 1:
        raise ConfigError(f"step must be >= 1, got {step}")
    n_total = rec.n_frames
    stop = n_total if stop is None else min(int(stop), n_total)
    idx = np.arange(max(0, int(start)), stop, int(step))
    if idx.size == 0:
        raise SessionError(f"{rec.directory}: no frames in {start}:{stop}:{step} (the recording has {n_total})")
    shapes = _shapes_in(rec, int(idx[0]), int(idx[-1]) + 1)
    if len(shapes) != 1:
        raise SessionError(f"{rec.directory}: frames {int(idx[0])}..{int(idx[-1])} come in several shapes "
                           f"{', '.join(sorted(f'{list(sh)} {dt}' for sh, dt in shapes))}; an NWB ImageSeries holds one: export one "
                           f"shape at a time with --start/--stop")
    shape, dtype = next(iter(shapes))
    cols = {k: np.asarray(v)[idx] for k, v in rec.columns().items()}
    all_headers = rec.headers()
    headers = [all_headers[i] for i in idx.tolist()]
    model_ids = sorted({str(h.get("model_id")) for h in headers})
    notes: list[str] = []
    ref = cols["ref_time"].astype(np.float64)
    if np.any(np.diff(ref) < 0):
        raise SessionError(f"{rec.directory}: frame ref_time goes backwards (frame "
                           f"{int(idx[np.flatnonzero(np.diff(ref) < 0)[0] + 1])}); expected frames in decoding order")
    meta, contract_source = _contract(rec, model, model_ids)
    if meta is None:
        notes.append("no decoder contract: give the model with --model M.onnx (serve --record stores it)")
        log.warning("%s: %s", rec.directory, notes[-1])
    model_text = ", ".join(model_ids)

    created = rec.manifest.get("created") if isinstance(rec.manifest, dict) else None
    start_time = datetime.datetime.fromtimestamp(float(created) if created else rec.directory.stat().st_mtime,
                                                 tz=datetime.timezone.utc)
    nwb = pynwb.NWBFile(
        session_description=f"Frames decoded in real time by rtdecode (model {model_text}) from the MUA "
                            f"stream, recorded in {rec.directory.name}",
        identifier=str(uuid.uuid4()), session_start_time=start_time,
        source_script=f"rtdecode {__version__} (frames --export-nwb)", source_script_file_name="rtdecode",
        notes=f"Timestamps of the decoded frames are LSL clock seconds (pylsl.local_clock) of each frame's "
              f"reference sample, the time base of the raw LSL/XDF recording; the recording started "
              f"{start_time.isoformat()}. Source manifest: {json.dumps(_manifest_summary(rec))}")
    module = nwb.create_processing_module(MODULE, f"Real-time decoder output of model {model_text} (rtdecode)")
    bar = progress_bar(int(idx.size), f"export {out.name}", enabled=progress, unit="frame")

    def frames():
        for _, im in rec.iter_frames(int(idx[0]), int(idx[-1]) + 1, int(step)):
            bar.update(1)
            yield np.asarray(im)

    data = H5DataIO(DataChunkIterator(data=frames(), maxshape=(int(idx.size), *shape), dtype=np.dtype(dtype),
                                      buffer_size=64),
                    compression="gzip", compression_opts=4, chunks=(1, *shape))
    timing = _timing(ref)
    images = ImageSeries(
        name="decoded_frames", data=data, unit="n.a.", **timing,
        description=f"Decoded frames [frame, height, width, RGB] of model {model_text}"
                    + (" (float32 in [0, 1])" if np.dtype(dtype).kind == "f" else " (uint8)")
                    + "; times: LSL clock of each frame's reference sample (exact values in frame_info.ref_time)",
        comments=f"seq {int(cols['seq'][0])}..{int(cols['seq'][-1])}; see frame_info for the headers")
    module.add(images)
    latency = cols["received"] - cols["newest_ts"]
    module.add(pynwb.TimeSeries(
        name="latency", data=latency.astype(np.float64), unit="s",
        **({"timestamps": images} if "timestamps" in timing else timing),
        description="Per-frame latency: newest MUA sample's LSL timestamp -> receipt of the frame by the "
                    "recorder (one clock: valid when the recorder ran on the serving machine)"))
    module.add(_frame_table(DynamicTable, VectorData, cols, ref, headers))
    if meta is not None:
        nwb.add_scratch(json.dumps(meta, indent=1, sort_keys=True), name="decoder_contract",
                        description=f"The decoder's rtdecode.* ONNX metadata as JSON ({contract_source}): "
                                    f"rtdecode.contract.DecoderContract.from_metadata(json.loads(...)) reads it back")
    if subject:
        try:
            nwb.subject = Subject(**subject)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"subject {subject}: {e}") from e
    else:
        notes.append("no subject: give --subject subject_id=.. species=.. sex=.. age=.. or --subject-from RAW.nwb "
                     "(nwbinspector and DANDI require one)")
    tmp = out.with_name(f".{out.stem}.partial.nwb")  # renamed into place when complete
    try:
        with pynwb.NWBHDF5IO(str(tmp), "w") as io:
            io.write(nwb)
        tmp.replace(out)
    finally:
        bar.close()
        if tmp.exists():
            tmp.unlink()
    return {"path": str(out), "frames": int(idx.size), "model_id": model_text, "contract": meta is not None,
            "notes": notes}


def read_contract_metadata(path: str | Path) -> dict[str, str] | None:
    """The decoder contract metadata an export holds (scratch/decoder_contract), or None."""
    from ..sessions.nwb import import_pynwb

    pynwb = import_pynwb()
    with pynwb.NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        if "decoder_contract" not in nwb.scratch:
            return None
        data = nwb.scratch["decoder_contract"].data
        text = data if isinstance(data, str) else data[()]
        return json.loads(text.decode() if isinstance(text, bytes) else str(text))


def _timing(ref: np.ndarray) -> dict[str, Any]:
    """rate + starting_time when the frames are evenly spaced (as nwbinspector asks), else timestamps."""
    if ref.size > 2:
        d = np.diff(ref)
        if np.unique(np.round(d, 9)).size == 1 and d[0] > 0:
            return {"starting_time": float(ref[0]), "rate": float(1.0 / d[0])}
    return {"timestamps": ref}


def _frame_table(DynamicTable: Any, VectorData: Any, cols: dict[str, np.ndarray], ref: np.ndarray,
                 headers: list[dict[str, Any]]) -> Any:
    """frame_info: every header field as a column; stage times one float column each (NaN where absent)."""
    def col(name: str, description: str, data: Any) -> Any:
        return VectorData(name=name, description=description, data=data)

    columns = [
        col("seq", "frame sequence number", cols["seq"].astype(np.int64)),
        col("skipped", "windows skipped before this frame", cols["skipped"].astype(np.int64)),
        col("stimulus", "stimulus image index (-1: none)", cols["stimulus"].astype(np.int64)),
        col("ref_time", "LSL time of the reference sample (s)", ref),
        col("newest_ts", "LSL time of the newest sample used (s)", cols["newest_ts"].astype(np.float64)),
        col("received", "receipt time by the recorder (s)", cols["received"].astype(np.float64)),
        col("model_id", "the decoder that made the frame", [str(h.get("model_id", "")) for h in headers]),
        col("flags", "frame flags, comma-separated (empty: none)", [",".join(h.get("flags") or []) for h in headers]),
        col("header_version", "frame header schema version", np.array([int(h.get("v", 0)) for h in headers])),
    ]
    stages = sorted({k for h in headers for k in (h.get("stages") or {})})
    for st in stages:
        columns.append(col(f"stage_{st}", f"time the frame passed stage {st!r} (s, the serving clock)",
                           np.array([float((h.get("stages") or {}).get(st, np.nan)) for h in headers])))
    return DynamicTable(name="frame_info", description="One row per decoded frame: the frame header as published",
                        columns=columns)


def subject_fields(pairs: list[str] | None = None, subject_from: str | Path | None = None) -> dict[str, Any]:
    """Subject fields from KEY=VALUE pairs and/or another NWB file's subject (pairs win)."""
    fields: dict[str, Any] = {}
    if subject_from is not None:
        from ..sessions.nwb import import_pynwb

        pynwb = import_pynwb()
        try:
            with pynwb.NWBHDF5IO(str(subject_from), "r") as io:
                subj = io.read().subject
                if subj is None:
                    raise ConfigError(f"--subject-from {subject_from}: the file has no subject")
                for k in SUBJECT_KEYS:
                    v = getattr(subj, k, None)
                    if v is not None:
                        fields[k] = v
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(f"--subject-from {subject_from}: not a readable NWB file ({type(e).__name__}: {e})") from e
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or key not in SUBJECT_KEYS:
            raise ConfigError(f"--subject {pair!r}: expected KEY=VALUE with KEY one of {', '.join(SUBJECT_KEYS)}")
        fields[key] = value
    return fields


def _shapes_in(rec: Any, lo: int, hi: int) -> set[tuple[tuple[int, ...], str]]:
    shapes, base = set(), 0
    for c in rec.chunks:
        if base < hi and base + c.n_frames > lo:
            shapes.add((tuple(c.shape), c.dtype))
        base += c.n_frames
    return shapes


def _contract(rec: Any, model: str | Path | None, model_ids: list[str]) -> tuple[dict[str, str] | None, str]:
    """The contract metadata from the model file or the recording's manifest, checked against the frames."""
    if model is not None:
        from ..contract import read_contract

        contract = read_contract(model)
        if contract.model_id not in model_ids:
            raise ConfigError(f"--model {model} is model {contract.model_id!r} but the frames in {rec.directory} "
                              f"were decoded by {', '.join(model_ids)}")
        return contract.to_metadata(), f"from {Path(model).name}"
    meta = (rec.manifest.get("meta") or {}).get("contract") if isinstance(rec.manifest, dict) else None
    if isinstance(meta, dict) and meta:
        from ..contract import PREFIX, DecoderContract

        DecoderContract.from_metadata(meta, source=f"{rec.directory}/recording.json contract")  # validates
        if meta.get(PREFIX + "model_id") not in model_ids:
            raise SessionError(f"{rec.directory}/recording.json: contract of model {meta.get(PREFIX + 'model_id')!r} "
                               f"but the frames were decoded by {', '.join(model_ids)}")
        return {str(k): str(v) for k, v in meta.items()}, "from the recording's manifest"
    return None, ""


def _manifest_summary(rec: Any) -> dict[str, Any]:
    m = rec.manifest if isinstance(rec.manifest, dict) else {}
    return {k: m.get(k) for k in ("format", "version", "created", "source")}
