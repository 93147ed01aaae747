"""The demo (`rtdecode demo`): the whole pipeline on one machine, runtime only (no torch, no GPU).

On the loopback rig (rtdecode.rig):
1. regenerate a small virtual-macaque session (rtdecode.sim) with the bundled model's layout;
2. play it as a live LSL stream from a `Player` child (machine-scope LSL, unique stream names);
3. serve the bundled model (rtdecode/assets/demo/model.onnx) with DecoderService in a thread of
   this process (`ServiceThread`), publishing on loopback ZeroMQ;
4. receive every frame in a `Subscriber` child and measure its latency (newest sample's LSL
   timestamp -> receipt), pair one frame per stimulus onset (the window starting nearest to it);
5. write to the output folder: demo.gif (stimulus | reconstruction | latency, one panel per image),
   reconstructions.png, latency.png (histogram), summary.json.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

from .telemetry import latency_summary

log = logging.getLogger(__name__)

# The virtual macaque the bundled model was trained on, and demo images it has never seen.
DEFAULT_SEED = 0
DEFAULT_IMAGE_SEED = 20240
DEFAULT_N_IMAGES = 80


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


def model_stimuli(training_config: dict[str, Any]) -> str:
    """The stimulus kind a model was trained on (training_config data.stimuli), else dead-leaves."""
    from .sim import STIMULUS_KINDS

    data = training_config.get("data")
    kind = data.get("stimuli") if isinstance(data, dict) else None
    return kind if kind in STIMULUS_KINDS else "dead-leaves"


def model_noise(training_config: dict[str, Any]) -> float:
    """The simulator noise scale a model's training session had (training_config data.noise), else 1."""
    data = training_config.get("data")
    noise = data.get("noise") if isinstance(data, dict) else None
    return float(noise) if isinstance(noise, (int, float)) and noise >= 0 else 1.0


