"""The decoder in PyTorch: "torch-cpu" (eager; the first-try reference) and "torch-cuda" (CUDA graphs).

The module is rebuilt from the ONNX file alone: the contract's training_config carries the
constructor arguments (`model_args`, written by training/export.py) and the weights are the
ONNX initializers, found by name (BatchNorm folding undone, see rebuild_decoder). For ONNX files
from other exporters pass `checkpoint=CKPT` (the training checkpoint) instead. Needs the train
extra (torch and the training package).

torch-cuda keeps a static input and output tensor on the GPU and pinned host copies, warms up
on a side stream, captures one forward pass into a CUDA graph and replays it per frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from .base import Engine

log = logging.getLogger(__name__)

TORCH_HINT = ("the torch engines need the train extra: `pip install 'rtdecode[train]'` "
              "(on a GPU machine install a CUDA build of torch first, see docs/gpu.md)")


def _require_torch(engine: str):
    try:
        import torch
    except ImportError as e:
        raise EngineError(f"torch is not installed ({e}); " + TORCH_HINT, engine=engine) from e
    try:
        from rtdecode.training.model import HomeomorphicDecoder
    except ImportError as e:
        raise EngineError(f"the training package is not importable ({e}); " + TORCH_HINT, engine=engine) from e
    return torch, HomeomorphicDecoder


def onnx_initializers(model_path: str | Path) -> dict[str, np.ndarray]:
    """name -> array of every initializer (external data loaded) of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path), load_external_data=True)
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def rebuild_decoder(model_path: str | Path, contract, *, checkpoint: str | Path | None = None,
                    engine: str = "torch-cpu"):
    """The module the ONNX file was exported from (CPU, eval mode).

    From the ONNX alone: training/export.py exports the *deployed* decoder (training.export.
    DeployedDecoder: RF layer reduced to the buffers mask, gx, gy, inv_density in front of the
    U-Net) with BatchNorm folded into the preceding convolution (folded bias `<conv>.weight_bias`).
    The same module is rebuilt from the contract's model_args, the initializers are loaded by name,
    and each folded BatchNorm becomes an identity plus that bias (weight 1, mean 0, var 1 - eps).
    With `checkpoint=` the trained HomeomorphicDecoder is loaded from the checkpoint instead.
    """
    torch, HomeomorphicDecoder = _require_torch(engine)
    m, e = contract.input_shape
    if checkpoint is not None:
        from rtdecode.training.checkpoint import load_checkpoint, model_from_checkpoint

        model = model_from_checkpoint(load_checkpoint(checkpoint))
        args = model.args
    else:
        args = (contract.training_config or {}).get("model_args")
        if not isinstance(args, dict):
            raise EngineError(f"{model_path}: its training_config has no model_args (was it exported by "
                              "training/export.py?); pass checkpoint=CKPT to rebuild from the checkpoint",
                              engine=engine)
        from rtdecode.training.export import DeployedDecoder

        model = DeployedDecoder(HomeomorphicDecoder.from_args(args, mask=contract.mask))
        _load_onnx_weights(model, onnx_initializers(model_path), str(model_path), engine)
    if (args["n_maps"], args["n_electrodes"]) != (m, e) or args["image_size"] != contract.image_height:
        raise EngineError(f"decoder arguments (maps {args['n_maps']}, electrodes {args['n_electrodes']}, image "
                          f"{args['image_size']}) do not match the model contract ({m}, {e}, "
                          f"{contract.image_height})", engine=engine)
    return model.eval()


def _load_onnx_weights(model, inits: dict[str, np.ndarray], source: str, engine: str) -> None:
    """Fill `model`'s state dict from ONNX initializers by name, undoing BatchNorm folding."""
    import torch
    from torch import nn

    state, problems = {}, []

    def take(key: str, ref) -> None:
        arr = inits.get(key)
        if arr is None:
            problems.append(f"{key} not found")
        elif tuple(arr.shape) != tuple(ref.shape):
            problems.append(f"{key} has shape {list(arr.shape)}, the module expects {list(ref.shape)}")
        else:
            state[key] = torch.from_numpy(np.array(arr)).to(ref.dtype)

    ref_state = model.state_dict()
    folded: set[str] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.BatchNorm2d):
            continue
        parent, _, idx = name.rpartition(".")
        conv_bias = f"{parent}.{int(idx) - 1}.weight_bias"
        if f"{name}.weight" in inits or conv_bias not in inits:
            continue  # not folded: its own parameters are looked up below
        bias = inits[conv_bias]
        state[f"{name}.weight"] = torch.ones(module.num_features)
        state[f"{name}.bias"] = torch.from_numpy(np.array(bias, dtype=np.float32)).reshape(module.num_features)
        state[f"{name}.running_mean"] = torch.zeros(module.num_features)
        state[f"{name}.running_var"] = torch.full((module.num_features,), 1.0 - module.eps)
        folded.add(name)
    for key, ref in ref_state.items():
        owner = key.rpartition(".")[0]
        if key.endswith("num_batches_tracked") or owner in folded:
            continue
        take(key, ref)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise EngineError(f"cannot rebuild the torch decoder from the initializers of {source}: "
                          + "; ".join(problems[:5]) + more
                          + " - an exporter other than training/export.py? pass checkpoint=CKPT", engine=engine)
    model.load_state_dict(state, strict=False)


