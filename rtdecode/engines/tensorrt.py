"""Native TensorRT engine (registry name "tensorrt"): the lowest-latency path on an NVIDIA GPU.

The engine file is built from the ONNX decoder by `rtdecode build-engine` (deploy/build_engine.py)
for one GPU model and one TensorRT version; its JSON sidecar (rtdecode/engines/sidecar.py) records both
and the ONNX file's sha256. Loading refuses any mismatch with a message saying what differs.

CUDA binding: cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` in cuda-python < 12.6).
It is small (no torch in the serving process), exposes exactly the runtime calls needed
(pinned host memory, device memory, streams, graphs) and is what NVIDIA's TensorRT samples use.

Per frame: copy x into a pinned host buffer (the one copy), then on one CUDA stream: H2D copy,
execute_async_v3, D2H copy, synchronise. Buffers, addresses and the stream are set up once.
With cuda_graph=True those three stream operations are captured once into a CUDA graph and
each frame is one cudaGraphLaunch (saves launch overhead for small networks).

Written against the TensorRT 10/11 Python API and cuda-python 12; NOT yet run on a GPU (the
development machine had neither a GPU nor TensorRT): see docs/gpu.md for what to verify.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import INPUT_NAME, OUTPUT_NAME
from ..errors import EngineError, ModelError
from .base import Engine

log = logging.getLogger(__name__)

TENSORRT_INSTALL_HINT = (
    "install TensorRT >= 10 for your CUDA version on the GPU machine: `pip install tensorrt` "
    "(NVIDIA's wheels fetch their libraries from pypi.nvidia.com at install time) or NVIDIA's "
    "tar/deb packages; see docs/gpu.md")
CUDA_PYTHON_INSTALL_HINT = "install cuda-python matching the driver's CUDA major version: `pip install cuda-python`"


# ---- imports and CUDA helpers (shared with deploy/build_engine.py) ---------------------------------
def load_tensorrt():
    """Import tensorrt (>= 10) or raise EngineError saying what is missing and how to install it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EngineError(f"TensorRT is not installed here (import tensorrt failed: {e}); "
                          + TENSORRT_INSTALL_HINT, engine="tensorrt") from e
    if tensorrt_major(trt.__version__) < 10:
        raise EngineError(f"TensorRT {trt.__version__} is too old: rtdecode needs TensorRT >= 10 "
                          "(named-tensor API, execute_async_v3)", engine="tensorrt")
    return trt


def tensorrt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


