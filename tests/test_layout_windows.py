"""Layouts, window plans, the assembler and the normaliser on seeded synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtdecode.errors import ConfigError, LayoutError
from rtdecode.layout import ElectrodeLayout, load_layout, tvsd_monkey_f, tvsd_monkey_n
from rtdecode.windows import (
    Normaliser,
    WindowAssembler,
    make_plan,
    map_mask,
    spatial_plan,
    spatiotemporal_plan,
)


def test_monkey_n_layout_matches_tvsd():
    lay = tvsd_monkey_n()
    assert lay.n_channels == 1024
    assert lay.n_electrodes == 1024 - 64  # array 6 broken
    assert lay.areas[0] == "V1" and lay.areas[511] == "V1" and lay.areas[512] == "V4"
    assert lay.areas[767] == "V4" and lay.areas[768] == "IT"
    assert not lay.usable[5 * 64: 6 * 64].any()
    assert lay.arrays_present() == (1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)


def test_monkey_f_layout_area_order():
    lay = tvsd_monkey_f()
    assert lay.areas[511] == "V1" and lay.areas[512] == "IT" and lay.areas[831] == "IT"
    assert lay.areas[832] == "V4" and lay.areas[1023] == "V4"
    assert lay.n_electrodes == 1024


def test_layout_json_roundtrip_keeps_everything(tmp_path):
    lay = tvsd_monkey_n()
    rf = np.random.default_rng(0).uniform(0, 1, (1024, 2))
    rf[3] = np.nan
    lay = lay.with_rf(rf)
    p = tmp_path / "lay.json"
    p.write_text(lay.to_json())
    back = load_layout(p)
    assert back.areas == lay.areas
    np.testing.assert_array_equal(back.usable, lay.usable)
    np.testing.assert_allclose(back.rf_centres, lay.rf_centres, equal_nan=True)
    assert back.broken_arrays == (6,)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"arrays": [{"id": 1, "area": "V2", "channels": [[0, 3]]}]}, "V2"),
        ({"n_channels": 8, "arrays": [{"id": 1, "area": "V1", "channels": [[0, 3]]}]}, "belong to no array"),
        ({"arrays": [{"id": 1, "area": "V1", "channels": [[0, 3]]}, {"id": 2, "area": "V4", "channels": [3]}]},
         "two arrays"),
        ({"arrays": [{"id": 1, "area": "V1"}]}, "'channels'"),
        ({"arrays": [{"id": 1, "area": "V1", "channels": [0]}], "colour": 1}, "colour"),
    ],
)
def test_bad_layouts_name_the_problem(bad, message):
    with pytest.raises(LayoutError, match=message):
        ElectrodeLayout.from_dict(bad)


def test_spatiotemporal_plan_is_the_papers():
    plan = spatiotemporal_plan(tvsd_monkey_n())
    assert plan.n_maps == 15
    v1 = [plan.samples(m) for m in plan.maps if m.group == "area:V1"]
    assert v1 == [(0, 27), (26, 53), (52, 79), (78, 105), (104, 131)]
    it = [plan.samples(m) for m in plan.maps if m.group == "area:IT"]
    assert it[0] == (66, 93)
    assert plan.span == 66 + 4 * 26 + 27 == 197


def test_spatial_plan_one_map_per_array():
    plan = spatial_plan(tvsd_monkey_n())
    assert plan.n_maps == 15  # 7 V1 + 4 V4 + 4 IT arrays
    assert plan.span == 66 + 133


def test_assembler_means_each_window_over_its_group(rng):
    lay = tvsd_monkey_n()
    plan = make_plan("spatiotemporal", lay)
    asm = WindowAssembler(plan, lay)
    block = rng.normal(size=(plan.span + 5, lay.n_channels)).astype(np.float32)
    x = asm.assemble(block)
    used = lay.used_channels
    mask = map_mask(plan, lay)
    for i, m in enumerate(plan.maps):
        s0, s1 = plan.samples(m)
        want = block[s0:s1, used].mean(axis=0) * mask[i]
        np.testing.assert_allclose(x[i], want, rtol=1e-5, atol=1e-6)
    # electrodes of other areas are exactly zero
    assert np.all(x[0][~mask[0]] == 0)


def test_assemble_many_equals_single_calls(rng):
    lay = tvsd_monkey_n()
    asm = WindowAssembler(make_plan("spatial", lay), lay)
    mua = rng.normal(size=(1000, 1024)).astype(np.float32)
    refs = np.array([0, 100, 1000 - asm.span])
    many = asm.assemble_many(mua, refs)
    for j, t in enumerate(refs):
        np.testing.assert_array_equal(many[j], asm.assemble(mua[t:t + asm.span]))
    with pytest.raises(ConfigError, match="needs samples up to"):
        asm.assemble_many(mua, np.array([1000 - asm.span + 1]))


@pytest.mark.parametrize("preset", ["spatiotemporal", "spatial"])
@pytest.mark.parametrize("monkey", [tvsd_monkey_n, tvsd_monkey_f])
def test_assembler_fast_path_equals_per_map_reference(rng, preset, monkey):
    """Bitwise the values of the straightforward per-map sum -> gather -> scale (finite samples)."""
    lay = monkey()
    plan = make_plan(preset, lay)
    asm = WindowAssembler(plan, lay)
    block = (rng.normal(size=(plan.span, lay.n_channels)) * 3 + 1).astype(np.float32)
    mask = map_mask(plan, lay).astype(np.float32)
    want = np.empty(asm.shape, dtype=np.float32)
    for i, m in enumerate(plan.maps):
        s0, s1 = plan.samples(m)
        summed = np.add.reduce(block[s0:s1], axis=0)[lay.used_channels]
        want[i] = summed * (mask[i] * np.float32(1.0 / (s1 - s0)))
    out = np.full(asm.shape, np.nan, dtype=np.float32)  # every entry must be written
    np.testing.assert_array_equal(asm.assemble(block, out=out), want)


@pytest.mark.parametrize("preset", ["spatiotemporal", "spatial"])
def test_assemble_ready_as_samples_arrive_equals_assemble(rng, preset):
    lay = tvsd_monkey_n()
    plan = make_plan(preset, lay)
    asm = WindowAssembler(plan, lay)
    block = rng.normal(size=(plan.span, lay.n_channels)).astype(np.float32)
    block[5, 3] = np.nan  # NaN handling is the same too
    want = asm.assemble(block)
    out = np.full(asm.shape, -7.0, dtype=np.float32)
    done = 0
    for avail in range(0, plan.span + 1, 7):  # samples arriving in chunks
        done = asm.assemble_ready(block[:avail], out, done)
        assert done == sum(s <= avail for s in asm.ready_stops)
    done = asm.assemble_ready(block, out, done)
    assert done == plan.n_maps
    np.testing.assert_array_equal(out, want)
    assert sorted(asm.ready_order) == list(range(plan.n_maps))


def test_assembler_rejects_wrong_channel_count():
    lay = tvsd_monkey_n()
    asm = WindowAssembler(make_plan("spatiotemporal", lay), lay)
    with pytest.raises(ConfigError, match="1024"):
        asm.assemble(np.zeros((asm.span, 1000), dtype=np.float32))


def test_normaliser_zscores_and_keeps_masked_zero(rng):
    lay = tvsd_monkey_n()
    plan = make_plan("spatiotemporal", lay)
    mask = map_mask(plan, lay)
    maps = (rng.normal(3.0, 2.0, size=(200,) + mask.shape) * mask).astype(np.float32)
    norm = Normaliser.fit(maps, mask)
    z = norm(maps.copy())
    assert abs(float(z[:, mask].mean())) < 1e-4
    assert abs(float(z[:, mask].std()) - 1.0) < 1e-3
    assert np.all(z[:, ~mask] == 0)


def test_plan_json_roundtrip():
    plan = make_plan("spatiotemporal", tvsd_monkey_n())
    from rtdecode.windows import WindowPlan

    assert WindowPlan.from_dict(json.loads(plan.to_json())) == plan
