"""A messy LSL outlet for the rig: odd chunks, NaN bursts, bad timestamps and restarts.

`ChaosOutlet` is a child process pushing a [C]-channel stream at `fs` whose channel 0 holds
each sample's serial number (float32, exact below 2**24), so a consumer can tell which samples
it got, and how often. Samples are pushed as an amplifier does, everything due by now, but in
jittered chunk sizes (1..`max_chunk`) at jittered intervals; optionally

- NaN bursts (channels 1.. NaN for `nan_len` samples, `nan_every_s` apart),
- duplicated (same timestamp as the previous sample) and backward (5 samples earlier)
  timestamps, `bad_ts_every_s` apart, alternating,
- restarts: every `restart_every_s` the outlet is destroyed (after `flush_s`, so the samples
  pushed reach the consumer), nothing is pushed for the next of `down_s` (cycled), and a new
  outlet with the same name and source_id is created (after `flaps` outlets that come up and
  vanish again within `flap_s`, pushing nothing: a device that does not come up at once). It
  waits up to `wait_consumer_s` for a
  consumer before pushing again (samples due meanwhile are never produced, as with a device
  that is off), so every pushed sample had a consumer: the consumer must get all of them.

State: `pushed` (total), `restarts`, `generations` ([{up, first_serial, first_ts, consumer_s}]:
up = the child's pylsl.local_clock() when the outlet was created), `nan`, `duplicate`,
`backward` (how many samples of each kind were pushed), `done`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .child import ChildLink, ChildProcess, unique


class ChaosOutlet(ChildProcess):
    """The messy outlet child (see the module docstring); `duration_s` of stream, then `done`."""

    def __init__(self, work_dir: str | Path | None = None, *, duration_s: float = 10.0, n_channels: int = 8,
                 fs: float = 1000.0, name: str | None = None, restart_every_s: float | None = None,
                 down_s: tuple[float, ...] = (0.0, 0.05, 0.3, 1.0), max_chunk: int = 37,
                 nan_every_s: float | None = None, nan_len: int = 20, bad_ts_every_s: float | None = None,
                 flush_s: float = 0.2, wait_consumer_s: float = 20.0, seed: int = 0, linger_s: float = 30.0,
                 flaps: int = 0, flap_s: float = 0.03):
        self.name = name or unique("chaos")
        spec = {"name": self.name, "source_id": f"src-{self.name}", "duration_s": float(duration_s),
                "n_channels": int(n_channels), "fs": float(fs), "restart_every_s": restart_every_s,
                "down_s": [float(d) for d in down_s], "max_chunk": int(max_chunk), "nan_every_s": nan_every_s,
                "nan_len": int(nan_len), "bad_ts_every_s": bad_ts_every_s, "flush_s": float(flush_s),
                "wait_consumer_s": float(wait_consumer_s), "seed": int(seed), "linger_s": float(linger_s),
                "flaps": int(flaps), "flap_s": float(flap_s)}
        folder = None if work_dir is None else Path(work_dir) / unique("chaos")
        super().__init__(_chaos, {"spec": spec}, role="chaos-outlet", work_dir=folder, start_timeout=30.0,
                         stop_timeout=5.0)
        self.spec = spec

    def wait_done(self, timeout: float) -> dict:
        return self.wait_for("done", timeout, what="the chaos outlet to finish")


def _chaos(link: ChildLink, spec: dict) -> None:
    from ..lslconfig import lsl

    pylsl = lsl()
    rng = np.random.default_rng(spec["seed"])
    fs, C = spec["fs"], spec["n_channels"]

    def make_outlet():
        info = pylsl.StreamInfo(spec["name"], "MUA", C, fs, pylsl.cf_float32, spec["source_id"])
        return pylsl.StreamOutlet(info, chunk_size=1, max_buffered=60)

    outlet = make_outlet()
    up = pylsl.local_clock()
    link.mark_ready(outlet=True)
    if not outlet.wait_for_consumers(spec["wait_consumer_s"]):
        link.put(error=f"no consumer for stream {spec['name']!r} within {spec['wait_consumer_s']} s")
        return
    t0 = pylsl.local_clock()
    gens = [{"up": up, "first_serial": 0, "first_ts": t0, "consumer_s": t0 - up}]
    counts = {"pushed": 0, "nan": 0, "duplicate": 0, "backward": 0, "restarts": 0}
    k = 0  # serial (and schedule index: sample k is due at t0 + k / fs)
    last_ts = -np.inf
    next_restart = t0 + spec["restart_every_s"] if spec["restart_every_s"] else np.inf
    next_nan = t0 + spec["nan_every_s"] if spec["nan_every_s"] else np.inf
    next_bad = t0 + spec["bad_ts_every_s"] if spec["bad_ts_every_s"] else np.inf
    nan_left, bad_kind, next_put = 0, 0, t0
    end = t0 + spec["duration_s"]
    link.put(**counts, generations=gens)
    while not link.stop.is_set():
        now = pylsl.local_clock()
        if now >= end:
            break
        if now >= next_restart:
            time.sleep(spec["flush_s"])  # let what was pushed reach the consumer
            del outlet
            time.sleep(spec["down_s"][counts["restarts"] % len(spec["down_s"])])
            for _ in range(spec["flaps"]):  # a device coming up and going away again before it stays
                flap = make_outlet()
                time.sleep(spec["flap_s"])
                del flap
                time.sleep(spec["flap_s"])
            outlet = make_outlet()
            up = pylsl.local_clock()
            outlet.wait_for_consumers(spec["wait_consumer_s"])
            now = pylsl.local_clock()
            k = max(k, int(np.ceil((now - t0) * fs)))  # samples due while it was off never existed
            counts["restarts"] += 1
            gens.append({"up": up, "first_serial": k, "first_ts": t0 + k / fs, "consumer_s": now - up})
            next_restart = now + spec["restart_every_s"]
            last_ts = -np.inf  # a bad timestamp relative to another outlet's would be no clear duplicate
            link.put(**counts, generations=gens)
            continue
        due = min(int((now - t0) * fs) + 1, int((end - t0) * fs))
        while k < due:
            n = min(due - k, int(rng.integers(1, spec["max_chunk"] + 1)))
            rows = np.zeros((n, C), dtype=np.float32)
            rows[:, 1:] = rng.standard_normal((n, C - 1)).astype(np.float32) if C > 1 else 0
            rows[:, 0] = np.arange(k, k + n, dtype=np.float32)
            ts = t0 + np.arange(k, k + n) / fs
            if now >= next_nan:
                nan_left, next_nan = spec["nan_len"], now + spec["nan_every_s"]
            if nan_left and C > 1:
                m = min(nan_left, n)
                rows[:m, 1:] = np.nan
                nan_left -= m
                counts["nan"] += m
            if now >= next_bad and np.isfinite(last_ts):
                if bad_kind == 0:
                    ts[0] = last_ts
                    counts["duplicate"] += 1
                else:
                    ts[0] = last_ts - 5.0 / fs
                    counts["backward"] += 1
                bad_kind ^= 1
                next_bad = now + spec["bad_ts_every_s"]
            outlet.push_chunk(rows, timestamp=ts.tolist())
            last_ts = float(ts[-1])
            k += n
            counts["pushed"] += n
        if now >= next_put:
            link.put(**counts)
            next_put = now + 0.5
        time.sleep(float(rng.uniform(0.001, 0.008)))
    time.sleep(spec["flush_s"])
    link.put(**counts, generations=gens, done=True)
    link.stop.wait(spec["linger_s"])  # keep the outlet open so the consumer drains the last chunk
