"""The ezmsg peer pipeline: LSL inlet unit -> windowing + ONNX Runtime unit -> ZeroMQ publisher unit.

Built as ezmsg's documentation shows: three Units wired in one `ez.run(components=...,
connections=...)` graph (all units in one process, ezmsg's default), with its own graph server
on a free loopback port (so concurrent runs do not meet on ezmsg's default 25978).

- `LSLInletUnit` from ezmsg-lsl, with `processing_flags=proc_clocksync` (no dejittering, as its
  settings recommend for most users) and `use_lsl_clock=True`, so the AxisArray's time axis
  carries the samples' LSL timestamps.
- `WindowDecodeUnit` (here): keeps the stream in a ring of samples and, whenever the newest
  window is at least `stride` samples past the last decoded one, decodes THAT window with
  peer_decode.PeerDecoder (the contract's assembly and normalisation, ONNX Runtime with
  rtdecode's options): rtdecode's scheduling semantics.
- `FrameSenderUnit`: ezmsg-zmq's `ZMQSenderUnit` (its PUB socket, bind and monitor task), whose
  one message handler is overridden to send rtdecode's three-part frame [topic, header,
  payload] instead of ZMQSenderUnit's two parts, so the same subscriber reads every pipeline.
  `wait_for_sub=False`, as ZMQSenderUnit's docstring advises.

Runs as a rig child (`EzmsgPipeline`); optional: needs ezmsg, ezmsg-lsl and ezmsg-zmq.
"""

from __future__ import annotations

from pathlib import Path

from rtdecode.rig import ChildLink, ChildProcess


def _units():
    """The unit classes (defined on first use: ezmsg is an optional extra)."""
    import time
    from dataclasses import dataclass

    import ezmsg.core as ez
    import numpy as np
    import zmq
    from ezmsg.util.messages.axisarray import AxisArray
    from ezmsg.zmq.units import ZMQSenderUnit

    from rtdecode.protocol import TOPIC

    from .peer_decode import PeerDecoder

    @dataclass
    class FrameMessage:
        header: bytes
        payload: np.ndarray

    class WindowDecodeSettings(ez.Settings):
        model: str
        stride_ms: float
        duration_s: float
        threads: int | None = None

    class WindowDecodeState(ez.State):
        dec: PeerDecoder
        ring: np.ndarray
        count: int
        t0: float
        last_ref: int
        end: float

    class WindowDecodeUnit(ez.Unit):
        SETTINGS = WindowDecodeSettings
        STATE = WindowDecodeState
        INPUT_SIGNAL = ez.InputStream(AxisArray)
        OUTPUT_FRAME = ez.OutputStream(FrameMessage)

        async def initialize(self) -> None:
            dec = PeerDecoder(self.SETTINGS.model, self.SETTINGS.stride_ms, self.SETTINGS.threads)
            self.STATE.dec = dec
            self.STATE.ring = np.zeros((4 * dec.span + 4096, dec.n_channels), dtype=np.float32)
            self.STATE.count = 0
            self.STATE.t0 = float("nan")
            self.STATE.last_ref = -(1 << 62)
            self.STATE.end = float("inf")

        @ez.subscriber(INPUT_SIGNAL, zero_copy=True)
        @ez.publisher(OUTPUT_FRAME)
        async def on_signal(self, msg: AxisArray):
            pulled = time.monotonic()
            st, dec = self.STATE, self.STATE.dec
            if st.end == float("inf"):
                st.end = pulled + self.SETTINGS.duration_s
            elif pulled > st.end:
                raise ez.NormalTermination
            data = np.asarray(msg.data, dtype=np.float32)
            n, cap = data.shape[0], st.ring.shape[0]
            if n == 0:
                return
            if st.count == 0:
                st.t0 = float(msg.axes["time"].offset)  # LSL time of sample 0; the rate is regular
            idx = (st.count + np.arange(n)) % cap if n > 1 else (st.count % cap,)
            st.ring[idx] = data
            st.count += n
            ref = st.count - dec.span
            if ref < 0 or ref < st.last_ref + dec.stride:
                return
            st.last_ref = ref
            lo = ref % cap
            block = st.ring[lo:lo + dec.span] if lo + dec.span <= cap else np.take(
                st.ring, np.arange(lo, lo + dec.span) % cap, axis=0)
            gain = 1.0 / dec.fs
            header, payload = dec.decode(block, st.t0 + ref * gain, st.t0 + (st.count - 1) * gain, pulled)
            yield self.OUTPUT_FRAME, FrameMessage(header, payload)

    class FrameSenderUnit(ZMQSenderUnit):
        INPUT = ez.InputStream(FrameMessage)

        @ez.subscriber(INPUT, zero_copy=True)
        async def zmq_subscriber(self, message: FrameMessage) -> None:
            await self.STATE.socket.send_multipart((TOPIC, message.header, message.payload), flags=zmq.NOBLOCK)

    return WindowDecodeUnit, WindowDecodeSettings, FrameSenderUnit


def _run(link: ChildLink, model: str, stream: str, address: str, stride_ms: float, duration_s: float,
         threads: int | None) -> None:
    import time

    import ezmsg.core as ez
    import pylsl
    from ezmsg.lsl.inlet import LSLInfo, LSLInletSettings, LSLInletUnit
    from ezmsg.zmq.units import ZMQSenderSettings

    from rtdecode.lslconfig import configure_lsl
    from rtdecode.rig import free_tcp_address

    configure_lsl()
    WindowDecodeUnit, WindowDecodeSettings, FrameSenderUnit = _units()
    components = {
        "INLET": LSLInletUnit(LSLInletSettings(info=LSLInfo(name=stream), processing_flags=pylsl.proc_clocksync,
                                               use_lsl_clock=True)),
        "DECODE": WindowDecodeUnit(WindowDecodeSettings(model=model, stride_ms=stride_ms, duration_s=duration_s,
                                                        threads=threads)),
        "ZMQ": FrameSenderUnit(ZMQSenderSettings(write_addr=address, zmq_topic="frame", multipart=True,
                                                 wait_for_sub=False)),
    }
    connections = ((components["INLET"].OUTPUT_SIGNAL, components["DECODE"].INPUT_SIGNAL),
                   (components["DECODE"].OUTPUT_FRAME, components["ZMQ"].INPUT))
    port = int(free_tcp_address().rsplit(":", 1)[1])
    link.mark_ready()
    cpu0 = time.process_time()
    ez.run(components=components, connections=connections, graph_address=("127.0.0.1", port), auto_start=True,
           force_single_process=True)
    link.put(done=True, cpu_s=time.process_time() - cpu0)


class EzmsgPipeline(ChildProcess):
    """The ezmsg pipeline in a child process, publishing on `address` for `duration_s`
    (counted from the first samples it receives)."""

    def __init__(self, model: str | Path, stream: str, address: str, *, stride_ms: float, duration_s: float,
                 threads: int | None = None):
        super().__init__(_run, {"model": str(model), "stream": stream, "address": address, "stride_ms": stride_ms,
                                "duration_s": duration_s, "threads": threads},
                         role="ezmsg-pipeline", start_timeout=60.0, stop_timeout=duration_s + 20.0)
