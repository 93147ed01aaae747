"""Training loop, checkpoints (save/load/resume), ONNX export parity, and the train/export CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtdecode.contract import read_contract
from rtdecode.errors import ModelError
from rtdecode.layout import ElectrodeLayout
from rtdecode.sim.macaque import VirtualMacaque
from rtdecode.training.checkpoint import load_checkpoint, load_decoder
from rtdecode.training.config import TrainConfig
from rtdecode.training.data import DecodingData
from rtdecode.training.export import check_parity, export_checkpoint, read_rf_metadata
from rtdecode.training.train import resume_config, train
from rtdecode.windows import Normaliser, map_mask, spatial_plan, spatiotemporal_plan

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread avoids OpenMP spinning against the other processes on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_data(seed: int = 0, windows: str = "spatiotemporal", n_train: int = 48, n_val: int = 8,
              n_test: int = 8) -> DecodingData:
    """3 arrays (V1, V4, IT) of 8 electrodes; responses = image intensity at each RF centre + noise."""
    rng = np.random.default_rng(seed)
    k = 8
    arrays = np.repeat([1, 2, 3], k)
    areas = tuple(["V1"] * k + ["V4"] * k + ["IT"] * k)
    c = arrays.size
    rf = rng.uniform(0.1, 0.9, (c, 2))
    layout = ElectrodeLayout("tiny", arrays, areas, np.ones(c, bool), rf, None)
    plan = spatiotemporal_plan(layout) if windows == "spatiotemporal" else spatial_plan(layout)
    mask = map_mask(plan, layout)
    n = n_train + n_val + n_test
    imgs = rng.uniform(0, 1, (n, 3, 2, 2)).astype(np.float32).repeat(SIZE // 2, 2).repeat(SIZE // 2, 3)
    px = (rf * SIZE).astype(int).clip(0, SIZE - 1)
    resp = imgs.mean(1)[:, px[:, 1], px[:, 0]]
    x = (resp[:, None, :] + 0.1 * rng.standard_normal((n, plan.n_maps, c))).astype(np.float32) * mask
    norm = Normaliser.fit(x[:n_train], mask)
    x = norm(x.copy())
    a, b = n_train, n_train + n_val
    ids = np.arange(n)
    return DecodingData(layout, plan, mask, norm, x[:a], imgs[:a], x[a:b], imgs[a:b], x[b:], imgs[b:],
                        ids[:a], ids[a:b], ids[b:], rf, rf, "synthetic")


def tiny_config(**kw) -> TrainConfig:
    base = dict(image_size=SIZE, widths=(8, 16), disc_widths=(8, 16), batch_size=8, epochs=1, w_vgg=0.0,
                num_threads=1, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run (with discriminator) shared by the checkpoint and export tests."""
    torch.set_num_threads(1)
    data = tiny_data()
    out = tmp_path_factory.mktemp("run")
    result = train(data, tiny_config(max_steps=6, val_every=3), out, progress=False)
    return data, result


def test_training_writes_checkpoints_and_history(trained):
    data, result = trained
    assert result.step == 6
    assert result.best.exists() and result.last.exists()
    assert [h["step"] for h in result.history] == [3, 6]
    assert {"val_l1", "val_pixel_corr", "train_l1", "train_adv", "train_d"} <= set(result.history[-1])
    lines = (result.out_dir / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[-1])["step"] == 6


def test_checkpoint_loads_with_weights_only_and_rebuilds_identical_model(trained):
    data, result = trained
    ckpt = torch.load(result.last, map_location="cpu", weights_only=True)  # no pickle of objects
    assert ckpt["format"] == "rtdecode-checkpoint" and ckpt["step"] == 6
    model, config = load_decoder(result.last)
    assert config.widths == (8, 16) and config.image_size == SIZE
    again, _ = load_decoder(result.last)
    x = torch.from_numpy(data.val_x)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).numpy(), again(x).numpy())
    np.testing.assert_allclose(ckpt["norm_mean"].numpy(), data.normaliser.mean)
    assert json.loads(ckpt["plan"])["preset"] == "spatiotemporal"
    assert ckpt["sample_inputs"].shape == (4, *data.mask.shape)


