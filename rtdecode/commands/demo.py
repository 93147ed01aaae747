"""`rtdecode demo`: the whole pipeline on one machine, runtime only (no torch, no rig, no GPU).

1. regenerate a small virtual-macaque session (rtdecode.sim) with the bundled model's layout;
2. play it as a live LSL stream from a child process (machine-scope LSL, unique stream names);
3. serve the bundled model (rtdecode/assets/demo/model.onnx) with DecoderService in this process,
   publishing on loopback ZeroMQ;
4. receive every frame with a FrameSubscriber and measure its latency (newest sample's LSL
   timestamp -> receipt), pair one frame per stimulus onset (the window starting nearest to it);
5. write to the output folder: demo.gif (stimulus | reconstruction | latency, one panel per image),
   reconstructions.png, latency.png (histogram), summary.json; print a latency summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The virtual macaque the bundled model was trained on, and demo images it has never seen.
DEFAULT_SEED = 0
DEFAULT_IMAGE_SEED = 20240
DEFAULT_N_IMAGES = 80


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate a session, stream it, decode it live, save an animation and latencies",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo-output", help="output folder")
    p.add_argument("--model", default=None, help="decoder .onnx; None = the bundled demo model")
    p.add_argument("--n-images", type=int, default=DEFAULT_N_IMAGES,
                   help="images in the demo session (400 ms each)")
    p.add_argument("--seed", type=int, default=None,
                   help="virtual-macaque seed; None = the model's (training_config data.sim_seed), else "
                        f"{DEFAULT_SEED}, the seed the bundled model was trained with")
    p.add_argument("--image-seed", type=int, default=DEFAULT_IMAGE_SEED,
                   help="seed of the demo images (differs from the training images)")
    p.add_argument("--speed", type=float, default=1.0, help="playback speed")
    p.add_argument("--stride-ms", type=float, default=16.0, help="decode one frame per this many ms of data")
    p.add_argument("--engine", default="onnxruntime", help="inference engine (see `rtdecode serve --help`)")
    p.add_argument("--threads", type=int, default=None, help="engine threads; None = the engine's default")
    p.add_argument("--tile", type=int, default=160, help="panel tile size in pixels")
    p.add_argument("--keep-session", action="store_true",
                   help="keep the regenerated session .h5 in the output folder (~130 MB for 80 images)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = run_demo(args.out, model=args.model, n_images=args.n_images, seed=args.seed,
                       image_seed=args.image_seed, speed=args.speed, stride_ms=args.stride_ms,
                       engine=args.engine, threads=args.threads, tile=args.tile,
                       keep_session=args.keep_session)
    print(summary_text(summary))
    return 0 if summary["frames_received"] > 0 else 1


def bundled_model() -> Path:
    """Path of the bundled demo model (rtdecode/assets/demo/model.onnx)."""
    from importlib.resources import files

    return Path(str(files("rtdecode") / "assets" / "demo" / "model.onnx"))


def model_seed(training_config: dict[str, Any]) -> int | None:
    """The virtual-macaque seed recorded in a model's training config, when there is one."""
    for section in (training_config.get("data"), training_config.get("session"), training_config):
        if isinstance(section, dict):
            for key in ("sim_seed", "session_seed", "macaque_seed"):
                if isinstance(section.get(key), int):
                    return int(section[key])
    return None


