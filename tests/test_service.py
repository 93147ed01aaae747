"""ServeConfig, telemetry, frame encoding, the ORT engine, and DecoderService on real LSL + ZeroMQ."""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys

import numpy as np
import pytest

from rtdecode.config import ServeConfig
from rtdecode.errors import ConfigError, EngineError, StreamMismatchError, StreamNotFoundError
from rtdecode.protocol import FrameSubscriber, encode_frame
from rtdecode.rig import Pusher, ServiceThread, unique, wait_until
from rtdecode.sinks.publisher import FrameEncoder
from rtdecode.telemetry import LatencyHistogram, Telemetry, summary_text
from rtdecode.testing import make_model

FS = 1000.0


# ---- config ------------------------------------------------------------------------------
def test_config_unknown_key_is_named(tmp_path):
    p = tmp_path / "serve.toml"
    p.write_text('stream = "MUA"\nstrid_ms = 5\n')
    with pytest.raises(ConfigError, match="'strid_ms'"):
        ServeConfig.from_file(p)


@pytest.mark.parametrize("key,value,match", [
    ("stride_ms", 0, "stride_ms must be > 0"),
    ("stride_ms", "fast", "stride_ms must be a finite number"),
    ("mode", "burst", "mode must be one of sliding, event"),
    ("frame_dtype", "uint16", "frame_dtype must be one of uint8, float32"),
    ("on_bad_samples", "ignore", "on_bad_samples must be one of skip, flag"),
    ("address", "127.0.0.1:5556", "must start with tcp://"),
    ("threads", 0, "threads must be >= 1"),
    ("max_frames", 2.5, "max_frames must be an integer"),
    ("reconnect", "yes", "reconnect must be true or false"),
    ("lsl_scope", "planet", "lsl_scope must be one of machine, network"),
    ("heartbeat_interval_s", -1, "heartbeat_interval_s must be >= 0"),
    ("sndbuf", -1, "sndbuf must be >= 0"),
    ("inlet", "sideways", "inlet must be one of thread, loop"),
    ("catch_up", "later", "catch_up must be one of fresh, newest"),
    ("busy_poll", "yes", "busy_poll must be true or false"),
    ("pin_cpu", -1, "pin_cpu must be >= 0"),
])
def test_config_bad_values_have_clear_messages(key, value, match):
    with pytest.raises(ConfigError, match=match):
        ServeConfig.from_dict({key: value}, source="test")


def test_event_mode_needs_a_marker_stream():
    with pytest.raises(ConfigError, match="marker_stream"):
        ServeConfig(mode="event")


def test_config_file_then_flags(tmp_path):
    from rtdecode.commands.serve import build_config

    p = tmp_path / "serve.json"
    p.write_text(json.dumps({"serve": {"stream": "A", "stride_ms": 4, "frame_dtype": "float32"}}))
    args = argparse.Namespace(config=str(p), stride_ms=1.0, summary_json=None)
    cfg = build_config(args)
    assert (cfg.stream, cfg.stride_ms, cfg.frame_dtype) == ("A", 1.0, "float32")
    t = tmp_path / "serve.toml"
    t.write_text('stream = "B"\nmax_lag_ms = 50.0\n')
    assert ServeConfig.from_file(t).max_lag_ms == 50.0
    assert not ServeConfig().binds_beyond_loopback
    assert ServeConfig(address="tcp://0.0.0.0:5556").binds_beyond_loopback


def test_serve_help_shows_defaults(capsys):
    from rtdecode.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = capsys.readouterr().out
    assert "(default: 16.0)" in out and "(default: tcp://127.0.0.1:5556)" in out


