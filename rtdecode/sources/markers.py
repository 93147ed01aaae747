"""Stimulus markers: which image was on screen at an LSL time, fed live from an LSL marker stream.

  StimulusTracker   onset/offset markers (LSL time, image index) -> the image shown at any time
  LslMarkerFeed     a background thread pulling an LSL marker stream into a StimulusTracker

A malformed marker (an image index that is not a number) is counted and skipped; a failure
of the feed's thread follows rtdecode.threads and surfaces to the reader: `at()` and `onsets()`
raise it.
"""

from __future__ import annotations

import bisect
import logging
import threading
from typing import Any

from ..errors import ConfigError
from ..sessions.recording import parse_marker
from ..threads import GuardedWorker, ThreadGuard

log = logging.getLogger(__name__)


class StimulusTracker:
    """Onset/offset markers (LSL time, image index) -> the image shown at any time.

    An image counts as shown from its onset until its offset (or the next onset).
    """

    def __init__(self) -> None:
        self._onsets: list[float] = []
        self._images: list[int] = []
        self._offsets: list[float] = []

    def add(self, ts: float, marker: str | dict[str, Any]) -> bool | None:
        """Record an onset/offset marker. None: not an image marker (ignored); False: malformed
        (an onset whose image index is not a number; ignored); True: recorded."""
        ev = parse_marker(marker) if isinstance(marker, str) else marker
        if not ev or ev.get("image") is None or ev.get("event") not in ("onset", "offset"):
            return None
        if ev["event"] == "offset":
            bisect.insort(self._offsets, float(ts))
            return True
        try:
            image = int(ev["image"])
        except (TypeError, ValueError, OverflowError):
            return False
        i = bisect.bisect(self._onsets, ts)
        self._onsets.insert(i, float(ts))
        self._images.insert(i, image)
        return True

    def at(self, ts: float) -> int | None:
        """Image index on screen at LSL time `ts`, or None (blank / before the first onset)."""
        i = bisect.bisect_right(self._onsets, ts) - 1
        if i < 0:
            return None
        onset = self._onsets[i]
        j = bisect.bisect_right(self._offsets, onset)  # first offset after this onset
        if j < len(self._offsets) and self._offsets[j] <= ts:
            return None
        return self._images[i]

    def onsets(self) -> list[tuple[float, int]]:
        """(LSL time, image index) of every onset seen, in time order."""
        return list(zip(self._onsets, self._images, strict=True))

    def __len__(self) -> int:
        return len(self._onsets)


class LslMarkerFeed(GuardedWorker):
    """Reads an LSL marker stream in a background thread into a StimulusTracker.

    `malformed` counts markers skipped as malformed. A failed thread (rtdecode.threads) is
    raised to the reader by `at()` and `onsets()`, and is in `failure`.
    """

    def __init__(self, name: str, tracker: StimulusTracker, *, timeout: float = 5.0):
        from ..lslconfig import lsl

        pylsl = lsl()
        if "'" in name:
            found = pylsl.resolve_byprop("name", name, 1, timeout)
        else:  # one query for name or type (pylsl's resolve_byprop("type", ...) overruns its timeout)
            found = pylsl.resolve_bypred(f"name='{name}' or type='{name}'", 1, timeout)
        if not found:
            raise ConfigError(f"marker stream {name!r} not found within {timeout:g} s "
                              f"(is `rtdecode playback` running?)")
        self.inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        self.inlet.open_stream(timeout)
        self.tracker = tracker
        self.lock = threading.Lock()
        self.malformed = 0
        self._guard = ThreadGuard("marker-feed", doing=f"reading marker stream {name!r}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marker-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self._guard:
            # pull_chunk with a timeout waits for a full buffer: poll without one instead
            while not self._stop.is_set():
                samples, stamps = self.inlet.pull_chunk(timeout=0.0)
                if not stamps:
                    self._stop.wait(0.01)
                    continue
                with self.lock:
                    for s, t in zip(samples, stamps, strict=False):
                        if self.tracker.add(t, s[0]) is False:
                            self._skip_malformed(s[0])

    def _skip_malformed(self, marker: str) -> None:
        self.malformed += 1
        if self.malformed == 1:  # once: a stream of bad markers must not flood the log
            log.warning("marker feed: skipping a malformed marker %.200r (its image index is not a number); "
                        "later ones are only counted", marker)

    def at(self, ts: float) -> int | None:
        """The image on screen at LSL time `ts` (None: blank); raises the thread's error if it failed."""
        self._guard.raise_if_failed()
        with self.lock:
            return self.tracker.at(ts)

    def onsets(self) -> list[tuple[float, int]]:
        """Every onset so far; raises the thread's error if it failed."""
        self._guard.raise_if_failed()
        with self.lock:
            return self.tracker.onsets()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.inlet.close_stream()
