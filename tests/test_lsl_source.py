"""LslSource against real LSL outlets in a child process: resolution, refusal, stream health, reconnect."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.errors import StreamMismatchError, StreamNotFoundError
from rtdecode.rig import Pusher, unique, wait_until
from rtdecode.ringbuffer import FLAG_DISORDER, FLAG_GAP, FLAG_NAN
from rtdecode.sources.lsl_inlet import LslSource

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(90)]

FS = 1000.0


def _source(name: str, n_channels: int = 8, **kw) -> LslSource:
    kw.setdefault("resolve_timeout_s", 10.0)
    return LslSource(name, n_channels=n_channels, sampling_rate_hz=FS, capacity=4096, **kw)


def _run_until_samples(src: LslSource, n: int, timeout: float = 30.0) -> None:
    src.start()
    try:
        wait_until(lambda: src.telemetry.samples >= n or src.error, timeout, what=f"{n} samples")
        if src.error:
            raise src.error
    finally:
        src.stop()


def test_missing_stream_error_lists_the_streams_seen(tmp_path, rng):
    with Pusher(tmp_path, rng.normal(size=(10, 8)), stype="EEG-other") as p:
        query = unique("nosuch")
        with pytest.raises(StreamNotFoundError) as err:
            _source(query, resolve_timeout_s=1.0).open()
        msg = str(err.value)
        assert query in msg and "1 s" in msg
        assert any(p.name in s for s in err.value.seen), err.value.seen
        assert "8 ch" in msg


def test_matches_by_type_as_well_as_name(tmp_path, rng):
    stype = unique("type")
    with Pusher(tmp_path, rng.normal(size=(50, 8)), stype=stype) as p:
        src = _source(stype).open()
        assert src.info["name"] == p.name and src.info["type"] == stype
        src.stop()


@pytest.mark.parametrize("kind", ["channels", "format", "rate"])
def test_mismatched_stream_is_refused_at_start(tmp_path, rng, kind):
    kw = {"channels": {}, "format": {"fmt": "int16"}, "rate": {"nominal_rate": 500.0}}[kind]
    n = 12 if kind == "channels" else 8
    with Pusher(tmp_path, rng.normal(size=(10, n)), **kw) as p:
        with pytest.raises(StreamMismatchError) as err:
            _source(p.name).open()
    msg = str(err.value)
    assert p.name in msg
    want = {"channels": ["12 channels", "expects 8"], "format": ["int16", "float32"], "rate": ["500 Hz", "1000 Hz"]}
    for w in want[kind]:
        assert w in msg, msg


def test_double_stream_is_converted_to_float32(tmp_path, rng):
    data = rng.normal(size=(300, 8))
    with Pusher(tmp_path, data, fmt="double64", chunk=10) as p:
        src = _source(p.name).open()
        assert src.info["converted_from_double"] is True
        _run_until_samples(src, 300)
    np.testing.assert_array_equal(src.ring.window(0, 300), data.astype(np.float32))


def test_gaps_disorder_and_nan_are_counted_and_flagged(tmp_path, rng):
    n = 400
    ts = np.arange(n) / FS
    ts[200:] += 0.010  # 10 ms gap before sample 200 (~10 samples missing)
    ts = np.insert(ts, 300, ts[299])  # sample 300 repeats 299's timestamp (duplicate)
    ts[[350, 351]] = ts[[351, 350]]  # two samples swapped: 351 arrives late (out of order)
    n = len(ts)
    data = rng.normal(size=(n, 8)).astype(np.float32)
    data[100, 3] = np.nan
    data[101, 0] = np.inf
    with Pusher(tmp_path, data, ts, chunk=7) as p:
        src = _source(p.name).open()
        _run_until_samples(src, n)
    t = src.telemetry
    # the swap also opens a 2-sample step before sample 350: counted as a (1-sample) gap
    assert (t.gaps, t.duplicates, t.out_of_order, t.nan_samples) == (2, 1, 1, 2)
    assert 10 <= t.missing_samples <= 12
    flags = src.ring.flags(0, n)
    assert np.flatnonzero(flags & FLAG_GAP).tolist() == [200, 350]
    assert np.flatnonzero(flags & FLAG_DISORDER).tolist() == [300, 351]
    assert np.flatnonzero(flags & FLAG_NAN).tolist() == [100, 101]
    kinds = {(e["kind"], e.get("first_sample"), e.get("stop_sample")) for e in t.events}
    assert ("nan_samples", 100, 102) in kinds and ("gap", 200, 201) in kinds


@pytest.mark.slow
def test_outlet_loss_reconnects_and_counts_the_gap(tmp_path, rng):
    n = 3000
    data = rng.normal(size=(n, 8)).astype(np.float32)
    with Pusher(tmp_path, data, chunk=5, lose_at=800, lose_for_s=0.5) as p:
        src = _source(p.name, backoff_s=0.05, reconnect_timeout_s=20.0).open()
        src.start()
        try:
            wait_until(lambda: p.state().get("done") or src.error, 30, what="pusher to finish")
            pushed = p.state()["pushed"]
            # the chunk in flight when the outlet was destroyed may be lost with it
            wait_until(lambda: src.telemetry.samples >= pushed - 5 or src.error, 10, what="all pushed samples")
            assert src.error is None, src.error
        finally:
            src.stop()
    t = src.telemetry
    assert t.reconnects == 1
    assert t.gaps >= 1 and t.missing_samples > 100  # the outage dropped ~0.5 s of samples
    resumed = p.state()["resumed_at"]
    assert pushed == 800 + (n - resumed)
    assert pushed - 5 <= t.samples <= pushed
    events = {e["kind"]: e for e in [*t.events, *t.incidents]}
    assert {"lost", "reconnected", "gap"} <= set(events)
    # the first sample after the reconnect is flagged, so no window spans the outage
    first_after = events["reconnected"]["sample"]
    assert src.ring.flags(first_after, 1)[0] & FLAG_GAP
    assert not src.ring.flags(first_after + 1, t.samples - first_after - 1).any()


def test_a_stall_longer_than_the_ring_loses_no_sample(tmp_path, rng):
    """The inlet thread not pulling for 2.5 s (a frozen process) with a 0.25 s ring: liblsl's queue
    bridges it and the backlog is drained in order, every sample once, no gap."""
    from rtdecode.lslconfig import lsl

    data = rng.normal(size=(3000, 8)).astype(np.float32)
    with Pusher(tmp_path, data) as p:
        src = LslSource(p.name, n_channels=8, sampling_rate_hz=FS, capacity=256, resolve_timeout_s=10.0).open()
        assert src.inlet_buffer_s >= 60
        base = p.base()
        wait_until(lambda: lsl().local_clock() > base + 2.5, 30, what="2.5 s of pushing while not pulling")
        _run_until_samples(src, len(data))
    t = src.telemetry
    assert t.samples == len(data) and t.gaps == 0 and t.missing_samples == 0
    assert t.out_of_order == 0 and t.duplicates == 0
    ring = src.ring
    np.testing.assert_array_equal(ring.window(ring.count - 200, 200), data[-200:])


def test_duplicate_and_backward_timestamps_are_their_own_events_without_phantom_gaps(tmp_path, rng):
    """A sample stamped like the one before it and one stamped 5 samples back, each in place of its
    own timestamp (the stream is otherwise regular): no gap, no missing sample, two events."""
    n = 600
    ts = np.arange(n) / FS
    ts[200] = ts[199]  # duplicate
    ts[400] = ts[399] - 5 / FS  # backward
    data = rng.normal(size=(n, 8)).astype(np.float32)
    with Pusher(tmp_path, data, ts, chunk=7) as p:
        src = _source(p.name).open()
        _run_until_samples(src, n)
    t = src.telemetry
    assert (t.duplicates, t.out_of_order) == (1, 1)
    assert t.gaps == 0 and t.missing_samples == 0
    kinds = {(e["kind"], e["first_sample"]) for e in t.events}
    assert kinds == {("duplicate", 200), ("backward", 400)}
    assert t.event_counts == {"duplicate": 1, "backward": 1}
    assert np.flatnonzero(src.ring.flags(0, n) & FLAG_DISORDER).tolist() == [200, 400]
    assert not (src.ring.flags(0, n) & FLAG_GAP).any()


@pytest.mark.lsl
@pytest.mark.timeout(60)
def test_arrival_of_samples_queued_before_a_pull_is_told_by_their_timestamps():
    """inlet="loop" pulls only between decodes: a sample that sat in liblsl's queue must not look
    fresh (LslSource.available_since), and the drains must not pass for the stream's chunking."""
    import time

    with Pusher.noise(n_channels=16, duration_s=8.0) as p:
        src = LslSource(p.name, n_channels=16, sampling_rate_hz=1000.0, capacity=4000)
        src.open()
        src.start(thread=False)
        try:
            wait_until(lambda: src.poll(0.05) or src.transport_s is not None, 10, interval=0.0,
                       what="a pull that waited for its sample")
            assert src.chunk_samples < 1.2  # one sample per push, learnt from pulls that waited
            late = []
            for _ in range(40):
                first = src.ring.count
                time.sleep(0.006)  # samples queue in liblsl meanwhile
                src.poll(0.0)
                if src.ring.count - first >= 3:
                    # the first queued sample arrived >= ~4 ms before this pull (1 ms apart)
                    late.append(src.ring.arrival(first) - src.available_since(first))
            assert len(late) >= 20
            assert np.median(late) > 0.003, late
            assert src.chunk_samples < 1.2  # the drains of ~6 samples did not count
        finally:
            src.stop()
