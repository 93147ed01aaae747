"""Benchmark output: the JSON file, a markdown table and PNG histograms/CDFs.

Every part returns a plain dict (numbers and strings only; durations summarised with
rtdecode.telemetry.latency_summary) plus raw latency series (ms) kept out of the JSON;
`write_report` saves `bench.json`, `bench.md` and one PNG per latency plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SCHEMA = "rtdecode-bench/2"  # 2: latency keys of rtdecode.telemetry.latency_summary (count, p50_ms, ...)


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: list[Mapping], columns: list[tuple[str, str]]) -> str:
    """rows of dicts -> a markdown table; columns = [(header, dotted key)]."""
    def get(row, key):
        cur = row
        while key:
            if not isinstance(cur, Mapping):
                return None
            if key in cur:  # keys may hold dots themselves ("p99.9")
                return cur[key]
            head, _, key = key.partition(".")
            if head not in cur:
                return None
            cur = cur[head]
        return cur

    lines = ["| " + " | ".join(h for h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(get(row, k)) for _, k in columns) + " |")
    return "\n".join(lines)


def plot_latencies(series: Mapping[str, np.ndarray], path: str | Path, title: str,
                   xlabel: str = "latency (ms)") -> Path | None:
    """Histogram (log-spaced bins) and empirical CDF of each series, side by side, as a PNG."""
    series = {k: np.asarray(v, dtype=np.float64) for k, v in series.items() if len(v)}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    allv = np.concatenate(list(series.values()))
    allv = allv[np.isfinite(allv) & (allv > 0)]
    if allv.size == 0:
        return None
    lo, hi = max(allv.min() * 0.9, 1e-3), allv.max() * 1.1
    bins = np.geomspace(lo, hi if hi > lo else lo * 10, 60)
    fig, (ax_h, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for label, v in series.items():
        v = v[np.isfinite(v) & (v > 0)]
        ax_h.hist(v, bins=bins, histtype="step", label=f"{label} (n={v.size})")
        s = np.sort(v)
        ax_c.plot(s, np.arange(1, s.size + 1) / s.size, label=label)
    for ax in (ax_h, ax_c):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_h.set_ylabel("frames")
    ax_c.set_ylabel("fraction <= x")
    ax_c.axhline(0.99, color="grey", lw=0.8, ls="--")
    ax_h.legend(fontsize=7)
    return _save(fig, title, path)


def _clean(obj):
    """JSON-safe copy: numpy scalars -> python, non-finite floats -> None, tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