def run_demo(out: str | Path, *, model: str | Path | None = None, n_images: int = DEFAULT_N_IMAGES,
             seed: int | None = None, image_seed: int = DEFAULT_IMAGE_SEED, stimuli: str | None = None,
             speed: float = 1.0,
             stride_ms: float = 16.0, engine: str = "onnxruntime", threads: int | None = None,
             tile: int = 160, keep_session: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the demo end to end; returns the summary also written to OUT/summary.json."""
    import numpy as np

    from .config import ServeConfig
    from .contract import read_contract
    from .errors import ConfigError
    from .rig import Player, ServiceThread, Subscriber, free_tcp_address, unique
    from .sessions.session_file import open_session
    from .sim.macaque import VirtualMacaque
    from .sources.markers import LslMarkerFeed, StimulusTracker

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
    if stimuli is None:
        stimuli = model_stimuli(contract.training_config)
    fs = contract.plan.sampling_rate_hz
    size = contract.image_height

    # 1. the session
    t0 = time.monotonic()
    session_path = out / "session.h5"
    _say(progress, f"[1/4] simulating {n_images} images ({n_images * 0.4 + 0.5:.0f} s of MUA, "
                   f"{contract.layout.n_channels} channels, seed {seed}, {stimuli} images, image seed {image_seed}) "
                   f"-> {session_path}")
    noise = model_noise(contract.training_config)
    sim = VirtualMacaque(contract.layout, image_size=size, seed=seed, stimuli=stimuli, noise=noise)
    sim_info = sim.simulate_session(session_path, n_images=n_images, image_seed=image_seed,
                                    progress=progress and n_images > 200)
    with open_session(session_path) as s:
        images = np.asarray(s.images)
        n_samples = s.n_samples
        session_s = n_samples / s.sampling_rate_hz
    if abs(fs - sim.sampling_rate_hz) > 1e-6:
        raise ConfigError(f"model {model_path} expects {fs:g} Hz but the simulator produces {sim.sampling_rate_hz:g} Hz")

    # 2. the live stream (player child), 3. the service (thread), 4. the subscriber (child)
    tag = unique(str(os.getpid()))
    stream, markers = f"rtdecode-demo-MUA-{tag}", f"rtdecode-demo-markers-{tag}"
    address = free_tcp_address()
    cfg = ServeConfig(stream=stream, model=str(model_path), engine=engine, threads=threads,
                      stride_ms=stride_ms, address=address, resolve_timeout_s=30.0,
                      status_interval_s=10.0 if progress else 0.0)
    # the player keeps its outlets open (linger) until it is stopped, after the service
    player = Player(stream=stream, session=session_path, marker_stream=markers, speed=speed,
                    source_id=f"src-{tag}", wait_for_consumer=60.0, linger_s=120.0)
    _say(progress, f"[2/4] playing it as LSL stream {stream!r} (+ markers) at speed {speed:g}")
    with player, Subscriber(address, keep_images=True) as sub:
        feed = LslMarkerFeed(markers, StimulusTracker(), timeout=30.0)
        try:
            with ServiceThread(cfg) as svc:
                _say(progress, f"[3/4] serving {model_path.name} ({contract.model_id}) with {engine}, "
                               f"one frame per {stride_ms:g} ms -> {address}")
                _follow(svc, player, feed, n_samples, deadline_s=session_s / speed + 90.0, progress=progress)
                serve_summary = svc.join(15, reason="demo finished")
        finally:
            onsets = feed.onsets()
            feed.close()
        sub.stop()
        player.stop(5.0)
    if player.error:
        raise ConfigError(f"the demo player failed: {player.error}")
    frames = sub.frames
    if frames is None:
        raise ConfigError(f"the demo's frame subscriber failed: {sub.error or 'no error recorded; see its stderr'}")

    # 5. outputs
    _say(progress, f"[4/4] writing {out}/: demo.gif, reconstructions.png, latency.png, summary.json")
    lat_ms = (frames.col("received") - frames.col("newest_ts")) * 1e3
    refs = frames.col("ref_time")
    # under load the service skips stale windows: accept the nearest window within 3 strides
    pairs = _pair_frames(refs, onsets, 3 * stride_ms / 1000.0 + 1.0 / fs)
    offsets_ms = np.array([(refs[k] - ts) * 1e3 for _, k, ts in pairs])
    corr = _pixel_correlations(images, frames.images, pairs)
    _write_gif(out / "demo.gif", pairs, frames, images, lat_ms, tile, fps=1.0 / 0.4 * speed)
    _write_sheet(out / "reconstructions.png", pairs[:12], frames, images)
    _write_histogram(out / "latency.png", lat_ms, serve_summary)
    summary = {
        "out": str(out), "model": str(model_path), "model_id": contract.model_id,
        "engine": serve_summary.engine if serve_summary else engine,
        "session": {"seed": seed, "image_seed": image_seed, "stimuli": stimuli, "noise": noise, "n_images": n_images, "duration_s": session_s,
                    "channels": contract.layout.n_channels, "layout": contract.layout.name,
                    "simulated_in_s": sim_info.get("seconds"), "kept": bool(keep_session)},
        "speed": speed, "stride_ms": stride_ms,
        "frames_received": len(frames),
        "images_shown": len(onsets), "images_paired": len(pairs),
        "paired_window_offset_ms": latency_summary(np.abs(offsets_ms)),
        "latency_ms": latency_summary(lat_ms),
        "first_frame_latency_ms": float(lat_ms[0]) if len(lat_ms) else None,
        "latency_definition": "receipt by a ZeroMQ subscriber (time.monotonic) minus the LSL timestamp "
                              "of the newest sample the frame used (pylsl.local_clock), same machine",
        "pixel_corr_mean": float(np.mean(corr)) if len(corr) else None,
        "service": serve_summary.to_dict() if serve_summary else None,
        "playback": player.stats(),
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
    if lat.get("count"):
        lines.append(f"latency (newest sample -> frame received): p50 {lat['p50_ms']:.1f} ms, "
                     f"p90 {lat['p90_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms")
    svc = (s.get("service") or {}).get("telemetry", {}).get("latency_ms", {})
    if svc.get("infer", {}).get("count"):
        lines.append(f"inference: p50 {svc['infer']['p50_ms']:.1f} ms, p99 {svc['infer']['p99_ms']:.1f} ms")
    fit = (s.get("service") or {}).get("telemetry", {}).get("input_fit")
    if fit:  # rtdecode.fit: does the stream look like the model's training data? (try --seed 3)
        lines.append(f"input fit: {fit['state']}" + (f" ({fit['reason']})" if fit.get("reason") else
                     f", {fit.get('misfit_blocks', 0)} of {fit.get('blocks', 0)} blocks out of the held-out range; "
                     "latest " + " ".join(f"{k} {v:.2f}" for k, v in fit.get("score", {}).items())))
    if s.get("pixel_corr_mean") is not None:
        lines.append(f"pixel correlation stimulus vs onset frame: {s['pixel_corr_mean']:.2f} "
                     f"over {s['images_paired']} images")
    lines.append(f"outputs in {s['out']}/: {', '.join(s['outputs'])}")
    return "\n".join(lines)


# ---- pieces ---------------------------------------------------------------------------------
def _follow(svc, player, feed, n_samples: int, *, deadline_s: float, progress: bool) -> None:
    """Wait while the session plays: until every sample is in (then 0.5 s more to decode the last
    windows), the player is gone, the service stopped, or `deadline_s` passed."""
    tel = svc.service.telemetry
    deadline = time.monotonic() + deadline_s
    drain_until = None
    next_note = time.monotonic() + 5.0
    while time.monotonic() < deadline and svc.alive:
        now = time.monotonic()
        if drain_until is None and (tel.samples >= n_samples or not player.alive):
            drain_until = now + 0.5
        if drain_until is not None and now > drain_until:
            return
        if progress and now > next_note:
            next_note = now + 5.0
            _say(progress, f"      {tel.frames} frames published, {len(feed.onsets())} images shown")
        time.sleep(0.05)


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, flush=True)


def _pair_frames(refs, onsets: list[tuple[float, int]], tol_s: float) -> list[tuple[int, int, float]]:
    """(image index, frame index, onset time) for every onset with a frame whose window starts within tol."""
    import numpy as np

    if not len(refs):
        return []
    pairs = []
    for ts, img in onsets:
        k = int(np.argmin(np.abs(refs - ts)))
        if abs(refs[k] - ts) <= tol_s:
            pairs.append((int(img), k, float(ts)))
    return pairs


def _pixel_correlations(images, frame_images, pairs):
    """Pixel correlation (rtdecode.metrics) of each paired stimulus [H, W, 3] uint8 and its frame."""
    import numpy as np

    from .metrics import pixel_correlation

    if not pairs:
        return np.empty(0)

    def batch(a):  # [N, H, W, 3] uint8 -> [N, 3, H, W] floats in [0, 1]
        return np.transpose(np.asarray(a, dtype=np.float64), (0, 3, 1, 2)) / 255.0

    stimuli = batch(np.stack([images[img] for img, _, _ in pairs]))
    reconstructions = batch(np.stack([frame_images[k] for _, k, _ in pairs]))
    return pixel_correlation(reconstructions, stimuli)


def _write_gif(path: Path, pairs, frames, images, lat_ms, tile: int, fps: float) -> None:
    from .display.viewer import AnimationWriter, PanelComposer

    composer = PanelComposer(tile=tile, images=images)
    writer = AnimationWriter(path.parent, "gif", fps=fps, name=path.stem)
    refs, seqs = frames.col("ref_time"), frames.col("seq")
    for n, (img, k, ts) in enumerate(pairs):
        dt_ms = (refs[k] - ts) * 1e3
        writer.write(composer.compose(frames.images[k], stimulus=img, latency_ms=float(lat_ms[k]), seq=int(seqs[k]),
                                      extra=f"image {n + 1}/{len(pairs)}; window starts {dt_ms:+.0f} ms from onset"))
    writer.close()


def _write_sheet(path: Path, pairs, frames, images, scale: int = 2) -> None:
    """Stimuli (top row) above their live reconstructions (bottom row)."""
    import numpy as np
    from PIL import Image

    from .display.viewer import to_uint8, upscale

    if not pairs:
        return
    h = images.shape[1] * scale
    gap = 4
    sheet = np.full((2 * h + 3 * gap, len(pairs) * (h + gap) + gap, 3), 24, np.uint8)
    for n, (img, k, _) in enumerate(pairs):
        x = gap + n * (h + gap)
        sheet[gap:gap + h, x:x + h] = upscale(images[img], h)[:h, :h]
        sheet[2 * gap + h:2 * gap + 2 * h, x:x + h] = upscale(to_uint8(frames.images[k]), h)[:h, :h]
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