# ---- telemetry, encoding, engine ---------------------------------------------------------
def test_histogram_percentiles_in_constant_memory(rng):
    h = LatencyHistogram()
    before = h.counts.nbytes
    x = rng.lognormal(mean=math.log(2e-3), sigma=0.5, size=20000)
    for v in x:
        h.record(float(v))
    assert h.counts.nbytes == before and h.count == x.size
    for q in (50, 90, 99):
        assert abs(h.percentile(q) / np.percentile(x, q) - 1) < 0.04
    assert h.max == x.max()
    h.record(-1e-6)  # a clock hiccup lands in the underflow bin, not an exception
    h.record(100.0)
    assert h.counts[0] == 1 and h.counts[-1] == 1


def test_telemetry_summary_and_status_line():
    t = Telemetry()
    t.record_frame({"infer": 0.002, "end_to_end": 0.004})
    t.skip("stale", 3)
    t.skip("gap")
    snap = t.snapshot()
    assert snap["skipped"] == {"stale": 3, "gap": 1} and snap["skipped_total"] == 4
    assert abs(snap["latency_ms"]["infer"]["p50_ms"] - 2.0) < 0.1
    json.dumps(snap)  # plain JSON
    assert "gap 1" in summary_text(snap) and "skipped 4" in t.status_line()


def test_one_quantisation_for_every_frame_consumer(rng):
    """Publisher, dashboard, viewer and exporters share protocol.to_uint8: round half up, as published."""
    from rtdecode.display.viewer import to_uint8 as viewer_uint8
    from rtdecode.protocol import to_uint8

    edges = (np.arange(256, dtype=np.float32) + 0.5) / np.float32(255.0)  # the rounding boundaries
    values = np.concatenate([edges, rng.uniform(-0.2, 1.2, size=3 * 16 * 16 - 256)]).astype(np.float32)
    frame = values.reshape(3, 16, 16)
    hwc = np.moveaxis(frame, 0, -1)
    reference = (np.clip(hwc, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # the wire format's formula
    np.testing.assert_array_equal(encode_frame(frame, "uint8"), reference)
    np.testing.assert_array_equal(FrameEncoder(16, 16).encode(frame), reference)
    np.testing.assert_array_equal(to_uint8(hwc), reference)
    np.testing.assert_array_equal(viewer_uint8(hwc), reference)
    u8 = reference.copy()
    assert to_uint8(u8) is u8  # uint8 passes through


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_frame_encoder_matches_protocol_encoding(rng, dtype):
    frame = rng.uniform(-0.2, 1.2, size=(3, 5, 7)).astype(np.float32)
    enc = FrameEncoder(5, 7, dtype)
    out = enc.encode(frame)
    assert out is enc.out  # preallocated, reused
    np.testing.assert_array_equal(out, encode_frame(frame, dtype))


def test_ort_engine_runs_and_refuses_a_missing_provider(tmp_path, rng):
    import onnxruntime as ort

    from rtdecode.engines import create_engine
    from rtdecode.engines.ort import OrtEngine

    path, contract = make_model(tmp_path / "m.onnx", 16)
    eng = create_engine("onnxruntime", str(path), contract, threads=1)
    x = rng.normal(size=(1, *contract.input_shape)).astype(np.float32)
    y = eng.infer(x)
    assert y is eng.y and y.shape == (1, *contract.frame_shape)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"mua": x})[0]
    np.testing.assert_allclose(y, ref, atol=1e-6)
    assert "CPUExecutionProvider" in eng.describe() and "1 intra-op" in eng.describe()
    with pytest.raises(EngineError, match="CUDAExecutionProvider.*not available|not active"):
        OrtEngine(str(path), contract, providers=("CUDAExecutionProvider", "CPUExecutionProvider"), name="ort-cuda")


# ---- the service on real LSL + ZeroMQ ----------------------------------------------------
def _cfg(model, stream, **kw) -> ServeConfig:
    kw.setdefault("address", "tcp://127.0.0.1:*")
    kw.setdefault("resolve_timeout_s", 10.0)
    kw.setdefault("status_interval_s", 0.0)
    return ServeConfig(stream=stream, model=str(model), **kw)


