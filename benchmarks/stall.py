"""A subscriber that stalls: how much of the past it finds when it reads again, and how soon it has the present.

A publisher child (rtdecode.rig.ChildProcess) sends frames through FramePublisher every
`stride` ms, header newest_ts = its time.monotonic() at sending (the clock of this machine). Four
subscribers connect (RCVHWM 4 and 1000, each read by two clients), read one frame, then read
nothing for `stall_s`; then, one after the other:

- "every frame": recv() every frame until one younger than 100 ms (a display drawing every frame):
  how many older ones came first, the oldest, and when the first young one came;
- "recipe": FrameSubscriber.recv_newest in a loop, as docs/protocol.md says (drain what is
  queued, keep the newest): how many old frames it returned (a display would draw them), how
  many it passed over, how long the first drain took, and when the first young frame came.

"before" = kernel socket buffers left to the OS (sndbuf = rcvbuf = 0, rtdecode before the fix),
"after" = protocol.SOCKET_BUFFER_BYTES on both ends. Also (`--steady-s`, 0 = off) what the small
buffers cost a subscriber that keeps up: one PUB -> SUB hop at a 1-ms stride, latency per frame.
Writes stall.json, stall.md and stall.png.

  python -m rtdecode.benchmarks.stall [--stall-s 30] [--out benchmarks/results/stall-cpu-2core]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from rtdecode.rig import ChildLink, ChildProcess, free_tcp_address

log = logging.getLogger("stall")
FRESH_S = 0.1  # "younger than 100 ms"


def _publish(link: ChildLink, address: str, stride_ms: float, size: int, sndbuf: int, dtype: str = "uint8") -> None:
    from rtdecode.protocol import FrameHeader
    from rtdecode.sinks.publisher import FramePublisher

    frame = np.zeros((size, size, 3), np.dtype(dtype))
    with FramePublisher(address, sndbuf=sndbuf) as pub:
        link.mark_ready()
        seq, due = 0, time.monotonic()
        while not link.stop.is_set():
            now = time.monotonic()
            pub.publish(FrameHeader(seq=seq, model_id="stall", ref_time=now, newest_ts=now, shape=frame.shape,
                                    dtype=dtype), frame)
            seq += 1
            due += stride_ms / 1000.0
            time.sleep(max(0.0, due - time.monotonic()))
        link.put(published=seq)


def _every_frame(sub, t_wake: float) -> dict:
    stale, oldest = 0, 0.0
    while True:
        f = sub.recv(timeout=10.0)
        if f is None:
            return {"error": "no frame within 10 s"}
        age = f.latency_s
        if age < FRESH_S:
            return {"stale_frames_delivered": stale, "oldest_age_s": oldest,
                    "first_fresh_ms": (f.received - t_wake) * 1e3, "first_fresh_age_ms": age * 1e3}
        stale += 1
        oldest = max(oldest, age)


def _recipe(sub, t_wake: float) -> dict:
    returned_stale, first_call_ms = 0, None
    while True:
        t0 = time.monotonic()
        f = sub.recv_newest(timeout=10.0)
        if first_call_ms is None:
            first_call_ms = (time.monotonic() - t0) * 1e3
        if f is None:
            return {"error": "no frame within 10 s"}
        age = f.latency_s
        if age < FRESH_S:
            return {"stale_frames_delivered": returned_stale, "passed_over": sub.discarded,
                    "first_drain_ms": first_call_ms, "first_fresh_ms": (f.received - t_wake) * 1e3,
                    "first_fresh_age_ms": age * 1e3}
        returned_stale += 1


def run_one(stride_ms: float, size: int, fixed: bool, stall_s: float) -> list[dict]:
    from rtdecode.protocol import SOCKET_BUFFER_BYTES, FrameSubscriber

    buf = SOCKET_BUFFER_BYTES if fixed else 0
    address = free_tcp_address()
    rows = []
    with ChildProcess(_publish, {"address": address, "stride_ms": stride_ms, "size": size, "sndbuf": buf},
                      role="stall-publisher", stop_timeout=10.0):
        subs = [(hwm, mode, FrameSubscriber(address, rcvhwm=hwm, rcvbuf=buf, heartbeats=False))
                for hwm in (4, 1000) for mode in ("every frame", "recipe")]
        try:
            for _, _, s in subs:
                if s.recv(timeout=30) is None:
                    raise RuntimeError("no first frame from the publisher child within 30 s")
            time.sleep(stall_s)
            for hwm, mode, s in subs:
                t_wake = time.monotonic()
                r = _every_frame(s, t_wake) if mode == "every frame" else _recipe(s, t_wake)
                rows.append({"buffers": "after (64 KiB)" if fixed else "before (OS)", "stride_ms": stride_ms,
                             "frame": f"{size}x{size}", "frame_bytes": size * size * 3, "rcvhwm": hwm, "client": mode,
                             "stall_s": stall_s, **r})
                log.info("%s", rows[-1])
        finally:
            for _, _, s in subs:
                s.close()
    return rows


def steady(size: int, dtype: str, fixed: bool, seconds: float, stride_ms: float = 1.0) -> dict:
    """A subscriber that keeps up (RCVHWM 4, recv every frame): latency of one hop, frames lost."""
    from rtdecode.protocol import SOCKET_BUFFER_BYTES, FrameSubscriber
    from rtdecode.telemetry import latency_summary

    buf = SOCKET_BUFFER_BYTES if fixed else 0
    address = free_tcp_address()
    with ChildProcess(_publish, {"address": address, "stride_ms": stride_ms, "size": size, "sndbuf": buf,
                                 "dtype": dtype}, role="steady-publisher", stop_timeout=10.0):
        with FrameSubscriber(address, rcvhwm=4, rcvbuf=buf, heartbeats=False) as sub:
            if sub.recv(timeout=30) is None:
                raise RuntimeError("no first frame from the publisher child within 30 s")
            lat, seqs = [], []
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                f = sub.recv(timeout=1.0)
                if f is not None:
                    lat.append(f.latency_s * 1e3)
                    seqs.append(f.header.seq)
    s = latency_summary(np.asarray(lat))
    return {"buffers": "after (64 KiB)" if fixed else "before (OS)", "frame": f"{size}x{size} {dtype}",
            "stride_ms": stride_ms, "frames": len(lat), "lost": int(seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0,
            "latency_ms": s}


def steady_table(rows: list[dict]) -> str:
    lines = ["| buffers | frame | stride ms | frames | lost | p50 ms | p99 ms | max ms |", "|" + "---|" * 8]
    for r in rows:
        s = r["latency_ms"]
        lines.append(f"| {r['buffers']} | {r['frame']} | {r['stride_ms']:g} | {r['frames']} | {r['lost']} "
                     f"| {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['max_ms']:.2f} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    head = ("| buffers | stride ms | frame | RCVHWM | client | stale frames delivered | oldest s | passed over "
            "| first drain ms | first <100 ms frame after (ms) | its age ms |\n|" + "---|" * 11)
    lines = [head]

    def cell(r: dict, k: str, fmt: str = "{:.1f}") -> str:
        v = r.get(k)
        return "-" if v is None else fmt.format(v)
    for r in rows:
        def f(k, fmt="{:.1f}", r=r):
            return cell(r, k, fmt)
        lines.append(f"| {r['buffers']} | {r['stride_ms']:g} | {r['frame']} | {r['rcvhwm']} | {r['client']} "
                     f"| {f('stale_frames_delivered', '{}')} | {f('oldest_age_s')} | {f('passed_over', '{}')} "
                     f"| {f('first_drain_ms', '{:.2f}')} | {f('first_fresh_ms')} | {f('first_fresh_age_ms')} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    sel = [r for r in rows if r["rcvhwm"] == 4 and "error" not in r]
    labels = sorted({(r["stride_ms"], r["frame"]) for r in sel})
    fig = Figure(figsize=(10, 4), dpi=100)
    axes = fig.subplots(1, 2)
    x = np.arange(len(labels))
    for k, (buffers, client) in enumerate([(b, c) for b in ("before (OS)", "after (64 KiB)")
                                           for c in ("every frame", "recipe")]):
        stale = [next((r["stale_frames_delivered"] for r in sel if (r["stride_ms"], r["frame"]) == lab
                       and r["buffers"] == buffers and r["client"] == client), np.nan) for lab in labels]
        fresh = [next((r["first_fresh_ms"] for r in sel if (r["stride_ms"], r["frame"]) == lab
                       and r["buffers"] == buffers and r["client"] == client), np.nan) for lab in labels]
        axes[0].bar(x + (k - 1.5) * 0.2, stale, 0.2, label=f"{buffers}, {client}")
        axes[1].bar(x + (k - 1.5) * 0.2, fresh, 0.2, label=f"{buffers}, {client}")
    for ax, title in ((axes[0], "frames older than 100 ms delivered after the stall"),
                      (axes[1], "ms from waking to the first frame younger than 100 ms")):
        ax.set_xticks(x, [f"{s:g} ms, {fr}" for s, fr in labels], fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[1].axhline(100, color="k", lw=0.8, ls="--")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"subscriber with RCVHWM 4 stalled {sel[0]['stall_s']:g} s" if sel else "stall", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stall-s", type=float, default=30.0)
    ap.add_argument("--strides", type=float, nargs="+", default=[1.0, 16.0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--steady-s", type=float, default=5.0, help="seconds per steady-state run (0: none)")
    ap.add_argument("--out", default="benchmarks/results/stall-cpu-2core")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = [(s, z, fixed) for fixed in (False, True) for s in args.strides for z in args.sizes]
    for i, (stride, size, fixed) in enumerate(runs):
        log.info("[%d/%d] stride %g ms, %dx%d frames, %s buffers, %g s stall", i + 1, len(runs), stride, size, size,
                 "small" if fixed else "OS", args.stall_s)
        rows.extend(run_one(stride, size, fixed, args.stall_s))
    steady_rows = []
    if args.steady_s > 0:
        for size, dtype in ((64, "uint8"), (128, "uint8"), (128, "float32")):
            for fixed in (False, True):
                steady_rows.append(steady(size, dtype, fixed, args.steady_s))
                log.info("steady: %s", steady_rows[-1])
    info = {"machine": {"platform": platform.platform(), "python": platform.python_version()}, "rows": rows,
            "steady": steady_rows}
    (out / "stall.json").write_text(json.dumps(info, indent=1))
    text = (f"Subscriber stalled {args.stall_s:g} s, then reading again:\n\n" + table(rows) + "\n"
            + ("\nA subscriber that keeps up (one PUB -> SUB hop, RCVHWM 4):\n\n" + steady_table(steady_rows) + "\n"
               if steady_rows else ""))
    (out / "stall.md").write_text(text)
    plot(rows, out / "stall.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
