"""rtdecode.benchmarks (the folder benchmarks/). Latency benchmarks of rtdecode: inference, end-to-end over
LSL and ZeroMQ beside the field's pipelines (ezmsg, MNE-LSL), a first-try baseline and the transport floor.

Run them with `rtdecode bench` (rtdecode/commands/bench.py), which calls `run_suite`; each part
returns a plain dict plus raw latency series, written by rtdecode.benchmarks.report as JSON, a markdown
table and PNG plots. See docs/benchmarks.md.
"""

from __future__ import annotations

if __name__ != "rtdecode.benchmarks":  # one name per file: the folder benchmarks/ installs as rtdecode.benchmarks
    raise ImportError(f"import rtdecode.benchmarks, not {__name__}: the folder benchmarks/ is the package rtdecode.benchmarks")

PARTS = ("inference", "e2e", "ezmsg", "mne-lsl", "first-try", "floor")
E2E_PARTS = ("e2e", "ezmsg", "mne-lsl", "first-try", "floor")  # run together, interleaved (e2e_part.py)


def run_suite(parts=PARTS, *, quick: bool = False, out_dir="bench-results", note: str | None = None,
              threads: int | None = None, progress=print, variants: tuple[dict, ...] = ()) -> dict:
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
    if variants:
        results["variants"] = [dict(v) for v in variants]
    series: dict = {}
    with tempfile.TemporaryDirectory(prefix="rtdecode-bench-") as work:
        if "inference" in parts:
            from .inference import run_inference

            results["parts"]["inference"], s = run_inference(Path(work) / "inference", quick=quick, progress=progress)
            for engine in ("onnxruntime", "torch-eager"):  # one plot per engine keeps them readable
                chosen = {k: v for k, v in s.items() if f" {engine} " in k}
                if chosen:
                    series[f"inference_latency_{engine.replace('-', '_')}"] = chosen
        if any(p in parts for p in E2E_PARTS):
            from .e2e_part import run_e2e_part

            got, s = run_e2e_part(Path(work) / "e2e", quick=quick, parts=tuple(parts), progress=progress,
                                  threads=threads, variants=tuple(variants))
            results["parts"].update(got)
            series.update(s)
    from rtdecode.machine import load_average

    results["load_average_after"] = load_average()
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
    by_stride: dict[float, dict[str, dict]] = {}
    for row in (parts.get("side_by_side") or {}).get("rows", []):
        by_stride.setdefault(row["stride_ms"], {})[row["pipeline"]] = row
    for stride, rows in sorted(by_stride.items()):
        r = rows.get("rtdecode")
        if not r or r.get("overhead_p50_ms") is None:
            continue
        p50, p99 = r["overhead_p50_ms"], r["overhead_p99_ms"]
        out.append(f"rtdecode overhead (e2e - that frame's inference) at stride {stride:g} ms: p50 {p50:.2f} ms "
                   f"(<= 1.0: {'met' if p50 <= 1.0 else 'missed'}), p99 {p99:.2f} ms "
                   f"(<= 2.0: {'met' if p99 <= 2.0 else 'missed'})")
        if r.get("above_floor_p50_ms") is not None:
            a = r["above_floor_p50_ms"]
            out.append(f"  rtdecode overhead above the transport floor at p50, stride {stride:g} ms: {a:.2f} ms "
                       f"(<= 0.3: {'met' if a <= 0.3 else f'missed by {a - 0.3:.2f} ms'})")
        peers = [rows[k] for k in ("ezmsg", "MNE-LSL") if rows.get(k, {}).get("overhead_p99_ms") is not None]
        if peers:
            best = min(peers, key=lambda q: q["overhead_p99_ms"])
            ratio = best["overhead_p99_ms"] / p99 if p99 > 0 else float("inf")
            out.append(f"  rtdecode overhead p99 >= 2x lower than the better peer ({best['pipeline']}, "
                       f"{best['overhead_p99_ms']:.2f} ms) at stride {stride:g} ms: {ratio:.2f}x -> "
                       f"{'met' if ratio >= 2.0 else 'missed'}")
            for q in peers:
                if q["overhead_p50_ms"] < p50:
                    out.append(f"  {q['pipeline']} is better at p50 overhead at stride {stride:g} ms: "
                               f"{q['overhead_p50_ms']:.2f} vs rtdecode {p50:.2f} ms")
    for row in (parts.get("comparison") or {}).get("rows", []):
        r = row["ratio_p50"]
        verdict = "met" if r >= 2.0 else f"missed: {r:.2f}x instead of >= 2x"
        out.append(f"rtdecode e2e p50 >= 2x better than first-try at stride {row['stride_ms']:g} ms: "
                   f"{r:.2f}x -> {verdict}")
    return out