def load_cudart():
    """The CUDA runtime module of cuda-python, or EngineError with the install command."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise EngineError(f"cuda-python is not installed here ({e}); " + CUDA_PYTHON_INSTALL_HINT,
                              engine="tensorrt") from e
    return cudart


def cuda_call(cudart, result: Any, what: str) -> Any:
    """Unpack a cuda-python result tuple (err, *values); raise EngineError naming the call on error."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            name = cudart.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # the error name is a courtesy
            name = str(err)
        raise EngineError(f"{what} failed: {name}", engine="tensorrt")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_facts(device_id: int = 0):
    """rtdecode.engines.sidecar.DeviceFacts of CUDA device `device_id` with the installed TensorRT version."""
    from .sidecar import DeviceFacts

    trt = load_tensorrt()
    cudart = load_cudart()
    try:
        count = cuda_call(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except EngineError as e:
        raise EngineError(f"no usable CUDA device ({e}); is the NVIDIA driver installed and a GPU "
                          "visible (nvidia-smi)?", engine="tensorrt") from e
    if not 0 <= device_id < int(count):
        raise EngineError(f"CUDA device {device_id} does not exist; {count} device(s) visible",
                          engine="tensorrt")
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode(errors="replace")
    return DeviceFacts(str(name).strip(), f"{props.major}.{props.minor}", str(trt.__version__))


class PinnedBuffer:
    """Page-locked host memory viewed as a numpy array (allocated once, freed in free())."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype=np.float32):
        self._cudart = cudart
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr = int(cuda_call(cudart, cudart.cudaMallocHost(self.nbytes), "cudaMallocHost"))
        ctype = np.ctypeslib.as_ctypes_type(dtype)
        flat = np.ctypeslib.as_array(ctypes.cast(self.ptr, ctypes.POINTER(ctype)), (int(np.prod(shape)),))
        self.array = flat.reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFreeHost(self.ptr)
            self.ptr = 0


# ---- the engine --------------------------------------------------------------------------------------
class TensorRTEngine(Engine):
    """A deserialized TensorRT engine bound to fixed buffers for batch 1."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, contract, *, onnx_path: str | Path | None = None,
                 device_id: int = 0, cuda_graph: bool = False, precision: str | None = None):
        from .sidecar import read_sidecar, sha256_file, verify_compatible

        self.engine_path = Path(engine_path)
        if not self.engine_path.exists():
            raise EngineError(f"engine file {self.engine_path} does not exist; build it with "
                              "`rtdecode build-engine MODEL.onnx`", engine="tensorrt")
        try:
            self.sidecar = read_sidecar(self.engine_path)
        except ModelError as e:
            raise EngineError(str(e), engine="tensorrt") from e
        trt = load_tensorrt()
        cudart = load_cudart()
        self._trt, self._cudart = trt, cudart
        self.device = device_facts(device_id)
        verify_compatible(self.sidecar, self.device, engine_path=str(self.engine_path),
                          onnx_sha256=sha256_file(onnx_path) if onnx_path else None,
                          precision=precision, engine_sha256=sha256_file(self.engine_path))
        m, e = contract.input_shape
        if list(self.sidecar.input_shape) != [m, e] or list(self.sidecar.frame_shape) != list(contract.frame_shape):
            raise EngineError(f"engine shapes input {self.sidecar.input_shape} / frame {self.sidecar.frame_shape} "
                              f"do not match the model's [{m}, {e}] / {list(contract.frame_shape)}",
                              engine="tensorrt")
        self.cuda_graph = bool(cuda_graph)
        self._graph = self._graph_exec = None
        self._stream = None
        self._d_in = self._d_out = 0
        self._h_in = self._h_out = None
        try:
            self._setup(device_id, (1, m, e), (1, *contract.frame_shape))
        except Exception:
            self.close()
            raise

    def _setup(self, device_id: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        trt, cudart = self._trt, self._cudart
        cuda_call(cudart, cudart.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize {self.engine_path} (see the TensorRT log "
                              "above); rebuild it with `rtdecode build-engine`", engine="tensorrt")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        if INPUT_NAME not in names or OUTPUT_NAME not in names:
            raise EngineError(f"engine tensors are {names}; expected input {INPUT_NAME!r} and output "
                              f"{OUTPUT_NAME!r}", engine="tensorrt")
        for name, mode in ((INPUT_NAME, trt.TensorIOMode.INPUT), (OUTPUT_NAME, trt.TensorIOMode.OUTPUT)):
            if self._engine.get_tensor_mode(name) != mode:
                raise EngineError(f"engine tensor {name!r} is not an {mode.name.lower()}", engine="tensorrt")
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise EngineError(f"engine tensor {name!r} is {self._engine.get_tensor_dtype(name)}, "
                                  "expected FLOAT (float32 I/O)", engine="tensorrt")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError("create_execution_context failed (out of GPU memory?)", engine="tensorrt")
        if not self._context.set_input_shape(INPUT_NAME, in_shape):
            raise EngineError(f"the engine does not accept input shape {list(in_shape)} "
                              f"(its profile: {self._engine.get_tensor_profile_shape(INPUT_NAME, 0)})",
                              engine="tensorrt")
        got = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        if got != out_shape:
            raise EngineError(f"engine output shape {list(got)} != expected {list(out_shape)}", engine="tensorrt")
        self._h_in = PinnedBuffer(cudart, in_shape)
        self._h_out = PinnedBuffer(cudart, out_shape)
        self._d_in = int(cuda_call(cudart, cudart.cudaMalloc(self._h_in.nbytes), "cudaMalloc(input)"))
        self._d_out = int(cuda_call(cudart, cudart.cudaMalloc(self._h_out.nbytes), "cudaMalloc(output)"))
        self._context.set_tensor_address(INPUT_NAME, self._d_in)
        self._context.set_tensor_address(OUTPUT_NAME, self._d_out)
        flags = getattr(cudart, "cudaStreamNonBlocking", 1)
        self._stream = cuda_call(cudart, cudart.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")
        self._stream_handle = int(self._stream)
        self._h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        # One plain run first: TensorRT finishes shape-dependent set-up on the first enqueue, which
        # must not happen inside a graph capture.
        self._h_in.array.fill(0.0)
        self._enqueue()
        cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        if self.cuda_graph:
            self._capture_graph()

    def _enqueue(self) -> None:
        cudart = self._cudart
        cuda_call(cudart, cudart.cudaMemcpyAsync(self._d_in, self._h_in.ptr, self._h_in.nbytes, self._h2d,
                                                 self._stream), "cudaMemcpyAsync(H2D)")
        if not self._context.execute_async_v3(self._stream_handle):
            raise EngineError("execute_async_v3 failed (see the TensorRT log)", engine="tensorrt")
        cuda_call(cudart, cudart.cudaMemcpyAsync(self._h_out.ptr, self._d_out, self._h_out.nbytes, self._d2h,
                                                 self._stream), "cudaMemcpyAsync(D2H)")

    def _capture_graph(self) -> None:
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(cudart, cudart.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        try:
            self._enqueue()
        finally:
            graph = cuda_call(cudart, cudart.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        self._graph = graph
        try:
            result = cudart.cudaGraphInstantiate(graph, 0)  # CUDA 12 signature (graph, flags)
        except TypeError:
            result = cudart.cudaGraphInstantiate(graph, b"", 0)  # CUDA 11 bindings
        if isinstance(result, tuple) and len(result) > 2:
            result = result[:2]
        self._graph_exec = cuda_call(cudart, result, "cudaGraphInstantiate")

    # ---- Engine interface ----------------------------------------------------------------------------
    def infer(self, x: np.ndarray) -> np.ndarray:
        want = self._h_in.array.shape
        if x.shape != want and x.shape != want[1:]:
            raise EngineError(f"input shape {list(x.shape)} != {list(want)}", engine="tensorrt")
        np.copyto(self._h_in.array, x.reshape(want), casting="same_kind")
        cudart = self._cudart
        if self._graph_exec is not None:
            cuda_call(cudart, cudart.cudaGraphLaunch(self._graph_exec, self._stream), "cudaGraphLaunch")
        else:
            self._enqueue()
        cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._h_out.array

    def describe(self) -> str:
        sc = self.sidecar
        return (f"tensorrt {self.device.tensorrt_version} on {self.device.gpu_name} "
                f"(cc {self.device.compute_capability}), {sc.precision}, "
                f"cuda_graph={'on' if self._graph_exec is not None else 'off'}, engine {self.engine_path.name}")

    def close(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        if self._graph_exec is not None:
            cudart.cudaGraphExecDestroy(self._graph_exec)
            self._graph_exec = None
        if self._graph is not None:
            cudart.cudaGraphDestroy(self._graph)
            self._graph = None
        if self._stream is not None:
            cudart.cudaStreamSynchronize(self._stream)
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        for attr in ("_d_in", "_d_out"):
            if getattr(self, attr):
                cudart.cudaFree(getattr(self, attr))
                setattr(self, attr, 0)
        for buf in (self._h_in, self._h_out):
            if buf is not None:
                buf.free()
        self._h_in = self._h_out = None
        self._context = None
        self._engine = None


def default_engine_path(model_path: str | Path) -> Path:
    """Where `rtdecode build-engine M.onnx` puts the engine by default: M.engine beside the model."""
    return Path(model_path).with_suffix(".engine")


def create(model_path: str, contract, engine_path: str | None = None, cuda_graph: bool = False,
           device_id: int = 0, precision: str | None = None, **opts: Any) -> TensorRTEngine:
    """Registry factory: the engine file (default M.engine beside M.onnx), checked against M.onnx."""
    if opts:  # options of other engines (threads, ...) passed by a generic caller
        log.debug("tensorrt ignores options %s", sorted(opts))
    path = Path(engine_path) if engine_path else default_engine_path(model_path)
    onnx_path = model_path if str(model_path).endswith(".onnx") else None
    return TensorRTEngine(path, contract, onnx_path=onnx_path, device_id=device_id, cuda_graph=cuda_graph,
                          precision=precision)
