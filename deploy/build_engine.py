"""Build a TensorRT engine from an rtdecode ONNX decoder (`rtdecode build-engine M.onnx`).

Steps (TensorRT 10/11 Python API): Builder -> network (explicit batch; TRT 10 takes flags 0, TRT 11
networks are always strongly typed) -> OnnxParser.parse_from_file (errors reported with node
names) -> BuilderConfig (workspace pool limit, FP16/INT8 flags on TRT 10, timing cache load/save,
a progress monitor) -> one optimisation profile for the dynamic batch (min 1, opt 1, max N) ->
build_serialized_network -> M.engine + M.engine.json sidecar (rtdecode/engines/sidecar.py).

INT8 (TRT 10 only; TRT 11 removed implicit quantization) is calibrated with an entropy
calibrator fed real decoder inputs: windows of a recorded session assembled and normalised with
the model's own contract, so calibration sees exactly what serving feeds the engine.

Without TensorRT, cuda-python or a GPU this fails at once with what is missing and how to
install it. Written against the documented API; not yet run on a GPU (see docs/gpu.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.errors import ConfigError, EngineError

log = logging.getLogger(__name__)


@dataclass
class BuildOptions:
    """Everything `rtdecode build-engine` takes; validated by check()."""

    onnx_path: Path
    out: Path | None = None
    fp16: bool = False
    int8: bool = False
    calibration: Path | None = None
    calibration_samples: int = 512
    max_batch: int = 1
    workspace_mb: int = 1024
    timing_cache: Path | None = None
    device_id: int = 0

    def __post_init__(self) -> None:
        self.onnx_path = Path(self.onnx_path)
        self.out = Path(self.out) if self.out else self.onnx_path.with_suffix(".engine")
        self.calibration = Path(self.calibration) if self.calibration else None
        self.timing_cache = Path(self.timing_cache) if self.timing_cache else None

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    def check(self) -> None:
        """Validate without touching TensorRT; messages name the option and what is expected."""
        if not self.onnx_path.exists():
            raise ConfigError(f"ONNX model {self.onnx_path} does not exist")
        if self.out.suffix not in (".engine", ".plan"):
            raise ConfigError(f"--out {self.out} must end in .engine or .plan")
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.workspace_mb < 1:
            raise ConfigError(f"--workspace must be >= 1 MB, got {self.workspace_mb}")
        if self.int8 and self.calibration is None:
            raise ConfigError("--int8 needs --calibration SESSION.h5 (a recorded session whose windows "
                              "calibrate the INT8 ranges)")
        if self.calibration is not None and not self.int8:
            raise ConfigError("--calibration is only used with --int8")
        if self.calibration is not None and not self.calibration.exists():
            raise ConfigError(f"--calibration session {self.calibration} does not exist")
        if self.calibration_samples < 1:
            raise ConfigError(f"--calibration-samples must be >= 1, got {self.calibration_samples}")

    def flags(self) -> dict[str, Any]:
        """Build flags as recorded in the sidecar."""
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items() if k not in ("onnx_path", "out")}


# ---- calibration data (pure numpy; tested on CPU) -----------------------------------------------------
def calibration_maps(session_path: str | Path, contract, n_max: int = 512) -> np.ndarray:
    """Normalised decoder inputs [N, M, E] from a recorded session, as serving would make them.

    Reference samples: every stimulus onset that leaves a full window span, topped up with evenly
    spaced reference samples over the whole session (so calibration also sees blank periods),
    then thinned evenly to at most n_max.
    """
    from rtdecode.sessions.session_file import open_session

    with open_session(session_path, need_images=False) as s:
        if s.n_channels != contract.layout.n_channels:
            raise ConfigError(f"calibration session {session_path} has {s.n_channels} channels but the "
                              f"model's layout {contract.layout.name!r} has {contract.layout.n_channels}")
        span = contract.plan.span
        last = s.n_samples - span
        if last < 0:
            raise ConfigError(f"calibration session {session_path} has {s.n_samples} samples; one window "
                              f"needs {span}")
        onsets = s.onset[(s.onset >= 0) & (s.onset <= last)]
        spread = np.linspace(0, last, num=min(n_max, last + 1), dtype=np.int64)
        refs = np.unique(np.concatenate([onsets, spread]))
        if len(refs) > n_max:
            refs = refs[np.linspace(0, len(refs) - 1, num=n_max).round().astype(np.int64)]
        lo, hi = int(refs.min()), int(refs.max()) + span
        mua = np.asarray(s.mua[lo:hi], dtype=np.float32)
    maps = contract.assembler().assemble_many(mua, refs - lo)
    contract.normaliser()(maps)
    if not np.all(np.isfinite(maps)):
        raise ConfigError(f"calibration session {session_path} yields NaN/Inf decoder inputs")
    return maps


# ---- TensorRT pieces ------------------------------------------------------------------------------------
def parser_error_text(parser) -> str:
    """All ONNX parser errors, each with node name, operator and index where TensorRT gives them."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = []
        for attr, label in (("node_name", "node"), ("node_operator", "op"), ("node", "index")):
            fn = getattr(err, attr, None)
            try:
                value = fn() if callable(fn) else fn
            except Exception:  # older bindings lack some accessors
                value = None
            if value not in (None, "", -1):
                where.append(f"{label} {value}")
        code = getattr(err, "code", None)
        code_txt = f"{code()}" if callable(code) else ""
        lines.append(f"[{', '.join(where) or 'graph'}] {code_txt} {err.desc()}".replace("  ", " "))
    return "; ".join(lines) if lines else "no parser error recorded (see the TensorRT log)"


