"""The suite's end-to-end part: rtdecode's pipeline and the first-try baseline on one model, compared.

Its own module because it drives both end_to_end.py and first_try.py, and first_try.py builds on
end_to_end.py's harness (pusher, subscriber, CPU meter).
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
            if row["latency_ms"].get("n"):
                row["e2e_minus_infer_ms"] = {k: row["latency_ms"][k] - base[k] for k in ("p50", "p99")}
            runs.append(row)
            lat_series[f"rtdecode stride {stride:g} ms"] = lat
        out["e2e"] = {"model": str(model_path.name), "model_description": model_desc, "engine": desc,
                      "inference_alone_ms": base, "duration_s": duration, "runs": runs,
                      "channels": 1024, "sampling_rate_hz": 1000.0,
                      "notes": [f"model: {model_desc}; engine: {desc}",
                                f"inference alone (same engine and options, n={base.get('n')}): "
                                f"p50 {base.get('p50', float('nan')):.2f} ms, p99 {base.get('p99', float('nan')):.2f} ms"]}
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
            if la.get("n") and lb.get("n"):
                rows.append({"stride_ms": a["stride_ms"], "ratio_p50": lb["p50"] / la["p50"],
                             "ratio_p99": lb["p99"] / la["p99"]})
        out["comparison"] = {"rows": rows}
    return out, series