def _collect(sub: FrameSubscriber, until, timeout: float = 20.0) -> list:
    got = []
    wait_until(lambda: (f := sub.recv(timeout=0.05)) is not None and got.append(f) or until(got), timeout,
               interval=0.0, what="frames")
    return got


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_missing_stream_stops_with_a_clear_error(tmp_path):
    path, _ = make_model(tmp_path / "m.onnx", 16)
    svc = ServiceThread(_cfg(path, unique("absent"), resolve_timeout_s=1.0))
    svc.thread.start()
    with pytest.raises(StreamNotFoundError, match="streams seen"):
        svc.join(timeout=30, stop=False)


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_wrong_channel_count_is_refused_before_decoding(tmp_path, rng):
    path, _ = make_model(tmp_path / "m.onnx", 16)
    with Pusher(tmp_path, rng.normal(size=(100, 20))) as p:
        svc = ServiceThread(_cfg(path, p.name))
        svc.thread.start()
        with pytest.raises(StreamMismatchError, match="20 channels.*expects 16"):
            svc.join(timeout=30, stop=False)
    assert svc.service.telemetry.frames == 0


@pytest.mark.lsl
@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["skip", "flag"])
def test_nan_samples_are_skipped_or_flagged(tmp_path, rng, policy):
    path, contract = make_model(tmp_path / "m.onnx", 16)
    n = 1500
    data = rng.normal(size=(n, 16)).astype(np.float32)
    data[700:705, 2] = np.nan  # every window covering samples 700..704 holds NaN
    with Pusher(tmp_path, data, chunk=4) as p:
        with ServiceThread(_cfg(path, p.name, stride_ms=8, on_bad_samples=policy)) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                got = _collect(sub, lambda g: g and g[-1].header.ref_time > p.base() + 0.9, timeout=30)
            summary = svc.join()
    span = contract.plan.span
    bad = [f for f in got if 700 - span < round((f.header.ref_time - p.base()) * FS) <= 704]
    if policy == "skip":
        assert summary.skipped.get("nan_samples", 0) >= 1
        assert not bad and all(not f.header.flags for f in got)
    else:
        assert "nan_samples" not in summary.skipped
        assert bad and all(f.header.flags == ["nan_samples"] for f in bad)
        assert all(np.isfinite(f.image.astype(np.float32)).all() for f in bad)
    assert summary.telemetry["stream"]["nan_samples"] == 5


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_windows_spanning_a_gap_are_skipped(tmp_path, rng):
    path, contract = make_model(tmp_path / "m.onnx", 16)
    n = 1500
    ts = np.arange(n) / FS
    ts[600:] += 0.05
    with Pusher(tmp_path, rng.normal(size=(n, 16)), ts, chunk=4) as p:
        with ServiceThread(_cfg(path, p.name, stride_ms=8)) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                got = _collect(sub, lambda g: g and g[-1].header.ref_time > p.base() + ts[-400], timeout=30)
            summary = svc.join()
    assert summary.skipped.get("gap", 0) >= 1
    assert summary.telemetry["stream"]["gaps"] == 1
    span = contract.plan.span
    for f in got:  # no published window spans sample 600
        k = int(np.argmin(np.abs(ts + p.base() - f.header.ref_time)))
        assert not (k < 600 < k + span)


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_pin_cpu_and_gc_freeze_hold_only_while_the_service_runs(tmp_path, rng):
    import os

    cpu = max(os.sched_getaffinity(0))
    path, _ = make_model(tmp_path / "m.onnx", 16)
    with Pusher(tmp_path, rng.normal(size=(3000, 16)), chunk=4) as p:
        with ServiceThread(_cfg(path, p.name, stride_ms=8, pin_cpu=cpu)) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                _collect(sub, lambda g: len(g) >= 20)
            assert os.sched_getaffinity(svc.thread.native_id) == {cpu}
            assert gc.get_freeze_count() > 1000  # set-up's objects are out of the collector's full passes
            assert os.sched_getaffinity(svc.service.source._thread.native_id) != {cpu} or os.cpu_count() == 1
            summary = svc.join()
    assert summary.ok and summary.frames >= 20
    assert not gc.get_freeze_count()  # what the run froze (its set-up's objects) is back in the collector's sight
    # a CPU this process may not use is refused with the CPUs it may
    with Pusher(tmp_path, rng.normal(size=(500, 16)), chunk=4) as p:
        svc = ServiceThread(_cfg(path, p.name, pin_cpu=4096))
        svc.thread.start()
        with pytest.raises(ConfigError, match="pin_cpu 4096 is not among the CPUs"):
            svc.join(timeout=30, stop=False)


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_subscriber_that_never_reads_does_not_stall_the_decoder(tmp_path, rng):
    path, _ = make_model(tmp_path / "m.onnx", 16, height=64, width=64)  # 12 KiB frames
    with Pusher(tmp_path, rng.normal(size=(6000, 16)), chunk=2) as p:
        with ServiceThread(_cfg(path, p.name, stride_ms=1, sndhwm=2, max_frames=1500)) as svc:
            with FrameSubscriber(svc.endpoint, rcvhwm=2) as idle:  # connected, never reads
                wait_until(lambda: not svc.thread.is_alive(), 30, what="1500 frames")
                assert idle.sock.poll(0)  # frames did reach it
            summary = svc.join()
    assert summary.frames == 1500 and summary.stop_reason.startswith("max_frames")


