"""The service's heartbeat: its state on the PUB socket every interval, and at once when it changes.

A display that gets no frames cannot tell a lost stream from an idle one, a stopping service or a
dead one; the heartbeat (protocol.Heartbeat, topic b"heartbeat") says which, and carries the
run's session id (also in every frame header) so a client sees a restart. `HeartbeatSender.tick`
is called from the serve loop, which wakes at least every 50 ms; it costs a comparison when
nothing is due.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from ..protocol import Heartbeat


def new_session_id() -> str:
    """A fresh id for one service run: random, 16 hex digits (unique across processes and machines)."""
    return uuid.UUID(bytes=os.urandom(16)).hex[:16]


class HeartbeatSender:
    """Decides the state and publishes heartbeats through `publisher.publish_heartbeat`.

    streaming: a frame was published within the last interval; stream_lost: `lost` (the source
    re-resolving a vanished outlet); idle: neither; stopping: `stop(reason)`, once at the end.
    interval_s 0: off (nothing is sent).
    """

    def __init__(self, publisher: Any, *, session: str, interval_s: float, model_id: str = "", stream: str = ""):
        self.publisher = publisher
        self.session = session
        self.interval_s = float(interval_s)
        self.model_id = model_id
        self.stream = stream
        self.started = time.time()
        self.state: str | None = None
        self._state_since = time.monotonic()
        self._next = 0.0
        self._frames = 0
        self._last_frame = -float("inf")
        self.sent = 0

    def tick(self, now: float, frames: int, *, lost: bool = False, newest_ts: float | None = None) -> None:
        """Called by the loop: `frames` published so far; send when the state changed or one is due."""
        if self.interval_s <= 0:
            return
        if frames != self._frames:
            self._frames, self._last_frame = frames, now
        state = ("stream_lost" if lost else
                 "streaming" if now - self._last_frame <= self.interval_s else "idle")
        if state != self.state or now >= self._next:
            self._send(state, now, newest_ts)

    def stop(self, reason: str, *, newest_ts: float | None = None) -> None:
        """The service is shutting down: one last heartbeat, state stopping, with the reason."""
        if self.interval_s > 0:
            self._send("stopping", time.monotonic(), newest_ts, reason)

    def _send(self, state: str, now: float, newest_ts: float | None, reason: str | None = None) -> None:
        if state != self.state:
            self.state, self._state_since = state, now
        self._next = now + self.interval_s
        hb = Heartbeat(state=state, session=self.session, started=self.started, time=now,
                       interval_s=self.interval_s, last_seq=self._frames - 1 if self._frames else None,
                       newest_ts=newest_ts, state_s=now - self._state_since, model_id=self.model_id,
                       stream=self.stream, reason=reason)
        if self.publisher.publish_heartbeat(hb):
            self.sent += 1
