"""`rtdecode playback SESSION`: replay a recorded session (.h5), an XDF or NWB file or a TVSD folder
as a live LSL stream, with its markers on a string stream."""

from __future__ import annotations

import argparse

from .nwb_options import add_nwb_options, nwb_selection


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("playback", help="play a recorded session (.h5, .xdf, .nwb, TVSD folder) as a live LSL stream",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("session", help="rtdecode session .h5, LabRecorder .xdf, NWB .nwb, or a TVSD folder")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed (2 = twice real time)")
    p.add_argument("--loop", action="store_true", help="start over at the end, until stopped")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (wall clock)")
    p.add_argument("--stream-name", default="MUA", help="name of the LSL MUA stream")
    p.add_argument("--stream-type", default="MUA", help="type of the LSL MUA stream")
    p.add_argument("--marker-stream", default="MUA-markers",
                   help="name of the LSL marker stream ('' for none)")
    p.add_argument("--chunk-ms", type=float, default=1.0, help="push this many ms of samples at a time")
    p.add_argument("--source-id", default=None, help="LSL source_id (default derived from the session and stream name)")
    p.add_argument("--layout", default=None,
                   help="electrode layout for XDF streams and NWB series: monkey-N, monkey-F or a JSON file "
                        "(else the stream's own / the NWB electrode table, or monkey-N for 1024 channels)")
    p.add_argument("--stream", default=None, help="XDF: the MUA stream's name or type")
    p.add_argument("--markers", default=None, help="XDF: the marker stream's name or type")
    add_nwb_options(p)
    p.add_argument("--monkey", default=None, help="TVSD folder: monkey N or F")
    p.add_argument("--things-dir", default=None, help="TVSD folder: the THINGS image folder")
    p.add_argument("--wait-for-consumer", type=float, default=0.0, metavar="S",
                   help="wait up to S seconds for an inlet before pushing (0 = start at once)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..playback import play
    from ..sessions import open_recording

    tvsd_opts = {k: v for k, v in (("monkey", args.monkey), ("things_dir", args.things_dir)) if v is not None}
    nwb = {f"nwb_{k}": v for k, v in nwb_selection(args).items()}
    rec = open_recording(args.session, layout=args.layout, stream=args.stream, markers=args.markers, **nwb,
                         **tvsd_opts)
    total = f"{rec.n_samples / rec.sampling_rate_hz:.1f} s" if rec.n_samples else "endless"
    print(f"playing {rec.name}: {rec.layout.n_channels} channels ({rec.layout.name}) at "
          f"{rec.sampling_rate_hz:g} Hz, {total}, speed {args.speed:g}{', looping' if args.loop else ''} "
          f"-> LSL stream {args.stream_name!r}" + (f" + markers {args.marker_stream!r}" if args.marker_stream else ""))
    stats = play(rec, stream_name=args.stream_name, stream_type=args.stream_type,
                 marker_stream=args.marker_stream or None, speed=args.speed, loop=args.loop,
                 duration=args.duration, chunk_ms=args.chunk_ms, source_id=args.source_id,
                 progress=not args.no_progress, wait_for_consumer=args.wait_for_consumer or False)
    print(stats.summary())
    return 130 if stats.stopped_by == "interrupt" else 0