INFERENCE_COLUMNS = [
    ("model", "model"), ("size", "size"), ("engine", "engine"), ("threads", "threads"),
    ("GFLOP", "gflop"), ("p50 ms", "latency_ms.p50_ms"), ("p90 ms", "latency_ms.p90_ms"),
    ("p99 ms", "latency_ms.p99_ms"), ("max ms", "latency_ms.max_ms"), ("GFLOP/s", "gflops_per_s"),
    ("n", "latency_ms.count"),
]
E2E_COLUMNS = [
    ("pipeline", "pipeline"), ("stride ms", "stride_ms"), ("frames", "frames_received"),
    ("p50 ms", "latency_ms.p50_ms"), ("p90 ms", "latency_ms.p90_ms"), ("p99 ms", "latency_ms.p99_ms"),
    ("p99.9 ms", "latency_ms.p99.9_ms"), ("max ms", "latency_ms.max_ms"),
    ("interval jitter ms (sd)", "frame_interval_ms.sd_ms"), ("skipped windows", "skipped_windows"),
    ("dropped samples", "dropped_samples"), ("CPU %", "cpu_percent"),
]
STAGE_COLUMNS = [
    ("stride ms", "stride_ms"), ("lsl in", "stages_ms.lsl_in.p50_ms"), ("wait", "stages_ms.wait.p50_ms"),
    ("assemble", "stages_ms.assemble.p50_ms"), ("normalise", "stages_ms.normalise.p50_ms"),
    ("infer", "stages_ms.infer.p50_ms"), ("encode", "stages_ms.encode.p50_ms"),
    ("zmq out", "stages_ms.zmq_out.p50_ms"), ("infer p99", "stages_ms.infer.p99_ms"),
    ("per-frame e2e - infer p50", "stages_ms.e2e_minus_infer.p50_ms"),
    ("per-frame e2e - infer p99", "stages_ms.e2e_minus_infer.p99_ms"),
    ("e2e p99 - infer-alone p99", "e2e_minus_infer_ms.p99_ms"),
]
STAGE_P99_COLUMNS = [
    ("stride ms", "stride_ms"), ("lsl in", "stages_ms.lsl_in.p99_ms"), ("wait", "stages_ms.wait.p99_ms"),
    ("assemble", "stages_ms.assemble.p99_ms"), ("normalise", "stages_ms.normalise.p99_ms"),
    ("infer", "stages_ms.infer.p99_ms"), ("encode", "stages_ms.encode.p99_ms"),
    ("zmq out", "stages_ms.zmq_out.p99_ms"), ("pusher late p99", "pusher_late_ms.p99_ms"),
    ("machine busy (fraction)", "cpu.machine_busy_fraction"),
]
SIDE_COLUMNS = [
    ("stride ms", "stride_ms"), ("pipeline", "pipeline"), ("frames", "frames"),
    ("e2e p50", "e2e_p50_ms"), ("e2e p99", "e2e_p99_ms"), ("infer p50", "infer_p50_ms"),
    ("overhead p50", "overhead_p50_ms"), ("overhead p99", "overhead_p99_ms"),
    ("above floor p50", "above_floor_p50_ms"), ("above floor p99", "above_floor_p99_ms"),
    ("shown age mean", "shown_age_mean_ms"), ("CPU %", "cpu_percent"),
]
FLOOR_COLUMNS = [
    ("stride ms", "stride_ms"), ("LSL p50", "lsl_ms.p50_ms"), ("LSL p99", "lsl_ms.p99_ms"),
    ("ZeroMQ p50", "zmq_ms.p50_ms"), ("ZeroMQ p99", "zmq_ms.p99_ms"), ("floor p50", "floor_ms.p50_ms"),
    ("floor p99", "floor_ms.p99_ms"),
]


def plot_overhead_cdf(by_stride: Mapping[float, Mapping[str, np.ndarray]], path: str | Path, title: str) -> Path | None:
    """One panel per stride: empirical CDF of each pipeline's per-frame overhead and of the floor."""
    by_stride = {k: {n: np.asarray(v, dtype=np.float64) for n, v in d.items() if len(v)} for k, d in by_stride.items()}
    by_stride = {k: d for k, d in by_stride.items() if d}
    if not by_stride:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_stride), figsize=(5.2 * len(by_stride), 4.2), squeeze=False)
    for ax, (stride, d) in zip(axes[0], sorted(by_stride.items()), strict=True):
        for label, v in d.items():
            v = np.sort(v[np.isfinite(v) & (v > 0)])
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{label} (n={v.size})",
                        ls="--" if label.startswith("floor") else "-")
        ax.set_xscale("log")
        ax.set_xlabel("e2e - that frame's inference (ms)")
        ax.set_title(f"stride {stride:g} ms")
        ax.axhline(0.99, color="grey", lw=0.8, ls=":")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("fraction of frames <= x")
    return _save(fig, title, path)