def test_loaded_model_equals_trained_model_outputs(tmp_path):
    data = tiny_data(seed=3)
    result = train(data, tiny_config(max_steps=2, w_adv=0.0), tmp_path, progress=False)
    model, _ = load_decoder(result.last)
    ckpt = load_checkpoint(result.last)
    from rtdecode.training.model import HomeomorphicDecoder

    fresh = HomeomorphicDecoder.from_args(json.loads(ckpt["model_args"]), mask=data.mask)
    fresh.load_state_dict(ckpt["model"])
    fresh.eval()
    x = torch.from_numpy(data.test_x)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), fresh(x).numpy(), atol=1e-7)


def test_resume_continues_at_the_right_step(tmp_path):
    data = tiny_data(seed=1)
    cfg = tiny_config(max_steps=4, val_every=2, w_adv=0.0, lr_decay_from=1.0)
    first = train(data, cfg, tmp_path / "a", progress=False)
    assert load_checkpoint(first.last)["step"] == 4
    cfg2 = resume_config(first.last, max_steps=7)
    assert cfg2.max_steps == 7 and cfg2.widths == cfg.widths
    second = train(data, cfg2, tmp_path / "a", resume=first.last, progress=False)
    assert second.step == 7
    assert [h["step"] for h in second.history] == [2, 4, 6, 7]
    # the same 7 steps in one go give the same weights: resume restores optimiser and batch order
    straight = train(data, tiny_config(max_steps=7, val_every=2, w_adv=0.0, lr_decay_from=1.0), tmp_path / "b",
                     progress=False)
    a, b = load_checkpoint(second.last)["model"], load_checkpoint(straight.last)["model"]
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5, err_msg=k)


def test_ema_weights_are_checkpointed_and_resume_from_raw(tmp_path):
    data = tiny_data(seed=6)
    cfg = tiny_config(max_steps=3, val_every=3, w_adv=0.0, ema=0.9, input_noise=0.2)
    first = train(data, cfg, tmp_path, progress=False)
    ckpt = load_checkpoint(first.last)
    assert ckpt["model_raw"] is not None  # trained weights, for resuming
    differs = [k for k in ckpt["model"] if k.endswith("weight")
               and not torch.equal(ckpt["model"][k], ckpt["model_raw"][k])]
    assert differs  # the averaged weights are not the trained ones
    model, _ = load_decoder(first.last)  # the served model is the average
    np.testing.assert_array_equal(model.state_dict()["generator.head.0.weight"].numpy(),
                                  ckpt["model"]["generator.head.0.weight"].numpy())
    second = train(data, resume_config(first.last, max_steps=5), tmp_path, resume=first.last, progress=False)
    assert second.step == 5


def test_missing_vgg_file_notes_and_training_proceeds(tmp_path):
    data = tiny_data(seed=2)
    result = train(data, tiny_config(max_steps=2, w_vgg=1.0, vgg_weights=None, w_adv=0.0), tmp_path,
                   progress=False)
    assert "VGG19 feature loss is off" in result.note
    assert result.step == 2 and result.best.exists()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    data, result = trained
    out = tmp_path_factory.mktemp("export") / "m.onnx"
    rep = export_checkpoint(result.best, out, real_inputs=data.test_x, progress=False)
    return data, result, out, rep


def test_export_parity_dynamic_batch_and_contract(exported):
    data, result, out, rep = exported
    assert out.exists() and not out.with_name("m.onnx.data").exists()  # one self-contained file
    assert set(rep.max_abs_diff) >= {"random_b1", "random_b3", "real_b1", f"real_b{len(data.test_x)}"}
    assert max(rep.max_abs_diff.values()) <= 1e-4
    contract = read_contract(out)
    assert contract.input_shape == data.mask.shape
    assert contract.frame_shape == (3, SIZE, SIZE)
    assert contract.model_id == rep.model_id and rep.model_id.startswith("homeomorphic-fast-")
    np.testing.assert_allclose(contract.norm_std, data.normaliser.std)
    assert contract.training_config["model_args"]["widths"] == [8, 16]
    assert contract.training_config["config"]["image_size"] == SIZE

    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model, _ = load_decoder(result.best)
    for b in (1, 5):
        x = data.test_x[:b] if b <= len(data.test_x) else np.concatenate([data.test_x] * 2)[:b]
        got = sess.run(["frame"], {"mua": np.ascontiguousarray(x)})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        assert got.shape == (b, 3, SIZE, SIZE)
        assert np.abs(got - want).max() <= 1e-4
    rf = read_rf_metadata(out)
    np.testing.assert_allclose(rf["rf_centres"], model.rf_centres().numpy())
    # the deployed RF buffers are ONNX initializers by name (the torch engine rebuilds from them)
    import onnx

    from rtdecode.training.export import DeployedDecoder

    inits = {i.name for i in onnx.load(str(out)).graph.initializer}
    rf_keys = [k for k in DeployedDecoder(model).state_dict() if not k.startswith("generator.")]
    assert rf_keys and set(rf_keys) <= inits


