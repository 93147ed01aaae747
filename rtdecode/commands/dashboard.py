"""`rtdecode dashboard --connect tcp://127.0.0.1:5556`: a local web page of a running server's frames.

A client of `rtdecode serve`'s ZeroMQ PUB address (like `view` and `record`): it subscribes there and
serves the newest frame, a latency plot and the status (no frames yet, malformed messages, a failed
receiver) at http://127.0.0.1:PORT (rtdecode.sinks.dashboard). Open the printed address in a browser.
SIGINT and SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def register(sub: argparse._SubParsersAction) -> None:
    from ..protocol import DEFAULT_ADDRESS

    p = sub.add_parser("dashboard", help="local web page: newest frame, latency plot and errors of a running server",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--connect", default=DEFAULT_ADDRESS, metavar="ADDRESS",
                   help="ZeroMQ address `rtdecode serve` publishes on")
    p.add_argument("--port", type=int, default=8765, help="HTTP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--history", type=int, default=1000, help="frames the latency plot covers")
    p.add_argument("--stale-s", type=float, default=2.0,
                   help="say so on the page when no frame came for this many seconds")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..sinks.dashboard import Dashboard

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    if args.history < 1:
        raise ConfigError(f"--history must be >= 1 frame, got {args.history}")
    if not args.stale_s > 0:
        raise ConfigError(f"--stale-s must be > 0 seconds, got {args.stale_s}")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration}")
    stop = threading.Event()

    def _stop(signum, _frame):
        stop.set()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            dash = Dashboard(args.connect, port=args.port, history=args.history, stale_s=args.stale_s)
        except OSError as e:  # the port is taken, or not ours to bind
            raise ConfigError(f"cannot serve the dashboard on 127.0.0.1:{args.port}: {e}; "
                              "pick another --port (0: a free one)") from e
        with dash:
            print(f"dashboard at {dash.url} (frames from {args.connect}); Ctrl-C to stop", flush=True)
            stop.wait(args.duration)
            stats = dash.stats()
            failure = dash.failure
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    lat = stats.get("latency_ms")
    print(f"dashboard: {stats['frames']} frames, {stats['malformed']} malformed"
          + (f", latency median {lat['median']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat else ""))
    if failure is not None:
        print(f"rtdecode dashboard: error: {failure}", file=sys.stderr)
        return 1
    return 0