@pytest.mark.lsl
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_publishing_resumes_after_the_outlet_comes_back(tmp_path, rng):
    path, contract = make_model(tmp_path / "m.onnx", 16)
    n = 3000
    with Pusher(tmp_path, rng.normal(size=(n, 16)), chunk=4, lose_at=1000, lose_for_s=0.5) as p:
        with ServiceThread(_cfg(path, p.name, stride_ms=8, reconnect_backoff_s=0.05)) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                got = _collect(sub, lambda g: g and p.state().get("resumed_at")
                               and g[-1].header.ref_time > p.base() + (p.state()["resumed_at"] + 300) / FS,
                               timeout=40)
            summary = svc.join()
    stream = summary.telemetry["stream"]
    assert stream["reconnects"] == 1 and stream["gaps"] >= 1 and stream["missing_samples"] > 100
    resumed_t = p.base() + p.state()["resumed_at"] / FS
    after = [f for f in got if f.header.ref_time >= resumed_t - 1e-4]
    before = [f for f in got if f.header.ref_time < resumed_t - 0.4]
    assert before and after
    seqs = [f.header.seq for f in got]
    assert seqs == sorted(seqs)


def _stale_fraction(frames: list) -> float:
    """Of consecutive frames, how many used a newest sample that arrived before the previous
    frame's inference ended (i.e. during the previous decode)."""
    pairs = [(a.header.stages, b.header.stages) for a, b in zip(frames, frames[1:], strict=False)
             if b.header.seq == a.header.seq + 1]
    assert len(pairs) >= 50
    return sum(b["pulled"] < a["inferred"] for a, b in pairs) / len(pairs)


