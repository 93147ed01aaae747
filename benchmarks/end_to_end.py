"""End-to-end latency through real LSL and ZeroMQ: pusher -> DecoderService -> FrameSubscriber.

Three processes, as on a rig: a child pushes 1024-channel MUA at 1 kHz (one sample per push,
explicit LSL timestamps on the local_clock, so the stream behaves like an amplifier's); this
process runs rtdecode's DecoderService; another child subscribes to the frames and notes, per
frame, when it arrived (time.monotonic(), the clock pylsl.local_clock() reads on Linux) and the
header. Latency = receipt - header.newest_ts (the newest sample the frame used).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from rtdecode.machine import machine_busy_seconds

from .report import summarize_ms

log = logging.getLogger(__name__)


def free_tcp_address() -> str:
    """tcp://127.0.0.1:<a free port>."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def proc_cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# ---- child: the LSL pusher -------------------------------------------------------------------
def _pusher_main(name: str, source_id: str, n_channels: int, fs: float, duration_s: float,
                 wait_consumer_s: float, started, stop, result_q, seed: int) -> None:
    from rtdecode.lslconfig import lsl

    pylsl = lsl()
    info = pylsl.StreamInfo(name, "MUA", n_channels, fs, "float32", source_id)
    outlet = pylsl.StreamOutlet(info, chunk_size=1, max_buffered=60)
    # data made before the clock starts: a few seconds of noise, cycled
    block = (np.random.default_rng(seed).standard_normal((int(fs * 2), n_channels)) * 0.5 + 1.0).astype(np.float32)
    deadline = time.monotonic() + wait_consumer_s
    while not outlet.have_consumers() and time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.005)
    started.set()
    dt = 1.0 / fs
    t0 = pylsl.local_clock() + 0.01
    n_total = int(duration_s * fs)
    late = np.zeros(n_total, dtype=np.float32)  # push time - due time (ms)
    i = 0
    while i < n_total and not stop.is_set():
        now = pylsl.local_clock()
        due_n = min(int((now - t0) / dt) + 1, n_total)
        if due_n <= i:
            time.sleep(max(0.0, t0 + i * dt - now))
            continue
        k = due_n - i
        idx = np.arange(i, due_n) % block.shape[0]
        stamps = t0 + np.arange(i, due_n) * dt
        if k == 1:
            outlet.push_sample(block[idx[0]], float(stamps[0]))
        else:
            outlet.push_chunk(np.ascontiguousarray(block[idx]), stamps.tolist())
        late[i:due_n] = (pylsl.local_clock() - stamps) * 1e3
        i = due_n
    result_q.put({"pushed": int(i), "late_ms": late[:i]})
    # keep the outlet open a moment so the consumer drains its last chunk
    stop.wait(1.0)


class Pusher:
    """A child process pushing [T, C] float32 at `fs` with explicit timestamps (context manager)."""

    def __init__(self, *, n_channels: int = 1024, fs: float = 1000.0, duration_s: float = 10.0,
                 wait_consumer_s: float = 20.0, seed: int = 0, name: str | None = None):
        ctx = mp.get_context("spawn")
        self.name = name or f"bench-mua-{uuid.uuid4().hex[:8]}"
        self.started = ctx.Event()
        self.stop = ctx.Event()
        self._q = ctx.Queue()
        self.proc = ctx.Process(target=_pusher_main, daemon=True, args=(
            self.name, f"src-{self.name}", n_channels, fs, duration_s, wait_consumer_s,
            self.started, self.stop, self._q, seed))
        self.result: dict | None = None

    def __enter__(self) -> Pusher:
        self.proc.start()
        return self

    def collect(self, timeout: float) -> dict | None:
        if self.result is None:
            try:
                self.result = self._q.get(timeout=timeout)
            except Exception:  # queue.Empty: the child died or is late
                self.result = None
        return self.result

    def __exit__(self, *exc) -> None:
        self.collect(timeout=0.5)
        self.stop.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)


# ---- child: a frame subscriber --------------------------------------------------------------
def _subscriber_main(address: str, kind: str, ready, stop, result_q, max_frames: int) -> None:
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 1000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    ready.set()
    recv_t, newest, seq, stages = [], [], [], []
    from rtdecode.protocol import FrameHeader, decode_payload

    while not stop.is_set() and len(recv_t) < max_frames:
        if not sock.poll(100):
            continue
        parts = sock.recv_multipart(copy=True)
        t = time.monotonic()
        if kind == "rtdecode":
            h = FrameHeader.from_bytes(parts[1])
            decode_payload(h, parts[2])  # a client reads the image too
            newest.append(h.newest_ts)
            seq.append(h.seq)
            stages.append(h.stages)
        else:  # first-try: one pickled dict; unpickled only from our own child on loopback
            import pickle

            msg = pickle.loads(parts[-1])
            newest.append(float(msg["newest_ts"]))
            seq.append(int(msg["seq"]))
            stages.append({})
        recv_t.append(t)
    result_q.put({"received": np.asarray(recv_t), "newest_ts": np.asarray(newest), "seq": np.asarray(seq),
                  "stages": stages})
    sock.close(0)
    ctx.term()


