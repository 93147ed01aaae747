"""One progress helper for long work (simulation, dataset windows, training, export).

tqdm is optional (the train extra brings it; the runtime does not need it): with tqdm the caller
gets a bar, without it a log line every ~10% of the total, and with progress off nothing at all.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class ProgressBar:
    """update/set_postfix/write/close over a tqdm bar, a log-line reporter, or nothing.

    Made by progress_bar(); usable as a context manager (closes on exit).
    """

    def __init__(self, bar: Any, total: int, desc: str, unit: str, initial: int, enabled: bool):
        self._bar = bar
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.enabled = enabled
        self._next_log = self._next_tenth(self.n)

    def _next_tenth(self, n: int) -> int:
        """The count at which the log fallback reports next: the next whole tenth above n."""
        if self.total <= 0:
            return 0
        tenths = n * 10 // self.total + 1
        return -(-tenths * self.total // 10)  # ceil(tenths * total / 10)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and self.total > 0 and self.n >= self._next_log:
            log.info("%s: %d/%d %s", self.desc, min(self.n, self.total), self.total, self.unit)
            self._next_log = self._next_tenth(self.n)

    def set_postfix(self, values: dict[str, Any] | str) -> None:
        """Extra state shown after the bar (a dict of named values or one short string)."""
        if self._bar is None:
            return
        if isinstance(values, str):
            self._bar.set_postfix_str(values, refresh=False)
        else:
            self._bar.set_postfix(values, refresh=False)

    def write(self, msg: str) -> None:
        """Print a line above the bar without breaking it; nothing without a bar (callers log)."""
        if self._bar is not None:
            self._bar.write(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it", initial: int = 0,
                 leave: bool = False, mininterval: float = 0.5) -> ProgressBar:
    """A progress reporter for `total` units of work: tqdm when installed, else log lines.

    enabled=False gives a silent one (same methods). initial: units already done (a resumed run).
    """
    bar = None
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            bar = None
        else:
            bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                       mininterval=mininterval)
    return ProgressBar(bar, total, desc, unit, initial, enabled)
