"""A preallocated, mirrored ring buffer of MUA samples filled in place by the inlet thread.

Memory: float32 samples [2*capacity, C], float64 LSL timestamps, float64 arrival times
(time.monotonic() when the sample's chunk was pulled) and uint8 quality flags per sample.
Every sample is stored twice, at position p and p + capacity (p = absolute index % capacity),
so any run of <= capacity consecutive samples is ONE contiguous view: windows are read
without copying and without np.roll.

Thread-safety: one writer thread and one reader thread, no lock.
- The writer first *claims* the rows it is about to overwrite (`claimed` grows), writes the
  data, flags and timestamps, and only then *publishes* them (`count` grows). Python attribute
  stores of ints are atomic under the GIL, and the stores happen in this order.
- The reader asks for samples [start, start + n) only when start + n <= count (all published),
  reads them through a view, and afterwards calls `intact(start)`: the read was consistent
  iff the writer has not claimed rows that overwrite `start` in the meantime
  (start >= claimed - capacity). A reader that gets False discards what it computed.
Several readers are fine as long as each checks `intact`; several writers are not.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

# Per-sample quality flags (bit mask).
FLAG_NAN = 1  # the sample holds NaN or Inf in at least one channel
FLAG_GAP = 2  # timestamps jump before this sample (dt > 1.5 / fs), or a reconnect happened before it
FLAG_DISORDER = 4  # timestamp earlier than (out of order) or equal to (duplicate) the previous one

FLAG_NAMES = {FLAG_NAN: "nan_samples", FLAG_GAP: "gap", FLAG_DISORDER: "disordered_timestamps"}


class RingBuffer:
    """Mirrored ring of the newest `capacity` samples, addressed by absolute sample index.

    Absolute index 0 is the first sample ever written; `count` is the number written so far,
    so the newest sample is `count - 1` and the oldest still held is `count - capacity`.
    """

    def __init__(self, capacity: int, n_channels: int):
        if int(capacity) < 2:
            raise ConfigError(f"ring buffer capacity must be >= 2 samples, got {capacity}")
        if int(n_channels) < 1:
            raise ConfigError(f"ring buffer needs >= 1 channel, got {n_channels}")
        self.capacity = int(capacity)
        self.n_channels = int(n_channels)
        cap2 = 2 * self.capacity
        self._data = np.zeros((cap2, self.n_channels), dtype=np.float32)
        self._ts = np.zeros(cap2, dtype=np.float64)
        self._arrival = np.zeros(cap2, dtype=np.float64)
        self._flags = np.zeros(cap2, dtype=np.uint8)
        self.count = 0  # published samples (absolute)
        self.claimed = 0  # rows the writer may be overwriting right now (absolute, >= count)

    # ---- writer --------------------------------------------------------------------------
    def write(self, samples: np.ndarray, timestamps: np.ndarray, arrival: float,
              flags: np.ndarray | None = None) -> int:
        """Append samples [n, C] (any float dtype, converted to float32 in place) and publish them.

        Returns the absolute index of the first sample written. n must be <= capacity.
        """
        n = int(samples.shape[0])
        if n == 0:
            return self.count
        if n > self.capacity:
            raise ConfigError(f"chunk of {n} samples does not fit a ring of {self.capacity}")
        if samples.ndim != 2 or samples.shape[1] != self.n_channels:
            raise ConfigError(f"chunk must be [samples, {self.n_channels}], got {samples.shape}")
        start = self.count
        self.claimed = start + n  # claim before touching the rows (see class docstring)
        cap = self.capacity
        p = start % cap
        if n == 1:  # the usual chunk at 1 kHz: element stores, no slices
            row, t = samples[0], timestamps[0]
            f = 0 if flags is None else flags[0]
            for q in (p, p + cap):
                self._data[q] = row
                self._ts[q] = t
                self._arrival[q] = arrival
                self._flags[q] = f
            self.count = start + 1  # publish after the data
            return start
        first = min(n, cap - p)  # rows before the wrap of the lower half
        for lo, hi, src in ((p, p + first, slice(0, first)), (0, n - first, slice(first, n))):
            if hi <= lo:
                continue
            for off in (0, cap):
                self._data[lo + off:hi + off] = samples[src]
                self._ts[lo + off:hi + off] = timestamps[src]
                self._arrival[lo + off:hi + off] = arrival
                if flags is None:
                    self._flags[lo + off:hi + off] = 0
                else:
                    self._flags[lo + off:hi + off] = flags[src]
        self.count = start + n  # publish after the data
        return start

    # ---- reader --------------------------------------------------------------------------
    @property
    def newest(self) -> int:
        """Absolute index of the newest published sample (-1 when empty)."""
        return self.count - 1

    @property
    def oldest(self) -> int:
        """Absolute index of the oldest sample that is safe to read now."""
        return max(0, self.claimed - self.capacity)

    def available(self, start: int, n: int) -> bool:
        """True when samples [start, start + n) are all published and not (being) overwritten."""
        return n <= self.capacity and start >= self.oldest and start + n <= self.count

    def intact(self, start: int) -> bool:
        """After reading from `start`: True when the writer did not overwrite it meanwhile."""
        return start >= self.claimed - self.capacity

    def _pos(self, start: int, n: int) -> int | None:
        if not self.available(start, n):
            return None
        return start % self.capacity

    def window(self, start: int, n: int) -> np.ndarray | None:
        """Contiguous float32 view [n, C] of samples [start, start + n), or None if not available."""
        p = self._pos(start, n)
        return None if p is None else self._data[p:p + n]

    def timestamps(self, start: int, n: int) -> np.ndarray | None:
        """View of the LSL timestamps of samples [start, start + n), or None."""
        p = self._pos(start, n)
        return None if p is None else self._ts[p:p + n]

    def arrivals(self, start: int, n: int) -> np.ndarray | None:
        """View of the monotonic arrival times of samples [start, start + n), or None."""
        p = self._pos(start, n)
        return None if p is None else self._arrival[p:p + n]

    def flags(self, start: int, n: int) -> np.ndarray | None:
        """View of the quality flags of samples [start, start + n), or None."""
        p = self._pos(start, n)
        return None if p is None else self._flags[p:p + n]

    def window_flags(self, start: int, n: int) -> int:
        """OR of the flags that make window [start, start + n) suspect.

        NaN/Inf anywhere counts; a gap or disorder flag counts only after the first sample
        (a window that starts right after a gap holds contiguous samples).
        """
        p = self._pos(start, n)
        if p is None:
            return 0
        f = self._flags
        nan = int(np.bitwise_or.reduce(f[p:p + n])) & FLAG_NAN if n else 0
        rest = int(np.bitwise_or.reduce(f[p + 1:p + n])) if n > 1 else 0
        return nan | (rest & (FLAG_GAP | FLAG_DISORDER))

    def timestamp(self, index: int) -> float:
        """LSL timestamp of one sample (NaN when not held)."""
        if not self.available(index, 1):
            return float("nan")
        return float(self._ts[index % self.capacity])

    def arrival(self, index: int) -> float:
        if not self.available(index, 1):
            return float("nan")
        return float(self._arrival[index % self.capacity])

    def find_time(self, t: float, tolerance: float = 0.0) -> int | None:
        """Absolute index of the first held sample with timestamp >= t - tolerance.

        None when no held sample is that late yet (or the ring is empty). Assumes timestamps
        increase (disordered ones are flagged by the source). When t precedes every held
        sample, the oldest index is returned only if t is within tolerance of it; else -1.
        """
        lo = self.oldest
        n = self.count - lo
        if n <= 0:
            return None
        p = lo % self.capacity
        ts = self._ts[p:p + n]
        k = int(np.searchsorted(ts, t - tolerance, side="left"))
        if k >= n:
            return None
        if k == 0 and ts[0] - t > tolerance:
            return -1
        return lo + k
