"""Writing rtdecode ONNX decoders: attach the contract's metadata; build linear (ridge) decoders.

A linear decoder (frame = clip(W . x + b, 0, 1)) is a real, servable rtdecode model: the ridge
baseline exports to it, and tests use small ones where torch would be overkill.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .contract import INPUT_NAME, OUTPUT_NAME, DecoderContract


def attach_contract(model, contract: DecoderContract):
    """Replace any rtdecode.* metadata of an onnx.ModelProto with the contract's; returns the model."""
    keep = [p for p in model.metadata_props if not p.key.startswith("rtdecode.")]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in contract.to_metadata().items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    return model


def build_linear_decoder(contract: DecoderContract, weight: np.ndarray, bias: np.ndarray, *,
                         opset: int = 17):
    """ONNX graph: mua [B, M, E] -> frame [B, 3, H, W] = clip(mua.reshape(B, M*E) @ weight + bias, 0, 1).

    weight: float32 [M*E, 3*H*W]; bias: float32 [3*H*W].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, e = contract.input_shape
    c, h, w = contract.frame_shape
    weight = np.asarray(weight, dtype=np.float32)
    bias = np.asarray(bias, dtype=np.float32)
    if weight.shape != (m * e, c * h * w) or bias.shape != (c * h * w,):
        raise ValueError(f"linear decoder needs weight [{m * e}, {c * h * w}] and bias [{c * h * w}], "
                         f"got {weight.shape} and {bias.shape}")
    inits = [
        numpy_helper.from_array(weight, "W"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(np.array([-1, m * e], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, c, h, w], dtype=np.int64), "frame_shape"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "b"], ["lin"]),
        helper.make_node("Clip", ["lin", "zero", "one"], ["clipped"]),
        helper.make_node("Reshape", ["clipped", "frame_shape"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, "rtdecode_linear_decoder",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", m, e])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", c, h, w])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="rtdecode")
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return attach_contract(model, contract)


def save_model(model, path: str | Path) -> Path:
    """Save as one self-contained .onnx file (no external data)."""
    import onnx

    path = Path(path)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path


def set_input_fit(path: str | Path, stats, out: str | Path | None = None) -> Path:
    """Write input-fit statistics (rtdecode.fit.FitStats) into an ONNX decoder's metadata.

    Only the `rtdecode.input_fit` metadata entry changes (added or replaced): the graph and
    its weights, and so the model id, stay as they are. `out` defaults to `path` (in place,
    through a temporary file and a rename).
    """
    import onnx

    from .fit import INPUT_FIT_KEY

    path = Path(path)
    out = path if out is None else Path(out)
    model = onnx.load(str(path), load_external_data=False)
    keep = [p for p in model.metadata_props if p.key != INPUT_FIT_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    p = model.metadata_props.add()
    p.key, p.value = INPUT_FIT_KEY, stats.to_json()
    tmp = out.with_name(out.name + ".tmp")
    save_model(model, tmp)
    tmp.replace(out)
    return out
