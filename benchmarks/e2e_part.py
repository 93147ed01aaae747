"""The suite's end-to-end part: rtdecode, the peer pipelines (ezmsg, MNE-LSL), the first-try
baseline and the transport floor, on one model and one kind of stream, side by side.

Runs are interleaved: for each stride (1, 5, 16 ms, quick mode included), every pipeline in
turn, then the floor (LSL alone, ZeroMQ alone at that stride), so the machine's load touches
them alike. Every pipeline runs on the loopback rig (rtdecode.rig) with its subscriber in
another process, and every frame header carries that frame's inference time, so the
per-frame overhead (e2e minus that frame's inference) is computed the same way for all
(frame_stats.overhead_ms). `side_by_side` has one row per (stride, pipeline): e2e, overhead and
overhead above the floor, p50 and p99.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtdecode.telemetry import latency_summary

from .end_to_end import e2e_model, engine_baseline, run_rtdecode
from .first_try import run_first_try
from .floor import floor_row, lsl_floor, zmq_floor
from .frame_stats import infer_ms, overhead_ms, shown_age_ms
from .peers import run_peer

PIPELINES = ("e2e", "ezmsg", "mne-lsl", "first-try")  # part names, in run order
LABEL = {"e2e": "rtdecode", "ezmsg": "ezmsg", "mne-lsl": "MNE-LSL", "first-try": "first-try"}


def variant_label(options: dict) -> str:
    return "rtdecode " + ",".join(f"{k}={v}" for k, v in options.items())


def run_e2e_part(work_dir: str | Path, *, quick: bool, parts: tuple[str, ...], progress=print,
                 threads: int | None = None, variants: tuple[dict, ...] = ()) -> tuple[dict, dict]:
    """The chosen pipelines (and the floor when "floor" is among parts) interleaved per stride;
    returns (parts dict, series: {"end_to_end_latency": ..., "overhead_cdf": {stride: {label: ms}}}).

    `variants`: serve options (e.g. {"inlet": "loop"}) each run as one more rtdecode pipeline
    right after the default one, for A/B comparisons of the serve loop under the same load."""
    strides = (1.0, 5.0, 16.0)
    duration = 3.0 if quick else 20.0
    model_path, model_desc, module = e2e_model(work_dir)
    chosen = [p for p in PIPELINES if p in parts]
    labels = dict(LABEL)
    if "e2e" in chosen:
        for i, v in enumerate(variants):
            labels[variant_label(v)] = variant_label(v)
            chosen.insert(chosen.index("e2e") + 1 + i, variant_label(v))
    options = {variant_label(v): v for v in variants}
    out: dict = {}
    lat_series: dict = {}
    over_series: dict = {}
    runs: dict[str, list] = {p: [] for p in chosen}
    floors: list[dict] = []
    base, desc = (engine_baseline(model_path, engine="onnxruntime", threads=threads, n=30 if quick else 300)
                  if "e2e" in chosen else ({}, ""))
    from rtdecode.contract import read_contract

    c = read_contract(model_path)
    for stride in strides:
        over_series[stride] = {}
        for p in chosen:
            if p == "e2e" or p in options:
                row, lat, frames = run_rtdecode(model_path, stride_ms=stride, duration_s=duration, threads=threads,
                                                progress=progress, keep_log=True, **options.get(p, {}))
                row["serve_options"] = options.get(p, {})
                if row["latency_ms"].get("count") and base.get("count"):
                    row["e2e_minus_infer_ms"] = {k: row["latency_ms"][k] - base[k] for k in ("p50_ms", "p99_ms")}
            elif p == "first-try":
                row, lat, frames = run_first_try(model_path, stride_ms=stride, duration_s=duration, progress=progress,
                                                 module=module, keep_log=True)
            else:
                row, lat, extra = run_peer(p, model_path, stride_ms=stride, duration_s=duration, threads=threads,
                                           progress=progress)
                frames = extra.get("frames")
                if row.get("skipped"):
                    progress(f"e2e {p}: skipped ({row['skipped']})")
            over = overhead_ms(frames)
            row["overhead_ms"] = latency_summary(over)
            row["infer_ms"] = infer_ms(frames)
            row["shown_age_ms"] = shown_age_ms(frames)
            runs[p].append(row)
            if len(lat):
                lat_series[f"{labels[p]} stride {stride:g} ms"] = lat
            if len(over):
                over_series[stride][labels[p]] = over
        if "floor" in parts:
            lsl_ms = lsl_floor(duration)
            zmq_ms = zmq_floor(duration, stride, height=c.image_height, width=c.image_width)
            f = floor_row(stride, lsl_ms, zmq_ms)
            floors.append(f)
            fl = f["floor_ms"]
            if fl.get("count"):
                rng = np.random.default_rng(0)
                over_series[stride]["floor (LSL + ZeroMQ)"] = rng.choice(lsl_ms, 4000) + rng.choice(zmq_ms, 4000)
            progress(f"floor stride {stride:g} ms: LSL p50 {f['lsl_ms'].get('p50_ms', float('nan')):.3f} "
                     f"p99 {f['lsl_ms'].get('p99_ms', float('nan')):.3f}; ZeroMQ p50 "
                     f"{f['zmq_ms'].get('p50_ms', float('nan')):.3f} p99 {f['zmq_ms'].get('p99_ms', float('nan')):.3f} ms")
    model_note = f"model: {model_desc}"
    if "e2e" in chosen:
        out["e2e"] = {"model": str(model_path.name), "model_description": model_desc, "engine": desc,
                      "inference_alone_ms": base, "duration_s": duration, "runs": runs["e2e"],
                      "channels": 1024, "sampling_rate_hz": 1000.0,
                      "notes": [f"{model_note}; engine: {desc}",
                                f"inference alone (same engine and options, n={base.get('count')}): "
                                f"p50 {base.get('p50_ms', float('nan')):.2f} ms, "
                                f"p99 {base.get('p99_ms', float('nan')):.2f} ms"]}
    if "first-try" in chosen:
        ft = runs["first-try"]
        out["first_try"] = {"model": str(model_path.name), "runs": ft, "duration_s": duration,
                            "notes": [f"first-try engine: {ft[0]['engine']}" if ft else "no runs"]}
    peers = {p: runs[p] for p in ("ezmsg", "mne-lsl") if p in chosen}
    if peers:
        out["peers"] = {"runs": [r for p in peers for r in peers[p]], "duration_s": duration,
                        "notes": [model_note, "ezmsg: LSLInletUnit (ezmsg-lsl) -> windowing + ONNX Runtime unit -> "
                                  "ZMQSenderUnit (ezmsg-zmq) sending rtdecode's three-part frame; all units in one "
                                  "process (ezmsg's default)",
                                  "MNE-LSL: StreamLSL(acquisition_delay 1 ms, clocksync) polled every 0.25 ms; "
                                  "get_data(winsize) once `stride` new samples arrived -> ONNX Runtime -> pyzmq PUB",
                                  "both: the model's window assembly and normalisation, onnxruntime "
                                  "InferenceSession.run with rtdecode's session options, rtdecode's wire format"]}
    if floors:
        out["floor"] = {"rows": floors, "duration_s": duration,
                        "notes": ["LSL alone: the same pusher (1024 ch, 1 kHz, one sample per push) to a bare pylsl "
                                  "inlet (pull_chunk, min_samples=1); ZeroMQ alone: frames of the model's size "
                                  "every stride, PUB here -> the rig's Subscriber child; the floor is LSL + ZeroMQ "
                                  "(independent draws)"]}
    if variants:
        out["variants"] = {"runs": [r for v in options for r in runs[v]],
                           "notes": ["A/B: each variant ran right after the default rtdecode run at each stride"]}
    out["side_by_side"] = {"rows": side_by_side(runs, floors, labels)}
    if "e2e" in out and "first_try" in out:
        rows = []
        for a, b in zip(out["e2e"]["runs"], out["first_try"]["runs"], strict=True):
            la, lb = a["latency_ms"], b["latency_ms"]
            if la.get("count") and lb.get("count"):
                rows.append({"stride_ms": a["stride_ms"], "ratio_p50": lb["p50_ms"] / la["p50_ms"],
                             "ratio_p99": lb["p99_ms"] / la["p99_ms"]})
        out["comparison"] = {"rows": rows}
    return out, {"end_to_end_latency": lat_series, "overhead_cdf": over_series}


def side_by_side(runs: dict[str, list], floors: list[dict], labels: dict[str, str] = LABEL) -> list[dict]:
    """One row per (stride, pipeline): e2e and overhead p50/p99, and overhead above the floor."""
    floor_at = {f["stride_ms"]: f["floor_ms"] for f in floors}
    rows = []
    strides = sorted({r["stride_ms"] for rs in runs.values() for r in rs})
    for stride in strides:
        for p, rs in runs.items():
            for r in rs:
                if r["stride_ms"] != stride:
                    continue
                lat, ov = r.get("latency_ms", {}), r.get("overhead_ms", {})
                fl = floor_at.get(stride, {})
                infer = r.get("infer_ms") or {}
                row = {"stride_ms": stride, "pipeline": labels[p], "frames": r.get("frames_received"),
                       "skipped": r.get("skipped"),
                       "e2e_p50_ms": lat.get("p50_ms"), "e2e_p99_ms": lat.get("p99_ms"),
                       "infer_p50_ms": infer.get("p50_ms"),
                       "overhead_p50_ms": ov.get("p50_ms"), "overhead_p99_ms": ov.get("p99_ms"),
                       "shown_age_mean_ms": r.get("shown_age_ms"),
                       "cpu_percent": r.get("cpu_percent")}
                if ov.get("count") and fl.get("count"):
                    row["above_floor_p50_ms"] = ov["p50_ms"] - fl["p50_ms"]
                    row["above_floor_p99_ms"] = ov["p99_ms"] - fl["p99_ms"]
                rows.append(row)
    return rows
