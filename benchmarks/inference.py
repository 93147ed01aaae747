"""Inference latency per engine, model and input size (batch 1, warmed up), with achieved GFLOP/s.

FLOPs are counted from the ONNX graph (Conv, ConvTranspose, Gemm, MatMul, Einsum shapes after
onnx shape inference, batch fixed to 1): 2 x multiply-accumulates. Elementwise ops are left out,
so GFLOP/s is a lower bound of the work the engine did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdecode.telemetry import latency_summary

log = logging.getLogger(__name__)


# ---- FLOPs ---------------------------------------------------------------------------------
def count_flops(model_or_path) -> dict:
    """{"total": FLOPs at batch 1, "by_op": {op_type: FLOPs}, "params": initializer elements}.

    Counts only nodes that depend on the graph input (constant subgraphs are folded at load).
    """
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    model = _with_batch_one(model)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    params = int(sum(int(np.prod(i.dims)) for i in inferred.graph.initializer))

    by_op: dict[str, int] = {}
    unknown: list[str] = []
    # Only nodes downstream of the graph input do work per call; parameter-only subgraphs
    # (e.g. the RF layer's Gaussian density) are constant-folded by the runtime.
    dynamic = {i.name for i in inferred.graph.input} - {i.name for i in inferred.graph.initializer}
    for node in inferred.graph.node:
        if not any(name in dynamic for name in node.input):
            continue
        dynamic.update(node.output)
        f = _node_flops(node, shapes)
        if f is None:
            if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"):
                unknown.append(node.name or node.op_type)
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0) + f
    return {"total": int(sum(by_op.values())), "by_op": by_op, "params": params,
            "unresolved_nodes": unknown}


def _with_batch_one(model):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    for out in m.graph.output:  # stale symbolic batch on outputs would conflict
        dims = out.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del m.graph.value_info[:]
    return m


def _known(shape) -> bool:
    return shape is not None and len(shape) > 0 and all(d is not None and d > 0 for d in shape)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            return helper.get_attribute_value(a)
    return default


def _node_flops(node, shapes) -> int | None:
    op = node.op_type
    get = shapes.get
    if op == "Conv":
        out, w = get(node.output[0]), get(node.input[1])
        if _known(out) and _known(w):
            return 2 * int(np.prod(out)) * int(np.prod(w[1:]))
    elif op == "ConvTranspose":
        x, w = get(node.input[0]), get(node.input[1])
        if _known(x) and _known(w):
            return 2 * int(np.prod(x)) * int(np.prod(w[1:]))
    elif op == "Gemm":
        a, out = get(node.input[0]), get(node.output[0])
        if _known(a) and _known(out) and len(a) == 2:
            k = a[0] if _attr(node, "transA", 0) else a[1]
            return 2 * int(np.prod(out)) * int(k)
    elif op == "MatMul":
        a, out = get(node.input[0]), get(node.output[0])
        if _known(a) and _known(out):
            return 2 * int(np.prod(out)) * int(a[-1])
    elif op == "Einsum":
        return _einsum_flops(node, shapes)
    return None


def _einsum_flops(node, shapes) -> int | None:
    eq = _attr(node, "equation")
    if isinstance(eq, bytes):
        eq = eq.decode()
    if not eq or "->" not in eq or "..." in eq:
        return None
    lhs, _ = eq.replace(" ", "").split("->")
    sizes: dict[str, int] = {}
    for term, name in zip(lhs.split(","), node.input, strict=False):
        shape = shapes.get(name)
        if not _known(shape) or len(shape) != len(term):
            return None
        for ch, d in zip(term, shape, strict=True):
            sizes[ch] = max(sizes.get(ch, 1), int(d))
    return 2 * int(np.prod(list(sizes.values())))


# ---- timing --------------------------------------------------------------------------------
@dataclass
class Timed:
    """Latencies (ms) of `n` timed calls after `warmup` untimed ones."""

    latencies_ms: np.ndarray
    warmup: int

    def summary(self) -> dict:
        return latency_summary(self.latencies_ms)


def time_calls(fn: Callable[[], object], *, n: int, warmup: int, max_seconds: float | None = None) -> Timed:
    """Call fn() warmup times, then n times timed with perf_counter_ns (stops early at max_seconds)."""
    for _ in range(warmup):
        fn()
    lat = np.empty(n, dtype=np.float64)
    start = time.monotonic()
    k = 0
    for k in range(n):
        t0 = time.perf_counter_ns()
        fn()
        lat[k] = (time.perf_counter_ns() - t0) / 1e6
        if max_seconds is not None and time.monotonic() - start > max_seconds and k >= 9:
            k += 1
            break
    else:
        k = n
    return Timed(lat[:k], warmup)


def ort_session(model_path: str | Path, *, threads: int, graph_opt: str = "all"):
    """A plain ONNX Runtime CPU session (the study varies options the engine class does not expose)."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[graph_opt]
    so.log_severity_level = 3
    return ort.InferenceSession(str(model_path), sess_options=so, providers=["CPUExecutionProvider"])


