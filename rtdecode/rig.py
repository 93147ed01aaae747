"""The loopback rig: an LSL pusher in a CHILD process, the service in a thread, deadline waits.

The pusher is this module run as a script (`python -m rtdecode.rig SPEC.json`): the spec is
JSON and the data are .npy files (loaded with allow_pickle=False), so nothing is pickled. It
creates a real LSL outlet (and optionally a marker outlet), waits for a consumer, then pushes
[T, C] samples in real time with the timestamps base + ts_rel, where base is the child's
pylsl.local_clock() when the consumer connected (written to the state file, see
`Pusher.base()`). Optional: a different channel format, losing the outlet at a sample index for
a while (samples due during the outage are dropped, like a real device).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np


def unique(prefix: str = "rtd") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(pred, timeout: float, interval: float = 0.01, what: str = "condition"):
    """Deadline loop: return pred()'s truthy value, or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---- the pusher (parent side) ------------------------------------------------------------
class Pusher:
    """Context manager running the child pusher. `data` float [T, C]; `ts_rel` float64 [T] seconds."""

    def __init__(self, tmp_path: Path, data: np.ndarray, ts_rel: np.ndarray | None = None, *,
                 name: str | None = None, stype: str = "MUA", fs: float = 1000.0, chunk: int = 1,
                 fmt: str = "float32", source_id: str | None = None, nominal_rate: float | None = None,
                 markers: list[tuple[int, str]] | None = None, marker_name: str | None = None,
                 lose_at: int | None = None, lose_for_s: float = 0.5, linger_s: float = 30.0,
                 wait_consumer_s: float = 30.0, lead_s: float = 0.05):
        self.name = name or unique("mua")
        self.dir = Path(tmp_path) / unique("push")
        self.dir.mkdir(parents=True)
        data = np.ascontiguousarray(data, dtype=np.float64 if fmt == "double64" else np.float32)
        if ts_rel is None:
            ts_rel = np.arange(len(data)) / fs
        np.save(self.dir / "data.npy", data, allow_pickle=False)
        np.save(self.dir / "ts.npy", np.asarray(ts_rel, dtype=np.float64), allow_pickle=False)
        self.state_file = self.dir / "state.json"
        self.spec = {"name": self.name, "type": stype, "fs": fs, "rate": fs if nominal_rate is None else nominal_rate,
                     "chunk": int(chunk), "fmt": fmt, "source_id": source_id if source_id is not None else self.name,
                     "data": str(self.dir / "data.npy"), "ts": str(self.dir / "ts.npy"),
                     "markers": markers or [], "marker_name": marker_name,
                     "lose_at": lose_at, "lose_for_s": lose_for_s, "linger_s": linger_s,
                     "wait_consumer_s": wait_consumer_s, "lead_s": lead_s, "state": str(self.state_file)}
        (self.dir / "spec.json").write_text(json.dumps(self.spec))
        self.proc: subprocess.Popen | None = None

    def start(self) -> Pusher:
        self.proc = subprocess.Popen([sys.executable, "-m", "rtdecode.rig", str(self.dir / "spec.json")],
                                     env=dict(os.environ), stderr=subprocess.PIPE)
        wait_until(lambda: self.state().get("outlet") or self.proc.poll() is not None, 30, what="pusher outlet")
        if self.proc.poll() is not None:
            raise RuntimeError(f"pusher exited early: {self.proc.stderr.read().decode()[-2000:]}")
        return self

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def base(self, timeout: float = 30.0) -> float:
        """LSL time of ts_rel = 0 (known once a consumer connected)."""
        return float(wait_until(lambda: self.state().get("base"), timeout, what="pusher base time"))

    def wait_done(self, timeout: float = 60.0) -> dict:
        return wait_until(lambda: self.state().get("done") and self.state(), timeout, what="pusher done")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Pusher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- the pusher (child side) -------------------------------------------------------------
def _write_state(path: str, **kv) -> None:
    try:
        d = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        d = {}
    d.update(kv)
    tmp = path + ".tmp"
    Path(tmp).write_text(json.dumps(d))
    os.replace(tmp, path)


def _child(spec_path: str) -> None:
    from .lslconfig import lsl

    pylsl = lsl()
    spec = json.loads(Path(spec_path).read_text())
    data = np.load(spec["data"], allow_pickle=False)
    ts_rel = np.load(spec["ts"], allow_pickle=False)
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
    _write_state(spec["state"], outlet=True)
    if not outlet.wait_for_consumers(spec["wait_consumer_s"]):
        _write_state(spec["state"], error="no consumer")
        return
    if moutlet is not None:
        moutlet.wait_for_consumers(spec["wait_consumer_s"])
    base = pylsl.local_clock() + spec["lead_s"]
    _write_state(spec["state"], base=base)
    markers: dict[int, list[str]] = {}
    for idx, text in spec["markers"]:
        markers.setdefault(int(idx), []).append(text)
    chunk = spec["chunk"]
    lose_at = spec["lose_at"]
    i, T, pushed = 0, len(data), 0
    while i < T:
        if lose_at is not None and i >= lose_at:
            del outlet
            time.sleep(spec["lose_for_s"])
            outlet = make_outlet()
            _write_state(spec["state"], relaunched=True)
            outlet.wait_for_consumers(spec["wait_consumer_s"])
            now_rel = pylsl.local_clock() - base
            i = int(np.searchsorted(ts_rel, now_rel))  # samples due during the outage are lost
            lose_at = None
            _write_state(spec["state"], resumed_at=i)
            continue
        j = min(T, i + chunk) if lose_at is None else min(T, i + chunk, lose_at)
        due = base + ts_rel[j - 1]
        delay = due - pylsl.local_clock()
        if delay > 0:
            time.sleep(delay)
        outlet.push_chunk(data[i:j], timestamp=(base + ts_rel[i:j]).tolist())
        if moutlet is not None:
            for k in range(i, j):
                for text in markers.get(k, ()):
                    moutlet.push_sample([text], base + ts_rel[k])
        pushed += j - i
        i = j
    _write_state(spec["state"], done=True, pushed=pushed)
    time.sleep(spec["linger_s"])


# ---- running a DecoderService in a thread (parent side) ----------------------------------
class ServiceThread:
    """Runs DecoderService(config).run() in a thread; `join()` returns the summary or re-raises."""

    def __init__(self, config, **kwargs):
        import threading

        from .service import DecoderService

        self.service = DecoderService(config, **kwargs)
        self.summary = None
        self.exc: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="service-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.service.run()
        except BaseException as e:  # handed to the test by join()
            self.exc = e

    def start(self, timeout: float = 60.0) -> ServiceThread:
        self.thread.start()
        if not self.service.started.wait(timeout):
            raise TimeoutError(f"service did not start within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self

    @property
    def endpoint(self) -> str:
        return self.service.endpoint

    def join(self, timeout: float = 30.0, stop: bool = True):
        if stop:
            self.service.stop("test finished")
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"service did not stop within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.summary

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.service.stop("test left the block")
        self.thread.join(30)


if __name__ == "__main__":
    _child(sys.argv[1])
