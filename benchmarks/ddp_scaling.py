"""Training step time with 1 and 2 DDP processes (torchrun, gloo on the CPU) against a plain run.

Each row is a real `rtdecode train` (plain, or `torchrun --nproc-per-node N -m rtdecode train
--ddp`) on a simulated session; the step time is read from the run's history.jsonl: the
time between the validation at --warmup steps and the last one, divided by the steps between
(one validation of a few images and one checkpoint write fall in that span, in every mode). The batch is per process, so N processes take N times
the samples per step; samples/s is what scaling is about. The modes run round-robin --reps
times; the table gives each mode's median and the range.

    python -m rtdecode.benchmarks.ddp_scaling --out benchmarks/results/ddp-cpu-2core

On a 2-core box shared with other work two processes cannot be faster than one with two threads;
on a multi-GPU server (NCCL) each process has its own GPU. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rtdecode.machine import load_average, machine_facts

CONFIGS = {
    "tiny": {"image_size": 32, "widths": [8, 16, 32], "disc_widths": [8, 16], "batch_size": 4},
    "fast": {"preset": "fast", "batch_size": 8},
}
# (name, processes, threads per process, ddp)
MODES = (("plain, 2 threads", 1, 2, False), ("plain, 1 thread", 1, 1, False),
         ("ddp x1, 1 thread", 1, 1, True), ("ddp x2, 1 thread each", 2, 1, True))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_once(session: Path, config: dict[str, Any], mode: tuple[str, int, int, bool], steps: int, warmup: int,
             work: Path) -> dict[str, Any]:
    name, procs, threads, ddp = mode
    cfg = work / "cfg.json"
    cfg.write_text(json.dumps({**config, "num_threads": threads, "val_every": warmup, "max_steps": steps}))
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    args = ["-m", "rtdecode", "train", "--data", str(session), "--config", str(cfg), "--out", str(out), "--no-progress"]
    if ddp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs), "--master-addr",
               "127.0.0.1", "--master-port", str(_port()), *args, "--ddp"]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo"}  # gloo on loopback
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{name}: {' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    first = next(h for h in hist if h["step"] == warmup)
    last = hist[-1]
    step_s = (last["time_s"] - first["time_s"]) / (last["step"] - first["step"])
    batch = int(config["batch_size"]) * procs
    return {"mode": name, "processes": procs, "threads_per_process": threads, "ddp": ddp,
            "batch_per_process": int(config["batch_size"]), "effective_batch": batch,
            "step_ms": round(1000 * step_s, 1), "samples_per_s": round(batch / step_s, 1),
            "wall_s": round(wall, 1), "load_average": load_average()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/ddp-cpu-2core")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=40, help="optimiser steps per run")
    ap.add_argument("--warmup", type=int, default=10, help="steps before the timed span")
    ap.add_argument("--n-images", type=int, default=160)
    ap.add_argument("--reps", type=int, default=3, help="round-robin repetitions of all modes")
    ap.add_argument("--modes", type=int, nargs="+", default=list(range(len(MODES))),
                    help="which modes (indices into " + ", ".join(f"{i}: {m[0]}" for i, m in enumerate(MODES)) + ")")
    args = ap.parse_args(argv)
    from rtdecode.sim.macaque import VirtualMacaque

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        session = work / "s.h5"
        VirtualMacaque(seed=0, image_size=64).simulate_session(session, n_images=args.n_images, known_rfs=True,
                                                               progress=False)
        for cname in args.configs:
            config = CONFIGS[cname]
            if cname == "tiny":
                sess = work / "s32.h5"
                if not sess.exists():
                    VirtualMacaque(seed=0, image_size=32).simulate_session(sess, n_images=args.n_images,
                                                                           known_rfs=True, progress=False)
            else:
                sess = session
            for rep in range(args.reps):
                for mode in [MODES[i] for i in args.modes]:
                    row = {"config": cname, "rep": rep,
                           **run_once(sess, config, mode, args.steps, args.warmup, work)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    summary = summarise(rows)
    report = {"schema": "rtdecode-ddp-scaling/1", "machine": machine_facts(), "steps": args.steps,
              "warmup": args.warmup, "reps": args.reps, "configs": {k: CONFIGS[k] for k in args.configs},
              "summary": summary, "rows": rows}
    tag = "-".join(args.configs)
    (out / f"ddp_scaling-{tag}.json").write_text(json.dumps(report, indent=2))
    lines = ["| config | mode | processes x threads | batch/process | effective batch | ms/step median (range) | "
             "samples/s median | load avg (1 min) |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['config']} | {r['mode']} | {r['processes']} x {r['threads_per_process']} | "
                     f"{r['batch_per_process']} | {r['effective_batch']} | {r['step_ms']} ({r['step_ms_min']}-"
                     f"{r['step_ms_max']}) | {r['samples_per_s']} | {r['load_min']}-{r['load_max']} |")
    (out / f"ddp_scaling-{tag}.md").write_text("\n".join(lines) + "\n")
    _plot(summary, out / f"ddp_scaling-{tag}.png")
    print("\n".join(lines))
    return 0


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (config, mode): median ms/step and samples/s over the repetitions, with ranges."""
    import numpy as np

    out = []
    for key in dict.fromkeys((r["config"], r["mode"]) for r in rows):
        sub = [r for r in rows if (r["config"], r["mode"]) == key]
        ms = [r["step_ms"] for r in sub]
        loads = [r["load_average"][0] for r in sub if r["load_average"]]
        med = float(np.median(ms))
        out.append({**{k: sub[0][k] for k in ("config", "mode", "processes", "threads_per_process", "ddp",
                                               "batch_per_process", "effective_batch")},
                    "step_ms": round(med, 1), "step_ms_min": min(ms), "step_ms_max": max(ms),
                    "samples_per_s": round(1000 * sub[0]["effective_batch"] / med, 1),
                    "load_min": min(loads, default=None), "load_max": max(loads, default=None), "n": len(sub)})
    return out


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, axes = plt.subplots(1, len(configs), figsize=(5.5 * len(configs), 3.8), squeeze=False)
    for ax, cname in zip(axes[0], configs, strict=True):
        sub = [r for r in rows if r["config"] == cname]
        ax.barh([r["mode"] for r in sub], [r["samples_per_s"] for r in sub], color="#4c72b0")
        for i, r in enumerate(sub):
            ax.text(r["samples_per_s"], i, f" {r['step_ms']} ms/step ({r['step_ms_min']}-{r['step_ms_max']})",
                    va="center", fontsize=8)
        ax.set_xlabel(f"training samples / s, median of {sub[0]['n']} (higher is better)")
        ax.set_title(f"{cname} config, CPU (gloo), shared 2-core box")
        ax.invert_yaxis()
        ax.set_xlim(0, 2.1 * max(r["samples_per_s"] for r in sub))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