class Subscriber:
    """A child process subscribing to frames (kind 'rtdecode' or 'pickle'); `.result` after exit."""

    def __init__(self, address: str, kind: str = "rtdecode", max_frames: int = 10**7):
        ctx = mp.get_context("spawn")
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self._q = ctx.Queue()
        self.proc = ctx.Process(target=_subscriber_main, daemon=True,
                                args=(address, kind, self.ready, self.stop, self._q, max_frames))
        self.result: dict | None = None

    def __enter__(self) -> Subscriber:
        self.proc.start()
        if not self.ready.wait(30):
            raise RuntimeError("frame subscriber child did not start within 30 s")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        try:
            self.result = self._q.get(timeout=20)
        except Exception:
            self.result = None
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()


# ---- analysis shared by rtdecode and first-try -------------------------------------------------
def analyse_frames(res: dict | None, stride_ms: float, skip_first_s: float = 0.5) -> tuple[dict, np.ndarray]:
    """Latency and frame-interval statistics from a subscriber's result (first `skip_first_s` dropped)."""
    if not res or len(res["received"]) == 0:
        return {"frames_received": 0, "latency_ms": {"n": 0}, "frame_interval_ms": {"n": 0}}, np.empty(0)
    recv = res["received"]
    keep = recv >= recv[0] + skip_first_s
    if keep.sum() < 2:
        keep[:] = True
    lat = (recv - res["newest_ts"])[keep] * 1e3
    intervals = np.diff(recv[keep]) * 1e3
    seq = res["seq"][keep]
    iv = summarize_ms(intervals)
    iv["sd"] = float(intervals.std()) if intervals.size else None
    iv["nominal"] = stride_ms
    out = {"frames_received": int(len(recv)), "frames_analysed": int(keep.sum()),
           "latency_ms": summarize_ms(lat), "frame_interval_ms": iv,
           "frames_lost_in_transport": int(max(0, (seq.max() - seq.min() + 1) - seq.size)) if seq.size else 0}
    return out, lat


def stage_breakdown(res: dict, keep_from: float) -> dict:
    """Per-stage durations (ms) from the rtdecode headers' monotonic stage stamps.

    lsl_in: newest sample's LSL timestamp -> its chunk pulled into the ring (LSL + inlet thread);
    wait: pulled -> decode started (loop wake-up); assemble / normalise / infer; encode: frame
    encoding + header; zmq_out: ZeroMQ send -> the subscriber process has the frame;
    e2e_minus_infer: per frame, latency minus that frame's own inference time (the pipeline's
    overhead around the engine).
    """
    recv, newest, stages = res["received"], res["newest_ts"], res["stages"]
    names = {"lsl_in": ("newest", "pulled"), "wait": ("pulled", "started"),
             "assemble": ("started", "assembled"), "normalise": ("assembled", "normalised"),
             "infer": ("normalised", "inferred"), "encode": ("inferred", "published"),
             "zmq_out": ("published", "received")}
    cols: dict[str, list[float]] = {k: [] for k in (*names, "e2e_minus_infer")}
    for t, nts, st in zip(recv, newest, stages, strict=True):
        if t < keep_from:
            continue
        point = dict(st, newest=nts, received=t)
        for k, (a, b) in names.items():
            if a in point and b in point:
                cols[k].append((point[b] - point[a]) * 1e3)
        if "inferred" in point and "normalised" in point:  # everything but this frame's inference
            cols["e2e_minus_infer"].append(((t - nts) - (point["inferred"] - point["normalised"])) * 1e3)
    return {k: summarize_ms(v) for k, v in cols.items() if v}