def markdown_report(results: Mapping) -> str:
    """The human-readable report: machine, then one table per part that ran."""
    m = results.get("machine", {})
    pk = m.get("packages", {})
    lines = ["# rtdecode benchmark", "",
             f"- machine: {m.get('cpu_model')} ({m.get('cores')} cores, {m.get('memory_gib')} GiB), "
             f"{m.get('platform')}",
             f"- python {m.get('python')}; onnxruntime {pk.get('onnxruntime')}; torch {pk.get('torch')}; "
             f"pylsl {pk.get('pylsl')} (liblsl {pk.get('liblsl')}); pyzmq {pk.get('pyzmq')}; "
             f"numpy {pk.get('numpy')}",
             f"- ezmsg {pk.get('ezmsg')}, ezmsg-lsl {pk.get('ezmsg-lsl')}, ezmsg-zmq {pk.get('ezmsg-zmq')}, "
             f"mne-lsl {pk.get('mne-lsl')} (optional peers; '-'/None: not installed)",
             f"- load average (1, 5, 15 min) before the run: {m.get('load_average_1_5_15')}, after: "
             f"{results.get('load_average_after')}; quick mode: {results.get('quick')}",
             ]
    if results.get("note"):
        lines.append(f"- note: {results['note']}")
    parts = results.get("parts", {})
    inf = parts.get("inference")
    if inf:
        lines += ["", "## Inference (batch 1, warmed up)", ""]
        if inf.get("skipped"):
            lines.append(f"skipped: {inf['skipped']}")
        lines.append(markdown_table(inf.get("rows", []), INFERENCE_COLUMNS))
        for s in inf.get("notes", []):
            lines.append(f"- {s}")
    e2e = parts.get("e2e")
    ft = parts.get("first_try")
    rows = list((e2e or {}).get("runs", [])) + list((ft or {}).get("runs", []))
    if rows:
        lines += ["", "## End to end (newest sample's LSL timestamp -> frame received by a subscriber)", ""]
        lines.append(markdown_table(rows, E2E_COLUMNS))
        stage_rows = (e2e or {}).get("runs", [])
        if stage_rows:
            lines += ["", "Per-stage medians (ms) of rtdecode, from the frame headers:", ""]
            lines.append(markdown_table(stage_rows, STAGE_COLUMNS))
            lines += ["", "Per-stage p99 (ms), the pusher's lateness and how busy the whole machine was:", ""]
            lines.append(markdown_table(stage_rows, STAGE_P99_COLUMNS))
    cmp_ = parts.get("comparison")
    if cmp_:
        lines += ["", "## rtdecode vs first-try (same model, same stream)", ""]
        lines.append(markdown_table(cmp_.get("rows", []), [
            ("stride ms", "stride_ms"), ("first-try p50 / rtdecode p50", "ratio_p50"),
            ("first-try p99 / rtdecode p99", "ratio_p99")]))
    for name in ("e2e", "first_try"):
        part = parts.get(name) or {}
        for s in part.get("notes", []):
            lines.append(f"- {name}: {s}")
        if part.get("skipped"):
            lines.append(f"- {name} skipped: {part['skipped']}")
    sbs = (parts.get("side_by_side") or {}).get("rows")
    if sbs:
        lines += ["", "## rtdecode beside the field's pipelines (same stream, model, ONNX Runtime options, wire format)",
                  "", "Per frame: e2e = newest sample's LSL timestamp -> received by a subscriber in another process; "
                  "overhead = e2e minus that frame's own inference; above floor = overhead minus the transport "
                  "floor's quantile (LSL alone + ZeroMQ alone, same run); shown age mean = the age of the frame "
                  "a display shows, averaged over time (what a viewer sees, whatever the frame rate). All in ms.", ""]
        lines.append(markdown_table(sbs, SIDE_COLUMNS))
        for r in sbs:
            if r.get("skipped"):
                lines.append(f"- {r['pipeline']} at stride {r['stride_ms']:g} ms skipped: {r['skipped']}")
    fl = parts.get("floor")
    if fl:
        lines += ["", "## Transport floor (ms)", ""]
        lines.append(markdown_table(fl.get("rows", []), FLOOR_COLUMNS))
        for s in fl.get("notes", []):
            lines.append(f"- {s}")
    for s in (parts.get("peers") or {}).get("notes", []):
        lines.append(f"- peers: {s}")
    targets = results.get("targets")
    if targets:
        lines += ["", "## Targets", ""]
        for t in targets:
            lines.append(f"- {t}")
    return "\n".join(lines) + "\n"


def write_report(results: dict, series: Mapping[str, Mapping[str, np.ndarray]], out_dir: str | Path) -> dict:
    """Save bench.json, bench.md and PNGs (one per entry of `series`); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = dict(results)
    results.setdefault("schema", SCHEMA)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "plots": []}
    for name, s in series.items():
        if name == "overhead_cdf":
            p = plot_overhead_cdf(s, out / f"{name}.png", title="per-frame overhead (e2e - inference): rtdecode, "
                                  "ezmsg, MNE-LSL, first-try, transport floor")
        else:
            p = plot_latencies(s, out / f"{name}.png", title=name.replace("_", " "))
        if p is not None:
            paths["plots"].append(str(p.name))
    results["plots"] = paths["plots"]
    paths["json"].write_text(json.dumps(_clean(results), indent=2))
    paths["markdown"].write_text(markdown_report(results))
    return {k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}


def _save(fig, title: str, path: str | Path) -> Path:
    """Title, lay out, write as PNG (100 dpi) and close the figure."""
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