@pytest.mark.lsl
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_catch_up_fresh_waits_for_the_next_sample_when_the_newest_is_stale():
    """Decoding slower than the stride: 'newest' decodes the window whose last sample arrived
    during the previous decode; 'fresh' waits for the next sample when that one is stale (the
    inlet thread stamps each sample's arrival; for inlet="loop" see test_lsl_source)."""
    from rtdecode.benchmarks.inference import demo_model_path, engine_runner, time_calls
    from rtdecode.contract import read_contract

    demo = demo_model_path()
    if demo is None:
        pytest.skip("no bundled demo model")
    run, _ = engine_runner("onnxruntime", demo, read_contract(demo))
    if time_calls(run, n=20, warmup=3).summary()["p50_ms"] < 2.0:
        pytest.skip("the demo model decodes in under 2 ms here: never behind a 1-ms stride")
    stale = {}
    for policy in ("newest", "fresh"):
        with Pusher.noise(duration_s=10.0) as p:
            with ServiceThread(_cfg(demo, p.name, stride_ms=1, catch_up=policy, max_frames=400)) as svc:
                with FrameSubscriber(svc.endpoint) as sub:
                    got = _collect(sub, lambda g: len(g) >= 200, timeout=60)
                svc.join(timeout=60)
        stale[policy] = _stale_fraction(got[20:])
    # newest: most frames end at a sample that arrived during the previous inference (not all:
    # one may come between that inference's end and the loop's next look); fresh: far fewer
    assert stale["newest"] > 0.6, stale
    assert stale["fresh"] < min(0.5, stale["newest"] - 0.3), stale


@pytest.mark.lsl
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_busy_poll_serves_fresh_windows_and_needs_the_loop_inlet():
    """inlet=loop with busy_poll: the loop spins for the completing sample; the catch-up still
    decodes the next sample's window after a late decode (the newest sample's LSL timestamp is
    its push time on this machine's clock, the stages' clock)."""
    from rtdecode.benchmarks.inference import demo_model_path

    with pytest.raises(ConfigError, match="busy_poll needs inlet 'loop'"):
        ServeConfig(busy_poll=True)
    demo = demo_model_path()
    if demo is None:
        pytest.skip("no bundled demo model")
    stale = {}
    for policy in ("newest", "fresh"):
        with Pusher.noise(duration_s=10.0) as p:
            cfg = _cfg(demo, p.name, stride_ms=1, inlet="loop", busy_poll=True, catch_up=policy, max_frames=300)
            with ServiceThread(cfg) as svc:
                with FrameSubscriber(svc.endpoint) as sub:
                    got = _collect(sub, lambda g: len(g) >= 150, timeout=60)
                svc.join(timeout=60)
                if policy == "fresh":  # it waits after every late decode: learnt from the spins' pulls
                    assert svc.service.source.transport_s is not None
        pairs = [(a.header, b.header) for a, b in zip(got[20:], got[21:], strict=False)
                 if b.header.seq == a.header.seq + 1]
        assert len(pairs) >= 50
        stale[policy] = sum(b.newest_ts < a.stages["inferred"] for a, b in pairs) / len(pairs)
    # newest: most frames end at a sample pushed during the previous inference (not all: one may
    # come between that inference's end and the loop's next pull); fresh: far fewer
    assert stale["newest"] > 0.6 and stale["fresh"] < min(0.6, stale["newest"] - 0.25), stale


@pytest.mark.lsl
@pytest.mark.timeout(90)
def test_1024_channel_stream_at_1khz(tmp_path, rng):
    path, contract = make_model(tmp_path / "m1024.onnx", 1024)
    with Pusher(tmp_path, rng.normal(size=(2000, 1024)).astype(np.float32), chunk=1) as p:
        with ServiceThread(_cfg(path, p.name, stride_ms=16, max_frames=40)) as svc:
            with FrameSubscriber(svc.endpoint) as sub:
                got = _collect(sub, lambda g: len(g) >= 20, timeout=40)
            summary = svc.join(timeout=40, stop=False)
    assert summary.frames == 40 and not summary.skipped.get("gap")
    assert summary.telemetry["stream"]["reconnects"] == 0 and summary.telemetry["stream"]["gaps"] == 0
    h = got[-1].header
    assert h.shape == (8, 8, 3) and h.newest_ts > h.ref_time
    st = h.stages
    assert st["pulled"] <= st["started"] <= st["assembled"] <= st["normalised"] <= st["inferred"] <= st["published"]


