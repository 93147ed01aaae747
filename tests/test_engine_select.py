"""`--engine auto`: order of preference, reasons for every engine passed over, and no silent fallback."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from rtdecode.engines import Engine, create_engine
from rtdecode.engines.select import ORDER, EngineChoice, choose_engine
from rtdecode.engines.sidecar import write_sidecar
from rtdecode.errors import EngineError
from rtdecode.onnx_io import build_linear_decoder, save_model
from rtdecode.testing import tiny_contract


class Labelled(Engine):
    """A stand-in engine that remembers which factory made it and with which options."""

    def __init__(self, name: str, opts: dict):
        self.name = name
        self.opts = opts

    def infer(self, x):
        raise NotImplementedError


def fake_factories(fail: dict[str, str] | None = None):
    fail = fail or {}

    def make(name):
        def factory(model_path, contract, **opts):
            if name in fail:
                raise EngineError(fail[name], engine=name)
            return Labelled(name, opts)
        return factory

    return {n: make(n) for n in ORDER}


def probes(available: set[str]):
    return {n: (lambda m, o, n=n: None if n in available else f"{n} is not here") for n in ORDER}


@pytest.fixture
def model(tmp_path, rng):
    c = tiny_contract(rng)
    m, e = c.input_shape
    w = rng.normal(scale=0.05, size=(m * e, 3 * 64)).astype(np.float32)
    return c, str(save_model(build_linear_decoder(c, w, np.full(3 * 64, 0.5, np.float32)), tmp_path / "m.onnx"))


@pytest.mark.parametrize("available, chosen", [
    ({"tensorrt", "ort-tensorrt", "ort-cuda", "torch-cuda", "onnxruntime"}, "tensorrt"),
    ({"ort-tensorrt", "ort-cuda", "onnxruntime"}, "ort-tensorrt"),
    ({"ort-cuda", "torch-cuda", "onnxruntime"}, "ort-cuda"),
    ({"torch-cuda", "onnxruntime"}, "torch-cuda"),
    ({"onnxruntime"}, "onnxruntime"),
])
def test_auto_prefers_the_fastest_available(model, available, chosen):
    c, path = model
    engine = choose_engine(path, c, probes=probes(available), factories=fake_factories())
    assert engine.name == chosen
    faster = list(ORDER[:ORDER.index(chosen)])
    assert [n for n, _ in engine.selection.skipped] == faster
    assert all(reason == f"{n} is not here" for n, reason in engine.selection.skipped)


def test_a_failing_creation_falls_through_with_its_reason(model):
    c, path = model
    engine = choose_engine(path, c, probes=probes(set(ORDER)),
                           factories=fake_factories({"tensorrt": "sidecar says 8.6, GPU is 8.9",
                                                     "ort-tensorrt": "TensorRT libs missing"}))
    assert engine.name == "ort-cuda"
    reasons = dict(engine.selection.skipped)
    assert "8.6" in reasons["tensorrt"] and "TensorRT libs missing" in reasons["ort-tensorrt"]


def test_each_engine_gets_only_its_own_options(model):
    c, path = model
    engine = choose_engine(path, c, probes=probes({"onnxruntime"}), factories=fake_factories(),
                           threads=1, engine_path="x.engine", cuda_graph=True)
    assert engine.opts == {"threads": 1}
    engine = choose_engine(path, c, probes=probes({"tensorrt"}), factories=fake_factories(),
                           threads=1, engine_path="x.engine", cuda_graph=True)
    assert engine.opts == {"engine_path": "x.engine", "cuda_graph": True}


def test_no_engine_at_all_lists_every_reason(model):
    c, path = model
    with pytest.raises(EngineError, match="no engine can run") as ei:
        choose_engine(path, c, probes=probes(set()), factories=fake_factories())
    for n in ORDER:
        assert f"{n}: {n} is not here" in str(ei.value)


def test_a_probe_that_crashes_does_not_stop_the_search(model):
    c, path = model

    def boom(m, o):
        raise RuntimeError("driver exploded")

    engine = choose_engine(path, c, probes={**probes({"onnxruntime"}), "tensorrt": boom}, factories=fake_factories())
    assert engine.name == "onnxruntime"
    assert "driver exploded" in dict(engine.selection.skipped)["tensorrt"]


def test_summary_reads_well():
    text = EngineChoice("onnxruntime", [("tensorrt", "no engine file m.engine")]).summary()
    assert text.splitlines() == ["engine auto: chose onnxruntime", "  not tensorrt: no engine file m.engine"]


def test_on_this_machine_auto_picks_what_runs_and_says_why(model, caplog, rng):
    """Real probes and real engines: on a CPU box this is ONNX Runtime CPU, with a reason for each GPU engine."""
    c, path = model
    with caplog.at_level(logging.INFO, logger="rtdecode.engines.select"):
        engine = create_engine("auto", path, c, threads=1)
    choice = engine.selection
    import onnxruntime as ort

    gpu_here = "CUDAExecutionProvider" in ort.get_available_providers()
    if not gpu_here and importlib.util.find_spec("tensorrt") is None:
        assert choice.chosen in ("onnxruntime", "torch-cuda")
        reasons = dict(choice.skipped)
        assert "no engine file" in reasons["tensorrt"] and "build-engine" in reasons["tensorrt"]
        assert "onnxruntime-gpu" in reasons["ort-tensorrt"] and "onnxruntime-gpu" in reasons["ort-cuda"]
        if choice.chosen == "onnxruntime":
            assert "torch" in reasons["torch-cuda"]
    assert f"chose {choice.chosen}" in caplog.text
    x = np.zeros((1, *c.input_shape), np.float32)
    assert engine.infer(x).shape == (1, 3, 8, 8)


def test_auto_tensorrt_probe_explains_a_present_engine_that_cannot_load(model, tmp_path):
    c, path = model
    from rtdecode.testing import make_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized")
    write_sidecar(engine, make_sidecar())
    got = choose_engine(path, c, threads=1, order=("tensorrt", "onnxruntime"))
    assert got.name == "onnxruntime"
    reason = dict(got.selection.skipped)["tensorrt"]
    if importlib.util.find_spec("tensorrt") is None:
        assert "TensorRT is not installed" in reason
    else:  # a fake sidecar never matches a real machine
        assert "GPU" in reason or "sha256" in reason or "CUDA" in reason


def test_explicit_gpu_engine_never_falls_back(model):
    c, path = model
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(EngineError):
        create_engine("ort-cuda", path, c, threads=1)
