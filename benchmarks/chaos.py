"""Chaos benchmark: the real `rtdecode serve` process against a messy outlet that keeps restarting.

Three processes (the loopback rig, rtdecode.rig):
- a `ChaosOutlet` child: 1024 channels at 1 kHz in jittered odd chunk sizes, NaN bursts,
  duplicated and backward timestamps, and a restart (same name and source_id) every
  `--restart-every` seconds with down times cycling 0 / 0.05 / 0.3 / 1 s; channel 0 of each
  sample is its serial number;
- `rtdecode serve` as a child process (the bundled demo model, ONNX Runtime on the CPU),
  stopped with SIGINT at the end; its --summary-json says what it accepted;
- a `Subscriber` child receiving the frames (receipt time, newest sample's timestamp);
- a stalled subscriber child following docs/protocol.md's recipe (FrameSubscriber(rcvhwm=4),
  recv_newest(max_age_s=0.1)): it stops reading for `--stall` seconds at a time, then notes
  how long after waking it had a frame younger than 100 ms.

Reported (chaos-<tag>.json / .md in --out): samples pushed vs accepted by the service (every
pushed sample had a consumer: 0 may be lost), restarts vs reconnects, whether the service was
alive at the end and its exit status, per restart the time from the new outlet's creation to
the first frame decoded from its samples (< 1 s required), and the NaN / duplicate / backward
samples pushed vs counted by the service. Exit status 1 when a requirement fails.

    python -m rtdecode.benchmarks.chaos --minutes 10 --restart-every 60
    python -m rtdecode.benchmarks.chaos --short        # ~40 s, 3 restarts (the slow test)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.machine import load_average, machine_facts
from rtdecode.rig import ChaosOutlet, ChildLink, ChildProcess, Subscriber, free_tcp_address, unique
from rtdecode.telemetry import latency_summary

log = logging.getLogger("chaos")

DEMO_MODEL = Path(__file__).resolve().parents[1] / "rtdecode" / "assets" / "demo" / "model.onnx"
FRESH_FRAME_LIMIT_S = 1.0


def _stalled(link: ChildLink, address: str, stall_s: float) -> None:
    """Stall, wake, take the newest fresh frame (docs/protocol.md's recipe); note the wait."""
    from rtdecode.protocol import FrameSubscriber

    waits: list[float] = []
    ages: list[float] = []
    with FrameSubscriber(address, rcvhwm=4) as sub:
        link.mark_ready()
        while not link.stop.wait(stall_s):
            woke = time.monotonic()
            f = sub.recv_newest(timeout=2.0, max_age_s=0.1)
            if f is not None:
                waits.append(f.received - woke)
                ages.append(f.latency_s)
            else:
                waits.append(float("nan"))
                ages.append(float("nan"))
            link.put(waits_s=waits, ages_s=ages, discarded=sub.discarded)


def run_chaos(*, minutes: float = 10.0, restart_every_s: float = 60.0, out_dir: str | Path = "benchmarks/results",
              tag: str | None = None, model: str | Path = DEMO_MODEL, n_channels: int = 1024,
              nan_every_s: float = 7.0, bad_ts_every_s: float = 3.0, stride_ms: float = 16.0,
              threads: int | None = 1, seed: int = 0, progress_s: float = 30.0,
              stall_s: float = 5.0, serve_args: tuple[str, ...] = ()) -> dict[str, Any]:
    """One chaos run; writes chaos-<tag>.json/.md into out_dir and returns the results.
    `serve_args`: more `rtdecode serve` flags (e.g. ("--inlet", "loop", "--busy-poll"))."""
    from rtdecode.lslconfig import configure_lsl

    configure_lsl(scope="machine")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    duration_s = float(minutes) * 60.0
    tag = tag or f"{minutes:g}min-restart{restart_every_s:g}s"
    work = out / f".{unique('chaos')}"
    work.mkdir(parents=True, exist_ok=True)
    address = free_tcp_address()
    outlet = ChaosOutlet(work, duration_s=duration_s, n_channels=n_channels, restart_every_s=restart_every_s,
                         nan_every_s=nan_every_s, bad_ts_every_s=bad_ts_every_s, seed=seed, wait_consumer_s=60.0)
    sub = Subscriber(address, work_dir=work / "subscriber", start_timeout=60.0, stop_timeout=60.0)
    stalled = ChildProcess(_stalled, {"address": address, "stall_s": stall_s}, role="stalled-subscriber",
                           work_dir=work / "stalled", stop_timeout=10.0)
    summary_path = work / "serve-summary.json"
    env = dict(os.environ)
    env.setdefault("LSLAPICFG", str(Path(__file__).resolve().parents[1] / "deploy" / "lsl_api.cfg"))
    cmd = [sys.executable, "-m", "rtdecode", "serve", "--stream", outlet.name, "--model", str(model),
           "--address", address, "--stride-ms", f"{stride_ms:g}", "--resolve-timeout", "60",
           "--reconnect-timeout", "30", "--status-interval", f"{progress_s:g}", "--summary-json", str(summary_path)]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += list(serve_args)
    started_wall = time.time()
    load_before = load_average()
    serve_log = open(work / "serve.log", "w")
    sub.start()
    stalled.start()
    serve = None
    alive_at_end = False
    try:
        outlet.start()
        serve = subprocess.Popen(cmd, stdout=serve_log, stderr=subprocess.STDOUT, env=env)
        t0 = time.monotonic()
        next_progress = t0 + progress_s
        while True:
            st = outlet.state()
            if st.get("done") or outlet.error or serve.poll() is not None:
                break
            now = time.monotonic()
            if now >= next_progress:
                log.info("chaos: %.0f/%.0f s, %d samples pushed, %d restarts, service %s", now - t0, duration_s,
                         st.get("pushed", 0), st.get("restarts", 0), "alive" if serve.poll() is None else "DEAD")
                next_progress = now + progress_s
            if now - t0 > duration_s + 300:
                raise TimeoutError("the chaos outlet did not finish within 5 min of its duration")
            time.sleep(0.2)
        time.sleep(2.0)  # the last samples reach the service, the last frames the subscriber
        alive_at_end = serve.poll() is None
        if alive_at_end:
            serve.send_signal(signal.SIGINT)
        rc = serve.wait(60)
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait(10)
        serve_log.close()
        pushed = outlet.stop()
        sub.stop()
        stall_state = stalled.stop()
    if outlet.error:
        raise RuntimeError(f"the chaos outlet failed: {outlet.error}")
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    frames = sub.frames
    results = analyse(pushed, summary, frames, rc=rc, alive_at_end=alive_at_end)
    waits = [w for w in stall_state.get("waits_s", [])]
    results["stalled_subscriber"] = {"stall_s": stall_s, "wakes": len(waits),
                                     "no_fresh_frame_within_2s": sum(1 for w in waits if not math.isfinite(w)),
                                     "wake_to_fresh_frame_ms": latency_summary([w * 1e3 for w in waits]),
                                     "frames_passed_over": stall_state.get("discarded")}
    results.update({"tag": tag, "model": str(model), "started": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                              time.localtime(started_wall)),
                    "load_average_before": load_before, "load_average_after": load_average(),
                    "machine": machine_facts(),
                    "config": {"minutes": minutes, "restart_every_s": restart_every_s, "n_channels": n_channels,
                               "nan_every_s": nan_every_s, "bad_ts_every_s": bad_ts_every_s,
                               "stride_ms": stride_ms, "threads": threads, "seed": seed,
                               "down_s": outlet.spec["down_s"], "serve_args": list(serve_args)}})
    (out / f"chaos-{tag}.json").write_text(json.dumps(_clean(results), indent=2))
    (out / f"chaos-{tag}.md").write_text(markdown(results))
    tail = (work / "serve.log").read_text()[-4000:]
    if not results["ok"]:
        (out / f"chaos-{tag}-serve.log").write_text(tail)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return results


