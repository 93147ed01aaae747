"""training.metrics, training.ridge, training.evaluate and `rtdecode evaluate` on real files."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from rtdecode.contract import read_contract
from rtdecode.errors import ConfigError, ModelError
from rtdecode.layout import ElectrodeLayout
from rtdecode.metrics import (
    identification_accuracy,
    pixel_correlation,
    rf_recovery,
    ssim,
    summarise,
)
from rtdecode.onnx_io import save_model
from rtdecode.sessions.session_file import SessionWriter
from rtdecode.training.data import load_decoding_data
from rtdecode.training.evaluate import evaluate, format_table, renormalise, write_report
from rtdecode.training.ridge import RidgeDecoder

ROOT = Path(__file__).resolve().parents[1]


# ---- metrics ---------------------------------------------------------------------------------
def test_identical_images_score_one(rng):
    x = rng.uniform(size=(6, 3, 24, 24))
    np.testing.assert_allclose(pixel_correlation(x, x), 1.0, atol=1e-12)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-12)
    # correlation ignores gain and offset; SSIM does not
    np.testing.assert_allclose(pixel_correlation(0.5 * x + 0.2, x), 1.0, atol=1e-12)
    assert np.all(ssim(0.5 * x + 0.2, x) < 0.99)


def test_noise_scores_low_and_ssim_falls_with_noise(rng):
    x = rng.uniform(size=(8, 3, 32, 32))
    noise = rng.uniform(size=x.shape)
    assert abs(pixel_correlation(noise, x).mean()) < 0.05
    assert abs(ssim(noise, x).mean()) < 0.05
    s = [ssim(np.clip(x + rng.normal(scale=sd, size=x.shape), 0, 1), x).mean() for sd in (0.02, 0.1, 0.3)]
    assert 1 > s[0] > s[1] > s[2]
    np.testing.assert_allclose(ssim(x, noise), ssim(noise, x))  # symmetric


def test_ssim_matches_scikit_image_reference():
    # value from skimage.metrics.structural_similarity(channel_axis=2, gaussian_weights=True,
    # sigma=1.5, use_sample_covariance=False, data_range=1.0), scikit-image 0.26
    yy, xx = np.mgrid[0:20, 0:24]
    a = np.stack([(np.sin(xx / 3.0) + 1) / 2, (np.cos(yy / 4.0) + 1) / 2, ((xx + yy) % 7) / 6.0])
    b = np.stack([(np.sin(xx / 3.3) + 1) / 2, (np.cos(yy / 4.0 + 0.5) + 1) / 2, ((xx * 2 + yy) % 5) / 4.0])
    assert ssim(a, b)[0] == pytest.approx(0.42757570283890495, abs=1e-12)


def test_ssim_small_images_and_bad_shapes(rng):
    a = rng.uniform(size=(2, 3, 6, 6))
    assert ssim(a, a) == pytest.approx([1.0, 1.0])
    with pytest.raises(ConfigError, match="same shape"):
        ssim(a, a[:, :, :5])
    with pytest.raises(ConfigError, match="too small"):
        ssim(a[:, :, :2, :2], a[:, :, :2, :2])


def test_identification_perfect_and_chance(rng):
    x = rng.uniform(size=(40, 3, 8, 8))
    assert identification_accuracy(x, x, 2) == 1.0
    assert identification_accuracy(x, x, 5) == 1.0
    shuffled = x[rng.permutation(40)]
    acc2 = identification_accuracy(shuffled, x, 2, repeats=200)
    acc5 = identification_accuracy(shuffled, x, 5, repeats=200)
    assert 0.35 < acc2 < 0.65
    assert 0.1 < acc5 < 0.3
    # seeded
    assert identification_accuracy(shuffled, x, 5, seed=3) == identification_accuracy(shuffled, x, 5, seed=3)
    with pytest.raises(ConfigError, match="at least 5 images"):
        identification_accuracy(x[:4], x[:4], 5)


def test_rf_recovery_per_area():
    true = np.array([[0.5, 0.5], [0.2, 0.2], [0.8, 0.1], [0.1, 0.9]])
    learned = true + np.array([[0.01, 0.0], [0.0, 0.03], [0.1, 0.0], [np.nan, np.nan]])
    r = rf_recovery(learned, true, ["V1", "V1", "IT", "IT"], image_width_px=100)
    assert r["V1"]["median_px"] == pytest.approx(2.0) and r["V1"]["median_pct_width"] == pytest.approx(2.0)
    assert r["IT"]["median_px"] == pytest.approx(10.0) and r["IT"]["n_electrodes"] == 1
    assert r["all"]["n_electrodes"] == 3


# ---- ridge -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_samples", [300, 40])  # primal (features < samples) and dual form
def test_ridge_recovers_a_linear_map(rng, n_samples):
    mask = np.zeros((3, 20), dtype=bool)
    mask[0, :10] = mask[1, 5:15] = mask[2, 10:] = True  # 30 features
    f = int(mask.sum())
    w_true = rng.normal(size=(f, 3 * 4 * 4)) * 0.01
    x = np.zeros((n_samples + 50, 3, 20), dtype=np.float32)
    x[:, mask] = rng.normal(size=(n_samples + 50, f))
    y = (x[:, mask] @ w_true + 0.5).reshape(-1, 3, 4, 4)
    assert 0 < y.min() and y.max() < 1  # the clip is inactive, so the map is exactly linear
    r = RidgeDecoder.fit(x[:n_samples], y[:n_samples], mask, val_x=x[n_samples:], val_y=y[n_samples:],
                         alphas=[1e-6, 1e-3, 1.0, 100.0])
    pred = r.predict(x[n_samples:])
    if n_samples > f:  # determined: the weights themselves come back
        np.testing.assert_allclose(r.weight, w_true, atol=1e-3)
        np.testing.assert_allclose(pred, y[n_samples:], atol=1e-3)
        assert r.alpha <= 1e-3
    else:  # under-determined: still generalises better than the mean image
        assert np.mean((pred - y[n_samples:]) ** 2) < 0.5 * np.mean((y[n_samples:] - y[:n_samples].mean(0)) ** 2)
    assert set(r.scores) == {1e-6, 1e-3, 1.0, 100.0}
    full = r.full_weight()
    assert full.shape == (60, 48) and np.all(full[~mask.ravel()] == 0)


# ---- evaluate on a real session --------------------------------------------------------------
def tiny_layout() -> ElectrodeLayout:
    return ElectrodeLayout.from_dict({"name": "eval-tiny", "n_channels": 24, "arrays": [
        {"id": 1, "area": "V1", "channels": [[0, 7]]}, {"id": 2, "area": "V4", "channels": [[8, 15]]},
        {"id": 3, "area": "IT", "channels": [[16, 23]]}]})


def write_tiny_session(path: Path, rng, n_images: int = 60, size: int = 16) -> dict:
    """Each channel sums the image inside its ground-truth RF (a Gaussian), plus noise."""
    lay = tiny_layout()
    c = lay.n_channels
    centres = rng.uniform(0.15, 0.85, size=(c, 2))
    images = np.zeros((n_images, size, size, 3), dtype=np.uint8)
    for k in range(n_images):  # a few bright squares on a dark ground
        for _ in range(3):
            x0, y0 = rng.integers(0, size - 5, size=2)
            images[k, y0:y0 + 5, x0:x0 + 5] = rng.integers(80, 256, size=3)
    g = (np.arange(size) + 0.5) / size
    rf = np.exp(-(((g[None, None, :] - centres[:, 0, None, None]) ** 2
                   + (g[None, :, None] - centres[:, 1, None, None]) ** 2) / (2 * 0.08 ** 2)))  # [C, H, W]
    drive = np.einsum("khw,chw->kc", images.mean(axis=3) / 255.0, rf)
    trial = 300
    onsets = 20 + np.arange(n_images) * trial
    mua = rng.normal(scale=0.02, size=(onsets[-1] + trial, c)).astype(np.float32)
    for k, on in enumerate(onsets):
        mua[on:on + 250] += drive[k]
    with SessionWriter(path, lay, 1000.0) as w:
        w.append(mua, np.arange(mua.shape[0]) / 1000.0)
        w.set_markers(onsets, onsets + 200, np.arange(n_images))
        w.set_images(images)
        w.set_ground_truth(rf_centres=centres, rf_sigmas=np.full(c, 0.08), latency_ms=np.full(c, 30.0))
    return {"centres": centres, "layout": lay}


def _with_rf_metadata(model: onnx.ModelProto, centres: np.ndarray) -> onnx.ModelProto:
    p = model.metadata_props.add()
    a = np.ascontiguousarray(centres, dtype="<f4")
    p.key, p.value = "training.rf_centres", json.dumps({"shape": list(a.shape),
                                                        "data": base64.b64encode(a.tobytes()).decode()})
    return model


def test_evaluate_onnx_equals_numpy_ridge_and_rf_recovery(tmp_path, rng):
    s = write_tiny_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=0, progress=False)
    r = RidgeDecoder.fit(d.train_x, d.train_y, d.mask, val_x=d.val_x, val_y=d.val_y)
    # the served model normalises with statistics that differ from this split's: fold that into W, b
    shift = rng.normal(size=d.mask.shape).astype(np.float32) * d.mask
    gain = rng.uniform(0.5, 2.0, size=d.mask.shape).astype(np.float32)
    contract = d.contract("ridge-shifted")
    contract.norm_mean = (d.normaliser.mean + shift * d.normaliser.std).astype(np.float32)
    contract.norm_std = (d.normaliser.std * gain).astype(np.float32)
    # x_data = (raw - m)/s = x_model * gain + shift  -> W' = gain * W, b' = b + shift . W
    w = r.full_weight()
    w_model = w * gain.ravel()[:, None]
    b_model = r.bias + (shift.ravel() @ w)
    from rtdecode.onnx_io import build_linear_decoder

    true_used = s["centres"][d.layout.used_channels]
    learned = true_used + np.array([0.03, 0.04])  # 5% of the width off, everywhere
    model = _with_rf_metadata(build_linear_decoder(contract, w_model, b_model), learned)
    save_model(model, tmp_path / "m.onnx")
    read_contract(tmp_path / "m.onnx")
    rep = evaluate(d, model=tmp_path / "m.onnx", seed=0)
    np.testing.assert_allclose(rep["reconstructions"]["model"], rep["reconstructions"]["ridge_spatiotemporal"],
                               atol=2e-4)
    m, b = rep["metrics"]["model"], rep["metrics"]["ridge_spatiotemporal"]
    assert m["pixel_corr"] == pytest.approx(b["pixel_corr"], abs=1e-3)
    assert m["pixel_corr"] > 0.3 and m["id_2way"] > 0.8  # the session is decodable
    assert rep["rf_recovery"]["model"]["all"]["median_pct_width"] == pytest.approx(5.0, abs=1e-3)
    assert rep["rf_recovery"]["model"]["V1"]["median_px"] == pytest.approx(0.8, abs=1e-3)
    paths = write_report(rep, d, tmp_path / "out", n_grid=4)
    saved = json.loads(paths["report"].read_text())
    assert "reconstructions" not in saved and saved["metrics"]["model"]["n_images"] == 6
    assert "ridge" in format_table(rep)


def test_evaluate_refuses_a_mismatched_model(tmp_path, rng):
    write_tiny_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, progress=False)
    d8 = load_decoding_data(tmp_path / "s.h5", image_size=8, progress=False)
    r = RidgeDecoder.fit(d8.train_x, d8.train_y, d8.mask)
    save_model(r.to_onnx(d8.contract("small")), tmp_path / "m8.onnx")
    with pytest.raises(ModelError, match="8x8 images but the data holds 16x16"):
        evaluate(d, model=tmp_path / "m8.onnx", ridge=False)
    spatial = load_decoding_data(tmp_path / "s.h5", windows="spatial", image_size=8, progress=False)
    with pytest.raises(ModelError, match=r"model input is \[maps, electrodes\] = \[15, 24\]"):
        renormalise(spatial.test_x, spatial, d8.contract("x"))


def test_cli_evaluate_writes_report_and_grid_without_torch(tmp_path, rng):
    write_tiny_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=5, progress=False)
    r = RidgeDecoder.fit(d.train_x, d.train_y, d.mask, val_x=d.val_x, val_y=d.val_y)
    # the model's training config says which split seed it used: evaluate must reuse it
    save_model(r.to_onnx(d.contract("ridge", {"config": {"data_seed": 5, "split": [0.8, 0.1, 0.1]}})),
               tmp_path / "m.onnx")
    code = ("import sys; from rtdecode.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'evaluate imported torch'; sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, "evaluate", "--model", str(tmp_path / "m.onnx"),
                          "--data", str(tmp_path / "s.h5"), "--out", str(tmp_path / "ev"), "--grid", "5",
                          "--ridge-onnx", str(tmp_path / "ridge.onnx"), "--no-progress"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "pixel_corr" in out.stdout and "ridge" in out.stdout
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    for key in ("source", "split", "n_images", "image_size", "windows", "metrics", "rf_recovery", "baselines",
                "decoders", "image_ids"):
        assert key in rep, key
    for name in ("model", "ridge_spatiotemporal"):
        assert set(rep["metrics"][name]) >= {"pixel_corr", "ssim", "id_2way", "id_5way", "n_images"}
    assert rep["image_ids"] == [int(k) for k in d.test_ids]  # same split seed as the model's
    assert rep["metrics"]["model"]["pixel_corr"] == pytest.approx(
        rep["metrics"]["ridge_spatiotemporal"]["pixel_corr"], abs=1e-3)
    assert rep["rf_recovery"] == {"model": None}  # a ridge model keeps no RF centres
    with Image.open(tmp_path / "ev" / "grid.png") as im:
        assert im.size[0] > 200 and im.size[1] > 100
    read_contract(tmp_path / "ridge.onnx")


def test_cli_evaluate_needs_a_model(tmp_path):
    from rtdecode.cli import main

    assert main(["evaluate", "--data", str(tmp_path / "x.h5")]) == 1


def test_summarise_keys(rng):
    x = rng.uniform(size=(6, 3, 12, 12))
    s = summarise(x, x)
    assert s["pixel_corr"] == pytest.approx(1.0) and s["id_5way"] == 1.0 and s["n_images"] == 6


def test_evaluate_checkpoint_with_learned_rfs(tmp_path, rng):
    """A real training checkpoint (training.checkpoint) is run with torch; its rf_centres() are scored."""
    from rtdecode.training import checkpoint
    from rtdecode.training.config import preset
    from rtdecode.training.model import HomeomorphicDecoder

    s = write_tiny_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=2, progress=False)
    model = HomeomorphicDecoder(d.n_maps, d.n_electrodes, 16, [8, 16], mask=d.mask)
    true_used = s["centres"][d.layout.used_channels]
    model.rf.init_rf(centres=true_used + np.array([0.0, 0.02]))  # 2% of the width off, everywhere
    model.eval()
    config = preset("fast").updated(image_size=16, widths=(8, 16), disc_widths=(8, 16), data_seed=2)
    checkpoint.save_checkpoint(tmp_path / "c.pt", model=model, config=config, step=1, epoch=0,
                               norm_mean=d.normaliser.mean, norm_std=d.normaliser.std,
                               layout_json=d.layout.to_json(), plan_json=d.plan.to_json())
    rep = evaluate(d, checkpoint=tmp_path / "c.pt", ridge=False)
    assert rep["metrics"]["checkpoint"]["n_images"] == len(d.test_ids)
    assert rep["rf_recovery"]["checkpoint"]["all"]["median_pct_width"] == pytest.approx(2.0, abs=1e-3)
    # the reconstruction is the module's own forward pass on the (re)normalised test maps
    import torch

    with torch.no_grad():
        want = model(torch.from_numpy(renormalise(d.test_x, d, d.contract("x")))).numpy()
    np.testing.assert_allclose(rep["reconstructions"]["checkpoint"], want, atol=1e-5)


# ---- baselines, oracle, intervals (issue 10) ---------------------------------------------------
def test_evaluate_scores_floor_both_ridges_and_oracle_and_names_the_strongest(tmp_path, rng):
    from rtdecode.training.evaluate import no_feature_weights

    write_tiny_session(tmp_path / "s.h5", rng, n_images=80)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=0, progress=False)
    sp = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=0, windows="spatial", progress=False)
    r = RidgeDecoder.fit(d.train_x, d.train_y, d.mask, val_x=d.val_x, val_y=d.val_y)
    save_model(r.to_onnx(d.contract("ridge")), tmp_path / "m.onnx")
    rep = evaluate(d, model=tmp_path / "m.onnx", baseline_data=[sp], n_boot=300)
    m = rep["metrics"]
    assert set(m) == {"model", "floor", "ridge_spatiotemporal", "ridge_spatial", "oracle"}
    assert [m[k]["role"] for k in ("model", "floor", "ridge_spatial", "oracle")] == \
        ["decoder", "baseline", "baseline", "ceiling"]
    n = rep["n_images"]
    # the floor shows one image for all: its ranks are a permutation of 1..n, exactly at chance
    assert m["floor"]["top1"] == pytest.approx(1 / n) and m["floor"]["rank"]["mean"] == pytest.approx((n + 1) / 2)
    assert "gain_over_floor" not in m["floor"]
    for name in ("model", "ridge_spatial", "oracle"):
        g = m[name]["gain_over_floor"]["pixel_corr"]
        assert g["lo"] <= g["mean"] <= g["hi"]
        assert g["mean"] == pytest.approx(m[name]["pixel_corr"] - m["floor"]["pixel_corr"])
    for name, v in m.items():
        for key in ("pixel_corr", "ssim", "top1"):
            lo, hi = v["ci"][key]
            assert lo <= v[key] <= hi, (name, key)
    # oracle: the originals blurred at the median V1 RF sigma of the ground truth (0.08 x 16 px)
    assert rep["oracle"]["sigma_px"] == pytest.approx(1.28) and "ground truth" in rep["oracle"]["sigma_from"]
    assert m["oracle"]["pixel_corr"] > m["model"]["pixel_corr"] > m["floor"]["pixel_corr"]
    # the strongest baseline is the best on validation, and the model is compared with it (paired)
    sb = rep["strongest_baseline"]
    assert sb["chosen_on"] == "val" and set(sb["val_pixel_corr"]) == {"floor", "ridge_spatiotemporal", "ridge_spatial"}
    assert sb["name"] == max(sb["val_pixel_corr"], key=sb["val_pixel_corr"].get)
    assert sb["best_ridge"] in ("ridge_spatiotemporal", "ridge_spatial")
    c = rep["comparisons"]["model"]
    assert c["vs"] == sb["name"]
    want = np.mean(np.asarray(rep["per_image"]["model"]["pixel_corr"])
                   - np.asarray(rep["per_image"][sb["name"]]["pixel_corr"]))
    assert c["pixel_corr"]["mean"] == pytest.approx(want)
    assert rep["feature_corr"] == {"alexnet": no_feature_weights("alexnet"), "vgg19": no_feature_weights("vgg19")}
    assert rep["feature_corr"]["vgg19"].startswith("not computed: no weights file")
    paths = write_report(rep, d, tmp_path / "out", n_grid=3)
    md = paths["table"].read_text()
    assert "| floor | baseline |" in md and "gain over floor" in md and f"strongest baseline: {sb['name']}" in md
    assert paths["ranks"].exists() and paths["grid"].exists()
    saved = json.loads(paths["report"].read_text())
    assert saved["strongest_baseline"]["name"] == sb["name"] and len(saved["per_image"]["oracle"]["rank"]) == n
    table = format_table(rep)
    assert "top1" in table and f"strongest baseline: {sb['name']}" in table


def test_evaluate_refuses_baselines_on_other_test_images(tmp_path, rng):
    write_tiny_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=0, progress=False)
    other = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=1, windows="spatial", progress=False)
    with pytest.raises(ModelError, match="ridge_spatial: its test images differ from the model's"):
        evaluate(d, baseline_data=[other])
    rep = evaluate(d, oracle_sigma_px=3.0, n_boot=50)  # baselines alone, the oracle's blur given
    assert rep["oracle"]["sigma_px"] == 3.0 and rep["comparisons"] == {}


def test_feature_correlations_with_a_small_extractor(rng):
    torch = pytest.importorskip("torch")
    from rtdecode.training.feature_corr import feature_correlations

    def extractor(x):
        return [x.mean(dim=1, keepdim=True), torch.nn.functional.avg_pool2d(x, 2)]

    x = rng.uniform(size=(5, 3, 8, 8)).astype(np.float32)
    r = feature_correlations({"same": x, "inverted": 1 - x, "flat": np.full_like(x, 0.5)}, x, extractor, batch=2)
    assert r["same"].shape == (2, 5)
    np.testing.assert_allclose(r["same"], 1.0, atol=1e-5)
    np.testing.assert_allclose(r["inverted"], -1.0, atol=1e-5)
    np.testing.assert_array_equal(r["flat"], 0.0)  # a constant feature map correlates with nothing
    with pytest.raises(ConfigError, match="same shape"):
        feature_correlations({"bad": x[:, :, :4]}, x, extractor)


@pytest.mark.slow
def test_vgg_feature_correlations_from_a_weights_file(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from rtdecode.training.feature_corr import vgg_feature_correlations
    from rtdecode.training.vgg import vgg19_features

    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    torch.save(sd, tmp_path / "vgg19.pth")
    x = rng.uniform(size=(1, 3, 16, 16)).astype(np.float32)
    r = vgg_feature_correlations({"same": x, "noise": rng.uniform(size=x.shape).astype(np.float32)}, x,
                                 tmp_path / "vgg19.pth")
    assert r["same"].shape == (5, 1)
    np.testing.assert_allclose(r["same"], 1.0, atol=1e-4)
    assert r["noise"][0, 0] < 0.5  # (deep layers of an untrained VGG respond alike to anything)


def test_alexnet_feature_correlation_in_the_report(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from rtdecode.training.feature_corr import ALEXNET_LAYERS, alexnet_features, load_alexnet

    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in alexnet_features().state_dict().items()}
    torch.save(sd, tmp_path / "alexnet.pth")
    torch.save({**sd, "features.0.weight": sd["features.0.weight"][:, :1]}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=r"'features.0.weight' has shape \[64, 1, 11, 11\], expected \[64, 3, 11, 11\]"):
        load_alexnet(tmp_path / "bad.pth")
    write_tiny_session(tmp_path / "s.h5", rng, n_images=40)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=0, progress=False)
    rep = evaluate(d, alexnet_weights=tmp_path / "alexnet.pth", n_boot=100)
    fc = rep["feature_corr"]["alexnet"]
    assert fc["layers"] == list(ALEXNET_LAYERS) and set(fc["decoders"]) == set(rep["metrics"])
    conv1 = {name: e["conv1"]["mean"] for name, e in fc["decoders"].items()}
    assert conv1["oracle"] > conv1["floor"]  # the blurred original is closer to it than the mean image
    g = fc["decoders"]["oracle"]["conv1"]["gain_over_floor"]
    assert g["lo"] <= g["mean"] <= g["hi"] and "gain_over_floor" not in fc["decoders"]["floor"]["conv1"]
    assert rep["feature_corr"]["vgg19"].startswith("not computed")
    table = format_table(rep)
    assert "feature correlation (vgg19): not computed" in table and "feature correlation (alexnet)" not in table


def test_cli_evaluate_one_ridge_plan_and_a_given_oracle_blur(tmp_path, rng):
    write_tiny_session(tmp_path / "s.h5", rng)
    d = load_decoding_data(tmp_path / "s.h5", image_size=16, seed=0, progress=False)
    r = RidgeDecoder.fit(d.train_x, d.train_y, d.mask, val_x=d.val_x, val_y=d.val_y)
    save_model(r.to_onnx(d.contract("ridge")), tmp_path / "m.onnx")
    from rtdecode.cli import main

    assert main(["evaluate", "--model", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "s.h5"), "--out",
                 str(tmp_path / "ev"), "--ridge-windows", "spatiotemporal", "--oracle-sigma-px", "2.0",
                 "--bootstrap", "100", "--no-progress"]) == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert set(rep["metrics"]) == {"model", "floor", "ridge_spatiotemporal", "oracle"}
    assert rep["oracle"]["sigma_px"] == 2.0 and rep["bootstrap"]["n_boot"] == 100
    assert (tmp_path / "ev" / "report.md").exists() and (tmp_path / "ev" / "ranks.png").exists()
