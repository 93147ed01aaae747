"""End-to-end latency through real LSL and ZeroMQ: pusher -> DecoderService -> FrameSubscriber.

Three processes, the loopback rig (rtdecode.rig): a child pushes 1024-channel MUA at 1 kHz
(`Pusher.noise`: one sample per push, explicit LSL timestamps on the local_clock, so the stream
behaves like an amplifier's); this process runs rtdecode's DecoderService; another child
(`Subscriber`) notes, per frame, when it arrived (time.monotonic(), the clock
pylsl.local_clock() reads on Linux) and the header. Latency = receipt - header.newest_ts (the
newest sample the frame used). `run_e2e_part` also runs the first-try baseline (first_try.py).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from rtdecode.rig import CpuMeter, Pusher, Subscriber, free_tcp_address
from rtdecode.telemetry import latency_summary

from .frame_stats import analyse_frames, stage_breakdown

log = logging.getLogger(__name__)


# ---- rtdecode's pipeline ---------------------------------------------------------------------
def run_rtdecode(model_path: str | Path, *, stride_ms: float, duration_s: float, threads: int | None,
                 engine: str = "onnxruntime", progress=print, keep_log: bool = False,
                 engine_options: dict | None = None, **serve_options) -> tuple:
    """One e2e run of DecoderService at `stride_ms`; returns (row, latency series ms), and the
    subscriber's FrameLog third when `keep_log`. `engine_options` / `serve_options` go to
    ServeConfig (engine_options, and e.g. pin_cpus) for A/B runs of the serve loop's options."""
    from rtdecode.config import ServeConfig
    from rtdecode.service import DecoderService

    address = free_tcp_address()
    with Pusher.noise(duration_s=duration_s + 3.0) as pusher:
        config = ServeConfig(stream=pusher.name, model=str(model_path), engine=engine, threads=threads,
                             stride_ms=stride_ms, address=address, duration_s=duration_s + 1.0,
                             status_interval_s=0.0, resolve_timeout_s=20.0,
                             engine_options=dict(engine_options or {}), **serve_options)
        with Subscriber(address) as sub:
            service = DecoderService(config)
            meter: dict = {}

            def start_meter() -> None:  # from the first pushed sample on
                try:
                    pusher.base(30)
                except (TimeoutError, RuntimeError):
                    return
                meter["m"] = CpuMeter({"pusher": pusher.pid, "subscriber": sub.pid}, self_name="decoder")
            th = threading.Thread(target=start_meter, daemon=True)
            th.start()
            summary = service.run()
            cpu = meter["m"].read() if "m" in meter else {}
        try:
            pusher.wait_done(timeout=10)
        except (TimeoutError, RuntimeError) as e:
            log.warning("%s", e)
    frames = sub.frames
    row, lat = analyse_frames(frames, stride_ms)
    if frames is not None and len(frames):
        row["stages_ms"] = stage_breakdown(frames.since(0.5))
    decoder_cores = cpu.get("decoder_cores")
    row.update(pipeline="rtdecode", stride_ms=stride_ms, engine=engine, threads=threads,
               cpu=cpu, cpu_percent=None if decoder_cores is None else decoder_cores * 100.0)
    row.update(_service_counts(summary))
    if pusher.state().get("done"):
        row["pusher_late_ms"] = latency_summary(pusher.late_ms())
        row["samples_pushed"] = pusher.state()["pushed"]
    progress(f"e2e rtdecode{''.join(f' {k}={v}' for k, v in serve_options.items())} stride {stride_ms} ms: {row['frames_received']} frames, "
             f"p50 {row['latency_ms'].get('p50_ms', float('nan')):.2f} ms "
             f"p99 {row['latency_ms'].get('p99_ms', float('nan')):.2f} ms")
    return (row, lat, frames) if keep_log else (row, lat)


def _service_counts(summary) -> dict:
    """Skipped windows / dropped samples from the service's summary (dict or object)."""
    d = summary if isinstance(summary, dict) else getattr(summary, "to_dict", lambda: vars(summary))()
    snap = d.get("telemetry", d)
    stream = snap.get("stream", {}) if isinstance(snap, dict) else {}
    skipped = snap.get("skipped_total", snap.get("skipped")) if isinstance(snap, dict) else None
    if isinstance(skipped, dict):
        skipped = sum(skipped.values())
    return {"skipped_windows": skipped,
            "skipped_by_reason": snap.get("skipped") if isinstance(snap.get("skipped"), dict) else None,
            "dropped_samples": stream.get("missing_samples"),
            "gaps": stream.get("gaps"),
            "frames_published": snap.get("frames"),
            "service_latency_ms": snap.get("latency_ms")}


# ---- the e2e part: model choice, engine baseline, rtdecode and first-try runs -------------------
def e2e_model(work_dir: str | Path) -> tuple[Path, str, object]:
    """(onnx path, description, torch module or None) both pipelines decode with.

    The bundled demo model when the first-try pipeline can run it in torch eager (rtdecode's
    torch-cpu engine rebuilds it) or torch is absent; else the fast preset (64x64) with random
    weights, whose torch module the first-try pipeline runs directly; else a linear decoder.
    """
    import importlib.util

    from .inference import bench_contract, build_preset_module, demo_model_path, export_module

    have_torch = importlib.util.find_spec("torch") is not None
    demo = demo_model_path()
    why = "no bundled demo model here"
    if demo is not None:
        if not have_torch:
            return demo, "bundled demo model", None
        try:
            from rtdecode.contract import read_contract
            from rtdecode.engines import create_engine

            create_engine("torch-cpu", str(demo), read_contract(demo)).close()
            return demo, "bundled demo model", None
        except Exception as e:  # the torch engine cannot rebuild this export
            why = f"the torch-cpu engine cannot rebuild the demo model ({str(e)[:160]})"
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if have_torch:
        c = bench_contract(64, model_id="fast64-random")
        path = work_dir / "e2e_fast64.onnx"
        module = build_preset_module("fast", 64, c)
        export_module(module, c, path)
        return path, f"fast preset 64x64 with random weights ({why})", module
    from rtdecode.onnx_io import build_linear_decoder, save_model

    c = bench_contract(16, model_id="linear16")
    w = np.random.default_rng(0).standard_normal((int(np.prod(c.input_shape)), 768)).astype(np.float32) * 0.01
    path = save_model(build_linear_decoder(c, w, np.zeros(768, np.float32)), work_dir / "e2e_linear16.onnx")
    return path, "linear 16x16 decoder (no demo model, no torch here)", None


def engine_baseline(model_path: Path, *, engine: str, threads: int | None, n: int) -> tuple[dict, str]:
    """Inference alone with the engine the service uses (same options), for e2e - infer."""
    from rtdecode.contract import read_contract

    from .inference import engine_runner, time_calls

    contract = read_contract(model_path)
    opts = {} if threads is None else {"threads": threads}
    fn, desc = engine_runner(engine, model_path, contract, **opts)
    return time_calls(fn, n=n, warmup=10).summary(), desc