def run_demo(out: str | Path, *, model: str | Path | None = None, n_images: int = DEFAULT_N_IMAGES,
             seed: int | None = None, image_seed: int = DEFAULT_IMAGE_SEED, speed: float = 1.0,
             stride_ms: float = 16.0, engine: str = "onnxruntime", threads: int | None = None,
             tile: int = 160, keep_session: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the demo end to end; returns the summary also written to OUT/summary.json."""
    import multiprocessing as mp

    import numpy as np

    from ..config import ServeConfig
    from ..contract import read_contract
    from ..errors import ConfigError
    from ..protocol import FrameSubscriber
    from ..service import DecoderService
    from ..sim.macaque import VirtualMacaque
    from ..sources.markers import LslMarkerFeed, StimulusTracker

    if n_images < 1:
        raise ConfigError(f"--n-images must be >= 1, got {n_images}")
    model_path = Path(model) if model is not None else bundled_model()
    if not model_path.exists():
        raise ConfigError(f"decoder {model_path} not found" + ("" if model is not None else
                          "; the bundled demo model is missing from this install: pass --model M.onnx"))
    contract = read_contract(model_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if seed is None:
        seed = model_seed(contract.training_config)
        seed = DEFAULT_SEED if seed is None else seed
    fs = contract.plan.sampling_rate_hz
    size = contract.image_height

    # 1. the session
    t0 = time.monotonic()
    session_path = out / "session.h5"
    _say(progress, f"[1/4] simulating {n_images} images ({n_images * 0.4 + 0.5:.0f} s of MUA, "
                   f"{contract.layout.n_channels} channels, seed {seed}, image seed {image_seed}) -> {session_path}")
    sim = VirtualMacaque(contract.layout, image_size=size, seed=seed)
    sim_info = sim.simulate_session(session_path, n_images=n_images, image_seed=image_seed,
                                    progress=progress and n_images > 200)
    from ..sessions.session_file import open_session

    with open_session(session_path) as s:
        images = np.asarray(s.images)
        n_samples = s.n_samples
        session_s = n_samples / s.sampling_rate_hz
    if abs(fs - sim.sampling_rate_hz) > 1e-6:
        raise ConfigError(f"model {model_path} expects {fs:g} Hz but the simulator produces {sim.sampling_rate_hz:g} Hz")

    # 2. the live stream (child process), 3. the service (thread), 4. the subscriber (here)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
    stream, markers = f"rtdecode-demo-MUA-{tag}", f"rtdecode-demo-markers-{tag}"
    address = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    release = ctx.Event()  # set once the service has stopped: the player may close its outlets
    child = ctx.Process(target=_play_child,
                        args=(str(session_path), stream, markers, f"src-{tag}", speed, results, release),
                        name="rtdecode-demo-player", daemon=True)
    _say(progress, f"[2/4] playing it as LSL stream {stream!r} (+ markers) at speed {speed:g}")
    child.start()
    feed = service = thread = None
    frames: list[tuple[float, float, float, int, np.ndarray]] = []  # ref_ts, newest_ts, received, seq, image
    serve_result: dict[str, Any] = {}
    stop = threading.Event()
    sub = FrameSubscriber(address, rcvhwm=1000)
    try:
        feed = LslMarkerFeed(markers, StimulusTracker(), timeout=30.0)
        cfg = ServeConfig(stream=stream, model=str(model_path), engine=engine, threads=threads,
                          stride_ms=stride_ms, address=address, resolve_timeout_s=30.0,
                          status_interval_s=10.0 if progress else 0.0)
        service = DecoderService(cfg, stop_event=stop)

        def serve() -> None:
            try:
                serve_result["summary"] = service.run()
            except BaseException as e:  # reported below, after the other pieces are stopped
                serve_result["error"] = e

        thread = threading.Thread(target=serve, name="rtdecode-demo-serve", daemon=True)
        thread.start()
        _say(progress, f"[3/4] serving {model_path.name} ({contract.model_id}) with {engine}, "
                       f"one frame per {stride_ms:g} ms -> {address}")
        deadline = time.monotonic() + session_s / speed + 90.0
        drain_until = None
        next_note = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            f = sub.recv(timeout=0.1)
            if f is not None:
                h = f.header
                frames.append((h.ref_time, h.newest_ts, f.received, h.seq, f.image.copy()))
            if not thread.is_alive():
                break
            if drain_until is None and (service.telemetry.samples >= n_samples or not child.is_alive()):
                drain_until = time.monotonic() + 0.5  # every sample is in: decode the last windows
            if drain_until is not None and time.monotonic() > drain_until:
                break
            if progress and time.monotonic() > next_note:
                next_note = time.monotonic() + 5.0
                _say(progress, f"      {len(frames)} frames received, {len(feed.onsets())} images shown")
    finally:
        stop.set()
        if service is not None:
            service.stop("demo finished")
        if thread is not None:
            thread.join(15)
        sub.close()
        release.set()
        if feed is not None:
            onsets = feed.onsets()
            feed.close()
        else:
            onsets = []
        child.join(5)
        if child.is_alive():
            child.terminate()
            child.join(2)
    if "error" in serve_result:
        raise serve_result["error"]
    play_stats = results.get(timeout=2) if not results.empty() else {}
    if isinstance(play_stats, dict) and play_stats.get("error"):
        raise ConfigError(f"the demo player failed: {play_stats['error']}")
    serve_summary = serve_result.get("summary")

    # 5. outputs
    _say(progress, f"[4/4] writing {out}/: demo.gif, reconstructions.png, latency.png, summary.json")
    lat_ms = np.array([(rec - newest) * 1e3 for _, newest, rec, _, _ in frames])
    # under load the service skips stale windows: accept the nearest window within 3 strides
    pairs = _pair_frames(frames, onsets, 3 * stride_ms / 1000.0 + 1.0 / fs)
    offsets_ms = np.array([(frames[k][0] - ts) * 1e3 for _, k, ts in pairs])
    corr = [_pixel_corr(images[img], frames[k][4]) for img, k, _ in pairs]
    _write_gif(out / "demo.gif", pairs, frames, images, lat_ms, tile, fps=1.0 / 0.4 * speed)
    _write_sheet(out / "reconstructions.png", pairs[:12], frames, images)
    _write_histogram(out / "latency.png", lat_ms, serve_summary)
    summary = {
        "out": str(out), "model": str(model_path), "model_id": contract.model_id,
        "engine": serve_summary.engine if serve_summary else engine,
        "session": {"seed": seed, "image_seed": image_seed, "n_images": n_images, "duration_s": session_s,
                    "channels": contract.layout.n_channels, "layout": contract.layout.name,
                    "simulated_in_s": sim_info.get("seconds"), "kept": bool(keep_session)},
        "speed": speed, "stride_ms": stride_ms,
        "frames_received": len(frames),
        "images_shown": len(onsets), "images_paired": len(pairs),
        "paired_window_offset_ms": _percentiles(np.abs(offsets_ms)),
        "latency_ms": _percentiles(lat_ms),
        "first_frame_latency_ms": float(lat_ms[0]) if len(lat_ms) else None,
        "latency_definition": "receipt by a ZeroMQ subscriber (time.monotonic) minus the LSL timestamp "
                              "of the newest sample the frame used (pylsl.local_clock), same machine",
        "pixel_corr_mean": float(np.mean(corr)) if corr else None,
        "service": serve_summary.to_dict() if serve_summary else None,
        "playback": play_stats,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "wall_s": time.monotonic() - t0,
        "outputs": ["demo.gif", "reconstructions.png", "latency.png", "summary.json"]
                   + (["session.h5"] if keep_session else []),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if not keep_session:
        session_path.unlink(missing_ok=True)
    return summary


def summary_text(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    lines = [f"demo: {s['frames_received']} frames decoded live from {s['images_shown']} images "
             f"({s['session']['duration_s']:.0f} s of simulated MUA, {s['session']['channels']} channels) "
             f"with {s['model_id']} on {s['engine']}"]
    if lat:
        lines.append(f"latency (newest sample -> frame received): p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, "
                     f"p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms")
    svc = (s.get("service") or {}).get("telemetry", {}).get("latency_ms", {})
    if svc.get("infer", {}).get("count"):
        lines.append(f"inference: p50 {svc['infer']['p50_ms']:.1f} ms, p99 {svc['infer']['p99_ms']:.1f} ms")
    if s.get("pixel_corr_mean") is not None:
        lines.append(f"pixel correlation stimulus vs onset frame: {s['pixel_corr_mean']:.2f} "
                     f"over {s['images_paired']} images")
    lines.append(f"outputs in {s['out']}/: {', '.join(s['outputs'])}")
    return "\n".join(lines)


# ---- pieces ---------------------------------------------------------------------------------
def _play_child(session: str, stream: str, markers: str, source_id: str, speed: float, results: Any,
                release: Any) -> None:
    """Child process: play the session file once, waiting for the service's inlet first, and keep
    the outlets open until `release` is set (so the service stops before its stream vanishes)."""
    try:
        from ..playback import play
        from ..sessions import open_recording

        stats = play(open_recording(session), stream_name=stream, marker_stream=markers, speed=speed,
                     source_id=source_id, progress=False, wait_for_consumer=60.0, stop_event=release,
                     linger_s=120.0)
        results.put(stats.to_dict())
    except BaseException as e:  # the parent reports it
        results.put({"error": f"{type(e).__name__}: {e}"})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, flush=True)


def _pair_frames(frames: list, onsets: list[tuple[float, int]], tol_s: float) -> list[tuple[int, int, float]]:
    """(image index, frame index, onset time) for every onset with a frame whose window starts within tol."""
    import numpy as np

    if not frames:
        return []
    refs = np.array([f[0] for f in frames])
    pairs = []
    for ts, img in onsets:
        k = int(np.argmin(np.abs(refs - ts)))
        if abs(refs[k] - ts) <= tol_s:
            pairs.append((int(img), k, float(ts)))
    return pairs


def _pixel_corr(a, b) -> float:
    import numpy as np

    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if np.asarray(b).dtype != np.uint8:
        y = y * 255.0
    if x.size != y.size or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _percentiles(a) -> dict[str, float]:
    import numpy as np

    if len(a) == 0:
        return {}
    return {"count": int(len(a)), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(np.max(a)), "mean": float(np.mean(a))}


def _write_gif(path: Path, pairs, frames, images, lat_ms, tile: int, fps: float) -> None:
    from ..display.viewer import AnimationWriter, PanelComposer

    composer = PanelComposer(tile=tile, images=images)
    writer = AnimationWriter(path.parent, "gif", fps=fps, name=path.stem)
    for n, (img, k, ts) in enumerate(pairs):
        dt_ms = (frames[k][0] - ts) * 1e3
        writer.write(composer.compose(frames[k][4], stimulus=img, latency_ms=float(lat_ms[k]), seq=frames[k][3],
                                      extra=f"image {n + 1}/{len(pairs)}; window starts {dt_ms:+.0f} ms from onset"))
    writer.close()


def _write_sheet(path: Path, pairs, frames, images, scale: int = 2) -> None:
    """Stimuli (top row) above their live reconstructions (bottom row)."""
    import numpy as np
    from PIL import Image

    from ..display.viewer import to_uint8, upscale

    if not pairs:
        return
    h = images.shape[1] * scale
    gap = 4
    sheet = np.full((2 * h + 3 * gap, len(pairs) * (h + gap) + gap, 3), 24, np.uint8)
    for n, (img, k, _) in enumerate(pairs):
        x = gap + n * (h + gap)
        sheet[gap:gap + h, x:x + h] = upscale(images[img], h)[:h, :h]
        sheet[2 * gap + h:2 * gap + 2 * h, x:x + h] = upscale(to_uint8(frames[k][4]), h)[:h, :h]
    Image.fromarray(sheet).save(path)


def _write_histogram(path: Path, lat_ms, serve_summary) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    if len(lat_ms):
        hi = float(np.percentile(lat_ms, 99.9)) * 1.2
        ax.hist(np.clip(lat_ms, 0, hi), bins=60, color="#4477aa")
        for q, style in ((50, "-"), (99, "--")):
            v = float(np.percentile(lat_ms, q))
            ax.axvline(v, color="#cc6677", linestyle=style, label=f"p{q} {v:.1f} ms")
        ax.legend()
    title = "newest MUA sample -> frame received"
    if serve_summary is not None:
        infer = serve_summary.telemetry.get("latency_ms", {}).get("infer", {})
        if infer.get("count"):
            title += f" (inference p50 {infer['p50_ms']:.1f} ms)"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
