"""The JSON sidecar of a TensorRT engine: where it came from and what it may run on.

A serialized TensorRT engine runs only with the TensorRT version that built it and on the GPU
model (compute capability) it was tuned for, and it is a compiled copy of one exact ONNX file.
`rtdecode build-engine` writes `M.engine` and `M.engine.json`; loading checks the sidecar
against the running machine and the model given, and refuses a mismatch with a message that
says what differs. The checks are pure functions of plain facts (`DeviceFacts`), so they are
tested on machines without a GPU.

Sidecar keys (format "rtdecode-tensorrt-engine", version 1):
  onnx_file, onnx_sha256, model_id        the ONNX decoder the engine was built from
  engine_sha256                           the engine file itself (detects a swapped file)
  tensorrt_version, gpu_name, compute_capability
  precision ("fp32" | "fp16" | "int8"), build_flags (dict), max_batch
  input_shape [M, E], frame_shape [3, H, W], created (UTC ISO 8601), rtdecode_version
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import EngineError, ModelError

FORMAT = "rtdecode-tensorrt-engine"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_SUFFIXES = (".engine", ".plan")


@dataclass(frozen=True)
class DeviceFacts:
    """What the machine that loads (or builds) an engine offers."""

    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "8.6"
    tensorrt_version: str


@dataclass
class EngineSidecar:
    """Provenance of one TensorRT engine file."""

    onnx_sha256: str
    model_id: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    max_batch: int
    input_shape: list[int]
    frame_shape: list[int]
    onnx_file: str = ""
    engine_sha256: str = ""
    build_flags: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    rtdecode_version: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ModelError(f"sidecar precision {self.precision!r} is not one of {list(PRECISIONS)}")
        if int(self.max_batch) < 1:
            raise ModelError(f"sidecar max_batch must be >= 1, got {self.max_batch}")
        self.max_batch = int(self.max_batch)
        if not self.created:
            self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if not self.rtdecode_version:
            from .. import __version__

            self.rtdecode_version = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "sidecar") -> EngineSidecar:
        """Validate and build; errors name the file and the missing/unknown/bad key."""
        if not isinstance(d, dict):
            raise ModelError(f"must hold a JSON object, got {type(d).__name__}", path=source)
        if d.get("format") != FORMAT:
            raise ModelError(f"is not an rtdecode engine sidecar (format={d.get('format')!r}, "
                             f"expected {FORMAT!r})", path=source)
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelError(f"sidecar format version {d.get('format_version')} is newer than this "
                             f"rtdecode understands ({FORMAT_VERSION}); upgrade rtdecode", path=source)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"unknown sidecar keys {unknown}; expected only {sorted(known)}", path=source)
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ModelError(f"sidecar is missing keys {missing}", path=source)
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ModelError(f"malformed sidecar ({e})", path=source) from e


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sidecar_path_for(path: str | Path) -> Path:
    """`M.engine` -> `M.engine.json`; a `.json` path is the sidecar itself."""
    path = Path(path)
    return path if path.suffix == ".json" else path.with_name(path.name + ".json")


def engine_path_for(sidecar_path: str | Path) -> Path:
    """`M.engine.json` -> `M.engine` (the inverse of sidecar_path_for)."""
    p = Path(sidecar_path)
    return p.with_name(p.name[: -len(".json")]) if p.suffix == ".json" else p


def write_sidecar(engine_path: str | Path, sidecar: EngineSidecar) -> Path:
    out = sidecar_path_for(engine_path)
    out.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return out


def read_sidecar(path: str | Path) -> EngineSidecar:
    """Read the sidecar of an engine (give the engine path or the .json path)."""
    p = sidecar_path_for(path)
    if not p.exists():
        raise ModelError(f"has no sidecar {p.name}; an engine without its sidecar cannot be checked - "
                         "rebuild it with `rtdecode build-engine MODEL.onnx`", path=str(path))
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"is not valid JSON ({e})", path=str(p)) from e
    return EngineSidecar.from_dict(d, source=str(p))


def compatibility_problems(sidecar: EngineSidecar, device: DeviceFacts, *,
                           onnx_sha256: str | None = None, precision: str | None = None,
                           engine_sha256: str | None = None) -> list[str]:
    """Every way an engine does not fit this machine / model, one sentence each ([] = compatible).

    Pure: `device` is what the running machine reports (or a fake in tests); `onnx_sha256` is the
    hash of the ONNX file the user asked to serve; `precision` the precision asked for (None = any).
    """
    problems = []
    if sidecar.gpu_name != device.gpu_name:
        problems.append(f"GPU: the engine was built on {sidecar.gpu_name!r}, this machine has "
                        f"{device.gpu_name!r}")
    if sidecar.compute_capability != device.compute_capability:
        problems.append(f"compute capability: the engine was built for {sidecar.compute_capability}, "
                        f"this GPU is {device.compute_capability}")
    if sidecar.tensorrt_version != device.tensorrt_version:
        problems.append(f"TensorRT version: the engine was built with TensorRT {sidecar.tensorrt_version}, "
                        f"this machine has TensorRT {device.tensorrt_version}")
    if onnx_sha256 is not None and sidecar.onnx_sha256 != onnx_sha256:
        problems.append(f"ONNX sha256: the engine was built from {sidecar.onnx_file or 'a model'} "
                        f"(model_id {sidecar.model_id}, sha256 {sidecar.onnx_sha256[:12]}...), the model "
                        f"given has sha256 {onnx_sha256[:12]}...")
    if precision is not None and sidecar.precision != precision:
        problems.append(f"precision: the engine is {sidecar.precision}, {precision} was asked for")
    if engine_sha256 is not None and sidecar.engine_sha256 and sidecar.engine_sha256 != engine_sha256:
        problems.append(f"engine sha256: the engine file is not the one this sidecar describes "
                        f"(sidecar {sidecar.engine_sha256[:12]}..., file {engine_sha256[:12]}...)")
    return problems


def verify_compatible(sidecar: EngineSidecar, device: DeviceFacts, *, engine_path: str = "engine",
                      **expect: Any) -> None:
    """Raise EngineError listing every mismatch (see compatibility_problems)."""
    problems = compatibility_problems(sidecar, device, **expect)
    if problems:
        raise EngineError(f"refusing {engine_path}: " + "; ".join(problems)
                          + ". Rebuild the engine on this machine: `rtdecode build-engine MODEL.onnx`",
                          engine="tensorrt")


def describe_engine_file(path: str | Path) -> dict[str, Any]:
    """What `rtdecode inspect M.engine` (or M.engine.json) prints: the sidecar plus file checks.

    Needs neither TensorRT nor a GPU.
    """
    sc = read_sidecar(path)
    engine = engine_path_for(sidecar_path_for(path))
    info: dict[str, Any] = {"engine_file": str(engine), **sc.to_dict()}
    if engine.exists():
        info["engine_bytes"] = engine.stat().st_size
        if sc.engine_sha256:
            info["engine_sha256_matches"] = sha256_file(engine) == sc.engine_sha256
    else:
        info["engine_bytes"] = None
        info["note"] = f"engine file {engine} is missing"
    return info
