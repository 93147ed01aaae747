"""`rtdecode frames DIR`: summarise, list and export a frame recording (from `record` or `serve --record`).

  rtdecode frames DIR                     summary: frames, chunks, seq range, latency percentiles
  rtdecode frames DIR --list              one line per chunk (file, frames, seq range, shape)
  rtdecode frames DIR --export out.gif    animated GIF;  --export out_dir/  one PNG per frame
  --phosphene                             export [frame | phosphene rendering] panels instead
  rtdecode frames DIR --export-nwb out.nwb [--model M.onnx]
                                          NWB file: frames (ImageSeries, LSL timestamps), latency,
                                          headers, model id and contract (the `nwb` extra)
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frames", help="list or export a recorded frame directory",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("directory", help="recording directory (chunk-*.h5 files)")
    p.add_argument("--list", action="store_true", help="list the chunk files")
    p.add_argument("--export", default=None,
                   help="write frames: a path ending in .gif (animation) or a directory (PNG per frame)")
    p.add_argument("--export-nwb", default=None, metavar="OUT.nwb",
                   help="write frames, their LSL timestamps, latency, headers and the model's id and contract "
                        "to an NWB file (needs the nwb extra)")
    p.add_argument("--model", default=None,
                   help="--export-nwb: the .onnx decoder that made the frames, for its contract "
                        "(default: the one `serve --record` stored in the recording)")
    p.add_argument("--subject", nargs="*", default=None, metavar="KEY=VALUE",
                   help="--export-nwb: the subject, e.g. subject_id=N species='Macaca mulatta' sex=M age=P7Y")
    p.add_argument("--subject-from", default=None, metavar="RAW.nwb",
                   help="--export-nwb: copy the subject of this NWB file (the session's raw data)")
    p.add_argument("--start", type=int, default=0, help="first frame to export (0-based)")
    p.add_argument("--stop", type=int, default=None, help="frame to stop before (default: the end)")
    p.add_argument("--step", type=int, default=1, help="export every n-th frame")
    p.add_argument("--fps", type=float, default=20.0, help="GIF frame rate")
    p.add_argument("--phosphene", action="store_true",
                   help="export side-by-side [frame | phosphenes] panels (builtin renderer)")
    p.add_argument("--phosphenes", type=int, default=1024, help="number of phosphenes for --phosphene")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sinks.recorder import open_recording_dir

    rec = open_recording_dir(args.directory)
    if not args.list and not args.export and not args.export_nwb:
        summary = rec.summary()
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            _print_summary(summary)
        return 0
    out: dict = {}
    if args.list:
        out["chunk_list"] = [c.as_dict() for c in rec.chunks]
        out["bad_chunks"] = [f"{n}: {why}" for n, why in rec.bad_chunks]
        out["incomplete_temp_files"] = rec.temp_files
        out["frames"] = rec.n_frames
    if args.export:
        from ..display.frame_export import export_frames

        out["exported"] = export_frames(rec, args.export, start=args.start, stop=args.stop, step=args.step,
                                        fps=args.fps, phosphene=args.phosphene, n_phosphenes=args.phosphenes)
    if args.export_nwb:
        from ..sinks.nwb_export import export_nwb, subject_fields

        out["exported_nwb"] = export_nwb(rec, args.export_nwb, model=args.model, start=args.start, stop=args.stop,
                                         step=args.step, progress=not args.json,
                                         subject=subject_fields(args.subject, args.subject_from))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    if args.list:
        for c in out["chunk_list"]:
            print(f"{c['file']}  frames {c['frames']:5d}  seq {c['first_seq']}..{c['last_seq']}  "
                  f"shape {c['shape']} {c['dtype']}")
        for bad in out["bad_chunks"]:
            print(f"unreadable: {bad}")
        for t in out["incomplete_temp_files"]:
            print(f"incomplete (ignored): {t}")
        print(f"{rec.n_frames} frames in {len(rec.chunks)} chunks")
    if args.export:
        e = out["exported"]
        print(f"exported {e['frames']} frames to {e['path']}")
    if args.export_nwb:
        e = out["exported_nwb"]
        print(f"exported {e['frames']} frames of model {e['model_id']} to {e['path']}"
              + (" with the decoder contract" if e["contract"] else ""))
        for note in e["notes"]:
            print(f"note: {note}")
    return 0


def _print_summary(s: dict) -> None:
    print(f"{s['directory']}: {s['frames']} frames in {s['chunks']} chunks, "
          f"seq {s['first_seq']}..{s['last_seq']}, seq gaps {s['latency']['seq_gaps']}, shapes {s['shapes']}")
    for name, lat in s["latency"].items():
        if isinstance(lat, dict) and lat.get("n"):
            label = "newest sample -> receipt" if name == "receipt" else f"newest sample -> {name}"
            print(f"  {label}: median {lat['median_ms']:.2f} ms, p95 {lat['p95_ms']:.2f} ms, "
                  f"p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
    for bad in s["bad_chunks"]:
        print(f"  unreadable: {bad}")
    for t in s["incomplete_temp_files"]:
        print(f"  incomplete (ignored): {t}")
