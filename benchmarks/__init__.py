"""rtdecode.benchmarks (the folder benchmarks/). Latency benchmarks of rtdecode: inference, end-to-end over LSL and ZeroMQ, a first-try baseline.

Run them with `rtdecode bench` (rtdecode/commands/bench.py), which calls `run_suite`; each part
returns a plain dict plus raw latency series, written by rtdecode.benchmarks.report as JSON, a markdown
table and PNG plots. See docs/benchmarks.md.
"""

from __future__ import annotations

if __name__ != "rtdecode.benchmarks":  # one name per file: the folder benchmarks/ installs as rtdecode.benchmarks
    raise ImportError(f"import rtdecode.benchmarks, not {__name__}: the folder benchmarks/ is the package rtdecode.benchmarks")

PARTS = ("inference", "e2e", "first-try", "mne-lsl")


def run_suite(parts=PARTS, *, quick: bool = False, out_dir="bench-results", note: str | None = None,
              threads: int | None = None, progress=print) -> dict:
    """Run the chosen parts, write bench.json / bench.md / PNGs into out_dir; returns the results."""
    import tempfile
    from pathlib import Path

    from rtdecode.machine import machine_facts

    from .report import write_report

    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        from rtdecode.errors import ConfigError

        raise ConfigError(f"unknown benchmark part(s) {unknown}; expected some of {list(PARTS)}")
    out_dir = Path(out_dir)
    results: dict = {"machine": machine_facts(), "quick": bool(quick), "parts_requested": list(parts),
                     "parts": {}}
    if note:
        results["note"] = note
    series: dict = {}
    with tempfile.TemporaryDirectory(prefix="rtdecode-bench-") as work:
        if "inference" in parts:
            from .inference import run_inference

            results["parts"]["inference"], s = run_inference(Path(work) / "inference", quick=quick, progress=progress)
            for engine in ("onnxruntime", "torch-eager"):  # one plot per engine keeps them readable
                chosen = {k: v for k, v in s.items() if f" {engine} " in k}
                if chosen:
                    series[f"inference_latency_{engine.replace('-', '_')}"] = chosen
        if "e2e" in parts or "first-try" in parts:
            from .e2e_part import run_e2e_part

            got, s = run_e2e_part(Path(work) / "e2e", quick=quick, parts=tuple(parts), progress=progress,
                                  threads=threads)
            results["parts"].update(got)
            series["end_to_end_latency"] = s
        if "mne-lsl" in parts:
            from .mne_lsl_compare import run_acquisition_compare

            results["parts"]["mne_lsl"], s = run_acquisition_compare(quick=quick, progress=progress)
            if s:
                series["acquisition_latency"] = s
    results["targets"] = targets(results)
    results["files"] = write_report(results, series, out_dir)
    return results


def targets(results: dict) -> list[str]:
    """The project's latency targets, checked against what this run measured (honest misses)."""
    out: list[str] = []
    parts = results.get("parts", {})
    e2e = parts.get("e2e") or {}
    base = e2e.get("inference_alone_ms") or {}
    for row in e2e.get("runs", []):
        lat = row.get("latency_ms", {})
        if lat.get("count") and base.get("count"):
            margin = lat["p99_ms"] - (base["p99_ms"] + 2.0)
            verdict = "met" if margin <= 0 else f"missed by {margin:.2f} ms"
            out.append(f"e2e p99 <= inference p99 + 2 ms at stride {row['stride_ms']:g} ms: "
                       f"{lat['p99_ms']:.2f} vs {base['p99_ms']:.2f} (inference alone) + 2 -> {verdict}")
        over = (row.get("stages_ms") or {}).get("e2e_minus_infer") or {}
        if over.get("count"):
            verdict = "met" if over["p99_ms"] <= 2.0 else f"missed by {over['p99_ms'] - 2.0:.2f} ms"
            out.append(f"  per frame, e2e - that frame's inference <= 2 ms at p99 (stride {row['stride_ms']:g} ms): "
                       f"{over['p99_ms']:.2f} ms -> {verdict}")
    for row in (parts.get("comparison") or {}).get("rows", []):
        r = row["ratio_p50"]
        verdict = "met" if r >= 2.0 else f"missed: {r:.2f}x instead of >= 2x"
        out.append(f"rtdecode e2e p50 >= 2x better than first-try at stride {row['stride_ms']:g} ms: "
                   f"{r:.2f}x -> {verdict}")
    return out