def analyse(pushed: dict, summary: dict, frames, *, rc: int | None, alive_at_end: bool) -> dict[str, Any]:
    tel = summary.get("telemetry", {})
    stream = tel.get("stream", {})
    accepted = int(stream.get("samples", -1))
    n_pushed = int(pushed.get("pushed", 0))
    gens = pushed.get("generations", [])
    recv = frames.col("received") if frames is not None and len(frames) else np.zeros(0)
    newest = frames.col("newest_ts") if frames is not None and len(frames) else np.zeros(0)
    restarts = []
    for g in gens[1:]:
        fresh = np.flatnonzero(newest >= g["first_ts"] - 1e-6)
        first = float(recv[fresh[0]]) if fresh.size else math.nan
        restarts.append({"up": g["up"], "consumer_s": g["consumer_s"],
                         "first_fresh_frame_s": first - g["up"] if fresh.size else None})
    fresh_s = [r["first_fresh_frame_s"] for r in restarts]
    worst = max((s for s in fresh_s if s is not None), default=None)
    checks = {
        "no_accepted_sample_lost": accepted == n_pushed,
        # a reconnect more than restarts: a quiet spell taken for a loss (reported, not a failure)
        "every_restart_survived": int(stream.get("reconnects", -1)) >= int(pushed.get("restarts", 0)),
        "service_alive_at_end": alive_at_end and rc == 0,
        "fresh_frame_within_1s": all(s is not None and s < FRESH_FRAME_LIMIT_S for s in fresh_s),
        "nan_counted": int(stream.get("nan_samples", -1)) == int(pushed.get("nan", 0)),
        "duplicates_counted": int(stream.get("duplicates", -1)) == int(pushed.get("duplicate", 0)),
        "backward_counted": int(stream.get("out_of_order", -1)) == int(pushed.get("backward", 0)),
    }
    return {
        "ok": all(checks.values()), "checks": checks,
        "samples": {"pushed": n_pushed, "accepted": accepted, "lost": n_pushed - accepted if accepted >= 0 else None},
        "restarts": {"outlet": int(pushed.get("restarts", 0)), "service_reconnects": stream.get("reconnects"),
                     "first_fresh_frame_s": fresh_s, "worst_s": worst, "per_restart": restarts},
        "service": {"alive_at_end": alive_at_end, "exit_status": rc, "stop_reason": summary.get("stop_reason"),
                    "error": summary.get("error"), "stream_lost_at_end": summary.get("stream_lost"),
                    "frames": summary.get("frames"), "skipped": summary.get("skipped"),
                    "event_counts": tel.get("event_counts")},
        "bad_samples": {"pushed": {"nan": pushed.get("nan"), "duplicate": pushed.get("duplicate"),
                                   "backward": pushed.get("backward")},
                        "counted": {"nan": stream.get("nan_samples"), "duplicate": stream.get("duplicates"),
                                    "backward": stream.get("out_of_order"), "gaps": stream.get("gaps"),
                                    "missing_samples": stream.get("missing_samples")}},
        "frames_received": int(len(recv)),
    }


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def markdown(r: dict) -> str:
    c, s, rs, sv, b = r["checks"], r["samples"], r["restarts"], r["service"], r["bad_samples"]
    fresh = [f"{x:.2f}" if x is not None else "none" for x in rs["first_fresh_frame_s"]]
    lines = [
        f"# Chaos run {r['tag']} ({r['started']})", "",
        f"{r['config']['minutes']:g} min, outlet restart every {r['config']['restart_every_s']:g} s "
        f"(down {', '.join(f'{d:g}' for d in r['config']['down_s'])} s in turn), "
        f"{r['config']['n_channels']} channels at 1 kHz in odd chunks; machine: {r['machine']}; "
        f"load average before/after {r['load_average_before']} / {r['load_average_after']}"
        + (f"; serve flags: {' '.join(r['config']['serve_args'])}" if r["config"].get("serve_args") else "") + ".", "",
        f"**Result: {'PASS' if r['ok'] else 'FAIL'}**", "",
        "| check | |", "| --- | --- |",
        *[f"| {k.replace('_', ' ')} | {'yes' if v else 'NO'} |" for k, v in c.items()], "",
        f"- samples pushed {s['pushed']}, accepted by the service {s['accepted']}, lost {s['lost']}",
        f"- restarts {rs['outlet']}, service reconnects {rs['service_reconnects']}",
        f"- restart -> first frame from the new outlet (s): {', '.join(fresh) or '-'} (worst {rs['worst_s']})",
        f"- service alive at the end: {sv['alive_at_end']}, exit status {sv['exit_status']}, "
        f"stop: {sv['stop_reason']}, frames {sv['frames']}, skipped {sv['skipped']}",
        f"- bad samples pushed {b['pushed']}, counted {b['counted']}",
        f"- events {sv['event_counts']}",
    ]
    st = r.get("stalled_subscriber")
    if st:
        w = st["wake_to_fresh_frame_ms"]
        lines.append(f"- stalled subscriber (docs/protocol.md recipe, {st['stall_s']:g}-s stalls): {st['wakes']} wakes, "
                     f"wake -> frame younger than 100 ms p50 {w.get('p50_ms', float('nan')):.1f} ms, "
                     f"max {w.get('max_ms', float('nan')):.1f} ms; none within 2 s: {st['no_fresh_frame_within_2s']}; "
                     f"frames passed over {st['frames_passed_over']}")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtdecode.benchmarks.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    p.add_argument("--restart-every", type=float, default=60.0, help="seconds between outlet restarts")
    p.add_argument("--short", action="store_true", help="40 s with a restart every 10 s")
    p.add_argument("--out", default="benchmarks/results/chaos-cpu-2core")
    p.add_argument("--tag", default=None)
    p.add_argument("--channels", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--serve-args", default="", help="more `rtdecode serve` flags, e.g. \"--inlet loop --busy-poll\"")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    minutes, every = (40 / 60, 10.0) if a.short else (a.minutes, a.restart_every)
    r = run_chaos(minutes=minutes, restart_every_s=every, out_dir=a.out, tag=a.tag, n_channels=a.channels,
                  threads=a.threads, progress_s=10.0 if a.short else 30.0, serve_args=tuple(shlex.split(a.serve_args)))
    print(markdown(r))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
