"""LSL acquisition latency: mne-lsl's StreamLSL vs rtdecode's LslSource on the same stream.

Optional: runs only where mne-lsl is installed (it is never a dependency of rtdecode). Both
clients read one 1024-channel, 1 kHz stream from the same pusher child at the same time; one
poll loop (every ~0.25 ms) checks each client's newest sample and records, whenever it changes,
local_clock() - that sample's LSL timestamp: the time until a consumer of the client could see
it. rtdecode's ring buffer also stamps each chunk's arrival in its inlet thread (exact, no
polling); that series is reported beside the polled one.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
import warnings

import numpy as np

from rtdecode.rig import Pusher
from rtdecode.telemetry import latency_summary


def _ensure_machine_scope_for_mne_lsl() -> None:
    """mne-lsl loads its own liblsl, which reads LSLAPICFG: point it at machine scope if unset."""
    if os.environ.get("LSLAPICFG"):
        return
    from rtdecode.lslconfig import MACHINE_SCOPE_CFG

    fd, path = tempfile.mkstemp(prefix="rtdecode-lsl-", suffix=".cfg")
    with os.fdopen(fd, "w") as f:
        f.write(MACHINE_SCOPE_CFG)
    os.environ["LSLAPICFG"] = path


def run_acquisition_compare(*, quick: bool, progress=print) -> tuple[dict, dict]:
    """The mne-lsl part: (rows of acquisition latency per client, raw series ms)."""
    if importlib.util.find_spec("mne_lsl") is None:
        return {"skipped": "mne-lsl is not installed (optional: pip install mne-lsl)"}, {}
    _ensure_machine_scope_for_mne_lsl()
    import mne_lsl
    from mne_lsl.stream import StreamLSL

    from rtdecode.lslconfig import lsl
    from rtdecode.sources.lsl_inlet import LslSource

    pylsl = lsl()
    duration = 3.0 if quick else 20.0
    fs, n_ch = 1000.0, 1024
    with Pusher.noise(n_channels=n_ch, fs=fs, duration_s=duration + 2.0) as pusher:
        src = LslSource(pusher.name, n_channels=n_ch, sampling_rate_hz=fs, capacity=4096,
                        resolve_timeout_s=20.0)
        src.open()
        src.start()
        mne_stream = StreamLSL(bufsize=2.0, name=pusher.name)
        with warnings.catch_warnings():  # our pusher's stream has no channel description
            warnings.simplefilter("ignore", RuntimeWarning)
            mne_stream.connect(acquisition_delay=0.001, processing_flags=["clocksync"], timeout=20)
        pusher.base(30)
        ring = src.ring
        last_r = -1
        first_r = None
        lat_r: list[float] = []
        lat_m: list[float] = []
        t_end = time.monotonic() + duration
        t_skip = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            newest = ring.newest
            if newest != last_r and newest >= 0:
                now = pylsl.local_clock()
                ts = ring.timestamp(newest)
                if now > t_skip and np.isfinite(ts):
                    lat_r.append((now - ts) * 1e3)
                    first_r = newest if first_r is None else first_r
                last_r = newest
            if mne_stream.n_new_samples:
                _, ts_m = mne_stream.get_data(winsize=1.0 / fs)
                now = pylsl.local_clock()
                if now > t_skip and len(ts_m):
                    lat_m.append((now - float(ts_m[-1])) * 1e3)
            time.sleep(0.00025)
        last_exact = ring.newest
        exact = np.empty(0)
        if first_r is not None:
            n = min(last_exact - first_r + 1, ring.capacity - 8)
            start = last_exact - n + 1
            arr, tss = ring.arrivals(start, n), ring.timestamps(start, n)
            if arr is not None and tss is not None:
                exact = (np.array(arr) - np.array(tss)) * 1e3
        mne_stream.disconnect()
        src.stop()
    rows = [
        {"client": "rtdecode LslSource (polled)", "latency_ms": latency_summary(lat_r)},
        {"client": f"mne-lsl {mne_lsl.__version__} StreamLSL (polled, acquisition_delay 1 ms)",
         "latency_ms": latency_summary(lat_m)},
        {"client": "rtdecode LslSource (inlet-thread arrival stamp, exact)", "latency_ms": latency_summary(exact)},
    ]
    for r in rows:
        s = r["latency_ms"]
        if s.get("count"):
            progress(f"acquisition {r['client']}: p50 {s['p50_ms']:.3f} ms p99 {s['p99_ms']:.3f} ms")
    notes = [f"{n_ch} channels float32 at {fs:g} Hz, one sample per push, {duration:g} s; both clients on "
             "the same stream at the same time, polled every ~0.25 ms by one loop",
             "mne-lsl uses its own bundled liblsl and keeps its buffer with np.roll per chunk"]
    series = {"rtdecode (polled)": np.asarray(lat_r), "mne-lsl (polled)": np.asarray(lat_m),
              "rtdecode (arrival stamp)": exact}
    return {"rows": rows, "notes": notes, "duration_s": duration}, series
