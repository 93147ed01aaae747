"""ONNX Runtime on the GPU: CUDA execution provider ("ort-cuda") and TensorRT EP ("ort-tensorrt").

Both build on OrtEngine (rtdecode/engines/ort.py), which verifies after session creation that the
requested provider is the active one: onnxruntime-gpu silently falls back to the CPU when CUDA or
TensorRT libraries cannot load, and here that is an error, never a quiet slowdown.

Needs `onnxruntime-gpu` INSTEAD of `onnxruntime` (never both in one environment). The TensorRT EP
also needs TensorRT's libraries on the library path; it builds its own engines on first run and
caches them in `cache_dir` (default ~/.cache/rtdecode/ort-trt), keyed by model and GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import EngineError
from .ort import OrtEngine

log = logging.getLogger(__name__)

ORT_GPU_HINT = ("install onnxruntime-gpu instead of onnxruntime: `pip uninstall -y onnxruntime && "
                "pip install onnxruntime-gpu` (never both in one environment); it needs an NVIDIA driver, CUDA 12 "
                "and cuDNN 9 libraries (see docs/gpu.md)")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtdecode" / "ort-trt"


def _require_provider(provider: str, engine: str) -> None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        raise EngineError(f"{provider} is not available in this onnxruntime {ort.__version__} (available: "
                          f"{', '.join(available)}); " + ORT_GPU_HINT, engine=engine)


def cuda_provider_options(device_id: int = 0, **extra: Any) -> dict[str, str]:
    """CUDA EP options (strings, as every ORT version accepts them)."""
    opts = {"device_id": str(int(device_id)), "cudnn_conv_algo_search": "EXHAUSTIVE",
            "do_copy_in_default_stream": "1"}
    opts.update({k: str(v) for k, v in extra.items()})
    return opts


def tensorrt_provider_options(contract, *, device_id: int = 0, fp16: bool = False, cache_dir: str | Path | None = None,
                              workspace_mb: int = 1024, max_batch: int = 1) -> dict[str, str]:
    """TensorRT EP options: engine + timing cache on disk, one profile for batch 1..max_batch."""
    m, e = contract.input_shape
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    shape = lambda b: f"mua:{b}x{m}x{e}"  # noqa: E731 - ORT's "name:dxdxd" profile syntax
    return {
        "device_id": str(int(device_id)),
        "trt_fp16_enable": "1" if fp16 else "0",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(cache),
        "trt_max_workspace_size": str(int(workspace_mb) << 20),
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(1),
        "trt_profile_max_shapes": shape(max(1, int(max_batch))),
    }


def create_cuda(model_path: str, contract: Any, device_id: int = 0, threads: int | None = None,
                **opts: Any) -> OrtEngine:
    """REGISTRY 'ort-cuda': ONNX Runtime, CUDA execution provider on GPU `device_id`."""
    _require_provider("CUDAExecutionProvider", "ort-cuda")
    engine = OrtEngine(model_path, contract, providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                       provider_options=[cuda_provider_options(device_id), {}], threads=threads, name="ort-cuda",
                       **opts)
    log.info("ort-cuda on device %d: %s", device_id, engine.describe())
    return engine


def create_tensorrt_ep(model_path: str, contract: Any, device_id: int = 0, fp16: bool = False,
                       cache_dir: str | Path | None = None, workspace_mb: int = 1024, max_batch: int = 1,
                       threads: int | None = None, **opts: Any) -> OrtEngine:
    """REGISTRY 'ort-tensorrt': ONNX Runtime, TensorRT EP (CUDA EP for any node TensorRT cannot take).

    The first session on a machine builds TensorRT engines (can take minutes); later ones load
    them from `cache_dir`.
    """
    _require_provider("TensorrtExecutionProvider", "ort-tensorrt")
    trt_opts = tensorrt_provider_options(contract, device_id=device_id, fp16=fp16, cache_dir=cache_dir,
                                         workspace_mb=workspace_mb, max_batch=max_batch)
    log.info("ort-tensorrt: building or loading TensorRT engines in %s (the first run can take minutes)",
             trt_opts["trt_engine_cache_path"])
    engine = OrtEngine(model_path, contract,
                       providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                       provider_options=[trt_opts, cuda_provider_options(device_id), {}], threads=threads,
                       name="ort-tensorrt", **opts)
    engine.fp16 = bool(fp16)
    return engine
