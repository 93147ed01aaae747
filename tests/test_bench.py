"""Benchmarks: FLOP counting, report pieces, the Prometheus endpoint (real HTTP), and a real
`rtdecode bench --quick` run whose JSON must be complete (no wall-clock assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tiny_onnx(path: Path) -> Path:
    """x [B, 10] -> Gemm -> [B, 48] -> reshape [B, 3, 4, 4] -> Conv 8x3x3x3 (pad 1); plus a
    constant-only MatMul (parameters x parameters) that must not be counted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((10, 48)).astype(np.float32), "W"),
        numpy_helper.from_array(np.zeros(48, np.float32), "b"),
        numpy_helper.from_array(np.array([-1, 3, 4, 4], np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "K"),
        numpy_helper.from_array(np.ones((5, 7), np.float32), "P"),
        numpy_helper.from_array(np.ones((7, 5), np.float32), "Q"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["r"]),
        helper.make_node("Conv", ["r", "K"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["P", "Q"], ["const"]),
        helper.make_node("ReduceSum", ["const"], ["s"], keepdims=0),
        helper.make_node("Add", ["c", "s"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_count_flops_counts_only_input_dependent_matmuls_and_convs(tmp_path):
    from rtdecode.benchmarks.inference import count_flops

    f = count_flops(_tiny_onnx(tmp_path / "tiny.onnx"))
    gemm = 2 * 1 * 48 * 10
    conv = 2 * (8 * 4 * 4) * (3 * 3 * 3)
    assert f["by_op"] == {"Gemm": gemm, "Conv": conv}  # the parameter-only MatMul is folded away
    assert f["total"] == gemm + conv
    assert f["params"] == 10 * 48 + 48 + 4 + 8 * 27 + 35 + 35
    assert f["unresolved_nodes"] == []


def test_summaries_and_markdown_table():
    from rtdecode.benchmarks.report import markdown_table
    from rtdecode.telemetry import latency_summary

    s = latency_summary(np.arange(1, 101, dtype=float))
    assert s["count"] == 100 and s["min_ms"] == 1 and s["max_ms"] == 100
    assert 50 <= s["p50_ms"] <= 51 and 99 <= s["p99_ms"] <= 100
    assert latency_summary([]) == {"count": 0}
    table = markdown_table([{"a": 1, "b": {"c": 2.5, "p99.9": 3.0}}, {"a": 2}],
                           [("A", "a"), ("C", "b.c"), ("P", "b.p99.9")])
    assert table.splitlines()[2] == "| 1 | 2.50 | 3.00 |" and table.splitlines()[3] == "| 2 | - | - |"


def _metrics(url: str) -> dict[str, float]:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_prometheus_endpoint_serves_the_services_telemetry_over_http():
    from rtdecode.errors import ConfigError
    from rtdecode.sinks.prometheus import PrometheusExporter
    from rtdecode.telemetry import Telemetry

    tel = Telemetry()
    for d in (0.004, 0.005, 0.006):
        tel.record_frame({"infer": d, "end_to_end": d + 0.002})
    tel.skip("stale", 3)
    tel.skip("gap")
    tel.gaps = 2
    with PrometheusExporter(tel, port=0) as exp:
        assert exp.url.startswith("http://127.0.0.1:") and exp.port > 0
        m = _metrics(exp.url)
        assert m["rtdecode_frames_total"] == 3
        assert m['rtdecode_skipped_windows_total{reason="stale"}'] == 3
        assert m['rtdecode_skipped_windows_total{reason="gap"}'] == 1
        assert m["rtdecode_stream_gaps_total"] == 2
        assert m['rtdecode_stage_latency_seconds_count{stage="infer"}'] == 3
        assert m['rtdecode_stage_latency_seconds_sum{stage="infer"}'] == pytest.approx(0.015)
        p50 = m['rtdecode_stage_latency_seconds{stage="infer",quantile="0.5"}']
        assert 0.0045 < p50 < 0.0055
        assert math.isnan(m['rtdecode_stage_latency_seconds{stage="wait",quantile="0.5"}'])  # no data yet
        tel.record_frame({"infer": 0.005})  # live: the next scrape sees the new frame
        assert _metrics(exp.url)["rtdecode_frames_total"] == 4
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(exp.url.replace("/metrics", "/other"), timeout=5)
        assert e.value.code == 404
    with pytest.raises(ConfigError, match="not loopback"):
        PrometheusExporter(tel, host="0.0.0.0")
    with pytest.raises(ConfigError, match="port"):
        PrometheusExporter(tel, port=70000)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_latency(s: dict, what: str) -> None:
    assert s.get("count", 0) > 0, f"{what}: no samples"
    for k in ("mean_ms", "min_ms", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"):
        assert _finite(s.get(k)), f"{what}: {k} = {s.get(k)!r}"
    assert s["min_ms"] <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], what


@pytest.mark.slow
@pytest.mark.lsl
@pytest.mark.timeout(480)
def test_bench_quick_writes_complete_json_markdown_and_plots(tmp_path):
    out = tmp_path / "bench"
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "rtdecode", "bench", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=470)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "bench.json").read_text())
    assert res["schema"] == "rtdecode-bench/2" and res["quick"] is True
    m = res["machine"]
    assert m["cpu_model"] and m["cores"] >= 1 and m["python"]
    assert m["packages"]["onnxruntime"] and m["packages"]["pylsl"] and m["packages"]["numpy"]
    parts = res["parts"]
    rows = parts["inference"]["rows"]
    assert rows, "no inference rows"
    for r in rows:
        _check_latency(r["latency_ms"], f"inference {r['model']} {r['engine']}")
        assert _finite(r["gflop"]) and r["gflop"] > 0 and _finite(r["gflops_per_s"]) and r["gflops_per_s"] > 0
    assert {r["engine"] for r in rows} >= {"onnxruntime"}
    for part in ("e2e", "first_try"):
        assert parts[part]["runs"], part
        for r in parts[part]["runs"]:
            assert r["frames_received"] > 0, part
            _check_latency(r["latency_ms"], f"{part} stride {r['stride_ms']}")
            assert _finite(r["cpu_percent"]) and r["cpu_percent"] > 0
    e2e = parts["e2e"]["runs"][0]
    for stage in ("lsl_in", "wait", "assemble", "normalise", "infer", "encode", "zmq_out", "e2e_minus_infer"):
        _check_latency(e2e["stages_ms"][stage], f"stage {stage}")
    assert e2e["skipped_windows"] is not None and e2e["dropped_samples"] is not None
    _check_latency(parts["e2e"]["inference_alone_ms"], "inference alone")
    cmp_rows = parts["comparison"]["rows"]
    assert cmp_rows and all(_finite(c["ratio_p50"]) and _finite(c["ratio_p99"]) for c in cmp_rows)
    # one table: rtdecode, the peers (or why they were skipped) and first-try at strides 1, 5 and 16 ms
    sbs = parts["side_by_side"]["rows"]
    assert {(r["stride_ms"], r["pipeline"]) for r in sbs} == {
        (s, p) for s in (1.0, 5.0, 16.0) for p in ("rtdecode", "ezmsg", "MNE-LSL", "first-try")}
    for r in sbs:
        if r["skipped"]:
            assert r["pipeline"] in ("ezmsg", "MNE-LSL") and "not installed" in r["skipped"]
            continue
        assert r["frames"] > 0, r
        assert _finite(r["overhead_p50_ms"]) and r["overhead_p50_ms"] <= r["overhead_p99_ms"], r
        assert r["overhead_p50_ms"] < r["e2e_p50_ms"], r  # the frame's own inference is taken out
        assert _finite(r["above_floor_p50_ms"]), r
    for f in parts["floor"]["rows"]:
        for k in ("lsl_ms", "zmq_ms", "floor_ms"):
            _check_latency(f[k], f"floor {k} stride {f['stride_ms']}")
        assert f["floor_ms"]["p50_ms"] > f["lsl_ms"]["p50_ms"]
    assert "overhead_cdf.png" in res["plots"]
    assert res["targets"], "targets not evaluated"
    md = (out / "bench.md").read_text()
    assert "## Inference" in md and "## End to end" in md and m["cpu_model"] in md
    assert "beside the field's pipelines" in md and "## Transport floor" in md
    assert res["plots"] and all((out / p).stat().st_size > 1000 for p in res["plots"])


def test_bench_variant_parses_serve_settings_and_names_a_wrong_one():
    from rtdecode.commands.bench import parse_variant
    from rtdecode.errors import ConfigError

    assert parse_variant("inlet=loop,pin_cpu=1") == {"inlet": "loop", "pin_cpu": 1}
    assert parse_variant("catch_up=newest,reconnect=false") == {"catch_up": "newest", "reconnect": False}
    with pytest.raises(ConfigError, match="'spin' is not a serve setting"):
        parse_variant("spin=yes")
    with pytest.raises(ConfigError, match="inlet must be one of thread, loop"):
        parse_variant("inlet=fast")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_variant("inlet")
