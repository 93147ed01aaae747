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

import importlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..errors import EngineError


class Engine(ABC):
    """One decoder ready to run. `infer` may reuse its output buffer between calls."""

    name: str = "engine"

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """x: float32 [1, M, E] (C-contiguous) -> float32 [1, 3, H, W]."""

    def describe(self) -> str:
        """One line: engine, device, precision, providers."""
        return self.name

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device resources."""


# name -> "module:factory"; the factory is called as factory(model_path, contract, **options)
REGISTRY: dict[str, str] = {
    "onnxruntime": "rtdecode.engines.ort:create_cpu",
    "ort-cuda": "rtdecode.engines.ort_gpu:create_cuda",
    "ort-tensorrt": "rtdecode.engines.ort_gpu:create_tensorrt_ep",
    "tensorrt": "rtdecode.engines.tensorrt:create",
    "torch-cuda": "rtdecode.engines.torch_engine:create_cuda",
    "torch-cpu": "rtdecode.engines.torch_engine:create_cpu",
}


def create_engine(name: str, model_path: str, contract: Any, **options: Any) -> Engine:
    """Create engine `name`; 'auto' is resolved by rtdecode.engines.select.choose_engine."""
    if name == "auto":
        from .select import choose_engine

        return choose_engine(model_path, contract, **options)
    if name not in REGISTRY:
        raise EngineError(f"unknown engine; expected one of {sorted(REGISTRY) + ['auto']}", engine=name)
    module, _, factory_name = REGISTRY[name].partition(":")
    factory = getattr(importlib.import_module(module), factory_name)
    try:
        return factory(model_path, contract, **options)
    except TypeError as e:  # an option the engine does not take: say which, not a bare TypeError
        if "unexpected keyword argument" not in str(e):
            raise
        raise EngineError(f"{e.args[0].split(' got ')[-1]}; see docs/gpu.md for each engine's options",
                          engine=name) from e
