"""The suite's end-to-end part: rtdecode's pipeline and the first-try baseline on one model, compared.

Its own module because it drives both end_to_end.py and first_try.py, and both run on the
loopback rig (rtdecode.rig) and share benchmarks/frame_stats.py.
"""

from __future__ import annotations

from pathlib import Path

from .end_to_end import e2e_model, engine_baseline, run_rtdecode
from .first_try import run_first_try


def run_e2e_part(work_dir: str | Path, *, quick: bool, parts: tuple[str, ...], progress=print,
                 threads: int | None = None) -> tuple[dict, dict]:
    """rtdecode e2e runs (and first-try runs when asked) on one model; returns (parts dict, series)."""
    strides = (16.0,) if quick else (1.0, 5.0, 16.0)
    duration = 3.0 if quick else 20.0
    model_path, model_desc, module = e2e_model(work_dir)
    out: dict = {}
    series: dict = {}
    if "e2e" in parts:
        base, desc = engine_baseline(model_path, engine="onnxruntime", threads=threads, n=30 if quick else 300)
        runs, lat_series = [], {}
        for stride in strides:
            row, lat = run_rtdecode(model_path, stride_ms=stride, duration_s=duration, threads=threads,
                                    progress=progress)
            if row["latency_ms"].get("count"):
                row["e2e_minus_infer_ms"] = {k: row["latency_ms"][k] - base[k] for k in ("p50_ms", "p99_ms")}
            runs.append(row)
            lat_series[f"rtdecode stride {stride:g} ms"] = lat
        out["e2e"] = {"model": str(model_path.name), "model_description": model_desc, "engine": desc,
                      "inference_alone_ms": base, "duration_s": duration, "runs": runs,
                      "channels": 1024, "sampling_rate_hz": 1000.0,
                      "notes": [f"model: {model_desc}; engine: {desc}",
                                f"inference alone (same engine and options, n={base.get('count')}): "
                                f"p50 {base.get('p50_ms', float('nan')):.2f} ms, "
                                f"p99 {base.get('p99_ms', float('nan')):.2f} ms"]}
        series.update(lat_series)
    if "first-try" in parts:
        runs = []
        for stride in strides:
            row, lat = run_first_try(model_path, stride_ms=stride, duration_s=duration, progress=progress,
                                     module=module)
            runs.append(row)
            series[f"first-try stride {stride:g} ms"] = lat
        out["first_try"] = {"model": str(model_path.name), "runs": runs, "duration_s": duration,
                            "notes": [f"first-try engine: {runs[0]['engine']}" if runs else "no runs"]}
    if "e2e" in out and "first_try" in out:
        rows = []
        for a, b in zip(out["e2e"]["runs"], out["first_try"]["runs"], strict=True):
            la, lb = a["latency_ms"], b["latency_ms"]
            if la.get("count") and lb.get("count"):
                rows.append({"stride_ms": a["stride_ms"], "ratio_p50": lb["p50_ms"] / la["p50_ms"],
                             "ratio_p99": lb["p99_ms"] / la["p99_ms"]})
        out["comparison"] = {"rows": rows}
    return out, series