def ort_runner(model_path: str | Path, input_shape: tuple[int, ...], *, threads: int,
               graph_opt: str = "all", input_name: str = "mua") -> tuple[Callable[[], object], str]:
    """fn() running one preallocated batch-1 input through a session bound with IOBinding."""
    import onnxruntime as ort

    sess = ort_session(model_path, threads=threads, graph_opt=graph_opt)
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    out_meta = sess.get_outputs()[0]
    out = np.empty([1 if not isinstance(d, int) else d for d in out_meta.shape], dtype=np.float32)
    binding = sess.io_binding()
    binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(x))
    binding.bind_ortvalue_output(out_meta.name, ort.OrtValue.ortvalue_from_numpy(out))

    def run() -> np.ndarray:
        sess.run_with_iobinding(binding)
        return out

    return run, f"onnxruntime {ort.__version__} CPU, {threads} intra-op thread(s), graph opt {graph_opt}"


def engine_runner(name: str, model_path: str | Path, contract, **opts) -> tuple[Callable[[], object], str]:
    """fn() calling a registered rtdecode engine's infer() on one fixed input."""
    from rtdecode.engines import create_engine

    engine = create_engine(name, str(model_path), contract, **opts)
    x = np.random.default_rng(0).standard_normal((1, *contract.input_shape)).astype(np.float32)
    return (lambda: engine.infer(x)), engine.describe()


def torch_runner(module, input_shape: tuple[int, ...], *, threads: int) -> tuple[Callable[[], object], str]:
    """fn() running a torch module eagerly on the CPU (inference mode, `threads` intra-op threads)."""
    import torch

    torch.set_num_threads(int(threads))
    module = module.eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32))

    def run():
        with torch.inference_mode():
            return module(x)

    return run, f"torch {torch.__version__} eager CPU, {threads} thread(s)"


# ---- models --------------------------------------------------------------------------------
PRESET_WIDTHS = {"fast": (32, 64, 128, 256), "paper": (64, 128, 256, 512, 512)}


def demo_model_path() -> Path | None:
    """The bundled demo decoder, when the package ships one."""
    p = Path(__file__).resolve().parents[1] / "rtdecode" / "assets" / "demo" / "model.onnx"
    return p if p.exists() else None


def bench_contract(image_size: int, *, layout=None, model_id: str = "bench", training_config=None):
    """A contract over TVSD monkey N (1024 ch, spatiotemporal windows) with identity normalisation."""
    from rtdecode.contract import DecoderContract
    from rtdecode.layout import tvsd_monkey_n
    from rtdecode.windows import spatiotemporal_plan

    layout = layout or tvsd_monkey_n()
    plan = spatiotemporal_plan(layout, 1000.0)
    shape = (plan.n_maps, layout.n_electrodes)
    return DecoderContract(layout, plan, np.zeros(shape, np.float32), np.ones(shape, np.float32),
                           image_size, image_size, model_id, dict(training_config or {}))


def build_preset_module(preset: str, image_size: int, contract, seed: int = 0):
    """A HomeomorphicDecoder of a training preset with random weights (eval mode)."""
    import torch

    from rtdecode.training.model import HomeomorphicDecoder

    torch.manual_seed(seed)
    m, e = contract.input_shape
    model = HomeomorphicDecoder(m, e, image_size, PRESET_WIDTHS[preset], mask=contract.mask)
    return model.eval()