def test_spatial_windows_deployed_form_equals_model(tmp_path):
    from rtdecode.training.export import DeployedDecoder

    data = tiny_data(seed=4, windows="spatial")
    result = train(data, tiny_config(max_steps=2, w_adv=0.0, windows="spatial"), tmp_path, progress=False)
    model, _ = load_decoder(result.last)
    assert len(model.rf.groups) == 3  # one map per array, each with its own electrodes
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, *data.mask.shape)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(DeployedDecoder(model).eval()(x).numpy(), model(x).numpy(), atol=1e-6)


def test_parity_check_fails_on_a_different_model(exported, tmp_path):
    data, result, out, _rep = exported
    other = train(data, tiny_config(max_steps=1, w_adv=0.0, seed=5), tmp_path / "other", progress=False)
    model, _ = load_decoder(other.last)
    with pytest.raises(ModelError, match="disagrees with torch"):
        check_parity(model, out, real_inputs=data.val_x)


def test_export_rejects_a_non_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"hello": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="not an rtdecode checkpoint"):
        export_checkpoint(bad, tmp_path / "x.onnx", progress=False)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "rtdecode", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.slow
def test_cli_simulate_train_export(tmp_path):
    session = tmp_path / "s.h5"
    VirtualMacaque(seed=0, image_size=32).simulate_session(session, n_images=40, known_rfs=True,
                                                              progress=False)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"preset": "fast", "image_size": 32, "widths": [8, 16, 32],
                               "disc_widths": [8, 16], "num_threads": 1}))
    r = _cli("train", "--data", str(session), "--config", str(cfg), "--max-steps", "3", "--batch-size", "4",
             "--rf-init", "centre", "--w-rf-encode", "1", "--out", str(tmp_path / "run"), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "VGG19 feature loss is off" in r.stdout + r.stderr
    assert (tmp_path / "run" / "best.pt").exists()
    rf = json.loads((tmp_path / "run" / "rf_recovery.json").read_text())  # the session holds its true RFs
    assert set(rf["areas"]) == {"V1", "V4", "IT", "all"} and rf["other_monkey_seed"] == 1
    assert rf["areas"]["V1"]["init_vs_true"] > 25.0  # started at the image centre
    r = _cli("export", str(tmp_path / "run" / "best.pt"), "--out", str(tmp_path / "m.onnx"), "--no-progress",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "parity" in r.stdout
    contract = read_contract(tmp_path / "m.onnx")
    assert contract.input_shape == (15, 960) and contract.image_height == 32
    # the training session (16 s) is too short for input-fit statistics: said, exported without
    assert contract.fit_stats is None and "without input-fit statistics" in r.stderr
    r = _cli("export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "n.onnx"), cwd=tmp_path)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_export_adds_input_fit_statistics_from_a_session(trained, exported, tmp_path):
    data, result = trained
    assert read_contract(exported[2]).fit_stats is None  # no session file behind the synthetic data
    session = tmp_path / "animal.h5"
    VirtualMacaque(data.layout, image_size=16, seed=0).simulate_session(session, n_images=120)
    out = tmp_path / "fit.onnx"
    export_checkpoint(result.best, out, progress=False, fit_data=session)
    stats = read_contract(out).fit_stats
    assert [a.name for a in stats.areas] == ["V1", "V4", "IT"] and stats.info["how"] == "rtdecode export"
    assert all(a.lo < a.heldout["median"] < a.hi for a in stats.areas)