def make_progress_monitor(trt):
    """An IProgressMonitor that logs build phases (TRT >= 10); None where the API lacks it."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class BuildProgress(base):
        def __init__(self) -> None:
            base.__init__(self)
            self._t0 = time.monotonic()
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._steps[phase_name] = int(num_steps)
            level = logging.INFO if parent_phase is None else logging.DEBUG
            log.log(level, "[%6.1f s] %s%s (%d steps)", time.monotonic() - self._t0,
                    "" if parent_phase is None else f"{parent_phase} > ", phase_name, num_steps)

        def step_complete(self, phase_name, step):
            n = self._steps.get(phase_name, 0)
            if n >= 10 and (step + 1) % max(1, n // 10) == 0:
                log.debug("    %s: %d/%d", phase_name, step + 1, n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            log.debug("[%6.1f s] done: %s", time.monotonic() - self._t0, phase_name)

    return BuildProgress()


def make_entropy_calibrator(trt, cudart, maps: np.ndarray, cache_path: Path):
    """IInt8EntropyCalibrator2 feeding `maps` [N, M, E] one sample per batch (the profile's opt shape)."""
    from rtdecode.engines.tensorrt import cuda_call

    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise EngineError(f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2 (implicit INT8 was "
                          "removed in TensorRT 11): quantize the ONNX explicitly (Q/DQ nodes, e.g. with "
                          "NVIDIA ModelOpt) and build without --int8", engine="tensorrt")
    sample = np.ascontiguousarray(maps[:1], dtype=np.float32)
    h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice

    class SessionCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)
            self.index = 0
            self.device = int(cuda_call(cudart, cudart.cudaMalloc(sample.nbytes), "cudaMalloc(calibration)"))

        def get_batch_size(self):
            return 1

        def get_batch(self, names):
            if self.index >= len(maps):
                return None
            np.copyto(sample, maps[self.index:self.index + 1])
            cuda_call(cudart, cudart.cudaMemcpy(self.device, sample.ctypes.data, sample.nbytes, h2d),
                      "cudaMemcpy(calibration)")
            self.index += 1
            if self.index % max(1, len(maps) // 10) == 0:
                log.info("calibration: %d/%d samples", self.index, len(maps))
            return [self.device]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache):
            cache_path.write_bytes(bytes(cache))

        def free(self) -> None:
            if self.device:
                cudart.cudaFree(self.device)
                self.device = 0

    return SessionCalibrator()


def build_engine(opts: BuildOptions) -> tuple[Path, Path]:
    """Build and write the engine and its sidecar; returns (engine path, sidecar path)."""
    from rtdecode.contract import INPUT_NAME, read_contract
    from rtdecode.engines.sidecar import EngineSidecar, sha256_file, write_sidecar
    from rtdecode.engines.tensorrt import (
        cuda_call,
        device_facts,
        load_cudart,
        load_tensorrt,
        tensorrt_major,
    )

    opts.check()
    trt = load_tensorrt()  # fail fast: what is missing and how to install it
    cudart = load_cudart()
    facts = device_facts(opts.device_id)
    major = tensorrt_major(trt.__version__)
    if major >= 11 and (opts.fp16 or opts.int8):
        raise EngineError(
            f"TensorRT {trt.__version__} removed the FP16/INT8 builder flags (networks are strongly typed). "
            "Convert the ONNX first - FP16: `python -m modelopt.onnx.autocast --onnx_path M.onnx "
            "--output_path M_fp16.onnx`; INT8: explicit Q/DQ quantization with NVIDIA ModelOpt - then build "
            "that file without --fp16/--int8", engine="tensorrt")
    contract = read_contract(opts.onnx_path)
    m, e = contract.input_shape
    cuda_call(cudart, cudart.cudaSetDevice(opts.device_id), f"cudaSetDevice({opts.device_id})")
    log.info("building a %s TensorRT %s engine for %s (cc %s) from %s, max batch %d",
             opts.precision, trt.__version__, facts.gpu_name, facts.compute_capability, opts.onnx_path,
             opts.max_batch)
    t0 = time.monotonic()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0) if major == 10 else builder.create_network()
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(opts.onnx_path)):
        raise EngineError(f"TensorRT could not parse {opts.onnx_path}: {parser_error_text(parser)}",
                          engine="tensorrt")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, m, e), (1, m, e), (opts.max_batch, m, e))
    config.add_optimization_profile(profile)
    if opts.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if opts.int8:
        maps = calibration_maps(opts.calibration, contract, opts.calibration_samples)
        log.info("INT8 calibration with %d decoder inputs from %s", len(maps), opts.calibration)
        cache = opts.out.with_name(f"{opts.out.name}.{sha256_file(opts.onnx_path)[:12]}.calib")
        calibrator = make_entropy_calibrator(trt, cudart, maps, cache)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    if opts.timing_cache is not None:
        data = opts.timing_cache.read_bytes() if opts.timing_cache.exists() else b""
        timing_cache = config.create_timing_cache(data)
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    monitor = make_progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor

    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise EngineError("TensorRT failed to build the engine (see the TensorRT log above)", engine="tensorrt")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    with open(opts.out, "wb") as f:
        f.write(serialized)
    if opts.timing_cache is not None:
        opts.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))

    sidecar = EngineSidecar(
        onnx_sha256=sha256_file(opts.onnx_path), model_id=contract.model_id,
        tensorrt_version=facts.tensorrt_version, gpu_name=facts.gpu_name,
        compute_capability=facts.compute_capability, precision=opts.precision, max_batch=opts.max_batch,
        input_shape=[m, e], frame_shape=list(contract.frame_shape), onnx_file=opts.onnx_path.name,
        engine_sha256=sha256_file(opts.out), build_flags=opts.flags())
    side = write_sidecar(opts.out, sidecar)
    log.info("wrote %s (%.1f MB) and %s in %.1f s", opts.out, opts.out.stat().st_size / 1e6, side,
             time.monotonic() - t0)
    return opts.out, side
