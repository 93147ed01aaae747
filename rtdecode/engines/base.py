"""What every engine is (`Engine`) and where each registered one is made (`REGISTRY`, `factory`).

Its own module so that the engine modules and `--engine auto` (select.py) import it without
importing the package's `create_engine`, which imports them in turn.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np


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


def factory(name: str) -> Callable[..., Engine]:
    """The factory of registered engine `name` (its module is imported now, not before)."""
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)
