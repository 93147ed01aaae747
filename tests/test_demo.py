"""`rtdecode demo` end to end: simulated session -> LSL (child process) -> DecoderService -> ZeroMQ -> outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rtdecode.demo import bundled_model, model_noise, model_seed, model_stimuli, run_demo

pytestmark = [pytest.mark.lsl, pytest.mark.slow]


def linear_model(path):
    """A small real ONNX decoder over a 64-channel layout (keeps the pipeline test quick)."""
    from rtdecode.contract import DecoderContract
    from rtdecode.layout import ElectrodeLayout
    from rtdecode.onnx_io import build_linear_decoder, save_model
    from rtdecode.windows import make_plan

    lay = ElectrodeLayout.from_dict({"name": "demo-64", "n_channels": 64, "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 31]]}, {"id": 2, "area": "V4", "channels": [[32, 47]]},
        {"id": 3, "area": "IT", "channels": [[48, 63]]}]})
    plan = make_plan("spatiotemporal", lay)
    m, e = plan.n_maps, lay.n_electrodes
    c = DecoderContract(lay, plan, np.zeros((m, e)), np.ones((m, e)), 16, 16, "lin-demo-test",
                        {"data": {"sim_seed": 3, "stimuli": "naturalistic", "noise": 2.0}})
    w = np.random.default_rng(0).normal(scale=0.02, size=(m * e, 3 * 16 * 16)).astype(np.float32)
    return save_model(build_linear_decoder(c, w, np.full(768, 0.5, np.float32)), path)


def check_outputs(out, summary, n_images):
    for name in ("demo.gif", "reconstructions.png", "latency.png", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "session.h5").exists()  # removed unless --keep-session
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["frames_received"] == summary["frames_received"] > 0
    assert summary["images_shown"] == n_images
    assert summary["images_paired"] >= n_images - 1
    assert Image.open(out / "demo.gif").n_frames == summary["images_paired"]
    lat = summary["latency_ms"]
    assert lat["count"] == summary["frames_received"] and 0 < lat["p50_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    svc = summary["service"]
    assert svc["error"] is None and svc["frames"] >= summary["frames_received"]
    assert svc["telemetry"]["stream"]["samples"] == summary["playback"]["samples"]
    assert summary["playback"]["stopped_by"] == "end"


def test_demo_pipeline_with_a_small_linear_model(tmp_path):
    model = linear_model(tmp_path / "lin.onnx")
    out = tmp_path / "out"
    summary = run_demo(out, model=model, n_images=6, progress=False, tile=64)
    check_outputs(out, summary, 6)
    assert summary["session"]["seed"] == 3  # taken from the model's training config
    assert summary["session"]["stimuli"] == "naturalistic"  # likewise
    assert summary["session"]["noise"] == 2.0  # likewise
    # one frame per 16 ms stride over ~2.9 s of data, minus the first window's span
    assert summary["frames_received"] > 100


def test_model_seed_lookup():
    assert model_seed({"data": {"sim_seed": 7}}) == 7
    assert model_seed({"session_seed": 2}) == 2
    assert model_seed({"lr": 1e-3}) is None


def test_demo_with_the_bundled_model(tmp_path):
    assert bundled_model().is_file(), f"the bundled demo model is missing: {bundled_model()}"
    from rtdecode.cli import main

    out = tmp_path / "demo-output"
    assert main(["demo", "--out", str(out), "--n-images", "12", "--tile", "96"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_outputs(out, summary, 12)
    fit = summary["service"]["telemetry"]["input_fit"]  # its own virtual monkey: the input fits
    assert fit["state"] == "ok" and fit["blocks"] >= 1 and fit["misfit_blocks"] == 0, fit


def test_model_stimuli_lookup():
    assert model_stimuli({"data": {"stimuli": "naturalistic"}}) == "naturalistic"
    assert model_stimuli({"data": {"stimuli": "no-such-kind"}}) == "dead-leaves"
    assert model_stimuli({}) == "dead-leaves"


def test_model_noise_lookup():
    assert model_noise({"data": {"noise": 3}}) == 3.0
    assert model_noise({"data": {"noise": -1}}) == 1.0
    assert model_noise({}) == 1.0
