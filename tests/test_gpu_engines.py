"""GPU engines: clear errors where they cannot run (CPU machines), parity where they can (marker gpu).

CPU-runnable: build-engine without TensorRT fails fast with what is missing; asking for tensorrt /
ort-cuda / ort-tensorrt / torch-cuda without a GPU is an EngineError saying why; the torch decoder
rebuilt from an exported ONNX matches ONNX Runtime CPU (<= 1e-4).
GPU (skipped with a reason without CUDA / TensorRT / onnxruntime-gpu): every GPU engine vs ORT CPU,
max abs diff <= 1e-3 in fp32 and <= 1e-2 in fp16, on random and real (session) inputs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from rtdecode.contract import read_contract
from rtdecode.deploy.build_engine import calibration_maps
from rtdecode.engines import create_engine
from rtdecode.engines.sidecar import write_sidecar
from rtdecode.errors import EngineError
from rtdecode.onnx_io import build_linear_decoder, save_model
from rtdecode.sessions.session_file import SessionWriter
from rtdecode.testing import tiny_contract

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def _torch_cuda() -> bool:
    import torch  # in the test set-up: a broken torch fails here, it is not a skip

    return bool(torch.cuda.is_available())


@pytest.fixture
def linear_model(tmp_path, rng):
    c = tiny_contract(rng)
    m, e = c.input_shape
    w = rng.normal(scale=0.05, size=(m * e, 3 * 64)).astype(np.float32)
    path = save_model(build_linear_decoder(c, w, np.full(3 * 64, 0.5, np.float32)), tmp_path / "lin.onnx")
    return c, str(path)


@pytest.fixture
def session_inputs(tmp_path, rng, linear_model):
    """Real decoder inputs: windows of a recorded session, assembled and normalised as serving does."""
    c, _ = linear_model
    lay = c.layout
    with SessionWriter(tmp_path / "s.h5", lay, 1000.0) as w:
        w.append(rng.gamma(2.0, 1.0, size=(2000, lay.n_channels)).astype(np.float32), np.arange(2000) / 1000.0)
        w.set_markers(np.array([100, 600, 1100]), np.array([200, 700, 1200]), np.zeros(3, dtype=np.int64))
    return calibration_maps(tmp_path / "s.h5", c, n_max=8)


# ---- CPU machines: clear refusals --------------------------------------------------------------------
@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; the missing-TensorRT message cannot be shown")
def test_build_engine_without_tensorrt_fails_fast(linear_model):
    _, path = linear_model
    out = subprocess.run([sys.executable, "-m", "rtdecode", "build-engine", path, "--fp16"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "TensorRT is not installed" in out.stderr
    assert "pip install tensorrt" in out.stderr
    assert "Traceback" not in out.stderr


def test_build_engine_rejects_bad_options_before_anything_else(linear_model):
    _, path = linear_model
    out = subprocess.run([sys.executable, "-m", "rtdecode", "build-engine", path, "--int8"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "--int8 needs --calibration" in out.stderr


def test_tensorrt_engine_without_engine_file(linear_model):
    c, path = linear_model
    with pytest.raises(EngineError, match=r"lin\.engine does not exist.*build-engine"):
        create_engine("tensorrt", path, c)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_tensorrt_engine_without_tensorrt(linear_model, tmp_path):
    c, path = linear_model
    engine = tmp_path / "lin.engine"
    engine.write_bytes(b"serialized engine")
    from rtdecode.testing import make_sidecar

    write_sidecar(engine, make_sidecar())
    with pytest.raises(EngineError, match="TensorRT is not installed") as ei:
        create_engine("tensorrt", path, c, engine_path=str(engine))
    assert ei.value.engine == "tensorrt"


def test_tensorrt_engine_without_sidecar(linear_model, tmp_path):
    c, path = linear_model
    (tmp_path / "lin.engine").write_bytes(b"serialized engine")
    with pytest.raises(EngineError, match="has no sidecar"):
        create_engine("tensorrt", path, c)


@pytest.mark.skipif("CUDAExecutionProvider" in _providers(), reason="onnxruntime-gpu is installed here")
@pytest.mark.parametrize("name, provider", [("ort-cuda", "CUDAExecutionProvider"),
                                            ("ort-tensorrt", "TensorrtExecutionProvider")])
def test_ort_gpu_engines_refuse_without_onnxruntime_gpu(linear_model, name, provider):
    c, path = linear_model
    with pytest.raises(EngineError, match=f"{provider} is not available.*onnxruntime-gpu") as ei:
        create_engine(name, path, c)
    assert ei.value.engine == name


@pytest.mark.skipif(_torch_cuda(), reason="CUDA is available here")
def test_torch_cuda_refuses_without_cuda(linear_model):
    c, path = linear_model
    with pytest.raises(EngineError, match="cannot use CUDA"):
        create_engine("torch-cuda", path, c)


def test_torch_engine_needs_model_args(linear_model):
    c, path = linear_model
    with pytest.raises(EngineError, match="no model_args.*checkpoint=CKPT"):
        create_engine("torch-cpu", path, c)


# ---- an exported homeomorphic decoder ------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small trained-shape decoder (random weights, non-trivial BatchNorm stats) exported by training/export.py."""
    import torch

    from rtdecode.training.checkpoint import save_checkpoint
    from rtdecode.training.config import preset
    from rtdecode.training.export import export_checkpoint
    from rtdecode.training.model import HomeomorphicDecoder

    tmp = tmp_path_factory.mktemp("exported")
    rng = np.random.default_rng(7)
    c = tiny_contract(rng, image=32)
    m, e = c.input_shape
    torch.manual_seed(0)
    model = HomeomorphicDecoder(m, e, 32, [8, 16, 32], mask=c.mask).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    ckpt = save_checkpoint(tmp / "ckpt.pt", model=model, config=preset("fast"), step=1, epoch=1,
                           norm_mean=c.norm_mean, norm_std=c.norm_std, layout_json=c.layout.to_json(),
                           plan_json=c.plan.to_json())
    report = export_checkpoint(ckpt, tmp / "dec.onnx", progress=False)
    return read_contract(report.path), str(report.path), ckpt


