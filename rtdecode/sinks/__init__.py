"""Where published frames go: one small Sink protocol, and the sinks of this room.

  publisher   FramePublisher: ZeroMQ PUB in the wire format of rtdecode.protocol (the service's
              own output; also usable as an extra Sink, e.g. a second address)
  heartbeat   HeartbeatSender: the service's state (streaming / stream_lost / idle / stopping)
              and session id on the publisher's socket, topic b"heartbeat"; not a Sink
  recorder    FrameRecorder: crash-safe HDF5 chunks (`serve --record`, `rtdecode record`)
  dashboard   Dashboard: a local web page, fed by its own ZeroMQ subscriber or, as a Sink, by the
              service in the same process
  prometheus  PrometheusExporter: not a Sink. Prometheus pulls: each scrape reads the service's
              live Telemetry (counters and histograms), so it needs no per-frame call and no
              snapshots; the serve command owns its lifetime.

A Sink takes what DecoderService hands its extra sinks:
  write(header, image)      every published frame; `image` [H, W, 3] is the service's payload
                            buffer, reused for the next frame: a sink that keeps it copies it.
                            Must not block the decoder.
  write_telemetry(record)   every status interval: a Telemetry snapshot (JSON-able, no events)
  close()                   once, when the service stops
A sink that raises is dropped by the service (frames keep flowing); a sink whose background
thread failed raises that thread's error from its next write (see rtdecode.threads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from ..protocol import FrameHeader

SINK_METHODS = ("write", "write_telemetry", "close")


@runtime_checkable
class Sink(Protocol):
    """What the service calls on an extra sink: per frame, per status interval, at the end."""

    def write(self, header: FrameHeader, image: np.ndarray) -> None: ...

    def write_telemetry(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


__all__ = ["SINK_METHODS", "Sink"]
