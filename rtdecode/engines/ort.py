"""ONNX Runtime engine: one InferenceSession with preallocated, bound input and output.

`OrtEngine` is generic over execution providers; GPU variants (rtdecode.engines.ort_gpu) build
on it. Constructor (stable, keyword arguments after the first two):

    OrtEngine(model_path, contract, *, providers=("CPUExecutionProvider",),
              provider_options=None, threads=None, graph_opt="all", name="onnxruntime",
              spinning=None)

- providers: ORT provider names in order of preference; the FIRST one must be active after
  the session is created (session.get_providers()), else EngineError says which one is
  missing and what is active: ORT silently falls back to the CPU otherwise.
- provider_options: list of dicts, one per provider (as ORT takes them).
- threads: intra-op threads (None: `default_threads()`, which leaves a core to the LSL and
  ZeroMQ threads on small machines). Inter-op threads are 1 (sequential execution).
- graph_opt: "disable" | "basic" | "extended" | "all".
- spinning: allow ORT's thread pool to busy-wait between runs (None: only when threads > 1
  and the machine has more than 2 cores, because spinning steals the I/O threads' core).

Input and output live in numpy arrays bound once with IOBinding (OrtValues on the CPU); a
subclass that runs on a device overrides `_bind()`. `infer(x)` copies x into the bound input,
runs, and returns the bound output array (reused: copy it to keep it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..contract import INPUT_NAME, OUTPUT_NAME
from ..errors import EngineError
from .base import Engine

GRAPH_OPT = ("disable", "basic", "extended", "all")


def default_threads() -> int:
    """Intra-op threads: all cores but one (1 on 2 cores), at most 4.

    The spare core is for the LSL inlet and ZeroMQ threads. Measured on 2 cores with the demo
    U-Net: 2 threads saved ~0.2 ms of 3.2 ms and nothing end to end. The cap of 4 is a guess
    for small decoders on big machines; pass `threads` to choose."""
    n = os.cpu_count() or 1
    return max(1, min(4, n - 1))


class OrtEngine(Engine):
    """An rtdecode decoder in an ONNX Runtime session (see module docstring for the arguments)."""

    def __init__(self, model_path: str, contract: Any, *, providers: Sequence[str] = ("CPUExecutionProvider",),
                 provider_options: Sequence[dict] | None = None, threads: int | None = None,
                 graph_opt: str = "all", name: str = "onnxruntime", spinning: bool | None = None):
        import onnxruntime as ort

        self.name = name
        self.model_path = str(model_path)
        self.contract = contract
        if not providers:
            raise EngineError("no execution provider requested", engine=name)
        self.requested = list(providers)
        if graph_opt not in GRAPH_OPT:
            raise EngineError(f"graph_opt {graph_opt!r} is not one of {GRAPH_OPT}", engine=name)
        self.threads = default_threads() if threads is None else int(threads)
        if self.threads < 1:
            raise EngineError(f"threads must be >= 1, got {threads}", engine=name)
        available = ort.get_available_providers()
        if self.requested[0] not in available:
            raise EngineError(f"execution provider {self.requested[0]} is not available in this onnxruntime "
                              f"build ({ort.__version__}; available: {', '.join(available)})", engine=name)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_opt]
        if spinning is None:
            spinning = self.threads > 1 and (os.cpu_count() or 1) > 2
        self.spinning = bool(spinning)
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.graph_opt = graph_opt
        try:
            self.session = ort.InferenceSession(self.model_path, sess_options=so, providers=self.requested,
                                                provider_options=list(provider_options) if provider_options else None)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/RuntimeException classes
            raise EngineError(f"cannot create an ONNX Runtime session for {self.model_path} with "
                              f"{self.requested} ({type(e).__name__}: {e})", engine=name) from e
        self.active = list(self.session.get_providers())
        if not self.active or self.active[0] != self.requested[0]:
            raise EngineError(f"requested execution provider {self.requested[0]} is not active; the session "
                              f"runs on {self.active} (ONNX Runtime falls back silently: check the provider's "
                              "libraries and device)", engine=name)
        m, e = contract.input_shape
        c, h, w = contract.frame_shape
        self.x = np.zeros((1, m, e), dtype=np.float32)
        self.y = np.zeros((1, c, h, w), dtype=np.float32)
        self._ort = ort
        self._bind()

    def _bind(self) -> None:
        """Bind the preallocated host arrays as input and output (CPU). Device engines override."""
        self.binding = self.session.io_binding()
        self._x_val = self._ort.OrtValue.ortvalue_from_numpy(self.x)
        self._y_val = self._ort.OrtValue.ortvalue_from_numpy(self.y)
        self.binding.bind_ortvalue_input(INPUT_NAME, self._x_val)
        self.binding.bind_ortvalue_output(OUTPUT_NAME, self._y_val)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """x float32 [1, M, E] (or [M, E]) -> the bound output [1, 3, H, W] (reused between calls)."""
        if x is not self.x:
            np.copyto(self.x[0] if x.ndim == 2 else self.x, x, casting="same_kind")
        try:
            self.session.run_with_iobinding(self.binding)
        except Exception as e:
            raise EngineError(f"inference failed ({type(e).__name__}: {e})", engine=self.name) from e
        return self.y

    def describe(self) -> str:
        return (f"{self.name}: ONNX Runtime {self._ort.__version__}, providers {self.active}, "
                f"{self.threads} intra-op thread(s){' spinning' if self.spinning else ''}, "
                f"graph opt {self.graph_opt}, float32, input {list(self.x.shape)} -> {list(self.y.shape)}")

    def close(self) -> None:
        self.binding = None
        self.session = None


def create_cpu(model_path: str, contract: Any, threads: int | None = None, **opts: Any) -> OrtEngine:
    """REGISTRY 'onnxruntime': the CPU execution provider."""
    return OrtEngine(model_path, contract, providers=("CPUExecutionProvider",), threads=threads,
                     name="onnxruntime", **opts)
