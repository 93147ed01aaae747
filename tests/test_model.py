"""The homeomorphic decoder: RF layer maths, gradients, U-Net shapes, config and VGG weight checks."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from rtdecode.errors import ConfigError
from rtdecode.training.config import TrainConfig, load_config, preset
from rtdecode.training.losses import DecoderLoss, ImagePool
from rtdecode.training.model import (
    GaussianRFLayer,
    HomeomorphicDecoder,
    PatchDiscriminator,
    UNetGenerator,
    count_parameters,
)
from rtdecode.training.vgg import expected_shapes, load_vgg


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models: one thread avoids OpenMP spinning against other processes on 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dense_reference(x, centres, sigmas, mask, size):
    """sum_e x_e * exp(-d^2 / 2 s^2), built pixel by pixel in float64."""
    g = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(g, g, indexing="ij")
    b, m, e = x.shape
    out = np.zeros((b, m, size, size))
    for k in range(e):
        d2 = (xx - centres[k, 0]) ** 2 + (yy - centres[k, 1]) ** 2
        gauss = np.exp(-d2 / (2 * sigmas[k] ** 2))
        out += (x[:, :, k] * mask[:, k])[:, :, None, None] * gauss
    return out


def test_rf_layer_equals_dense_reference(rng):
    m, e, size = 3, 7, 12
    mask = rng.random((m, e)) > 0.3
    centres = rng.uniform(0, 1, (e, 2))
    sigmas = rng.uniform(0.05, 0.3, e)
    layer = GaussianRFLayer(mask, size, normalise=False)
    layer.init_rf(centres, sigmas)
    x = rng.standard_normal((2, m, e)).astype(np.float32)
    got = layer(torch.from_numpy(x)).detach().numpy()
    want = _dense_reference(x, centres, sigmas, mask, size)
    assert got.shape == (2, m, size, size)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_rf_layer_normalised_divides_by_density(rng):
    m, e, size = 2, 5, 8
    mask = np.ones((m, e), bool)
    centres = rng.uniform(0, 1, (e, 2))
    sigmas = rng.uniform(0.1, 0.3, e)
    layer = GaussianRFLayer(mask, size, normalise=True, norm_eps=0.5)
    layer.init_rf(centres, sigmas)
    x = rng.standard_normal((1, m, e)).astype(np.float32)
    got = layer(torch.from_numpy(x)).detach().numpy()
    dens = _dense_reference(np.ones((1, m, e)), centres, sigmas, mask, size)
    want = _dense_reference(x, centres, sigmas, mask, size) / (dens + 0.5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_rf_layer_masks_its_input(rng):
    mask = np.array([[True, False], [False, True]])
    layer = GaussianRFLayer(mask, 8, normalise=False)
    x = torch.zeros(1, 2, 2)
    x[0, 0, 1] = 5.0  # outside map 0's group: must not paint
    assert float(layer(x).detach().abs().max()) == 0.0


def test_gradients_reach_centres_and_widths(rng):
    layer = GaussianRFLayer(np.ones((2, 6), bool), 10)
    x = torch.from_numpy(rng.standard_normal((3, 2, 6)).astype(np.float32))
    layer(x).pow(2).sum().backward()
    assert layer.centres.grad is not None and float(layer.centres.grad.abs().sum()) > 0
    assert layer.log_sigma.grad is not None and float(layer.log_sigma.grad.abs().sum()) > 0


def test_init_rf_keeps_spread_where_unknown():
    layer = GaussianRFLayer(np.ones((1, 4), bool), 8)
    before = layer.centres.detach().clone()
    known = np.array([[0.2, 0.3], [np.nan, np.nan], [0.9, 0.1], [np.nan, 0.5]])
    layer.init_rf(known, np.array([0.1, np.nan, 0.2, 0.05]))
    c = layer.centres.detach().numpy()
    np.testing.assert_allclose(c[[0, 2]], known[[0, 2]], atol=1e-6)
    np.testing.assert_allclose(c[[1, 3]], before.numpy()[[1, 3]])
    s = np.exp(layer.log_sigma.detach().numpy())
    assert s[0] == pytest.approx(0.1) and s[2] == pytest.approx(0.2) and s[1] == pytest.approx(0.05)


def test_decoder_shapes_and_range(rng):
    model = HomeomorphicDecoder(15, 40, 32, [8, 16, 32])
    out = model(torch.from_numpy(rng.standard_normal((2, 15, 40)).astype(np.float32)))
    assert out.shape == (2, 3, 32, 32)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert model.rf_centres().shape == (40, 2)
    d = PatchDiscriminator(15 + 3, [8, 16, 32])
    logits = d(model.paint(torch.zeros(2, 15, 40)), out)
    assert logits.shape[0] == 2 and logits.shape[1] == 1


def test_paper_preset_has_about_16_7m_parameters():
    cfg = preset("paper")
    gen = UNetGenerator(15, cfg.widths)
    assert 16.0e6 < count_parameters(gen) < 17.5e6
    assert cfg.image_size == 96 and (cfg.w_adv, cfg.w_vgg, cfg.w_l1) == (0.01, 1.0, 0.5)


def test_training_steps_lower_the_loss(rng):
    torch.manual_seed(0)
    model = HomeomorphicDecoder(3, 10, 16, [8, 16])
    x = torch.from_numpy(rng.standard_normal((8, 3, 10)).astype(np.float32))
    y = torch.from_numpy(rng.uniform(0, 1, (8, 3, 16, 16)).astype(np.float32))
    loss = DecoderLoss(w_adv=0.0, w_vgg=0.0, w_l1=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        total, _parts = loss.generator(model(x), y)
        first = float(total) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert float(loss.generator(model(x), y)[0]) < 0.8 * first


def test_image_pool_returns_batch_of_same_shape():
    pool = ImagePool(3, seed=0)
    for _ in range(5):
        m, f = pool.query(torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8))
        assert m.shape == (2, 4, 8, 8) and f.shape == (2, 3, 8, 8)
    assert len(pool.items) == 3


# ---- config ---------------------------------------------------------------------------------
def test_config_rejects_unknown_keys_naming_them():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"preset": "fast", "learning_rate": 0.1})


def test_config_validates_values():
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="image_size"):
        TrainConfig(image_size=60)  # not a multiple of 2**len(widths)
    with pytest.raises(ConfigError, match="windows"):
        TrainConfig(windows="temporal")
    with pytest.raises(ConfigError, match="preset"):
        preset("huge")


def test_config_json_round_trip(tmp_path):
    cfg = preset("paper").updated(epochs=3, w_adv=0.0)
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    back = TrainConfig.from_file(p)
    assert back == cfg
    assert json.loads(cfg.to_json())["widths"] == [64, 128, 256, 512, 512]


def test_load_config_precedence(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"preset": "fast", "epochs": 7, "w_adv": 0.0}))
    cfg = load_config(p, "paper", epochs=3, lr=None)
    assert cfg.preset == "paper" and cfg.image_size == 96  # --preset is the base
    assert cfg.w_adv == 0.0  # the file overrides the preset
    assert cfg.epochs == 3 and cfg.lr == 2e-4  # options override the file; None keeps
    assert load_config(None, None).preset == "fast"
    p.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_config(p)


# ---- VGG weights ------------------------------------------------------------------------------
def test_vgg_wrong_shape_names_the_tensor(tmp_path):
    sd = {k: torch.zeros(v) for k, v in expected_shapes().items() if k.startswith(("features.0.", "features.2.",
                                                                                  "features.5."))}
    sd["features.5.weight"] = torch.zeros(128, 32, 3, 3)  # expected [128, 64, 3, 3]
    p = tmp_path / "bad_vgg.pth"
    torch.save(sd, p)
    with pytest.raises(ConfigError, match=r"features\.5\.weight.*\[128, 32, 3, 3\].*\[128, 64, 3, 3\]"):
        load_vgg(p)


def test_vgg_missing_tensor_and_missing_file(tmp_path):
    p = tmp_path / "partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, p)
    with pytest.raises(ConfigError, match="features.0.bias"):
        load_vgg(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_vgg(tmp_path / "nope.pth")


@pytest.mark.slow
def test_vgg_loads_a_correct_state_dict_and_gives_a_loss(tmp_path):
    torch.manual_seed(0)
    sd = {k: torch.randn(v) * 0.05 for k, v in expected_shapes().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # extra torchvision tensors are ignored
    p = tmp_path / "vgg19.pth"
    torch.save(sd, p)
    loss = DecoderLoss(w_adv=0.0, w_vgg=1.0, w_l1=0.5, vgg_weights=str(p))
    assert loss.vgg is not None and loss.note == ""
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    total, parts = loss.generator(a, b)
    assert set(parts) == {"l1", "vgg"} and parts["vgg"] > 0
    assert float(loss.generator(a, a)[1]["vgg"]) == 0.0


def test_no_vgg_file_turns_the_term_off_with_a_note(caplog):
    with caplog.at_level(logging.WARNING):
        loss = DecoderLoss(w_adv=0.01, w_vgg=1.0, w_l1=0.5, vgg_weights=None)
    assert loss.vgg is None and loss.w_vgg == 0.0
    assert "VGG19 feature loss is off" in loss.note and "VGG19 feature loss is off" in caplog.text
    total, parts = loss.generator(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    assert set(parts) == {"l1"} and float(total) > 0
