"""CPU use of the rig's processes while a run lasts, read from /proc (rtdecode.machine)."""

from __future__ import annotations

import os
import time

from ..machine import machine_busy_seconds, proc_cpu_seconds


class CpuMeter:
    """Cores used since construction by this process (`<self_name>_cores`), by each child pid
    (`<name>_cores`) and by the whole machine (`machine_busy_fraction`, of all its cores).

    A child that exits before `read()` counts up to the last `sample()` that saw it alive.
    """

    def __init__(self, pids: dict[str, int | None], self_name: str = "this_process"):
        self.self_name = self_name
        self.pids = {k: p for k, p in pids.items() if p is not None}
        self._t = time.monotonic()
        self._self = sum(os.times()[:2])
        self._first = {k: proc_cpu_seconds(p) for k, p in self.pids.items()}
        self._last = dict(self._first)
        self._machine = machine_busy_seconds()

    def sample(self) -> None:
        """Note the children's CPU seconds now (call now and then while they may exit)."""
        for k, p in self.pids.items():
            now = proc_cpu_seconds(p)
            if now is not None:
                self._last[k] = now

    def read(self) -> dict[str, float]:
        self.sample()
        wall = max(time.monotonic() - self._t, 1e-9)
        out = {"wall_s": wall, f"{self.self_name}_cores": (sum(os.times()[:2]) - self._self) / wall}
        for k in self.pids:
            first, last = self._first.get(k), self._last.get(k)
            if first is not None and last is not None:
                out[f"{k}_cores"] = (last - first) / wall
        m = machine_busy_seconds()
        if m and self._machine and m[1] > self._machine[1]:
            out["machine_busy_fraction"] = (m[0] - self._machine[0]) / (m[1] - self._machine[1])
        return out
