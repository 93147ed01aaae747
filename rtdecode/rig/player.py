"""The session player of the rig: rtdecode.playback.play in a child process.

It plays a session file (`session=`: anything `open_recording` opens) or a virtual-macaque
recording rendered in the child before the start and looped (`sim=`, see
`looped_sim_recording`), with play()'s own options. The child's stop Event is play()'s
`stop_event`, so `stop()` ends the playback, or cuts its linger short once the consumers are
done (the demo stops the service first, then releases the player). The PlaybackStats come back
as plain JSON in the state (`stats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .child import ChildLink, ChildProcess


def looped_sim_recording(seed: int, n_images: int, seconds: float):
    """`seconds` of an endless virtual-macaque recording, rendered now, as a Recording to loop.

    Rendering while playing would put the simulator's work (a burst of a few ms per 400-ms
    trial) on the cores next to the service; an amplifier does not run there.
    """
    from ..sessions.recording import Block, Recording
    from ..sim import VirtualMacaque

    rec = VirtualMacaque(seed=seed).recording(n_images=n_images, endless=True, image_seed=seed)
    n = max(1, int(round(seconds * rec.sampling_rate_hz)))
    mua = np.empty((n, rec.layout.n_channels), dtype=np.float32)
    filled = 0
    for block in rec.blocks():
        k = min(n - filled, block.mua.shape[0])
        mua[filled:filled + k] = block.mua[:k]
        filled += k
        if filled >= n:
            break
    return Recording(f"{rec.name}-{seconds:g}s-loop", rec.layout, rec.sampling_rate_hz,
                     lambda: iter([Block(mua, [])]), n, rec.images)


class Player(ChildProcess):
    """The player child: ready once its recording is open (or rendered), then playing.

    `play_options`: keyword arguments of rtdecode.playback.play (speed, loop, duration,
    chunk_ms, source_id, stream_type, wait_for_consumer, linger_s), plain values only.
    """

    def __init__(self, *, stream: str, session: str | Path | None = None, sim: dict[str, Any] | None = None,
                 marker_stream: str | None = None, work_dir: str | Path | None = None,
                 start_timeout: float = 120.0, stop_timeout: float = 10.0, **play_options: Any):
        if (session is None) == (sim is None):
            raise ValueError("give the player a session file or a sim recipe (seed, n_images, seconds), one of them")
        self.stream = stream
        self.marker_stream = marker_stream
        super().__init__(_play, {"session": None if session is None else str(session), "sim": sim, "stream": stream,
                                 "marker_stream": marker_stream, "options": play_options},
                         role="player", work_dir=work_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)

    def stats(self) -> dict:
        """PlaybackStats.to_dict() of the finished playback ({} when it did not finish)."""
        return self.state().get("stats", {})


def _play(link: ChildLink, session: str | None, sim: dict | None, stream: str, marker_stream: str | None,
          options: dict) -> None:
    from ..playback import play

    if session is not None:
        from ..sessions import open_recording

        recording = open_recording(session)
    else:
        recording = looped_sim_recording(**sim)
    link.mark_ready()
    stats = play(recording, stream_name=stream, marker_stream=marker_stream, stop_event=link.stop,
                 progress=False, **options)
    link.put(stats=stats.to_dict())
