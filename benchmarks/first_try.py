"""The pipeline a user would write first, on the same model and stream, as the baseline.

pull_sample() one sample at a time into a window kept with np.roll, windows averaged with
Python loops, the model run eagerly in torch (rtdecode's torch-cpu engine; or ONNX Runtime
with a fresh input dict and output per call when torch is absent), the frame pickled over
ZeroMQ. Everything in one thread, so inference blocks acquisition. This is deliberately naive
code for comparison - never a model for rtdecode (which sends no pickle).
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np

from rtdecode.rig import ChildLink, CpuMeter, FrameTable, Pusher, Subscriber, free_tcp_address

from .frame_stats import analyse_frames


def _pickle_subscribe(link: ChildLink, address: str, rcvhwm: int, max_frames: int | None,
                      keep_images: bool) -> None:
    """The subscriber child for first-try frames: one pickled dict per frame. Unpickled only
    because it comes from our own process on loopback; rtdecode itself never sends pickle."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, rcvhwm)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    link.mark_ready()
    table = FrameTable()
    cpu0 = time.process_time()
    while not link.stop.is_set() and (max_frames is None or table.n < max_frames):
        if not sock.poll(100):
            continue
        parts = sock.recv_multipart(copy=True)
        t = time.monotonic()
        msg = pickle.loads(parts[-1])
        table.append(t, float(msg["newest_ts"]), float(msg["ref_time"]), int(msg["seq"]), stages=msg.get("stages"))
    table.save(link, cpu_s=time.process_time() - cpu0)
    link.put(done=True, frames=table.n)
    sock.close(0)
    ctx.term()


class PickleSubscriber(Subscriber):
    """The rig's subscriber child, reading the first-try pipeline's pickled frames."""

    child = staticmethod(_pickle_subscribe)


def naive_model(model_path: str | Path, contract, module=None):
    """(fn(x [1, M, E] float32) -> [1, 3, H, W], description).

    torch eager, as a user would call their model: the given torch module, else rtdecode's
    torch-cpu engine rebuilt from the ONNX; ONNX Runtime with a fresh input dict and output per
    call when neither works (torch absent). Thread settings are left at their defaults.
    """
    if module is not None:
        import torch

        module = module.eval()

        def run(x):
            with torch.no_grad():
                return module(torch.tensor(x)).numpy()

        return run, f"torch eager on the model module (torch default threads: {torch.get_num_threads()})"
    try:
        from rtdecode.engines import create_engine

        engine = create_engine("torch-cpu", str(model_path), contract)
        return (lambda x: np.array(engine.infer(x))), "torch eager (rtdecode torch-cpu engine)"
    except Exception as e:  # no torch, or the torch engine cannot rebuild this model
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        return (lambda x: sess.run(None, {"mua": x})[0]), f"onnxruntime run() per call (torch eager unavailable: {e})"


def run_first_try(model_path: str | Path, *, stride_ms: float, duration_s: float,
                  progress=print, module=None, keep_log: bool = False) -> tuple:
    """One run of the naive pipeline; same pusher and subscriber as the rtdecode run. Returns
    (row, latency series ms), and the subscriber's FrameLog third when `keep_log`."""
    import zmq

    from rtdecode.contract import read_contract
    from rtdecode.lslconfig import lsl

    pylsl = lsl()
    contract = read_contract(model_path)
    plan, layout = contract.plan, contract.layout
    span = plan.span
    used = layout.used_channels
    mean, std, mask = contract.norm_mean, contract.norm_std, contract.mask
    model, desc = naive_model(model_path, contract, module)
    stride = max(1, int(round(stride_ms * plan.sampling_rate_hz / 1000.0)))
    address = free_tcp_address()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    with Pusher.noise(duration_s=duration_s + 3.0) as pusher, PickleSubscriber(address) as sub:
        streams = pylsl.resolve_byprop("name", pusher.name, 1, 20.0)
        if not streams:
            raise RuntimeError(f"first-try: stream {pusher.name} not found")
        inlet = pylsl.StreamInlet(streams[0], max_buflen=360)
        inlet.open_stream(10.0)
        pusher.base(30)
        meter = CpuMeter({"pusher": pusher.pid, "subscriber": sub.pid}, self_name="decoder")
        buf = np.zeros((span, layout.n_channels))
        times = [0.0] * span
        n = 0
        seq = 0
        skipped = 0
        end = time.monotonic() + duration_s + 1.0
        while time.monotonic() < end:
            sample, ts = inlet.pull_sample(timeout=0.5)
            if sample is None:
                continue
            buf = np.roll(buf, -1, axis=0)
            buf[-1] = sample
            times = times[1:] + [ts]
            n += 1
            if n < span or n % stride:
                continue
            maps = np.zeros((plan.n_maps, layout.n_electrodes))
            for i, m in enumerate(plan.maps):
                s0, s1 = plan.samples(m)
                window = buf[s0:s1][:, used]
                maps[i] = window.mean(axis=0) * mask[i]
            x = ((maps - mean) / std * mask).astype(np.float32)[None]
            t_in = time.monotonic()
            y = model(x)
            t_out = time.monotonic()
            frame = (np.transpose(y[0], (1, 2, 0)) * 255).astype(np.uint8)
            pub.send(pickle.dumps({"frame": frame, "seq": seq, "newest_ts": times[-1], "ref_time": times[0],
                                   "stages": {"normalised": t_in, "inferred": t_out}}))
            seq += 1
        cpu = meter.read()
        behind = inlet.samples_available()
        inlet.close_stream()
    pub.close(0)
    ctx.term()
    row, lat = analyse_frames(sub.frames, stride_ms)
    row.update(pipeline="first-try", stride_ms=stride_ms, engine=desc, cpu=cpu,
               cpu_percent=cpu["decoder_cores"] * 100.0, skipped_windows=skipped,
               dropped_samples=None, samples_left_unread=int(behind), frames_published=seq)
    progress(f"e2e first-try stride {stride_ms} ms: {row['frames_received']} frames, "
             f"p50 {row['latency_ms'].get('p50_ms', float('nan')):.2f} ms "
             f"p99 {row['latency_ms'].get('p99_ms', float('nan')):.2f} ms")
    return (row, lat, sub.frames) if keep_log else (row, lat)