def export_module(module, contract, path: str | Path) -> Path:
    """One self-contained rtdecode .onnx (dynamic batch) with the contract attached."""
    import onnx
    import torch

    from rtdecode.onnx_io import attach_contract, save_model

    path = Path(path)
    x = torch.zeros((1, *contract.input_shape), dtype=torch.float32)
    tmp = path.with_suffix(".raw.onnx")
    with torch.no_grad():
        torch.onnx.export(module, (x,), str(tmp), input_names=["mua"], output_names=["frame"],
                          dynamic_axes={"mua": {0: "batch"}, "frame": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    model = onnx.load(str(tmp))
    tmp.unlink()
    return save_model(attach_contract(model, contract), path)


def _ort_rtdecode_or_plain(model_path, contract, threads: int):
    """The service's own ORT engine when it exists (what serving runs), else a plain bound session."""
    try:
        return engine_runner("onnxruntime", model_path, contract, threads=threads)
    except ModuleNotFoundError:
        return ort_runner(model_path, contract.input_shape, threads=threads)


def run_inference(work_dir: str | Path, *, quick: bool, progress=print) -> tuple[dict, dict]:
    """The inference part: rows of latency percentiles + GFLOP/s, and the raw series for plots."""
    import importlib.util

    from rtdecode.contract import read_contract

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    have_torch = importlib.util.find_spec("torch") is not None
    n, warmup, cap = (20, 3, 8.0) if quick else (200, 10, 25.0)
    thread_counts = (1,) if quick else (1, 2)
    notes: list[str] = []
    models: list[tuple[str, int, Path, object, object]] = []  # name, size, onnx, contract, torch module
    demo = demo_model_path()
    if demo is not None:
        c = read_contract(demo)
        models.append(("demo", c.image_height, demo, c, None))
    else:
        notes.append("no bundled demo model (rtdecode/assets/demo/model.onnx) here")
    if have_torch:
        grid = [("fast", 64)] if quick else [(p, s) for p in ("fast", "paper") for s in (64, 96, 128)]
        for preset, size in grid:
            c = bench_contract(size, model_id=f"{preset}{size}-random")
            module = build_preset_module(preset, size, c)
            path = export_module(module, c, work_dir / f"{preset}{size}.onnx")
            models.append((f"{preset} (random weights)", size, path, c, module))
    else:
        notes.append("torch is not installed: preset models and the torch engine were not measured")
    if not models:  # no demo, no torch: a linear decoder keeps the part meaningful
        from rtdecode.onnx_io import build_linear_decoder, save_model

        c = bench_contract(16, model_id="linear16")
        rng = np.random.default_rng(0)
        w = rng.standard_normal((int(np.prod(c.input_shape)), 3 * 16 * 16)).astype(np.float32) * 0.01
        path = save_model(build_linear_decoder(c, w, np.zeros(3 * 16 * 16, np.float32)), work_dir / "linear16.onnx")
        models.append(("linear", 16, path, c, None))

    torch_threads_before = None
    if have_torch:
        import torch

        torch_threads_before = torch.get_num_threads()
    rows, series = [], {}
    for name, size, path, contract, module in models:
        flops = count_flops(path)
        gflop = flops["total"] / 1e9
        runners = [("onnxruntime", t) for t in thread_counts]
        if have_torch and module is not None:
            runners += [("torch-eager", t) for t in thread_counts]
        for engine, threads in runners:
            if engine == "onnxruntime":
                fn, desc = _ort_rtdecode_or_plain(path, contract, threads)
            else:
                fn, desc = torch_runner(module, contract.input_shape, threads=threads)
            timed = time_calls(fn, n=n, warmup=warmup, max_seconds=cap)
            s = timed.summary()
            row = {"model": name, "size": size, "engine": engine, "threads": threads, "describe": desc,
                   "gflop": gflop, "params_m": flops["params"] / 1e6, "latency_ms": s,
                   "gflops_per_s": gflop / (s["p50_ms"] / 1e3) if s.get("count") else None,
                   "flops_by_op": flops["by_op"], "warmup": warmup}
            rows.append(row)
            series[f"{name} {size} {engine} x{threads}"] = timed.latencies_ms
            progress(f"inference: {name} {size}x{size} {engine} {threads} thr: p50 {s['p50_ms']:.2f} ms "
                     f"p99 {s['p99_ms']:.2f} ms ({row['gflops_per_s']:.1f} GFLOP/s)")
    if have_torch:  # leave torch's thread setting as it was found (the first-try part uses defaults)
        import torch

        torch.set_num_threads(torch_threads_before)
    return {"rows": rows, "notes": notes, "n_per_config": n, "warmup": warmup}, series
