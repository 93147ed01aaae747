"""RF learning: init options, the RF encoding loss, the RF report, and RFs learned from an uninformative start."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rtdecode.errors import ConfigError  # noqa: E402
from rtdecode.sim import VirtualMacaque  # noqa: E402
from rtdecode.sim.stimuli import dead_leaves  # noqa: E402
from rtdecode.testing import make_layout  # noqa: E402
from rtdecode.training.config import TrainConfig  # noqa: E402
from rtdecode.training.data import DecodingData  # noqa: E402
from rtdecode.training.model import spread_centres  # noqa: E402
from rtdecode.training.rf_learning import RFEncodingHead, initial_rfs  # noqa: E402
from rtdecode.training.rf_report import other_monkey_centres, rf_report  # noqa: E402
from rtdecode.training.train import build_model, train  # noqa: E402
from rtdecode.windows import Normaliser, map_mask, spatiotemporal_plan  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def macaque_data(n_images: int = 240, size: int = 32, n_channels: int = 64, seed: int = 0,
                 noise: float = 0.3) -> DecodingData:
    """A small virtual macaque (make_layout: V1, V1, V4, IT arrays) seeing dead-leaves images.

    Every window map carries the electrode's image drive (the simulator's RF model) plus noise,
    without the time course: enough to learn RFs from, and fast.
    """
    layout = make_layout(n_channels)
    vm = VirtualMacaque(layout, image_size=size, seed=seed)
    images = dead_leaves(n_images, size, seed)
    drive = vm.drive(images)[:, layout.used_channels]
    plan = spatiotemporal_plan(layout)
    mask = map_mask(plan, layout)
    rng = np.random.default_rng(seed)
    x = ((drive[:, None, :] + noise * rng.standard_normal((n_images, plan.n_maps, drive.shape[1]))) * mask)
    x = x.astype(np.float32)
    y = (images.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()
    n_val = n_images // 10
    a = n_images - 2 * n_val
    norm = Normaliser.fit(x[:a], mask)
    x = norm(x.copy())
    ids = np.arange(n_images)
    true = vm.ground_truth()["rf_centres"][layout.used_channels]
    return DecodingData(layout, plan, mask, norm, x[:a], y[:a], x[a:a + n_val], y[a:a + n_val], x[a + n_val:],
                        y[a + n_val:], ids[:a], ids[a:a + n_val], ids[a + n_val:], true, None, "virtual macaque")


def tiny_config(**kw) -> TrainConfig:
    base = dict(image_size=32, widths=(8, 16), batch_size=8, w_adv=0.0, w_vgg=0.0, w_l1=1.0, lr=5e-4,
                num_threads=1, log_every=50)
    base.update(kw)
    return TrainConfig(**base)


# ---- where the RFs start ---------------------------------------------------------------------
def test_rf_inits_place_rfs_as_documented():
    areas = np.array(["V1", "V1", "V4", "IT"], dtype=object)
    known = np.array([[0.2, 0.3], [np.nan, np.nan], [0.9, 0.1], [0.4, 0.6]])
    known_s = np.array([0.03, np.nan, np.nan, 0.3])
    per_area = {"V1": 0.04, "V4": 0.1, "IT": 0.25}
    c, s = initial_rfs("centre", 4, areas, known_centres=known, known_sigmas=known_s, sigma_per_area=per_area,
                       broad_sigma=0.3)
    np.testing.assert_array_equal(c, np.full((4, 2), 0.5))  # the mapped RFs are ignored
    np.testing.assert_array_equal(s, np.full(4, 0.3))
    c, s = initial_rfs("grid", 4, areas, known_centres=known, sigma_per_area=per_area, broad_sigma=0.2)
    np.testing.assert_allclose(c, spread_centres(4).numpy(), atol=1e-7)
    np.testing.assert_array_equal(s, np.full(4, 0.2))
    c, s = initial_rfs("mapped", 4, areas, known_centres=known, known_sigmas=known_s, sigma_per_area=per_area)
    np.testing.assert_allclose(c[[0, 2, 3]], known[[0, 2, 3]])
    np.testing.assert_allclose(c[1], spread_centres(4).numpy()[1], atol=1e-7)  # unknown: the grid
    np.testing.assert_allclose(s, [0.03, 0.04, 0.1, 0.3])  # known widths win over the area's
    with pytest.raises(ValueError, match="middle"):
        initial_rfs("middle", 4, areas)


def test_grid_init_covers_the_image():
    c, _ = initial_rfs("grid", 100, np.array(["V1"] * 100, dtype=object))
    assert c.min() < 0.1 and c.max() > 0.9
    assert np.linalg.norm(c - 0.5, axis=1).std() > 0.1


def test_build_model_starts_where_the_config_says():
    data = macaque_data(n_images=20, size=16, n_channels=32)
    model = build_model(data, tiny_config(image_size=16, rf_init="centre", rf_init_sigma=0.3))
    np.testing.assert_allclose(model.rf_centres().numpy(), 0.5)
    np.testing.assert_allclose(model.rf_sigmas().numpy(), 0.3, rtol=1e-6)


def test_config_checks_the_rf_keys():
    for bad in ({"rf_init": "middle"}, {"rf_init_sigma": 0.0}, {"w_rf_encode": -1.0}, {"rf_hold_steps": -1}):
        key = next(iter(bad))
        with pytest.raises(ConfigError, match=key):
            TrainConfig(**bad)


# ---- the RF encoding loss --------------------------------------------------------------------
def test_encoding_loss_is_lowest_with_the_true_rfs():
    """With the encoding weights fitted, the true RFs explain the responses better than shifted ones."""
    from rtdecode.training.model import GaussianRFLayer

    data = macaque_data(n_images=200, size=32, n_channels=32, noise=0.1)
    x, y = torch.as_tensor(data.train_x), torch.as_tensor(data.train_y)
    losses = {}
    for shift in (0.0, 0.15):
        rf = GaussianRFLayer(data.mask, 32)
        rf.init_rf(np.clip(data.rf_true + shift, 0, 1), np.full(data.n_electrodes, 0.06))
        head = RFEncodingHead(data.mask)
        opt = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(150):
            loss = head.loss(rf, x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            losses[shift] = float(head.loss(rf, x, y))
    assert losses[0.0] < 0.9 * losses[0.15], losses


def test_encoding_loss_reaches_centres_and_widths():
    from rtdecode.training.model import GaussianRFLayer

    data = macaque_data(n_images=16, size=16, n_channels=32)
    rf = GaussianRFLayer(data.mask, 16)
    head = RFEncodingHead(data.mask)
    torch.nn.init.normal_(head.weight)
    head.loss(rf, torch.as_tensor(data.train_x), torch.as_tensor(data.train_y)).backward()
    assert float(rf.centres.grad.abs().sum()) > 0 and float(rf.log_sigma.grad.abs().sum()) > 0


# ---- the report ------------------------------------------------------------------------------
def test_other_monkey_is_another_seed_and_the_report_compares_against_it():
    layout = make_layout(64)
    used = layout.used_channels
    true = VirtualMacaque(layout, image_size=8, seed=1).ground_truth()["rf_centres"][used]
    other, seed = other_monkey_centres(layout, true)
    assert seed == 2  # seed 1 reproduces the session's RFs: skipped
    assert 0.0 < np.median(np.linalg.norm(other - true, axis=1)) < 0.1  # same grid, other jitter
    areas = layout.electrode_areas()
    init = np.full_like(true, 0.5)
    rep = rf_report(init, true + 0.001, true, areas, 64, other, seed)
    v1 = rep["areas"]["V1"]
    assert v1["init_vs_true"] > 10 and v1["learned_vs_true"] == pytest.approx(0.1414, abs=1e-3)
    assert v1["closer_than_other"] and v1["beats_copy"]
    rep = rf_report(init, other, true, areas, 64, other, seed)  # "learned" = the other monkey's RFs
    assert not rep["areas"]["all"]["closer_than_other"] and rep["areas"]["all"]["learned_vs_other"] == 0.0


# ---- RFs learned from an uninformative start -------------------------------------------------
def test_training_moves_rfs_from_the_centre_towards_the_truth(tmp_path):
    """From all RFs at the image centre, the RF encoding loss brings V1 and V4 centres near their true
    RFs within a few hundred steps (the median error falls below a fifth of the start's; without the encoding loss it does not)."""
    data = macaque_data()
    cfg = tiny_config(rf_init="centre", w_rf_encode=1.0, rf_lr_scale=20.0, rf_hold_steps=20, max_steps=300,
                      val_every=150, seed=0)
    result = train(data, cfg, tmp_path, progress=False)
    rep = result.rf_recovery
    assert rep is not None and json.loads((tmp_path / "rf_recovery.json").read_text()) == rep
    for area in ("V1", "V4"):
        row = rep["areas"][area]
        assert row["init_vs_true"] > 25.0  # the centre is far from most RFs
        assert row["learned_vs_true"] < 0.2 * row["init_vs_true"], (area, row)
        assert row["learned_vs_true"] < row["learned_vs_other"], (area, row)
    assert "rf_err_V1" in result.history[-1]
