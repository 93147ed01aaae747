"""Soak test of the streaming service: a live 1024-channel 1 kHz stream decoded for minutes.

Three processes, the loopback rig (rtdecode.rig):
- a `Player` child plays a virtual-macaque recording (rtdecode.sim; --loop-s seconds rendered
  before the start, then looped) over LSL with rtdecode.playback.play (one sample per push,
  LSL timestamps on the local clock);
- this process runs DecoderService (the bundled demo model by default) in its main thread;
- a `Subscriber` child receives the frames and notes per frame its receipt time
  (time.monotonic(), the clock pylsl.local_clock() reads on Linux) and the header.

Reported (JSON + markdown + PNGs in --out): samples pushed vs received, gaps, skipped windows
by reason, frames lost between publisher and subscriber, lag over time (age of the newest
sample when each frame was decoded; first vs last minute), end-to-end latency (newest
sample's LSL timestamp -> frame received in the other process) percentiles, inference, e2e
minus inference per frame, the time outside inference per stage, frame-interval jitter, CPU
use per process and the load average (the box is shared).

    python -m rtdecode.benchmarks.soak                       # 10 minutes, stride 16 ms
    python -m rtdecode.benchmarks.soak --quick               # 20 s
    python -m rtdecode.benchmarks.soak --stride-ms 1 --duration 120 --tag stride1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.machine import load_average, machine_facts
from rtdecode.rig import COLUMNS, CpuMeter, FrameLog, Player, Subscriber, free_tcp_address, unique
from rtdecode.telemetry import latency_summary

log = logging.getLogger("soak")

DEMO_MODEL = Path(__file__).resolve().parents[1] / "rtdecode" / "assets" / "demo" / "model.onnx"


# ---- the soak ------------------------------------------------------------------------------
def run_soak(*, duration_s: float = 600.0, stride_ms: float = 16.0, model: str | Path = DEMO_MODEL,
             out_dir: str | Path = "benchmarks/results/soak-cpu-2core", tag: str | None = None,
             threads: int | None = None, seed: int = 0, n_images: int = 50, plots: bool = True,
             progress_s: float = 30.0, warmup_s: float = 2.0, keep_frames: bool = False,
             loop_s: float = 30.0) -> dict[str, Any]:
    """Run one soak; write soak-<tag>.json/.md (+ PNGs) into out_dir and return the results.

    Frames received in the first `warmup_s` seconds (the inlet's first clock-offset estimate
    holds back the first samples) are counted but left out of the latency and lag figures.
    """
    from rtdecode.config import ServeConfig
    from rtdecode.lslconfig import configure_lsl
    from rtdecode.service import DecoderService

    configure_lsl(scope="machine")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tag = tag or f"stride{stride_ms:g}ms-{int(duration_s)}s"
    work = out / f".{unique(f'soak-{tag}')}"
    stream = unique("soak")
    address = free_tcp_address()
    sub = Subscriber(address, work_dir=work / "subscriber", start_timeout=60.0, stop_timeout=60.0)
    player = Player(stream=stream, sim={"seed": seed, "n_images": n_images, "seconds": loop_s},
                    work_dir=work / "player", stop_timeout=30.0, stream_type="MUA-soak", loop=True,
                    duration=duration_s, chunk_ms=1.0, source_id=stream, wait_for_consumer=60.0, linger_s=3.0)
    cfg = ServeConfig(stream=stream, model=str(model), stride_ms=stride_ms, address=address,
                      resolve_timeout_s=60.0, threads=threads, status_interval_s=progress_s)
    svc = DecoderService(cfg)
    load: list[tuple[float, float]] = []
    inlet_age: list[tuple[float, float]] = []
    cpu: dict[str, Any] = {}
    done = threading.Event()

    def watch() -> None:
        """Sample lag and load while the service runs; stop it once the player is done."""
        svc.started.wait()
        t0 = time.monotonic()
        meter = CpuMeter({"player": player.pid}, self_name="service")
        next_load = t0
        last_samples, last_change = -1, t0
        while not done.is_set():
            now = time.monotonic()
            tel = svc.telemetry
            if math.isfinite(tel.newest_ts):
                inlet_age.append((now - t0, now - tel.newest_ts))
            if now >= next_load:
                load.append((now - t0, (load_average() or [math.nan])[0]))
                next_load = now + 5.0
            if tel.samples != last_samples:
                last_samples, last_change = tel.samples, now
            # the player pushed its last sample (and lingers 3 s): once nothing new arrived for
            # 1 s after the planned duration, or the player is gone, stop the service
            if not player.alive or (now - t0 > duration_s and now - last_change > 1.0):
                cpu.update(meter.read())
                svc.stop("player finished")
                return
            meter.sample()
            done.wait(0.1)

    started_wall = time.time()
    load_before = load_average()
    sub.start()
    try:
        player.start()
        watcher = threading.Thread(target=watch, name="soak-watch", daemon=True)
        watcher.start()
        try:
            summary = svc.run()
        finally:
            done.set()
            player.stop()
            time.sleep(0.5)  # let the last frames reach the subscriber
            sub.stop()
            watcher.join(5)
    finally:
        sub.stop()
    if not (player.stopped_cleanly and sub.stopped_cleanly):
        raise RuntimeError(f"a soak child process did not finish (player: {player.error or 'no error'}, "
                           f"subscriber: {sub.error or 'no error'})")
    frames = sub.frames if sub.frames is not None else FrameLog(np.zeros((0, len(COLUMNS))), COLUMNS)
    inlet_age = [(t, a) for t, a in inlet_age if t <= duration_s]  # not the wait after the last push
    results = analyse(frames, player.stats(), summary.to_dict(), load, inlet_age, cpu,
                      stride_ms=stride_ms, duration_s=duration_s, warmup_s=warmup_s)
    results.update({"tag": tag, "model": str(model), "model_id": summary.model_id, "engine": summary.engine,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started_wall)),
                    "load_average_before": load_before, "load_average_after": load_average(),
                    "machine": machine_facts(), "config": {"stride_ms": stride_ms, "duration_s": duration_s,
                                                      "threads": threads, "seed": seed, "n_images": n_images,
                                                      "stream_loop_s": loop_s}})
    inlet_age = [(t, a) for t, a in inlet_age if warmup_s <= t <= duration_s]  # while the stream ran
    write_outputs(results, frames.since(warmup_s), inlet_age, out, tag, plots=plots)
    if keep_frames:  # the per-frame table (rtdecode.rig.FrameLog files), to analyse again
        for name in ("frames.npy", "frames.json"):
            if (work / "subscriber" / name).exists():
                (work / "subscriber" / name).replace(out / f"soak-{tag}-{name}")
    shutil.rmtree(work, ignore_errors=True)
    return results


def analyse(frames: FrameLog, played: dict, summary: dict, load: list, inlet_age: list, cpu: dict, *,
            stride_ms: float, duration_s: float, warmup_s: float = 0.0) -> dict[str, Any]:
    """Frames the subscriber received + service summary + player stats -> the results dict."""
    kept = frames.since(warmup_s) if warmup_s > 0 else frames
    col = kept.col
    rec, newest = col("received"), col("newest_ts")
    e2e = rec - newest
    infer = col("inferred") - col("normalised")
    outside = e2e - infer
    age_at_decode = col("started") - newest
    stages = {
        "transport (newest sample -> in ring)": col("pulled") - newest,
        "wake-up (in ring -> decode starts)": col("started") - col("pulled"),
        "assemble": col("assembled") - col("started"),
        "normalise": col("normalised") - col("assembled"),
        "infer": infer,
        "encode + header (inferred -> published)": col("published") - col("inferred"),
        "publish -> received (ZeroMQ + subscriber)": rec - col("published"),
    }
    tel = summary.get("telemetry", {})
    stream = tel.get("stream", {})
    pushed = int(played.get("samples", 0))
    received = int(stream.get("samples", 0))
    seq = frames.col("seq")
    lost_frames = int(seq[-1] - seq[0] + 1 - seq.size) if seq.size else 0
    t_rel = rec - rec[0] if rec.size else rec
    win = min(60.0, max(duration_s / 4.0, 1.0))
    first = t_rel <= win
    last = t_rel >= (t_rel[-1] - win if t_rel.size else 0)
    lag = {
        "window_s": win,
        "age_at_decode_first_ms": latency_summary(age_at_decode[first] * 1e3),
        "age_at_decode_last_ms": latency_summary(age_at_decode[last] * 1e3),
        "e2e_first_ms": latency_summary(e2e[first] * 1e3),
        "e2e_last_ms": latency_summary(e2e[last] * 1e3),
    }
    a, b = lag["age_at_decode_first_ms"], lag["age_at_decode_last_ms"]
    lag["median_growth_ms"] = (b["p50_ms"] - a["p50_ms"]) if a.get("count") and b.get("count") else None
    # lag over time: per interval (a minute; a tenth of a short run)
    step = 60.0 if duration_s >= 300 else max(duration_s / 10.0, 1.0)
    per = []
    if t_rel.size:
        for k in range(int(t_rel[-1] // step) + 1):
            sel = (t_rel >= k * step) & (t_rel < (k + 1) * step)
            if sel.sum() < 2:
                continue
            per.append({"from_s": k * step, "frames": int(sel.sum()),
                        "age_p50_ms": float(np.median(age_at_decode[sel]) * 1e3),
                        "age_p99_ms": float(np.percentile(age_at_decode[sel], 99) * 1e3),
                        "e2e_minus_infer_p50_ms": float(np.median(outside[sel]) * 1e3),
                        "e2e_minus_infer_p99_ms": float(np.percentile(outside[sel], 99) * 1e3)})
    lag["per_interval"] = per
    if len(per) >= 3:  # trend of the per-interval medians (robust to a stall), ms per minute
        lag["age_slope_ms_per_min"] = float(np.polyfit([p["from_s"] for p in per], [p["age_p50_ms"] for p in per],
                                                       1)[0] * 60.0)
    ia = np.asarray(inlet_age, dtype=np.float64).reshape(-1, 2)
    ia = ia[ia[:, 0] >= warmup_s]
    if ia.size:
        lag["inlet_age_first_ms"] = latency_summary(ia[ia[:, 0] <= warmup_s + win, 1] * 1e3)
        lag["inlet_age_last_ms"] = latency_summary(ia[ia[:, 0] >= ia[-1, 0] - win, 1] * 1e3)
    intervals = np.diff(rec)
    return {
        "frames": {"published": int(summary.get("frames", 0)), "received": len(frames),
                   "lost_between_pub_and_sub": lost_frames, "passed_over_by_subscriber": frames.discarded,
                   "flagged": frames.flagged,
                   "refused_by_pub": int(tel.get("publish_dropped", 0)),
                   "per_s": float(len(kept) / (t_rel[-1] if t_rel.size and t_rel[-1] > 0 else 1.0)),
                   "warmup_s": warmup_s, "in_warmup": len(frames) - len(kept)},
        "samples": {"pushed": pushed, "received": received, "dropped": pushed - received,
                    "gaps": int(stream.get("gaps", 0)), "missing_samples": int(stream.get("missing_samples", 0)),
                    "out_of_order": int(stream.get("out_of_order", 0)), "duplicates": int(stream.get("duplicates", 0)),
                    "nan_samples": int(stream.get("nan_samples", 0)), "reconnects": int(stream.get("reconnects", 0)),
                    "late_pushes": int(played.get("late_pushes", 0)),
                    "max_push_late_ms": float(played.get("max_late_s", 0.0)) * 1e3},
        "skipped": dict(summary.get("skipped", {})),
        "stop_reason": summary.get("stop_reason"),
        "error": summary.get("error"),
        "latency_ms": {"end_to_end": latency_summary(e2e * 1e3), "infer": latency_summary(infer * 1e3),
                       "e2e_minus_infer": latency_summary(outside * 1e3),
                       "age_at_decode": latency_summary(age_at_decode * 1e3)},
        "stages_ms": {k: latency_summary(v * 1e3) for k, v in stages.items()},
        "lag": lag,
        "frame_interval_ms": {**latency_summary(intervals * 1e3), "stride_ms": stride_ms,
                              "jitter_sd_ms": float(np.std(intervals) * 1e3) if intervals.size else None},
        "cpu": {**cpu, "subscriber_cpu_s": frames.cpu_s},
        "load_average_1min": {"samples": [[round(t, 1), round(v, 2)] for t, v in load],
                              "mean": float(np.mean([v for _, v in load])) if load else None,
                              "max": float(np.max([v for _, v in load])) if load else None},
        "service_summary": {k: v for k, v in tel.items() if k != "events"},
    }


# ---- outputs -------------------------------------------------------------------------------
def write_outputs(results: dict, frames: FrameLog, inlet_age: list, out: Path, tag: str, *,
                  plots: bool = True) -> dict[str, str]:
    paths = {"json": str(out / f"soak-{tag}.json"), "md": str(out / f"soak-{tag}.md")}
    if plots and len(frames):
        paths.update(_plots(frames, inlet_age, out, tag, results))
    results["files"] = {k: Path(v).name for k, v in paths.items()}
    Path(paths["json"]).write_text(json.dumps(_clean(results), indent=1) + "\n")
    Path(paths["md"]).write_text(markdown(results))
    return paths


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _plots(frames: FrameLog, inlet_age: list, out: Path, tag: str, results: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, newest = frames.col("received"), frames.col("newest_ts")
    infer = frames.col("inferred") - frames.col("normalised")
    started = frames.col("started")
    e2e = (rec - newest) * 1e3
    outside = e2e - infer * 1e3
    load = results["load_average_1min"]["mean"]
    note = f"{results['frames']['received']} frames, load avg ~{load:.1f}" if load is not None else ""
    lat_png = out / f"soak-{tag}-latency.png"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    lo = max(min(np.nanmin(outside), np.nanmin(e2e)), 0.05)
    hi = max(np.nanmax(e2e), lo * 10)
    bins = np.logspace(np.log10(lo), np.log10(hi), 120)
    ax.hist(e2e, bins=bins, alpha=0.6, label="end to end (newest sample -> received)")
    ax.hist(outside, bins=bins, alpha=0.6, label="end to end minus inference")
    for v, ls in ((np.median(outside), "--"), (np.percentile(outside, 99), ":")):
        ax.axvline(v, color="C1", ls=ls, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ms (log)")
    ax.set_ylabel("frames")
    ax.set_title(f"soak {tag}: latency per frame ({note})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(lat_png, dpi=110)
    plt.close(fig)

    lag_png = out / f"soak-{tag}-lag.png"
    fig, ax = plt.subplots(figsize=(8, 4.5))
    t = rec - rec[0]
    ax.plot(t, (started - newest) * 1e3, ",", alpha=0.4, label="age of newest sample at decode (per frame)")
    sec = np.floor(t).astype(np.int64)
    if sec.size:
        med = np.array([np.median(e2e[sec == s]) for s in np.unique(sec)])
        ax.plot(np.unique(sec), med, "-", lw=1, label="end to end, median per second")
    ia = np.asarray(inlet_age, dtype=np.float64).reshape(-1, 2)
    if ia.size:
        ax.plot(ia[:, 0], ia[:, 1] * 1e3, ",", alpha=0.3, color="C2", label="inlet: age of newest sample (10 Hz)")
    ax.set_yscale("log")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("ms (log)")
    ax.set_title(f"soak {tag}: lag over time")
    ax.legend(fontsize=8, markerscale=20)
    fig.tight_layout()
    fig.savefig(lag_png, dpi=110)
    plt.close(fig)
    return {"latency_png": str(lat_png), "lag_png": str(lag_png)}


def _f(v: Any, d: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def markdown(r: dict) -> str:
    lat, s, fr = r["latency_ms"], r["samples"], r["frames"]
    la = r["load_average_1min"]
    lines = [
        f"# Soak {r['tag']}: {r['config']['duration_s']:g} s, stride {r['config']['stride_ms']:g} ms",
        "",
        f"Started {r['started']}; model `{r['model_id']}` on {r['engine']}; "
        f"{r['machine'].get('cpu', r['machine'].get('cpu_model', ''))} ({r['machine'].get('cores', '?')} cores). "
        f"Load average (1 min) during the run: mean {_f(la['mean'], 2)}, max {_f(la['max'], 2)} "
        f"(before {r['load_average_before']}, after {r['load_average_after']}).",
        "",
        f"- samples pushed {s['pushed']}, received {s['received']}, **dropped {s['dropped']}**; gaps {s['gaps']}, "
        f"out-of-order {s['out_of_order']}, duplicates {s['duplicates']}, reconnects {s['reconnects']}; "
        f"late pushes by the player {s['late_pushes']} (max {_f(s['max_push_late_ms'], 1)} ms)",
        f"- frames published {fr['published']}, received {fr['received']} ({_f(fr['per_s'], 1)}/s), lost between "
        f"PUB and SUB {fr['lost_between_pub_and_sub']}, refused by PUB {fr['refused_by_pub']}; the "
        f"{fr['in_warmup']} frames of the first {fr['warmup_s']:g} s are left out of the figures below",
        "- skipped windows: " + (", ".join(f"{k} {v}" for k, v in sorted(r["skipped"].items())) or "none"),
        f"- stop: {r['stop_reason']}" + (f"; error: {r['error']}" if r.get("error") else ""),
        "",
        "| latency (ms) | p50 | p90 | p99 | p99.9 | max |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("end to end (newest sample -> received)", lat["end_to_end"]), ("inference", lat["infer"]),
            ("**end to end minus inference**", lat["e2e_minus_infer"]),
            ("age of newest sample at decode", lat["age_at_decode"])]
    rows += [(f"stage: {k}", v) for k, v in r["stages_ms"].items()]
    rows.append(("frame interval", r["frame_interval_ms"]))
    for name, st in rows:
        lines.append(f"| {name} | " + " | ".join(_f(st.get(k)) for k in
                                                   ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms")) + " |")
    lag = r["lag"]
    lines += [
        "",
        f"Lag (first vs last {lag['window_s']:g} s): age of the newest sample at decode, median "
        f"{_f(lag['age_at_decode_first_ms'].get('p50_ms'))} -> {_f(lag['age_at_decode_last_ms'].get('p50_ms'))} ms, "
        f"p99 {_f(lag['age_at_decode_first_ms'].get('p99_ms'))} -> {_f(lag['age_at_decode_last_ms'].get('p99_ms'))} ms; "
        f"trend of the per-interval medians {_f(lag.get('age_slope_ms_per_min'), 4)} ms/min. End to end median "
        f"{_f(lag['e2e_first_ms'].get('p50_ms'))} -> {_f(lag['e2e_last_ms'].get('p50_ms'))} ms.",
        f"Frame interval jitter (sd): {_f(r['frame_interval_ms'].get('jitter_sd_ms'))} ms.",
        "",
        "| from (s) | frames | age at decode p50 | p99 | e2e minus inference p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {p['from_s']:g} | {p['frames']} | {_f(p['age_p50_ms'])} | {_f(p['age_p99_ms'])} | "
              f"{_f(p['e2e_minus_infer_p50_ms'])} | {_f(p['e2e_minus_infer_p99_ms'])} |" for p in lag.get("per_interval", [])]
    lines += [
        "",
        "CPU: " + ", ".join(f"{k} {_f(v, 2)}" for k, v in r["cpu"].items() if isinstance(v, (int, float))),
        "",
    ]
    for key in ("latency_png", "lag_png"):
        if key in r.get("files", {}):
            lines.append(f"![{key}]({r['files'][key]})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of streaming")
    p.add_argument("--quick", action="store_true", help="20 s instead of --duration")
    p.add_argument("--stride-ms", type=float, default=16.0)
    p.add_argument("--model", default=str(DEMO_MODEL))
    p.add_argument("--threads", type=int, default=None, help="engine intra-op threads (default: engine's)")
    p.add_argument("--out", default="benchmarks/results/soak-cpu-2core")
    p.add_argument("--tag", default=None, help="file name part (default stride<S>ms-<D>s)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--keep-frames", action="store_true", help="keep the per-frame table (soak-<tag>-frames.npy/.json, an rtdecode.rig.FrameLog)")
    p.add_argument("--loop-s", type=float, default=30.0,
                   help="seconds of virtual-macaque MUA rendered before streaming, then looped")
    p.add_argument("--progress-s", type=float, default=30.0, help="service status line interval")
    p.add_argument("--warmup-s", type=float, default=2.0, help="frames of the first seconds left out of the figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    duration = 20.0 if args.quick else args.duration
    r = run_soak(duration_s=duration, stride_ms=args.stride_ms, model=args.model, out_dir=args.out, tag=args.tag,
                 threads=args.threads, plots=not args.no_plots, progress_s=args.progress_s,
                 warmup_s=args.warmup_s, keep_frames=args.keep_frames, loop_s=args.loop_s)
    sys.stdout.write(markdown(r))
    return 0 if r["samples"]["dropped"] == 0 and not r.get("error") else 1


if __name__ == "__main__":
    raise SystemExit(main())
