"""Inference engines behind one small interface, and the registry `--engine` chooses from.

An engine is created from an rtdecode ONNX decoder (plus, for TensorRT, its built engine) and
maps one normalised input [1, M, E] float32 to a frame [1, 3, H, W] float32 in [0, 1].
Heavy imports (onnxruntime, torch, tensorrt) happen inside each engine module, on creation.

Registry names:
  onnxruntime     ONNX Runtime, CPU execution provider (default)
  ort-cuda        ONNX Runtime, CUDA execution provider (onnxruntime-gpu)
  ort-tensorrt    ONNX Runtime, TensorRT execution provider (onnxruntime-gpu + TensorRT libs)
  tensorrt        native TensorRT engine (deploy/ builds it; `rtdecode build-engine`)
  torch-cuda      torch CUDA graph replay of the decoder module (training extra)
  torch-cpu       torch eager on the CPU (reference / first-try pipeline in benchmarks)
  auto            the fastest that can run here; says which and why
"""

from __future__ import annotations

from typing import Any

from ..errors import EngineError
from .base import REGISTRY, Engine, factory

__all__ = ["REGISTRY", "Engine", "create_engine"]


def create_engine(name: str, model_path: str, contract: Any, **options: Any) -> Engine:
    """Create engine `name`; 'auto' is resolved by rtdecode.engines.select.choose_engine."""
    if name == "auto":
        from .select import choose_engine

        return choose_engine(model_path, contract, **options)
    if name not in REGISTRY:
        raise EngineError(f"unknown engine; expected one of {sorted(REGISTRY) + ['auto']}", engine=name)
    make = factory(name)
    try:
        return make(model_path, contract, **options)
    except TypeError as e:  # an option the engine does not take: say which, not a bare TypeError
        if "unexpected keyword argument" not in str(e):
            raise
        raise EngineError(f"{e.args[0].split(' got ')[-1]}; see docs/gpu.md for each engine's options",
                          engine=name) from e
