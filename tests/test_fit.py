"""Input-fit monitor (rtdecode.fit): the statistic, its storage in the model, and a real serve over LSL."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rtdecode.config import ServeConfig
from rtdecode.contract import read_contract
from rtdecode.fit import INPUT_FIT_KEY, MISFIT_FLAG, FitMonitor, compute_fit_stats, sliding_windows
from rtdecode.onnx_io import set_input_fit
from rtdecode.protocol import FrameSubscriber
from rtdecode.rig import Pusher, ServiceThread, wait_until
from rtdecode.sim import VirtualMacaque
from rtdecode.sinks.prometheus import render_metrics
from rtdecode.testing import make_model

N_CH = 64
FIT = {"k": 4, "segment_s": 10.0, "block": 40, "margin": 2.0}  # 64 channels: noisier blocks than 960


def _mua(layout, seed: int, n_images: int, image_seed: int) -> np.ndarray:
    vm = VirtualMacaque(layout, image_size=16, seed=seed)
    return np.concatenate([b.mua for b in vm.recording(n_images=n_images, image_seed=image_seed).blocks()])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A small decoder with input-fit statistics from 80 s of virtual monkey 0 (10 held-out blocks)."""
    path, contract = make_model(tmp_path_factory.mktemp("fit") / "m.onnx", N_CH)
    stats = compute_fit_stats(_mua(contract.layout, 0, 200, image_seed=1), contract, **FIT)
    set_input_fit(path, stats)
    return path, read_contract(path)


def test_statistic_separates_the_right_monkey_from_other_inputs(fitted):
    _, c = fitted
    stats = c.fit_stats
    right = _mua(c.layout, 0, 30, image_seed=2)  # new images, same monkey
    conds = {"right": right, "other monkey": _mua(c.layout, 7, 30, image_seed=2), "scaled": right * 1.5}
    flat = right.copy()
    flat[:, np.asarray(c.layout.areas) == "V4"] = right.mean(0)[np.asarray(c.layout.areas) == "V4"]
    conds["V4 flat"] = flat
    lo = np.array([a.lo for a in stats.areas])
    hi = np.array([a.hi for a in stats.areas])
    out = {}
    for name, mua in conds.items():
        b = stats.block_scores(sliding_windows(mua, c, stats.stride, start=500))
        out[name] = ((b < lo) | (b > hi)).any(axis=1).mean()
    assert out["right"] == 0.0
    assert out["other monkey"] == 1.0 and out["scaled"] == 1.0 and out["V4 flat"] == 1.0


def test_statistics_travel_in_the_model_and_leave_the_weights_alone(fitted, tmp_path):
    import onnx

    path, c = fitted
    plain, _ = make_model(tmp_path / "plain.onnx", N_CH)
    assert read_contract(plain).fit_stats is None  # older models: no statistics, no error
    out = set_input_fit(plain, c.fit_stats, tmp_path / "with.onnx")
    a, b = onnx.load(str(plain)), onnx.load(str(out))
    assert a.graph.SerializeToString() == b.graph.SerializeToString()
    assert [p.key for p in b.metadata_props if p.key not in {q.key for q in a.metadata_props}] == [INPUT_FIT_KEY]
    got = read_contract(out)
    assert got.model_id == c.model_id
    for x, y in zip(got.fit_stats.areas, c.fit_stats.areas, strict=True):
        assert x.name == y.name and (x.lo, x.hi) == (y.lo, y.hi)
        np.testing.assert_array_equal(x.basis, y.basis)
    assert got.describe()["input_fit"]["areas"].keys() == {"V1", "V4", "IT"}


def test_monitor_scores_one_window_per_stride_and_recovers(fitted, caplog):
    _, c = fitted
    stats = c.fit_stats
    good = sliding_windows(_mua(c.layout, 0, 8, image_seed=3), c, 1, start=500)  # every sample
    for a in stats.areas:  # the online score (no allocation) is the offline one
        np.testing.assert_allclose([a.score(w.reshape(-1)) for w in good[:5]], a.scores(good[:5]), rtol=1e-5)
    mon = FitMonitor(stats)
    for ref in range(stats.stride * stats.block):  # one block's worth of stream, every sample decoded
        mon.observe(ref, good[ref])
    assert mon.blocks == 1 and not mon.misfit
    with caplog.at_level(logging.WARNING, logger="rtdecode.fit"):
        for i in range(stats.block):
            mon.observe(10_000 + i * stats.stride, good[i * stats.stride] * 2.0)
        assert mon.misfit and "does not fit" in caplog.text
        for i in range(stats.block):
            mon.observe(20_000 + i * stats.stride, good[i * stats.stride])
        assert not mon.misfit and "fits the model's training data again" in caplog.text
    assert (mon.blocks, mon.misfit_blocks) == (3, 1)


