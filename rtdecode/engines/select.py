"""`--engine auto`: the fastest engine that can run here, and why each faster one could not.

Order (fastest first): tensorrt (a built engine whose sidecar matches this machine and model)
> ort-tensorrt > ort-cuda > torch-cuda > onnxruntime (CPU). For each candidate a cheap probe
says why it cannot run (missing package, no GPU, no engine file, sidecar mismatch); the first
that passes its probe is created, and if creation fails (EngineError) the reason is recorded and
the next is tried. The choice and every reason are logged and kept on the engine as
`engine.selection` (an EngineChoice) so `rtdecode serve` can print them.

Only `auto` falls back. Asking for a GPU engine by name that cannot run is an EngineError.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EngineError
from .base import REGISTRY, Engine, factory

log = logging.getLogger(__name__)

ORDER = ("tensorrt", "ort-tensorrt", "ort-cuda", "torch-cuda", "onnxruntime")

# options each engine factory takes; auto passes each only its own
ACCEPTS: dict[str, frozenset[str]] = {
    "tensorrt": frozenset({"engine_path", "cuda_graph", "device_id", "precision"}),
    "ort-tensorrt": frozenset({"device_id", "fp16", "cache_dir", "workspace_mb", "max_batch", "threads",
                               "graph_opt", "spinning"}),
    "ort-cuda": frozenset({"device_id", "threads", "graph_opt", "spinning"}),
    "torch-cuda": frozenset({"device_id", "cuda_graph", "fp16", "checkpoint"}),
    "torch-cpu": frozenset({"checkpoint", "threads"}),
    "onnxruntime": frozenset({"threads", "graph_opt", "spinning"}),
}


@dataclass
class EngineChoice:
    """Which engine `auto` chose and why every faster one was passed over."""

    chosen: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"engine auto: chose {self.chosen}"]
        lines += [f"  not {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


# ---- probes: None = may run, else the reason it cannot --------------------------------------------------
def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def probe_tensorrt(model_path: str, opts: dict[str, Any]) -> str | None:
    from .tensorrt import default_engine_path

    path = Path(opts.get("engine_path") or default_engine_path(model_path))
    if not path.exists():
        return f"no engine file {path} (build one with `rtdecode build-engine {model_path}`)"
    if _missing("tensorrt"):
        return "TensorRT is not installed (import tensorrt fails)"
    if _missing("cuda.bindings") and _missing("cuda.cudart"):
        return "cuda-python is not installed"
    from .sidecar import compatibility_problems, read_sidecar, sha256_file
    from .tensorrt import device_facts

    try:
        sidecar = read_sidecar(path)
        facts = device_facts(int(opts.get("device_id", 0)))
    except Exception as e:  # ModelError / EngineError: the message says what is wrong
        return str(e)
    problems = compatibility_problems(sidecar, facts, onnx_sha256=sha256_file(model_path),
                                      precision=opts.get("precision"))
    return "; ".join(problems) or None


def _probe_ort(provider: str) -> str | None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        return (f"{provider} is not in this onnxruntime {ort.__version__} (available: {', '.join(available)}; "
                "needs onnxruntime-gpu)")
    return None


def probe_torch_cuda(model_path: str, opts: dict[str, Any]) -> str | None:
    if _missing("torch"):
        return "torch is not installed (train extra)"
    import torch

    if not torch.cuda.is_available():
        if not getattr(torch.version, "cuda", None):
            return f"torch {torch.__version__} is a CPU-only build"
        return f"torch {torch.__version__} sees no CUDA device"
    if _missing("rtdecode.training.model"):
        return "the training package is not importable"
    return None


PROBES: dict[str, Callable[[str, dict[str, Any]], str | None]] = {
    "tensorrt": probe_tensorrt,
    "ort-tensorrt": lambda model, opts: _probe_ort("TensorrtExecutionProvider"),
    "ort-cuda": lambda model, opts: _probe_ort("CUDAExecutionProvider"),
    "torch-cuda": probe_torch_cuda,
    "onnxruntime": lambda model, opts: None,
}


def choose_engine(model_path: str, contract: Any, *, order: Sequence[str] = ORDER,
                  probes: dict[str, Callable[[str, dict[str, Any]], str | None]] | None = None,
                  factories: dict[str, Callable[..., Engine]] | None = None, **opts: Any) -> Engine:
    """Create the first engine of `order` that can run here; log the choice and every reason.

    `probes` / `factories` replace the real ones per name (tests feed fake availability).
    Raises EngineError listing all reasons when none can run.
    """
    probes = {**PROBES, **(probes or {})}
    factories = dict(factories or {})
    unknown = [n for n in order if n not in REGISTRY and n not in factories]
    if unknown:
        raise EngineError(f"unknown engines {unknown} in the auto order; expected names from {sorted(REGISTRY)}",
                          engine="auto")
    skipped: list[tuple[str, str]] = []
    for name in order:
        probe = probes.get(name)
        try:
            reason = probe(model_path, opts) if probe else None
        except Exception as e:  # a probe must never stop the search
            reason = f"probe failed ({type(e).__name__}: {e})"
        if reason:
            skipped.append((name, reason))
            continue
        own = {k: v for k, v in opts.items() if k in ACCEPTS.get(name, frozenset(opts))}
        try:
            engine = (factories.get(name) or factory(name))(model_path, contract, **own)
        except EngineError as e:
            skipped.append((name, str(e)))
            continue
        choice = EngineChoice(name, skipped)
        engine.selection = choice
        log.info("%s", choice.summary())
        return engine
    raise EngineError("no engine can run here:\n" + "\n".join(f"  {n}: {r}" for n, r in skipped), engine="auto")
