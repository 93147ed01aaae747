"""Small, seeded decoders and layouts for tests, demos of a rig set-up and benchmarks.

  make_layout(n)        V1 / V1 / V4 / IT arrays over n channels, all usable
  make_model(path, n)   a linear rtdecode decoder (ONNX, full contract) over make_layout(n)
  tiny_contract(rng)    a 16-channel, 3-area contract for engine, sidecar and selection tests
  make_sidecar()        a TensorRT engine sidecar as built on SIDECAR_DEVICE
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .contract import DecoderContract
from .engines.sidecar import DeviceFacts, EngineSidecar
from .layout import ElectrodeLayout
from .windows import make_plan


def make_layout(n_channels: int = 64):
    """V1 / V4 / IT thirds-ish, arrays of 16 channels (or fewer), all usable."""
    per = max(1, n_channels // 4)
    areas = ["V1", "V1", "V4", "IT"]
    arrays = []
    for k in range(4):
        lo = k * per
        hi = n_channels - 1 if k == 3 else (k + 1) * per - 1
        arrays.append({"id": k + 1, "area": areas[k], "channels": [[lo, hi]]})
    return ElectrodeLayout.from_dict({"name": f"test-{n_channels}", "n_channels": n_channels, "arrays": arrays})


def make_model(path: Path, n_channels: int = 64, *, fs: float = 1000.0, height: int = 8, width: int = 8,
               seed: int = 0, preset: str = "spatiotemporal"):
    """A linear rtdecode decoder over make_layout(n_channels); returns (path, contract)."""
    from .onnx_io import build_linear_decoder, save_model

    rng = np.random.default_rng(seed)
    lay = make_layout(n_channels)
    plan = make_plan(preset, lay, fs)
    shape = (plan.n_maps, lay.n_electrodes)
    contract = DecoderContract(lay, plan, rng.normal(0.0, 0.1, size=shape), rng.uniform(0.5, 1.5, size=shape),
                               height, width, f"test-lin-{n_channels}", {"test": True})
    m, e = contract.input_shape
    w = rng.normal(0.0, 0.05, size=(m * e, 3 * height * width)).astype(np.float32)
    b = np.full(3 * height * width, 0.5, dtype=np.float32)
    save_model(build_linear_decoder(contract, w, b), path)
    return Path(path), contract


def tiny_contract(rng, image: int = 8, model_args: dict | None = None, model_id: str = "tiny-gpu") -> DecoderContract:
    """A 16-channel contract (8 V1, 4 V4, 4 IT electrodes) with random normalisation statistics."""
    lay = ElectrodeLayout.from_dict({"name": "tiny", "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 7]]},
        {"id": 2, "area": "V4", "channels": [[8, 11]]},
        {"id": 3, "area": "IT", "channels": [[12, 15]]}]})
    plan = make_plan("spatiotemporal", lay)
    shape = (plan.n_maps, lay.n_electrodes)
    cfg = {"model_args": model_args} if model_args else {}
    return DecoderContract(lay, plan, rng.normal(size=shape), rng.uniform(0.5, 2, size=shape), image, image,
                           model_id, cfg)


# A GPU as an engine sidecar records it (no GPU is needed to check sidecars).
SIDECAR_DEVICE = DeviceFacts("NVIDIA RTX A4000", "8.6", "10.3.0")


def make_sidecar(onnx_sha: str = "a" * 64, **over) -> EngineSidecar:
    """A sidecar for an engine built on SIDECAR_DEVICE from an ONNX file with sha256 `onnx_sha`."""
    d = dict(onnx_sha256=onnx_sha, model_id="tiny-sc", tensorrt_version=SIDECAR_DEVICE.tensorrt_version,
             gpu_name=SIDECAR_DEVICE.gpu_name, compute_capability=SIDECAR_DEVICE.compute_capability, precision="fp16",
             max_batch=4, input_shape=[15, 16], frame_shape=[3, 8, 8], onnx_file="m.onnx",
             build_flags={"fp16": True, "workspace_mb": 1024})
    d.update(over)
    return EngineSidecar(**d)
