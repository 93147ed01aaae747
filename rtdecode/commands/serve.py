"""`rtdecode serve --stream MUA --model M.onnx`: decode a live LSL stream and publish frames on ZeroMQ.

Settings come from ServeConfig defaults, then `--config FILE` (TOML/JSON), then the flags given
here. SIGINT/SIGTERM stop the service cleanly and print the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from ..config import (
    BAD_SAMPLE_POLICIES,
    CATCH_UP_POLICIES,
    FRAME_DTYPES,
    INLET_MODES,
    LSL_SCOPES,
    MODES,
    ServeConfig,
)

log = logging.getLogger(__name__)

_D = ServeConfig()
_CHOICES = {"mode": MODES, "frame_dtype": FRAME_DTYPES, "on_bad_samples": BAD_SAMPLE_POLICIES,
            "lsl_scope": LSL_SCOPES, "inlet": INLET_MODES,
            "catch_up": CATCH_UP_POLICIES}

# (flag, config key, type, help); type None = store_true/false pair handled separately
_FLAGS = (
    ("--stream", "stream", str, "LSL stream name or type to read"),
    ("--model", "model", str, "rtdecode ONNX decoder (its metadata holds layout, windows, normalisation)"),
    ("--engine", "engine", str, "inference engine: onnxruntime, ort-cuda, ort-tensorrt, tensorrt, torch-cuda, "
                                "torch-cpu, or auto (picks the fastest that runs here and says why)"),
    ("--threads", "threads", int, "engine intra-op threads (None: the engine's choice)"),
    ("--stride-ms", "stride_ms", float, "one frame per this much new data (16 ~ 60 Hz; 1 = every sample at 1 kHz)"),
    ("--mode", "mode", str, "sliding: newest complete window; event: one frame per onset marker"),
    ("--markers", "marker_stream", str, "LSL marker stream (name or type) for --mode event"),
    ("--address", "address", str, "ZeroMQ PUB address (binding beyond 127.0.0.1 must be asked for here)"),
    ("--sndhwm", "sndhwm", int, "PUB high-water mark: frames queued per slow subscriber before dropping"),
    ("--sndbuf", "sndbuf", int, "PUB kernel send buffer in bytes (0: the OS default, which lets a stalled "
                                "subscriber find seconds of old frames; raise it for fast streams over slow links)"),
    ("--frame-dtype", "frame_dtype", str, "payload: uint8 (0..255) or float32 (0..1)"),
    ("--buffer-s", "buffer_s", float, "ring buffer length in seconds"),
    ("--on-bad-samples", "on_bad_samples", str, "windows with NaN/Inf or spanning a gap: skip or flag"),
    ("--max-lag-ms", "max_lag_ms", float, "skip windows whose newest sample is older than this"),
    ("--resolve-timeout", "resolve_timeout_s", float, "seconds to wait for the stream to appear"),
    ("--reconnect-timeout", "reconnect_timeout_s", float, "stop when a lost stream stays away this long"),
    ("--lsl-scope", "lsl_scope", str, "LSL discovery: machine (this computer) or network"),
    ("--inlet", "inlet", str, "where LSL is pulled: thread (an inlet thread wakes the loop) or loop (the serve "
                              "loop pulls itself: no thread hand-off)"),
    ("--catch-up", "catch_up", str, "when decoding takes longer than a stride: fresh (wait for the next sample "
                                    "when the newest one is stale: fresher frames) or newest (decode at once)"),
    ("--pin-cpu", "pin_cpu", int, "pin the serve loop (and ONNX Runtime's run with 1 thread) to this CPU; the "
                                  "inlet thread keeps the others"),
    ("--record", "record", str, "also record frames and telemetry into this directory"),
    ("--status-interval", "status_interval_s", float, "seconds between status lines (0: off)"),
    ("--heartbeat-interval", "heartbeat_interval_s", float,
     "seconds between heartbeats (state, session id) on the PUB socket, topic 'heartbeat' (0: off)"),
    ("--prometheus-port", "prometheus_port", int, "serve Prometheus metrics at http://127.0.0.1:PORT/metrics"),
    ("--duration", "duration_s", float, "stop after this many seconds"),
    ("--max-frames", "max_frames", int, "stop after this many frames"),
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="decode a live LSL MUA stream and publish frames over ZeroMQ",
                       description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="TOML or JSON file of serve settings (flags given here override it)",
                   default=argparse.SUPPRESS)
    for flag, key, typ, text in _FLAGS:
        # SUPPRESS: absent flags do not override the config file; the default is shown by hand
        p.add_argument(flag, dest=key, type=typ, default=argparse.SUPPRESS, choices=_CHOICES.get(key),
                       help=f"{text} (default: {getattr(_D, key)})")
    p.add_argument("--no-reconnect", dest="reconnect", action="store_false", default=argparse.SUPPRESS,
                   help="stop when the outlet vanishes instead of reconnecting")
    p.add_argument("--busy-poll", dest="busy_poll", action="store_true", default=argparse.SUPPRESS,
                   help="with --inlet loop: spin for the sample that completes the due window instead of "
                        "sleeping until it comes (less latency; a core busy for up to one sample interval per frame)")
    p.add_argument("--engine-opt", dest="engine_opt", action="append", default=None, metavar="KEY=VALUE",
                   help="engine-specific option, repeatable (values parsed as JSON where they can be), e.g. "
                        "--engine-opt engine_path=m.engine --engine-opt fp16=true; see docs/gpu.md")
    p.add_argument("--summary-json", default=None, help="write the final summary (JSON) to this file")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> ServeConfig:
    """Defaults <- config file <- flags."""
    cfg = ServeConfig.from_file(args.config) if getattr(args, "config", None) else ServeConfig()
    keys = set(ServeConfig.field_names())
    flags = {k: v for k, v in vars(args).items() if k in keys}
    if getattr(args, "engine_opt", None):
        flags["engine_options"] = {**cfg.engine_options, **parse_engine_opts(args.engine_opt)}
    return cfg.override(flags, source="command line")


def parse_engine_opts(items: list[str]) -> dict:
    """['fp16=true', 'engine_path=m.engine'] -> {'fp16': True, 'engine_path': 'm.engine'}."""
    from ..errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--engine-opt {item!r} must be KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


# Exit statuses (docs/serving.md): 0 a clean stop (signal, duration, max frames), 1 an error (the
# stream gone past reconnect_timeout_s, engine, model, sink), 2 bad usage or config, 3 a stop
# while the stream was lost (not reconnected yet), 130 interrupted before the service ran.
EXIT_STREAM_LOST = 3


def run(args: argparse.Namespace) -> int:
    from ..service import DecoderService

    cfg = build_config(args)
    service = DecoderService(cfg, announce=print)  # --engine auto prints its choice and reasons
    exporter = None
    if cfg.prometheus_port is not None:
        from ..sinks.prometheus import PrometheusExporter

        exporter = PrometheusExporter(service.telemetry, port=cfg.prometheus_port,
                                      labels={"model": str(cfg.model)}).start()
        print(f"prometheus metrics at {exporter.url}")

    def _on_signal(signum, _frame):
        service.stop(f"signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = service.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if exporter is not None:
            exporter.close()
    print(summary.text())
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump({"config": cfg.to_dict(), **summary.to_dict()}, f, indent=2, default=str)
    if summary.error:
        print(f"rtdecode serve: error: {summary.error}", file=sys.stderr)
        return 1
    if summary.stream_lost:
        print("rtdecode serve: the stream was lost when the run ended", file=sys.stderr)
        return EXIT_STREAM_LOST
    return 0

