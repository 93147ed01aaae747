"""The MNE-LSL peer pipeline: StreamLSL polled for the newest window -> ONNX Runtime -> pyzmq PUB.

Built as MNE-LSL's documentation shows a real-time loop: `StreamLSL(bufsize, name=...)`,
`connect(acquisition_delay=0.001, processing_flags=["clocksync"])` (its background thread pulls
into its buffer every millisecond), then a loop polling `stream.n_new_samples` and, once
`stride` new samples arrived, `stream.get_data(winsize)` for the newest window. Decoding is
peer_decode.PeerDecoder (same contract, same ONNX Runtime options, same wire format); the frame
goes out on a plain pyzmq PUB socket as [topic, header, payload]. The loop sleeps `poll_s`
(0.25 ms) between polls. Runs as a rig child (`MneLslPipeline`), optional: needs mne-lsl.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from rtdecode.rig import ChildLink, ChildProcess

POLL_S = 0.00025


def _run(link: ChildLink, model: str, stream: str, address: str, stride_ms: float, duration_s: float,
         threads: int | None, poll_s: float) -> None:
    import zmq

    from .peer_decode import PeerDecoder, machine_scope_lsl_env

    machine_scope_lsl_env()
    from mne_lsl.stream import StreamLSL

    from rtdecode.protocol import TOPIC

    dec = PeerDecoder(model, stride_ms, threads)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 4)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(address)
    winsize = dec.span / dec.fs
    st = StreamLSL(bufsize=max(2.0, 4 * winsize), name=stream)
    with warnings.catch_warnings():  # the pusher's stream has no channel description
        warnings.simplefilter("ignore", RuntimeWarning)
        st.connect(acquisition_delay=0.001, processing_flags=["clocksync"], timeout=20)
    link.mark_ready()
    frames = 0
    total = 0  # samples counted by n_new_samples before the last get_data
    end = time.monotonic() + duration_s
    cpu0 = time.process_time()
    try:
        while time.monotonic() < end and not link.stop.is_set():
            n = st.n_new_samples
            if n >= dec.stride and total + n >= dec.span:  # stride new samples, and a full window
                pulled = time.monotonic()
                data, ts = st.get_data(winsize=winsize)  # [C, span], the newest window; resets n_new_samples
                total += n
                data, ts = data[:, -dec.span:], ts[-dec.span:]  # winsize * sfreq is ceiled: keep span
                # [C, T] -> [T, C] in sample order (a transposed view sums in another order: frames
                # would differ from rtdecode's in the last bit)
                header, payload = dec.decode(np.ascontiguousarray(data.T), float(ts[0]), float(ts[-1]), pulled)
                pub.send_multipart((TOPIC, header, payload), flags=zmq.NOBLOCK)
                frames += 1
                continue
            time.sleep(poll_s)
    finally:
        st.disconnect()
        pub.close(0)
        ctx.term()
    link.put(done=True, frames=frames, cpu_s=time.process_time() - cpu0)


class MneLslPipeline(ChildProcess):
    """The MNE-LSL pipeline in a child process, publishing on `address` for `duration_s`."""

    def __init__(self, model: str | Path, stream: str, address: str, *, stride_ms: float, duration_s: float,
                 threads: int | None = None, poll_s: float = POLL_S):
        super().__init__(_run, {"model": str(model), "stream": stream, "address": address, "stride_ms": stride_ms,
                                "duration_s": duration_s, "threads": threads, "poll_s": poll_s},
                         role="mne-lsl-pipeline", start_timeout=60.0, stop_timeout=duration_s + 20.0)