@pytest.mark.lsl
@pytest.mark.timeout(60)
@pytest.mark.parametrize("raise_env", ["1", "0"])
def test_lost_outlet_without_reconnect_stops_or_raises(tmp_path, rng, monkeypatch, raise_env):
    from rtdecode.errors import StreamLostError

    monkeypatch.setenv("RTDECODE_RAISE_IN_THREADS", raise_env)
    path, _ = make_model(tmp_path / "m.onnx", 16)
    with Pusher(tmp_path, rng.normal(size=(3000, 16)), chunk=4, lose_at=600, lose_for_s=5.0) as p:
        svc = ServiceThread(_cfg(path, p.name, reconnect=False)).start()
        wait_until(lambda: not svc.thread.is_alive(), 30, what="the service to stop after the loss")
        if raise_env == "1":
            with pytest.raises(StreamLostError, match="reconnect is off") as info:
                svc.join(stop=False)
            if sys.version_info >= (3, 11):  # the thread's context travels with the error
                assert info.value.__notes__ == [f"(in background thread 'lsl-inlet-{p.name}', "
                                                f"while reading stream {p.name!r})"]
            return
        summary = svc.join(stop=False)
    assert summary.stop_reason == "source failed" and "StreamLostError" in summary.error
    assert summary.error.startswith(f"thread 'lsl-inlet-{p.name}' failed while reading stream {p.name!r}: ")
    assert summary.frames > 0 and summary.telemetry["stream"]["reconnects"] == 0


@pytest.mark.lsl
@pytest.mark.timeout(90)
@pytest.mark.parametrize("raise_env", ["0", "1"])
def test_a_failed_recorder_thread_surfaces_in_the_service(tmp_path, rng, monkeypatch, raise_env):
    """The recorder's writer thread fails on its 3rd chunk: the service drops the recorder and keeps
    publishing (the sink failure and its context in the events), or re-raises it under the switch.
    A Dashboard fed by the service (a Sink, no subscriber) keeps getting frames and telemetry."""
    from rtdecode.sinks.dashboard import Dashboard
    from rtdecode.sinks.recorder import FrameRecorder

    monkeypatch.setenv("RTDECODE_RAISE_IN_THREADS", raise_env)

    def on_chunk(info):
        if info.index == 2:
            raise RuntimeError("archive refused chunk 2")

    path, _ = make_model(tmp_path / "m.onnx", 16)
    recorder = FrameRecorder(tmp_path / "rec", chunk_frames=1, on_chunk=on_chunk)
    dash = Dashboard(None)
    with Pusher(tmp_path, rng.normal(size=(6000, 16)), chunk=4) as p:
        svc = ServiceThread(_cfg(path, p.name, stride_ms=8, status_interval_s=0.2), sinks=[recorder, dash]).start()
        try:
            wait_until(lambda: recorder.failure is not None, 30, what="the recorder's writer to fail")
            if raise_env == "1":
                wait_until(lambda: not svc.thread.is_alive(), 30, what="the service to stop")
                with pytest.raises(RuntimeError, match="archive refused chunk 2"):
                    svc.join(stop=False)
                tel = svc.service.telemetry
                assert tel.frames >= 3 and [e["kind"] for e in tel.events].count("sink_failed") == 1
                return
            frames_then = dash.frames
            wait_until(lambda: dash.frames >= frames_then + 20 and "telemetry" in dash.stats(), 30,
                       what="frames (and telemetry) after the recorder failed")
            summary = svc.join()
        finally:
            svc.service.stop("test finished")
            svc.thread.join(30)
            dash.close()
    assert summary.ok and summary.frames >= dash.frames > frames_then
    dropped = [e for e in summary.telemetry["events"] if e["kind"] == "sink_failed"]
    assert len(dropped) == 1 and dropped[0]["error"] == "RuntimeError: archive refused chunk 2"
    assert dropped[0]["sink"] == repr(recorder)
    if sys.version_info >= (3, 11):
        assert dropped[0]["context"] == "(in background thread 'rtdecode-recorder', while reporting chunk 2 to on_chunk)"
    assert svc.service.sinks == [dash] and recorder.written >= 3
    stats = dash.stats()
    assert stats["telemetry"]["frames"] > 0 and stats["receiver_failed"] is None


