"""TensorRT engine sidecars, build options and INT8 calibration data: everything that runs without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rtdecode.deploy.build_engine import BuildOptions, calibration_maps, parser_error_text
from rtdecode.engines.sidecar import (
    DeviceFacts,
    compatibility_problems,
    describe_engine_file,
    engine_path_for,
    read_sidecar,
    sha256_file,
    sidecar_path_for,
    verify_compatible,
    write_sidecar,
)
from rtdecode.errors import ConfigError, EngineError, ModelError
from rtdecode.layout import ElectrodeLayout
from rtdecode.onnx_io import build_linear_decoder, save_model
from rtdecode.sessions.session_file import SessionWriter
from rtdecode.testing import SIDECAR_DEVICE as HERE
from rtdecode.testing import make_sidecar
from rtdecode.testing import tiny_contract as shared_tiny_contract
from rtdecode.windows import Normaliser


def tiny_contract(rng):
    return shared_tiny_contract(rng, model_id="tiny-sc")


def tiny_model(tmp_path, rng):
    c = tiny_contract(rng)
    m, e = c.input_shape
    w = rng.normal(scale=0.05, size=(m * e, 3 * 8 * 8)).astype(np.float32)
    path = save_model(build_linear_decoder(c, w, np.full(3 * 64, 0.5, np.float32)), tmp_path / "m.onnx")
    return c, path


def test_sidecar_roundtrip_and_paths(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    sc = make_sidecar(engine_sha256=sha256_file(engine))
    side = write_sidecar(engine, sc)
    assert side == tmp_path / "m.engine.json" == sidecar_path_for(engine)
    assert engine_path_for(side) == engine
    back = read_sidecar(engine)
    assert back.to_dict() == sc.to_dict()
    assert back.created and back.rtdecode_version
    assert read_sidecar(side).to_dict() == sc.to_dict()


def test_compatible_sidecar_has_no_problems():
    sc = make_sidecar()
    assert compatibility_problems(sc, HERE, onnx_sha256="a" * 64, precision="fp16") == []
    verify_compatible(sc, HERE, onnx_sha256="a" * 64)  # does not raise


@pytest.mark.parametrize("device, expect, words", [
    (DeviceFacts("NVIDIA A100-SXM4-40GB", "8.6", "10.3.0"), {}, ["GPU", "RTX A4000", "A100"]),
    (DeviceFacts("NVIDIA RTX A4000", "8.9", "10.3.0"), {}, ["compute capability", "8.6", "8.9"]),
    (DeviceFacts("NVIDIA RTX A4000", "8.6", "10.7.0"), {}, ["TensorRT version", "10.3.0", "10.7.0"]),
    (HERE, {"onnx_sha256": "b" * 64}, ["ONNX sha256", "m.onnx", "tiny-sc", "aaaaaaaaaaaa", "bbbbbbbbbbbb"]),
    (HERE, {"precision": "fp32"}, ["precision", "fp16", "fp32"]),
    (HERE, {"engine_sha256": "d" * 64}, ["engine sha256", "cccccccccccc", "dddddddddddd"]),
], ids=["gpu-name", "compute-capability", "tensorrt-version", "onnx-sha256", "precision", "engine-file"])
def test_each_mismatch_is_named(device, expect, words):
    sc = make_sidecar(engine_sha256="c" * 64)
    problems = compatibility_problems(sc, device, **expect)
    assert len(problems) == 1, problems
    for w in words:
        assert w in problems[0]
    with pytest.raises(EngineError, match="rebuild|Rebuild") as ei:
        verify_compatible(sc, device, engine_path="m.engine", **expect)
    assert words[0] in str(ei.value) and ei.value.engine == "tensorrt"


def test_several_mismatches_are_all_listed():
    problems = compatibility_problems(make_sidecar(), DeviceFacts("Other", "9.0", "11.0.0"), onnx_sha256="f" * 64)
    assert [p.split(":")[0] for p in problems] == ["GPU", "compute capability", "TensorRT version", "ONNX sha256"]


def test_malformed_sidecars_are_refused(tmp_path):
    good = make_sidecar().to_dict()
    for mutate, pattern in [
        (lambda d: d.update(bogus=1), "unknown sidecar keys.*bogus"),
        (lambda d: d.pop("gpu_name"), "missing keys.*gpu_name"),
        (lambda d: d.update(format="something"), "not an rtdecode engine sidecar"),
        (lambda d: d.update(precision="fp8"), "precision 'fp8'"),
        (lambda d: d.update(format_version=99), "newer"),
    ]:
        d = json.loads(json.dumps(good))
        mutate(d)
        p = tmp_path / "x.engine.json"
        p.write_text(json.dumps(d))
        with pytest.raises(ModelError, match=pattern):
            read_sidecar(p)
    with pytest.raises(ModelError, match="has no sidecar"):
        read_sidecar(tmp_path / "nothing.engine")
    (tmp_path / "bad.engine.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_sidecar(tmp_path / "bad.engine")


def test_describe_engine_file_checks_the_engine_bytes(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes v1")
    write_sidecar(engine, make_sidecar(engine_sha256=sha256_file(engine)))
    info = describe_engine_file(engine)
    assert info["engine_sha256_matches"] is True and info["engine_bytes"] == 15
    assert info["gpu_name"] == HERE.gpu_name and info["precision"] == "fp16"
    engine.write_bytes(b"swapped engine!")
    assert describe_engine_file(tmp_path / "m.engine.json")["engine_sha256_matches"] is False
    engine.unlink()
    assert "missing" in describe_engine_file(engine)["note"]


def test_inspect_command_prints_the_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    write_sidecar(engine, make_sidecar(engine_sha256=sha256_file(engine)))
    out = subprocess.run([sys.executable, "-m", "rtdecode", "inspect", str(engine), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["compute_capability"] == "8.6" and info["engine_sha256_matches"] is True
    assert info["model_id"] == "tiny-sc"


def test_build_options_are_validated(tmp_path, rng):
    _, onnx = tiny_model(tmp_path, rng)
    BuildOptions(onnx).check()
    assert BuildOptions(onnx).out == tmp_path / "m.engine"
    assert BuildOptions(onnx, fp16=True).precision == "fp16"
    cases = [
        (dict(onnx_path=tmp_path / "missing.onnx"), "does not exist"),
        (dict(onnx_path=onnx, max_batch=0), "--max-batch"),
        (dict(onnx_path=onnx, workspace_mb=0), "--workspace"),
        (dict(onnx_path=onnx, int8=True), "--int8 needs --calibration"),
        (dict(onnx_path=onnx, calibration=onnx), "only used with --int8"),
        (dict(onnx_path=onnx, int8=True, calibration=tmp_path / "none.h5"), "does not exist"),
        (dict(onnx_path=onnx, out=tmp_path / "m.trt"), ".engine or .plan"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            BuildOptions(**kwargs).check()
    flags = BuildOptions(onnx, fp16=True, timing_cache=tmp_path / "t.cache").flags()
    assert flags["fp16"] is True and flags["timing_cache"].endswith("t.cache")
    json.dumps(flags)  # the sidecar stores them as JSON


def write_session(path, contract, rng, n_samples=3000, onsets=(100, 700, 1300, 2900)):
    lay = contract.layout
    with SessionWriter(path, lay, 1000.0) as w:
        mua = rng.gamma(2.0, 1.0, size=(n_samples, lay.n_channels)).astype(np.float32)
        w.append(mua, np.arange(n_samples) / 1000.0)
        w.set_markers(np.array(onsets), np.array(onsets) + 100, np.zeros(len(onsets), dtype=np.int64))
    return mua


def test_calibration_maps_are_what_serving_feeds(tmp_path, rng):
    c = tiny_contract(rng)
    mua = write_session(tmp_path / "s.h5", c, rng)
    maps = calibration_maps(tmp_path / "s.h5", c, n_max=40)
    assert maps.shape == (40, *c.input_shape) and maps.dtype == np.float32
    # onsets that leave a full window are included; 2900 + span > 3000 is not
    span = c.plan.span
    assert 2900 + span > 3000
    want = c.assembler().assemble(mua[700:700 + span])
    Normaliser(c.norm_mean, c.norm_std, c.mask)(want)
    assert any(np.allclose(m, want, atol=1e-5) for m in maps)
    assert np.all(maps[:, ~c.mask] == 0)


def test_calibration_session_must_fit_the_model(tmp_path, rng):
    c = tiny_contract(rng)
    other = ElectrodeLayout.from_dict({"name": "other", "arrays": [{"id": 1, "area": "V1", "channels": [[0, 3]]}]})
    with SessionWriter(tmp_path / "o.h5", other, 1000.0) as w:
        w.append(np.ones((500, 4), np.float32), np.arange(500) / 1000.0)
        w.set_markers(np.array([10]), np.array([20]), np.array([0]))
    with pytest.raises(ConfigError, match="4 channels but the model's layout 'tiny' has 16"):
        calibration_maps(tmp_path / "o.h5", c)
    write_session(tmp_path / "short.h5", c, rng, n_samples=50, onsets=(1,))
    with pytest.raises(ConfigError, match="one window needs"):
        calibration_maps(tmp_path / "short.h5", c)


class _FakeParserError:
    def __init__(self, name, op, idx, desc):
        self._v = (name, op, idx, desc)

    def node_name(self):
        return self._v[0]

    def node_operator(self):
        return self._v[1]

    def node(self):
        return self._v[2]

    def code(self):
        return "ErrorCode.UNSUPPORTED_NODE"

    def desc(self):
        return self._v[3]


class _FakeParser:
    def __init__(self, errors):
        self.errors = errors
        self.num_errors = len(errors)

    def get_error(self, i):
        return self.errors[i]


def test_parser_errors_name_the_nodes():
    text = parser_error_text(_FakeParser([_FakeParserError("/generator/up.0/ConvTranspose", "ConvTranspose", 42,
                                                           "unsupported padding mode")]))
    assert "node /generator/up.0/ConvTranspose" in text and "op ConvTranspose" in text and "index 42" in text
    assert "unsupported padding mode" in text
    assert "no parser error" in parser_error_text(_FakeParser([]))