class CpuMeter:
    """CPU seconds of this process and of given child pids, and whole-machine busy fraction."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self._t = time.monotonic()
        self._self = sum(os.times()[:2])
        self._kids = {k: proc_cpu_seconds(p) for k, p in pids.items()}
        self._machine = machine_busy_seconds()

    def read(self) -> dict:
        wall = time.monotonic() - self._t
        out = {"wall_s": wall, "decoder_process_percent": (sum(os.times()[:2]) - self._self) / wall * 100}
        for k, p in self.pids.items():
            now, before = proc_cpu_seconds(p), self._kids.get(k)
            if now is not None and before is not None:
                out[f"{k}_percent"] = (now - before) / wall * 100
        m = machine_busy_seconds()
        if m and self._machine:
            busy, total = m[0] - self._machine[0], m[1] - self._machine[1]
            out["machine_busy_percent"] = busy / total * 100 if total > 0 else None
        return out


# ---- rtdecode's pipeline ---------------------------------------------------------------------
def run_rtdecode(model_path: str | Path, *, stride_ms: float, duration_s: float, threads: int | None,
                 engine: str = "onnxruntime", progress=print) -> tuple[dict, np.ndarray]:
    """One e2e run of DecoderService at `stride_ms`; returns (row, latency series ms)."""
    from rtdecode.config import ServeConfig
    from rtdecode.service import DecoderService

    address = free_tcp_address()
    with Pusher(duration_s=duration_s + 3.0) as pusher:
        config = ServeConfig(stream=pusher.name, model=str(model_path), engine=engine, threads=threads,
                             stride_ms=stride_ms, address=address, duration_s=duration_s + 1.0,
                             status_interval_s=0.0, resolve_timeout_s=20.0)
        with Subscriber(address, "rtdecode") as sub:
            service = DecoderService(config)
            meter = {}
            cpu_box: dict = {}

            def start_meter() -> None:
                if pusher.started.wait(30):
                    meter["m"] = CpuMeter({"pusher": pusher.proc.pid, "subscriber": sub.proc.pid})
            th = threading.Thread(target=start_meter, daemon=True)
            th.start()
            summary = service.run()
            if "m" in meter:
                cpu_box = meter["m"].read()
        push = pusher.collect(timeout=10)
    res = sub.result
    row, lat = analyse_frames(res, stride_ms)
    if res is not None and len(res["received"]):
        row["stages_ms"] = stage_breakdown(res, res["received"][0] + 0.5)
    row.update(pipeline="rtdecode", stride_ms=stride_ms, engine=engine, threads=threads,
               cpu=cpu_box, cpu_percent=cpu_box.get("decoder_process_percent"))
    row.update(_service_counts(summary))
    if push is not None:
        row["pusher_late_ms"] = summarize_ms(push["late_ms"])
        row["samples_pushed"] = push["pushed"]
    progress(f"e2e rtdecode stride {stride_ms} ms: {row['frames_received']} frames, "
             f"p50 {row['latency_ms'].get('p50', float('nan')):.2f} ms p99 {row['latency_ms'].get('p99', float('nan')):.2f} ms")
    return row, lat


def _service_counts(summary) -> dict:
    """Skipped windows / dropped samples from the service's summary (dict or object)."""
    d = summary if isinstance(summary, dict) else getattr(summary, "to_dict", lambda: vars(summary))()
    snap = d.get("telemetry", d)
    stream = snap.get("stream", {}) if isinstance(snap, dict) else {}
    skipped = snap.get("skipped_total", snap.get("skipped")) if isinstance(snap, dict) else None
    if isinstance(skipped, dict):
        skipped = sum(skipped.values())
    return {"skipped_windows": skipped,
            "skipped_by_reason": snap.get("skipped") if isinstance(snap.get("skipped"), dict) else None,
            "dropped_samples": stream.get("missing_samples"),
            "gaps": stream.get("gaps"),
            "frames_published": snap.get("frames"),
            "service_latency_ms": snap.get("latency_ms")}


# ---- the e2e part: model choice, engine baseline, rtdecode and first-try runs -------------------
def e2e_model(work_dir: str | Path) -> tuple[Path, str, object]:
    """(onnx path, description, torch module or None) both pipelines decode with.

    The bundled demo model when the first-try pipeline can run it in torch eager (rtdecode's
    torch-cpu engine rebuilds it) or torch is absent; else the fast preset (64x64) with random
    weights, whose torch module the first-try pipeline runs directly; else a linear decoder.
    """
    import importlib.util

    from .inference import bench_contract, build_preset_module, demo_model_path, export_module

    have_torch = importlib.util.find_spec("torch") is not None
    demo = demo_model_path()
    why = "no bundled demo model here"
    if demo is not None:
        if not have_torch:
            return demo, "bundled demo model", None
        try:
            from rtdecode.contract import read_contract
            from rtdecode.engines import create_engine

            create_engine("torch-cpu", str(demo), read_contract(demo)).close()
            return demo, "bundled demo model", None
        except Exception as e:  # the torch engine cannot rebuild this export
            why = f"the torch-cpu engine cannot rebuild the demo model ({str(e)[:160]})"
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if have_torch:
        c = bench_contract(64, model_id="fast64-random")
        path = work_dir / "e2e_fast64.onnx"
        module = build_preset_module("fast", 64, c)
        export_module(module, c, path)
        return path, f"fast preset 64x64 with random weights ({why})", module
    from rtdecode.onnx_io import build_linear_decoder, save_model

    c = bench_contract(16, model_id="linear16")
    w = np.random.default_rng(0).standard_normal((int(np.prod(c.input_shape)), 768)).astype(np.float32) * 0.01
    path = save_model(build_linear_decoder(c, w, np.zeros(768, np.float32)), work_dir / "e2e_linear16.onnx")
    return path, "linear 16x16 decoder (no demo model, no torch here)", None


def engine_baseline(model_path: Path, *, engine: str, threads: int | None, n: int) -> tuple[dict, str]:
    """Inference alone with the engine the service uses (same options), for e2e - infer."""
    from rtdecode.contract import read_contract

    from .inference import engine_runner, time_calls

    contract = read_contract(model_path)
    opts = {} if threads is None else {"threads": threads}
    fn, desc = engine_runner(engine, model_path, contract, **opts)
    return time_calls(fn, n=n, warmup=10).summary(), desc