def test_the_service_types_its_sinks():
    """Publisher, recorder and dashboard are Sinks; the exporter reads telemetry and is not; the
    service refuses a sink that lacks a method, naming it."""
    from rtdecode.service import DecoderService
    from rtdecode.sinks import Sink
    from rtdecode.sinks.dashboard import Dashboard
    from rtdecode.sinks.prometheus import PrometheusExporter
    from rtdecode.sinks.publisher import FramePublisher
    from rtdecode.sinks.recorder import FrameRecorder

    assert all(issubclass(cls, Sink) for cls in (FramePublisher, FrameRecorder, Dashboard))
    assert not issubclass(PrometheusExporter, Sink)

    class FramesOnly:
        def write(self, header, image): ...

        def close(self): ...

    cfg = ServeConfig(stream="x", model="m.onnx")
    with pytest.raises(ConfigError, match="lacks write_telemetry; a sink needs write, write_telemetry, close"):
        DecoderService(cfg, sinks=[FramesOnly()])


@pytest.mark.lsl
@pytest.mark.slow
@pytest.mark.timeout(90)
def test_serve_command_stops_cleanly_on_sigterm_and_records(tmp_path, rng):
    import os
    import signal
    import subprocess
    import sys

    path, contract = make_model(tmp_path / "m.onnx", 16)
    summary_file = tmp_path / "summary.json"
    rec = tmp_path / "rec"
    with Pusher(tmp_path, rng.normal(size=(20000, 16)), chunk=4) as p:
        addr = f"ipc://{tmp_path}/frames"
        proc = subprocess.Popen([sys.executable, "-m", "rtdecode", "serve", "--stream", p.name, "--model", str(path),
                                 "--address", addr, "--status-interval", "0.5", "--record", str(rec),
                                 "--summary-json", str(summary_file)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            with FrameSubscriber(addr) as sub:
                assert sub.recv(timeout=40) is not None
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = out.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "stopped: signal SIGTERM" in text and "latency (ms)" in text
    summary = json.loads(summary_file.read_text())
    assert summary["frames"] > 0 and summary["config"]["stream"] == p.name and summary["error"] is None
    assert summary["telemetry"]["latency_ms"]["end_to_end"]["p99_ms"] > 0
    assert any(rec.iterdir())
    # the recording carries the model's id and contract (frames --export-nwb archives them)
    meta = json.loads((rec / "recording.json").read_text())["meta"]
    assert meta["model_id"] == contract.model_id and meta["contract"] == contract.to_metadata()


def test_engine_options_from_file_and_flags(tmp_path):
    """--engine-opt values (JSON-parsed) merge over the config file's engine_options."""
    from rtdecode.commands.serve import build_config

    p = tmp_path / "serve.toml"
    p.write_text('engine = "tensorrt"\n[engine_options]\nengine_path = "m.engine"\ncuda_graph = false\n')
    args = argparse.Namespace(config=str(p), summary_json=None,
                              engine_opt=["cuda_graph=true", "cache_dir=trt cache"])
    cfg = build_config(args)
    assert cfg.engine_options == {"engine_path": "m.engine", "cuda_graph": True, "cache_dir": "trt cache"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        build_config(argparse.Namespace(config=None, summary_json=None, engine_opt=["fp16"]))
    with pytest.raises(ConfigError, match="engine_options"):
        ServeConfig(engine_options={"not an identifier": 1})


def test_unknown_engine_option_is_named(tmp_path):
    from rtdecode.engines import create_engine

    path, contract = make_model(tmp_path / "m.onnx")
    with pytest.raises(EngineError, match="colour_depth"):
        create_engine("onnxruntime", str(path), contract, colour_depth=8)