def _serve(path, mua, tmp_path, seconds: float):
    cfg = ServeConfig(stream="x", model=str(path), address="tcp://127.0.0.1:*", stride_ms=16,
                      status_interval_s=0.5, resolve_timeout_s=10.0)
    n = int(seconds * 1000)
    with Pusher(tmp_path, mua[500:500 + n], chunk=8) as p:  # after the session's 0.5-s baseline
        with ServiceThread(cfg.override({"stream": p.name})) as svc:
            frames = []
            with FrameSubscriber(svc.endpoint) as sub:
                def done() -> bool:
                    f = sub.recv(timeout=0.05)
                    if f is not None:
                        frames.append(f)
                    return bool(frames) and frames[-1].header.newest_ts > p.base() + (n - 20) / 1000.0
                wait_until(done, seconds + 20, interval=0.0, what="the stream's frames")
            summary = svc.join()
    return summary, frames, render_metrics(svc.service.telemetry)


@pytest.mark.lsl
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_serve_warns_for_another_monkey_within_seconds_and_not_for_the_right_one(fitted, tmp_path, caplog):
    path, c = fitted
    caplog.set_level(logging.INFO)
    summary, frames, metrics = _serve(path, _mua(c.layout, 0, 20, image_seed=4), tmp_path, 6.0)
    fit = summary.telemetry["input_fit"]
    assert fit["state"] == "ok" and fit["blocks"] >= 2 and fit["misfit_blocks"] == 0, fit
    assert not any(MISFIT_FLAG in f.header.flags for f in frames)
    assert "does not fit" not in caplog.text and "fit ok" in caplog.text  # the status line
    assert "rtdecode_input_misfit 0" in metrics and 'rtdecode_input_fit_score{area="V4"}' in metrics

    caplog.clear()
    summary, frames, metrics = _serve(path, _mua(c.layout, 7, 20, image_seed=4), tmp_path, 6.0)
    fit = summary.telemetry["input_fit"]
    assert fit["state"] == "misfit" and fit["misfit_blocks"] == fit["blocks"] >= 2
    assert "input does not fit the model's training data" in caplog.text and "fit MISFIT" in caplog.text
    assert "rtdecode_input_misfit 1" in metrics
    first = frames[0].header.newest_ts
    flagged = [f.header.newest_ts - first for f in frames if MISFIT_FLAG in f.header.flags]
    assert flagged and min(flagged) < 2.5  # one 2-s block of stream after the first frame
    assert all(MISFIT_FLAG in f.header.flags for f in frames if f.header.newest_ts - first > min(flagged))


def test_models_without_statistics_serve_unmonitored_and_say_so_once(fitted, tmp_path):
    from rtdecode.fit import monitor_for
    from rtdecode.telemetry import Telemetry

    plain, contract = make_model(tmp_path / "plain.onnx", N_CH)
    said, tel = [], Telemetry()
    assert monitor_for(read_contract(plain), tel, "sliding", said.append) is None
    assert len(said) == 1 and "not monitored" in said[0] and "fit-stats" in said[0]
    assert tel.input_fit["state"] == "off" and "fit" not in tel.status_line()
    said.clear()
    assert monitor_for(fitted[1], tel, "event", said.append) is None and "sliding windows" in said[0]
    assert isinstance(monitor_for(fitted[1], tel, "sliding", said.append), FitMonitor)
    assert tel.input_fit["state"] == "warming up" and "fit warming up" in tel.status_line()


def test_fit_stats_command_adds_statistics_to_an_existing_model(tmp_path, capsys):
    from rtdecode.cli import main

    plain, contract = make_model(tmp_path / "plain.onnx", N_CH)
    session = tmp_path / "animal.h5"
    VirtualMacaque(contract.layout, image_size=16, seed=0).simulate_session(session, n_images=110)
    assert main(["fit-stats", str(plain), "--data", str(session), "--out", str(tmp_path / "fit.onnx"), "--k", "4"]) == 0
    assert "model id test-lin-64 unchanged" in capsys.readouterr().out
    stats = read_contract(tmp_path / "fit.onnx").fit_stats
    assert stats.info["how"] == "rtdecode fit-stats" and stats.areas[0].basis.shape[1] == 4
    assert read_contract(plain).fit_stats is None  # --out leaves the original alone
    other, _ = make_model(tmp_path / "other.onnx", 32)
    assert main(["fit-stats", str(other), "--data", str(session)]) == 1  # another channel count: refused
    assert "animal.h5:/mua has 64 channels but the layout 'test-32' has 32" in capsys.readouterr().err
