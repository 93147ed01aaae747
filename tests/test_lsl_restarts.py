"""Outlet restarts (same source_id) against a real LSL inlet: the source survives every one and
loses no sample that reached the inlet, also when it was not pulling across the restart."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.rig import ChaosOutlet, wait_until
from rtdecode.ringbuffer import FLAG_GAP
from rtdecode.sources.lsl_inlet import LslSource

pytestmark = [pytest.mark.lsl, pytest.mark.timeout(120)]

FS = 1000.0


def _source(name: str, capacity: int = 16384) -> LslSource:
    return LslSource(name, n_channels=4, sampling_rate_hz=FS, capacity=capacity, resolve_timeout_s=10.0,
                     reconnect_timeout_s=30.0, backoff_s=0.05)


def _serials(src: LslSource) -> np.ndarray:
    return src.ring.window(0, src.ring.count)[:, 0].astype(np.int64)


def test_repeated_restarts_never_end_the_source_and_lose_nothing(tmp_path):
    """Restarts, some with no pause at all, each after outlets that come up and vanish within 80 ms
    (a reconnect may find one of those): the source never raises, counts every restart, and holds
    every pushed sample exactly once, in order."""
    with ChaosOutlet(tmp_path, duration_s=6.0, n_channels=4, restart_every_s=0.5,
                     down_s=(0.0, 0.05, 0.0, 0.3), flaps=2, flap_s=0.08) as outlet:
        src = _source(outlet.name).open()
        src.start()
        try:
            done = outlet.wait_done(90)
            wait_until(lambda: src.telemetry.samples >= done["pushed"] or src.error, 30, what="every pushed sample")
            assert src.error is None, src.error
        finally:
            src.stop()
    t = src.telemetry
    assert done["restarts"] >= 2
    assert t.reconnects >= done["restarts"]  # a flapping outlet it reached counts as well
    assert t.samples == done["pushed"]
    got = _serials(src)
    assert np.all(np.diff(got) > 0), "a sample came twice or out of order"
    kinds = [e["kind"] for e in t.incidents]
    assert kinds.count("reconnected") == t.reconnects and kinds.count("lost") >= done["restarts"]
    assert not src.lost


def test_a_stall_across_a_restart_loses_no_queued_sample(tmp_path):
    """The source opened but not pulling while the outlet pushes, restarts and pushes again: the
    samples queued before the restart are all delivered once, in order, then the new outlet's."""
    with ChaosOutlet(tmp_path, duration_s=7.0, n_channels=4, restart_every_s=1.0, down_s=(0.3,)) as outlet:
        src = _source(outlet.name).open()  # connected, nothing pulled
        done = outlet.wait_done(90)
        assert done["restarts"] >= 1
        src.start()
        try:
            wait_until(lambda: src.telemetry.samples >= done["pushed"] or src.error, 30, what="every pushed sample")
            assert src.error is None, src.error
        finally:
            src.stop()
    before = done["generations"][1]["first_serial"]  # the first serial of the restarted outlet
    got = _serials(src)
    assert src.telemetry.samples == done["pushed"]
    assert np.all(np.diff(got) > 0)
    n_before = int((got < before).sum())
    assert n_before > 500 and len(got) > n_before + 100 # the first outlet pushed for ~1 s
    np.testing.assert_array_equal(got[:n_before], np.arange(n_before))
    # the restart shows at least as a gap before the new outlet's first sample (no window spans it)
    assert src.telemetry.gaps >= 1 and src.ring.flags(n_before, 1)[0] & FLAG_GAP
