"""RingBuffer: wrap-around, contiguous windows, overwrite detection, timestamps and flags."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.errors import ConfigError
from rtdecode.ringbuffer import FLAG_GAP, FLAG_NAN, RingBuffer


def _fill(ring: RingBuffer, data: np.ndarray, ts: np.ndarray, chunk: int, flags=None) -> None:
    for i in range(0, len(data), chunk):
        ring.write(data[i:i + chunk], ts[i:i + chunk], arrival=float(i),
                   flags=None if flags is None else flags[i:i + chunk])


def test_windows_are_contiguous_views_and_survive_wrap_around(rng):
    cap, c = 10, 3
    ring = RingBuffer(cap, c)
    data = rng.normal(size=(37, c)).astype(np.float32)
    ts = np.arange(37) * 0.001 + 5.0
    _fill(ring, data, ts, chunk=3)
    assert ring.count == 37 and ring.newest == 36 and ring.oldest == 27
    for start in range(27, 37):
        for n in range(1, 37 - start + 1):
            w = ring.window(start, n)
            assert w is not None
            assert w.flags.c_contiguous and np.shares_memory(w, ring._data)
            np.testing.assert_array_equal(w, data[start:start + n])
            np.testing.assert_array_equal(ring.timestamps(start, n), ts[start:start + n])
    full = ring.window(27, cap)  # a whole ring's worth across the wrap point: still one view
    np.testing.assert_array_equal(full, data[27:37])


def test_overwritten_and_future_windows_are_refused(rng):
    ring = RingBuffer(8, 2)
    data = rng.normal(size=(20, 2)).astype(np.float32)
    _fill(ring, data, np.arange(20.0), chunk=4)
    assert ring.window(11, 3) is None  # overwritten (oldest is 12)
    assert ring.window(18, 3) is None  # sample 20 has not arrived
    assert ring.window(12, 9) is None  # longer than the ring
    assert ring.timestamp(5) != ring.timestamp(5)  # NaN for samples no longer held
    start = 12
    w = ring.window(start, 4).copy()
    assert ring.intact(start)
    ring.write(data[:3], np.arange(20.0, 23.0), arrival=0.0)  # overwrites positions of 12..14
    assert not ring.intact(start)
    np.testing.assert_array_equal(w, data[12:16])


def test_claim_precedes_publish(rng):
    """A reader sees the rows being overwritten as gone before the writer touches them."""
    ring = RingBuffer(4, 1)
    ring.write(np.ones((4, 1), np.float32), np.arange(4.0), 0.0)
    ring.claimed = ring.count + 2  # what write() does first
    assert ring.oldest == 2 and ring.window(0, 2) is None and ring.window(2, 2) is not None


def test_flags_gap_counts_only_inside_the_window():
    ring = RingBuffer(16, 1)
    flags = np.zeros(10, np.uint8)
    flags[4] = FLAG_GAP
    flags[8] = FLAG_NAN
    _fill(ring, np.zeros((10, 1), np.float32), np.arange(10.0), chunk=10, flags=flags)
    assert ring.window_flags(0, 4) == 0
    assert ring.window_flags(0, 5) == FLAG_GAP  # spans the gap before sample 4
    assert ring.window_flags(4, 4) == 0  # starts right after the gap: contiguous
    assert ring.window_flags(5, 4) == FLAG_NAN
    assert ring.window_flags(2, 8) == FLAG_GAP | FLAG_NAN


def test_find_time_and_conversion_from_float64():
    ring = RingBuffer(8, 2)
    d64 = np.arange(24, dtype=np.float64).reshape(12, 2) + 0.25
    ring.write(d64[:6], np.arange(6) * 0.01 + 1.0, 0.0)
    ring.write(d64[6:], np.arange(6, 12) * 0.01 + 1.0, 0.0)
    assert ring.window(4, 8).dtype == np.float32
    np.testing.assert_array_equal(ring.window(4, 8), d64[4:].astype(np.float32))
    assert ring.find_time(1.07, tolerance=0.001) == 7
    assert ring.find_time(1.0705, tolerance=0.001) == 7
    assert ring.find_time(1.0705) == 8
    assert ring.find_time(1.5) is None  # not arrived yet
    assert ring.find_time(0.5) == -1  # older than anything held


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="capacity"):
        RingBuffer(1, 4)
    ring = RingBuffer(4, 2)
    with pytest.raises(ConfigError, match="does not fit"):
        ring.write(np.zeros((5, 2), np.float32), np.arange(5.0), 0.0)
    with pytest.raises(ConfigError, match=r"\[samples, 2\]"):
        ring.write(np.zeros((2, 3), np.float32), np.arange(2.0), 0.0)