def test_torch_cpu_matches_onnxruntime_on_an_exported_model(exported, rng):
    c, path, ckpt = exported
    ref = create_engine("onnxruntime", path, c, threads=1)
    m, e = c.input_shape
    for engine in (create_engine("torch-cpu", path, c), create_engine("torch-cpu", path, c, checkpoint=ckpt)):
        for _ in range(3):
            x = (rng.standard_normal((1, m, e)) * c.mask).astype(np.float32)
            diff = np.abs(engine.infer(x) - ref.infer(x)).max()
            assert diff <= 1e-4, (engine.describe(), diff)
        assert engine.describe().startswith("torch-cpu")


# ---- GPU: parity against ONNX Runtime CPU ----------------------------------------------------------------
def _parity(engine, ref, inputs, tol):
    worst = 0.0
    for x in inputs:
        x = np.ascontiguousarray(x[None], dtype=np.float32)
        got = np.array(engine.infer(x), copy=True)
        want = ref.infer(x)
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= tol, (engine.describe(), worst)
    return worst


def _inputs(c, rng, real):
    m, e = c.input_shape
    rand = [(rng.standard_normal((m, e)) * c.mask).astype(np.float32) for _ in range(4)]
    return rand + list(real)


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in _providers(), reason="needs onnxruntime-gpu (CUDA EP)")
def test_ort_cuda_matches_cpu(linear_model, session_inputs, rng):
    c, path = linear_model
    ref = create_engine("onnxruntime", path, c)
    _parity(create_engine("ort-cuda", path, c), ref, _inputs(c, rng, session_inputs), 1e-3)


@pytest.mark.gpu
@pytest.mark.skipif("TensorrtExecutionProvider" not in _providers(), reason="needs onnxruntime-gpu with TensorRT")
@pytest.mark.parametrize("fp16, tol", [(False, 1e-3), (True, 1e-2)], ids=["fp32", "fp16"])
def test_ort_tensorrt_matches_cpu(linear_model, session_inputs, rng, tmp_path, fp16, tol):
    c, path = linear_model
    ref = create_engine("onnxruntime", path, c)
    engine = create_engine("ort-tensorrt", path, c, fp16=fp16, cache_dir=str(tmp_path / "trt"))
    _parity(engine, ref, _inputs(c, rng, session_inputs), tol)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT (import tensorrt)")
@pytest.mark.parametrize("fp16, cuda_graph, tol", [(False, False, 1e-3), (False, True, 1e-3), (True, True, 1e-2)],
                         ids=["fp32", "fp32-graph", "fp16-graph"])
def test_native_tensorrt_matches_cpu(linear_model, session_inputs, rng, tmp_path, fp16, cuda_graph, tol):
    from rtdecode.deploy.build_engine import BuildOptions, build_engine

    c, path = linear_model
    engine_path, _ = build_engine(BuildOptions(path, out=tmp_path / "lin.engine", fp16=fp16, max_batch=2))
    ref = create_engine("onnxruntime", path, c)
    engine = create_engine("tensorrt", path, c, engine_path=str(engine_path), cuda_graph=cuda_graph)
    try:
        _parity(engine, ref, _inputs(c, rng, session_inputs), tol)
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.parametrize("fp16, cuda_graph, tol", [(False, False, 1e-3), (False, True, 1e-3), (True, True, 1e-2)],
                         ids=["fp32", "fp32-graph", "fp16-graph"])
def test_torch_cuda_matches_cpu(exported, rng, fp16, cuda_graph, tol):
    c, path, _ = exported
    ref = create_engine("onnxruntime", path, c)
    engine = create_engine("torch-cuda", path, c, fp16=fp16, cuda_graph=cuda_graph)
    m, e = c.input_shape
    _parity(engine, ref, [(rng.standard_normal((m, e)) * c.mask).astype(np.float32) for _ in range(4)], tol)
