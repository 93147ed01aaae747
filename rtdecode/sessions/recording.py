"""A source of MUA to be played as a live stream: recorded sessions, TVSD, XDF, the virtual macaque.

Every reader turns its file into a `Recording`; the LSL player (rtdecode.playback) pushes its
blocks with the recorded timing, and its markers on a separate string stream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..layout import ElectrodeLayout


@dataclass
class Block:
    """Consecutive samples and the markers that fall inside them."""

    mua: np.ndarray  # float32 [n, C]
    markers: list[tuple[int, str]] = field(default_factory=list)  # (sample index within block, marker)


def onset_marker(image: int, trial: int | None = None) -> str:
    """Marker text for a stimulus onset: JSON {"event": "onset", "image": k, "trial": i}."""
    return json.dumps({"event": "onset", "image": int(image), "trial": None if trial is None else int(trial)})


def offset_marker(image: int, trial: int | None = None) -> str:
    return json.dumps({"event": "offset", "image": int(image), "trial": None if trial is None else int(trial)})


def parse_marker(text: str) -> dict[str, Any] | None:
    """The event dict of an rtdecode marker, or None for a marker that is not one of ours."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return d if isinstance(d, dict) and "event" in d else None


@dataclass
class Recording:
    """A (possibly endless) sequence of blocks sharing one layout and sampling rate.

    `blocks()` may be called again to start over (used by --loop); `n_samples` is None when endless.
    `images` (uint8 [K, H, W, 3]) is set when the stimuli are known, for viewers.
    """

    name: str
    layout: ElectrodeLayout
    sampling_rate_hz: float
    make_blocks: Any  # callable () -> Iterator[Block]
    n_samples: int | None = None
    images: np.ndarray | None = None

    def blocks(self) -> Iterator[Block]:
        return self.make_blocks()
