"""The LSL pusher of the rig: a child process pushing [T, C] samples on a timestamp schedule.

The data and timestamps travel as .npy files; the child creates a real LSL outlet (and
optionally a marker outlet), waits for a consumer, then pushes sample i at
base + ts_rel[i], where base is the child's pylsl.local_clock() when the consumer connected plus
`lead_s` (in the state as `base`, see `Pusher.base()`). Either

- on a schedule (the tests): `chunk` samples per push, each push when its last sample is due; or
- as an amplifier does (`catch_up=True`, the benchmarks): every sample due by now in one push,
  `data` cycled to `n_samples` at `fs` (`Pusher.noise`).

Optional: another channel format, marker strings at sample indices, losing the outlet at a
sample index for a while (samples due during the outage are dropped, like a real device). The
child records each sample's push lateness (ms), read back with `late_ms()`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .child import ChildLink, ChildProcess, unique

FORMATS = ("float32", "double64", "int16", "int32")


class Pusher(ChildProcess):
    """The pusher child. `data` [T, C]; `ts_rel` float64 [T] seconds (default i / fs)."""

    def __init__(self, work_dir: str | Path | None, data: np.ndarray, ts_rel: np.ndarray | None = None, *,
                 name: str | None = None, stype: str = "MUA", fs: float = 1000.0, chunk: int = 1,
                 fmt: str = "float32", source_id: str | None = None, nominal_rate: float | None = None,
                 markers: list[tuple[int, str]] | None = None, marker_name: str | None = None,
                 lose_at: int | None = None, lose_for_s: float = 0.5, linger_s: float = 30.0,
                 wait_consumer_s: float = 30.0, lead_s: float = 0.05, catch_up: bool = False,
                 n_samples: int | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"pusher fmt must be one of {FORMATS}, got {fmt!r}")
        if n_samples is not None and ts_rel is not None:
            raise ValueError("give the pusher ts_rel or n_samples (data cycled at fs), not both")
        self.name = name or unique("mua")
        folder = None if work_dir is None else Path(work_dir) / unique("push")
        data = np.ascontiguousarray(data, dtype=np.float64 if fmt == "double64" else np.float32)
        n_total = len(data) if n_samples is None else int(n_samples)
        if ts_rel is None:
            ts_rel = np.arange(n_total) / fs
        spec = {"name": self.name, "type": stype, "rate": fs if nominal_rate is None else nominal_rate,
                "chunk": int(chunk), "fmt": fmt, "source_id": source_id if source_id is not None else self.name,
                "markers": [[int(i), str(t)] for i, t in (markers or [])], "marker_name": marker_name,
                "lose_at": lose_at, "lose_for_s": lose_for_s, "linger_s": linger_s,
                "wait_consumer_s": wait_consumer_s, "lead_s": lead_s, "catch_up": bool(catch_up)}
        super().__init__(_push, {"spec": spec}, role="pusher", work_dir=folder, start_timeout=30.0, stop_timeout=5.0)
        np.save(self.dir / "data.npy", data, allow_pickle=False)
        np.save(self.dir / "ts.npy", np.asarray(ts_rel, dtype=np.float64), allow_pickle=False)
        self.spec = spec
        self._late_ms: np.ndarray | None = None

    @classmethod
    def noise(cls, *, n_channels: int = 1024, fs: float = 1000.0, duration_s: float = 10.0, seed: int = 0,
              name: str | None = None, wait_consumer_s: float = 20.0, work_dir: str | Path | None = None) -> Pusher:
        """An amplifier-like stream for the benchmarks: 2 s of seeded noise cycled for `duration_s`,
        one sample per push when on time, everything due at once when late."""
        block = cls.noise_block(n_channels=n_channels, fs=fs, seed=seed)
        name = name or unique("bench-mua")
        return cls(work_dir, block, name=name, source_id=f"src-{name}", fs=fs, chunk=1,
                   n_samples=int(duration_s * fs), catch_up=True, lead_s=0.01, linger_s=1.0,
                   wait_consumer_s=wait_consumer_s)

    @staticmethod
    def noise_block(*, n_channels: int = 1024, fs: float = 1000.0, seed: int = 0) -> np.ndarray:
        """The 2 s of float32 noise `noise` cycles: sample i of its stream is block[i % len(block)]."""
        return (np.random.default_rng(seed).standard_normal((int(fs * 2), n_channels)) * 0.5 + 1.0).astype(np.float32)

    def base(self, timeout: float = 30.0) -> float:
        """LSL time of ts_rel = 0 (known once a consumer connected)."""
        return float(self.wait_for("base", timeout, what="the pusher's base time")["base"])

    def wait_done(self, timeout: float = 60.0) -> dict:
        """The state once every sample was pushed (`pushed`: how many)."""
        return self.wait_for("done", timeout, what="the pusher to finish")

    def late_ms(self) -> np.ndarray:
        """Per pushed sample: push time - due time (ms); NaN for samples lost in an outage."""
        if self._late_ms is None:
            path = self.dir / "late_ms.npy"
            if not path.exists():
                return np.empty(0, dtype=np.float32)
            self._late_ms = np.load(path, allow_pickle=False)
        return self._late_ms

    def _collect(self) -> None:
        self.late_ms()


def _push(link: ChildLink, spec: dict) -> None:
    from ..lslconfig import lsl

    pylsl = lsl()
    data = np.load(Path(link.dir) / "data.npy", allow_pickle=False)
    ts_rel = np.load(Path(link.dir) / "ts.npy", allow_pickle=False)
    fmt = {"float32": pylsl.cf_float32, "double64": pylsl.cf_double64, "int16": pylsl.cf_int16,
           "int32": pylsl.cf_int32}[spec["fmt"]]
    if spec["fmt"] in ("int16", "int32"):
        data = data.astype(np.int16 if spec["fmt"] == "int16" else np.int32)

    def make_outlet():
        info = pylsl.StreamInfo(spec["name"], spec["type"], data.shape[1], spec["rate"], fmt, spec["source_id"])
        return pylsl.StreamOutlet(info, chunk_size=spec["chunk"], max_buffered=60)

    outlet = make_outlet()
    moutlet = None
    if spec["marker_name"]:
        minfo = pylsl.StreamInfo(spec["marker_name"], "Markers", 1, 0.0, pylsl.cf_string, spec["marker_name"])
        moutlet = pylsl.StreamOutlet(minfo)
    link.mark_ready(outlet=True)
    if not outlet.wait_for_consumers(spec["wait_consumer_s"]):
        link.put(error=f"no consumer for stream {spec['name']!r} within {spec['wait_consumer_s']} s")
        return
    if moutlet is not None:
        moutlet.wait_for_consumers(spec["wait_consumer_s"])
    base = pylsl.local_clock() + spec["lead_s"]
    link.put(base=base)
    markers: dict[int, list[str]] = {}
    for idx, text in spec["markers"]:
        markers.setdefault(int(idx), []).append(text)
    T, n_total = len(data), len(ts_rel)
    late = np.full(n_total, np.nan, dtype=np.float32)
    chunk, lose_at, catch_up = spec["chunk"], spec["lose_at"], spec["catch_up"]
    i, pushed = 0, 0
    while i < n_total and not link.stop.is_set():
        if lose_at is not None and i >= lose_at:
            del outlet
            time.sleep(spec["lose_for_s"])
            outlet = make_outlet()
            link.put(relaunched=True)
            outlet.wait_for_consumers(spec["wait_consumer_s"])
            now_rel = pylsl.local_clock() - base
            i = int(np.searchsorted(ts_rel, now_rel))  # samples due during the outage are lost
            lose_at = None
            link.put(resumed_at=i)
            continue
        end = n_total if lose_at is None else min(n_total, lose_at)
        if catch_up:  # everything due by now, in one push
            now = pylsl.local_clock()
            j = min(int(np.searchsorted(ts_rel, now - base, side="right")), end)
            if j <= i:
                time.sleep(max(0.0, base + ts_rel[i] - now))
                continue
        else:  # `chunk` samples, pushed when the last of them is due
            j = min(end, i + chunk)
            delay = base + ts_rel[j - 1] - pylsl.local_clock()
            if delay > 0:
                time.sleep(delay)
        rows = data[i:j] if j <= T else data[np.arange(i, j) % T]
        stamps = base + ts_rel[i:j]
        if catch_up and j - i == 1:
            outlet.push_sample(rows[0], float(stamps[0]))
        else:
            outlet.push_chunk(np.ascontiguousarray(rows), timestamp=stamps.tolist())
        late[i:j] = (pylsl.local_clock() - stamps) * 1e3
        if moutlet is not None:
            for k in range(i, j):
                for text in markers.get(k, ()):
                    moutlet.push_sample([text], base + ts_rel[k])
        pushed += j - i
        i = j
    link.save("late_ms", late[:i])
    link.put(done=True, pushed=pushed)
    link.stop.wait(spec["linger_s"])  # keep the outlet open so the consumer drains the last chunk