class TorchCpuEngine(Engine):
    """Eager PyTorch on the CPU (reference path; no graph optimisations)."""

    name = "torch-cpu"

    def __init__(self, model_path: str, contract, *, checkpoint: str | Path | None = None,
                 threads: int | None = None):
        torch, _ = _require_torch(self.name)
        self._torch = torch
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.model = rebuild_decoder(model_path, contract, checkpoint=checkpoint, engine=self.name)
        m, e = contract.input_shape
        self._x = torch.zeros((1, m, e), dtype=torch.float32)
        self._x_np = self._x.numpy()

    def infer(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self._x_np, x.reshape(self._x_np.shape), casting="same_kind")
        with self._torch.inference_mode():
            return self.model(self._x).numpy()

    def describe(self) -> str:
        return f"torch-cpu: torch {self._torch.__version__} eager, {self._torch.get_num_threads()} thread(s), float32"


class TorchCudaEngine(Engine):
    """PyTorch on a CUDA GPU: static buffers, warm-up, one CUDA graph replayed per frame."""

    name = "torch-cuda"

    def __init__(self, model_path: str, contract, *, checkpoint: str | Path | None = None, device_id: int = 0,
                 cuda_graph: bool = True, fp16: bool = False, warmup: int = 3):
        torch, _ = _require_torch(self.name)
        self._torch = torch
        if not torch.cuda.is_available():
            build = getattr(torch.version, "cuda", None)
            why = "this torch build has no CUDA (CPU-only wheel)" if not build else "no GPU/driver is visible"
            raise EngineError(f"torch {torch.__version__} cannot use CUDA: {why}", engine=self.name)
        if not 0 <= device_id < torch.cuda.device_count():
            raise EngineError(f"CUDA device {device_id} does not exist ({torch.cuda.device_count()} visible)",
                              engine=self.name)
        self.device = torch.device("cuda", device_id)
        self.dtype = torch.float16 if fp16 else torch.float32
        model = rebuild_decoder(model_path, contract, checkpoint=checkpoint, engine=self.name)
        self.model = model.to(self.device, self.dtype).eval()
        m, e = contract.input_shape
        c, h, w = contract.frame_shape
        self._x_host = torch.zeros((1, m, e), dtype=torch.float32, pin_memory=True)
        self._y_host = torch.zeros((1, c, h, w), dtype=torch.float32, pin_memory=True)
        self._x_np, self._y_np = self._x_host.numpy(), self._y_host.numpy()
        self._x_dev = torch.zeros((1, m, e), dtype=self.dtype, device=self.device)
        self._graph = None
        with torch.cuda.device(self.device), torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the default stream, as graph capture requires
                for _ in range(max(1, warmup)):
                    self._y_dev = self.model(self._x_dev)
            torch.cuda.current_stream().wait_stream(side)
            if cuda_graph:
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    self._y_dev = self.model(self._x_dev)
            torch.cuda.synchronize(self.device)

    def infer(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        np.copyto(self._x_np, x.reshape(self._x_np.shape), casting="same_kind")
        with torch.cuda.device(self.device):
            self._x_dev.copy_(self._x_host, non_blocking=True)
            if self._graph is not None:
                self._graph.replay()
            else:
                with torch.no_grad():
                    self._y_dev = self.model(self._x_dev)
            self._y_host.copy_(self._y_dev, non_blocking=True)
            torch.cuda.current_stream().synchronize()
        return self._y_np

    def describe(self) -> str:
        name = self._torch.cuda.get_device_name(self.device)
        return (f"torch-cuda: torch {self._torch.__version__} on {name}, "
                f"{'fp16' if self.dtype == self._torch.float16 else 'fp32'}, "
                f"cuda_graph={'on' if self._graph is not None else 'off'}")

    def close(self) -> None:
        self._graph = None


def create_cpu(model_path: str, contract: Any, checkpoint: str | None = None, threads: int | None = None,
               **opts: Any) -> TorchCpuEngine:
    """REGISTRY 'torch-cpu'."""
    if opts:
        log.debug("torch-cpu ignores options %s", sorted(opts))
    return TorchCpuEngine(model_path, contract, checkpoint=checkpoint, threads=threads)


def create_cuda(model_path: str, contract: Any, checkpoint: str | None = None, device_id: int = 0,
                cuda_graph: bool = True, fp16: bool = False, **opts: Any) -> TorchCudaEngine:
    """REGISTRY 'torch-cuda'."""
    if opts:
        log.debug("torch-cuda ignores options %s", sorted(opts))
    return TorchCudaEngine(model_path, contract, checkpoint=checkpoint, device_id=device_id,
                           cuda_graph=cuda_graph, fp16=fp16)
