"""Queueing estimate (not a measurement): what K rigs sharing one GPU add to a frame's latency.

K `rtdecode serve` processes, one per rig, each decode one frame every --stride-ms (phases random,
each frame's arrival jittered by --jitter-ms), each frame needing --service-ms of the GPU. Without
MPS the GPU runs one process's kernels at a time: frames queue first come, first served (a
context switch adds --switch-ms when the GPU passes to another process). The result is the
waiting time each frame adds, p50/p99 per rig, the worst rig of each random lab (phases fixed
for --duration-s, as real rigs' strides are locked to their own clocks), over --labs labs. At 100 %
GPU busy or more the queue grows without bound (the real service would skip stale windows); those
rows say "saturated".

    python -m rtdecode.benchmarks.shared_gpu_queue --out benchmarks/results/shared-gpu-estimate

docs/multi-rig.md uses it; the service times there are estimates for a GPU, stated as such.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def simulate(k: int, stride_ms: float, service_ms: float, *, jitter_ms: float = 0.3, switch_ms: float = 0.0,
             duration_s: float = 30.0, seed: int = 0) -> np.ndarray:
    """Waiting time (ms) of every frame [k, n] on one GPU serving frames in arrival order."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * 1000 / stride_ms)
    phases = rng.uniform(0, stride_ms, k)
    arrive = phases[:, None] + stride_ms * np.arange(n)[None, :] + rng.uniform(0, jitter_ms, (k, n))
    order = np.argsort(arrive, axis=None, kind="stable")
    flat_arrive = arrive.reshape(-1)[order]
    owner = order // n  # row-major [k, n]: the rig of each frame
    wait = np.empty_like(flat_arrive)
    free_at, last = -np.inf, -1
    for i, (t, who) in enumerate(zip(flat_arrive, owner, strict=True)):
        start = max(t, free_at)
        cost = service_ms + (switch_ms if last not in (-1, who) else 0.0)
        wait[i] = start - t + (cost - service_ms)
        free_at, last = start + cost, who
    out = np.empty(k * n)
    out[order] = wait
    return out.reshape(k, n)


def study(ks: list[int], services: list[float], stride_ms: float, switch_ms: float, labs: int,
          duration_s: float) -> list[dict[str, Any]]:
    rows = []
    for service in services:
        for k in ks:
            worst_p99, all_p99, p50s = [], [], []
            for lab in range(labs):
                w = simulate(k, stride_ms, service, switch_ms=switch_ms, duration_s=duration_s, seed=lab)
                p99 = np.percentile(w, 99, axis=1)
                worst_p99.append(float(p99.max()))
                all_p99.extend(p99.tolist())
                p50s.extend(np.percentile(w, 50, axis=1).tolist())
            rows.append({"rigs": k, "service_ms": service, "gpu_busy": round(k * service / stride_ms, 3),
                         "added_p50_ms": round(float(np.median(p50s)), 3),
                         "added_p99_ms_median_rig": round(float(np.median(all_p99)), 3),
                         "added_p99_ms_worst_rig_median_lab": round(float(np.median(worst_p99)), 3),
                         "added_p99_ms_worst_rig_worst_lab": round(float(np.max(worst_p99)), 3)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/shared-gpu-estimate")
    ap.add_argument("--rigs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--service-ms", type=float, nargs="+", default=[0.3, 1.0, 3.0],
                    help="GPU time per frame (estimates: see docs/multi-rig.md)")
    ap.add_argument("--stride-ms", type=float, default=16.0)
    ap.add_argument("--switch-ms", type=float, default=0.05, help="added when the GPU passes to another process")
    ap.add_argument("--labs", type=int, default=30)
    ap.add_argument("--duration-s", type=float, default=20.0)
    args = ap.parse_args(argv)
    rows = study(args.rigs, args.service_ms, args.stride_ms, args.switch_ms, args.labs, args.duration_s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shared_gpu_queue.json").write_text(json.dumps({"schema": "rtdecode-shared-gpu-queue/1",
                                                           "kind": "queueing estimate, not a measurement",
                                                           "args": vars(args), "rows": rows}, indent=2))
    lines = ["| GPU ms/frame (estimate) | rigs | GPU busy | added p50 ms | added p99 ms (median rig) | "
             "added p99 ms (worst rig, median lab) | added p99 ms (worst rig, worst lab) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["gpu_busy"] >= 1.0:  # the queue grows without bound; rtdecode serve would skip stale windows
            lines.append(f"| {r['service_ms']} | {r['rigs']} | {r['gpu_busy']:.0%} | saturated: windows skipped | | | |")
            continue
        lines.append(f"| {r['service_ms']} | {r['rigs']} | {r['gpu_busy']:.0%} | {r['added_p50_ms']} | "
                     f"{r['added_p99_ms_median_rig']} | {r['added_p99_ms_worst_rig_median_lab']} | "
                     f"{r['added_p99_ms_worst_rig_worst_lab']} |")
    (out / "shared_gpu_queue.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "shared_gpu_queue.png")
    print("\n".join(lines))
    return 0


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for service in dict.fromkeys(r["service_ms"] for r in rows):
        sub = [r for r in rows if r["service_ms"] == service and r["gpu_busy"] < 1.0]
        ax.plot([r["rigs"] for r in sub], [r["added_p99_ms_worst_rig_median_lab"] for r in sub], "o-",
                label=f"{service} ms GPU per frame")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rigs sharing one GPU (one rtdecode serve each, no MPS)")
    ax.set_ylabel("added p99 latency, worst rig (ms)")
    ax.set_title("Queueing estimate, 16 ms stride (not measured)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
