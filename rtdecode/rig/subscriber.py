"""The frame subscriber of the rig: a child process receiving the published frames, as a client does.

Per frame it notes the receipt time (time.monotonic(), the clock pylsl.local_clock() reads on
Linux) and the header: the newest sample's and the window's LSL timestamps, the sequence number,
the skipped count and the service's monotonic stage stamps (rtdecode.sinks.publisher.STAGE_NAMES),
optionally the image too. The rows go into a table filled in place (blocks of rows allocated
as it grows, nothing per frame), saved as .npy when the child stops and read back as a
`FrameLog`. Latency = received - newest_ts.

It follows the client recipe of docs/protocol.md, as a display does: a small RCVHWM and kernel
buffer, and `FrameSubscriber.recv_newest` (drain what is queued, keep the newest). A subscriber
that falls behind passes frames over instead of reading old ones (`FrameLog.discarded` counts
them; they also show as seq gaps), so the latencies are what a display would see.
"""

from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..sinks.publisher import STAGE_NAMES
from .child import ChildLink, ChildProcess

COLUMNS = ("received", "newest_ts", "ref_time", "seq", "skipped", *STAGE_NAMES)
BLOCK_ROWS = 8192
DRAIN_S = 2.0


class FrameTable:
    """Rows of COLUMNS (float64), and optionally the images, filled in place block by block."""

    def __init__(self, keep_images: bool = False):
        self.keep_images = keep_images
        self.blocks: list[np.ndarray] = []
        self.image_blocks: list[np.ndarray] = []
        self.n = 0
        self.flagged = 0

    def append(self, received: float, newest_ts: float, ref_time: float, seq: int, skipped: int = 0,
               stages: dict[str, float] | None = None, image: np.ndarray | None = None, flagged: bool = False) -> None:
        k = self.n % BLOCK_ROWS
        if k == 0:
            self.blocks.append(np.full((BLOCK_ROWS, len(COLUMNS)), np.nan))
        row = self.blocks[-1][k]
        row[0], row[1], row[2], row[3], row[4] = received, newest_ts, ref_time, seq, skipped
        if stages:
            for c, key in enumerate(STAGE_NAMES):
                row[5 + c] = stages.get(key, math.nan)
        if self.keep_images and image is not None:
            if k == 0:
                self.image_blocks.append(np.empty((BLOCK_ROWS, *image.shape), dtype=image.dtype))
            self.image_blocks[-1][k] = image
        self.flagged += bool(flagged)
        self.n += 1

    def save(self, link: ChildLink, **info: object) -> None:
        """frames.npy (+ images.npy) and frames.json (columns, count, flags, `info`) in the link's folder."""
        table = np.concatenate(self.blocks)[:self.n] if self.blocks else np.zeros((0, len(COLUMNS)))
        link.save("frames", table)
        if self.keep_images and self.image_blocks:
            link.save("images", np.concatenate(self.image_blocks)[:self.n])
        (Path(link.dir) / "frames.json").write_text(json.dumps(
            {"columns": list(COLUMNS), "frames": self.n, "flagged": self.flagged, **info}))


@dataclass
class FrameLog:
    """What a subscriber received: `table` [frames, COLUMNS], `images` [frames, H, W, 3] or None."""

    table: np.ndarray
    columns: tuple[str, ...]
    flagged: int = 0
    cpu_s: float | None = None
    images: np.ndarray | None = None
    discarded: int = 0  # frames the subscriber passed over for a newer one (it had fallen behind)

    def col(self, name: str) -> np.ndarray:
        return self.table[:, self.columns.index(name)]

    def __len__(self) -> int:
        return int(self.table.shape[0])

    def since(self, seconds: float) -> FrameLog:
        """The frames received `seconds` or more after the first one (a warm-up left out)."""
        if not len(self):
            return self
        keep = self.col("received") - self.col("received")[0] >= seconds
        return FrameLog(self.table[keep], self.columns, self.flagged, self.cpu_s,
                        None if self.images is None else self.images[keep], self.discarded)

    @classmethod
    def load(cls, folder: str | Path) -> FrameLog:
        folder = Path(folder)
        info = json.loads((folder / "frames.json").read_text())
        images = folder / "images.npy"
        return cls(np.load(folder / "frames.npy", allow_pickle=False), tuple(info["columns"]),
                   int(info.get("flagged", 0)), info.get("cpu_s"),
                   np.load(images, allow_pickle=False) if images.exists() else None,
                   int(info.get("discarded", 0)))


class Subscriber(ChildProcess):
    """The subscriber child (rtdecode frames); after stop(), `frames` is its FrameLog (None if it failed).

    Subclasses may run another `child(link, address, rcvhwm, max_frames, keep_images)` that
    fills a FrameTable (the first-try benchmark's pickle subscriber does).
    """

    child = None  # set below: _subscribe

    def __init__(self, address: str, *, work_dir: str | Path | None = None, max_frames: int | None = None,
                 keep_images: bool = False, rcvhwm: int = 4, start_timeout: float = 30.0,
                 stop_timeout: float = 20.0):
        self.address = address
        self.frames: FrameLog | None = None
        super().__init__(type(self).child, {"address": address, "rcvhwm": rcvhwm, "max_frames": max_frames,
                                            "keep_images": keep_images},
                         role="subscriber", work_dir=work_dir, start_timeout=start_timeout, stop_timeout=stop_timeout)

    def _collect(self) -> None:
        if (self.dir / "frames.json").exists():
            self.frames = FrameLog.load(self.dir)


def _subscribe(link: ChildLink, address: str, rcvhwm: int, max_frames: int | None, keep_images: bool) -> None:
    from ..display.viewer import to_uint8
    from ..protocol import FrameSubscriber

    table = FrameTable(keep_images)
    cpu0 = time.process_time()
    with FrameSubscriber(address, rcvhwm=rcvhwm) as sub:
        gc.collect()
        gc.freeze()  # the collector's full passes skip the imports: fewer, shorter pauses between receipts
        link.mark_ready()
        drain_until = None  # once asked to stop: what is queued already, for at most DRAIN_S
        while max_frames is None or table.n < max_frames:
            if drain_until is None and link.stop.is_set():
                drain_until = time.monotonic() + DRAIN_S
            f = sub.recv_newest(timeout=0.1 if drain_until is None else 0.0)
            if f is None:
                if drain_until is not None:
                    break
                continue
            if drain_until is not None and time.monotonic() > drain_until:
                break
            h = f.header
            table.append(f.received, h.newest_ts, h.ref_time, h.seq, h.skipped, h.stages,
                         to_uint8(f.image) if keep_images else None, flagged=bool(h.flags))
        discarded = sub.discarded
    table.save(link, cpu_s=time.process_time() - cpu0, discarded=discarded)
    link.put(done=True, frames=table.n)


Subscriber.child = staticmethod(_subscribe)
