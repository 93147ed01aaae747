"""`rtdecode record`: subscribe to published frames and record them crash-safely to a directory.

The recording is a directory of HDF5 chunk files renamed into place when complete (see
rtdecode/sinks/recorder.py): killing this process loses at most the chunk being written. SIGINT and
SIGTERM stop it cleanly (everything received is written). With --json it prints one JSON line
per event on stdout: {"event": "ready"}, {"event": "chunk", ...} after each chunk is in place,
and {"event": "done", ...} at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record published frames (crash-safe HDF5 chunks)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--address", default="tcp://127.0.0.1:5556", help="ZeroMQ address of `rtdecode serve`")
    p.add_argument("--out", required=True, help="recording directory (created; must hold no chunks yet)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--chunk-frames", type=int, default=100, help="frames per chunk file (flush size)")
    p.add_argument("--chunk-seconds", type=float, default=1.0, help="flush a chunk at least this often")
    p.add_argument("--compression", choices=("none", "gzip", "lzf"), default="none", help="HDF5 compression of frames")
    p.add_argument("--json", action="store_true", help="print JSON lines (ready, chunk, done) on stdout")
    p.set_defaults(func=run)


def _emit(enabled: bool, obj: dict) -> None:
    if enabled:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..record import record_frames
    from ..sinks.recorder import FrameRecorder

    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration}")
    stop = {"flag": False}

    def _stop(signum, _frame):  # clean stop: the loop ends, the recorder flushes
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    def on_chunk(info) -> None:
        _emit(args.json, {"event": "chunk", **info.as_dict()})

    recorder = FrameRecorder(args.out, chunk_frames=args.chunk_frames, chunk_seconds=args.chunk_seconds,
                             compression=None if args.compression == "none" else args.compression,
                             source=args.address, on_chunk=on_chunk)
    record_frames(args.address, recorder, duration=args.duration, max_frames=args.max_frames,
                  should_stop=lambda: stop["flag"],
                  on_ready=lambda: _emit(args.json, {"event": "ready", "address": args.address,
                                                     "out": str(recorder.directory)}))
    stats = recorder.stats()
    _emit(args.json, {"event": "done", **stats})
    if not args.json:
        print(f"recorded {stats['written']} frames in {stats['chunks']} chunks to {recorder.directory} "
              f"(dropped {stats['dropped']})")
    return 0
