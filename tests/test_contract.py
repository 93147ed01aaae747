"""The model contract: metadata round trip and refusal of files that are not decoders."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from rtdecode.contract import DecoderContract, read_contract
from rtdecode.errors import ModelError
from rtdecode.layout import ElectrodeLayout
from rtdecode.onnx_io import build_linear_decoder, save_model
from rtdecode.windows import make_plan


def small_layout() -> ElectrodeLayout:
    return ElectrodeLayout.from_dict({"name": "tiny", "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 7]]},
        {"id": 2, "area": "V4", "channels": [[8, 11]]},
        {"id": 3, "area": "IT", "channels": [[12, 15]], "broken": True},
        {"id": 4, "area": "IT", "channels": [[16, 19]]}]})


def small_contract(rng) -> DecoderContract:
    lay = small_layout()
    plan = make_plan("spatiotemporal", lay)
    shape = (plan.n_maps, lay.n_electrodes)
    return DecoderContract(lay, plan, rng.normal(size=shape), rng.uniform(0.5, 2, size=shape), 8, 6,
                           "tiny-test", {"lr": 2e-4})


def test_metadata_roundtrip_through_onnx_file(tmp_path, rng):
    c = small_contract(rng)
    m, e = c.input_shape
    w = rng.normal(scale=0.1, size=(m * e, 3 * 8 * 6)).astype(np.float32)
    b = np.full(3 * 8 * 6, 0.5, dtype=np.float32)
    path = save_model(build_linear_decoder(c, w, b), tmp_path / "lin.onnx")
    back = read_contract(path)
    assert back.model_id == "tiny-test"
    assert back.plan == c.plan
    assert back.layout.areas == c.layout.areas
    np.testing.assert_array_equal(back.norm_mean, c.norm_mean.astype(np.float32))
    np.testing.assert_array_equal(back.norm_std, c.norm_std.astype(np.float32))
    assert back.training_config == {"lr": 2e-4}
    # the graph computes what it says
    x = rng.normal(size=(2, m, e)).astype(np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"mua": x})[0]
    want = np.clip(x.reshape(2, -1) @ w + b, 0, 1).reshape(2, 3, 8, 6)
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_plain_onnx_file_is_not_a_decoder(tmp_path):
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    p = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(g), str(p))
    with pytest.raises(ModelError, match="not an rtdecode decoder"):
        read_contract(p)


def test_missing_keys_are_named(tmp_path, rng):
    c = small_contract(rng)
    m, e = c.input_shape
    model = build_linear_decoder(c, np.zeros((m * e, 144), np.float32), np.zeros(144, np.float32))
    keep = [p for p in model.metadata_props if p.key != "rtdecode.normalisation"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    p = save_model(model, tmp_path / "partial.onnx")
    with pytest.raises(ModelError, match="rtdecode.normalisation"):
        read_contract(p)


def test_garbage_file_is_not_onnx(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\x00\x01 definitely not protobuf" * 10)
    with pytest.raises(ModelError, match="not an ONNX file|not an rtdecode decoder"):
        read_contract(p)
